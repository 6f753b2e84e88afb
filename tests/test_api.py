"""The public API in ``refiner/__init__.py``: every name resolves, lazily, and the README's library snippet runs."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import subprocess
import sys

import numpy as np
import pytest

import refiner
from refiner.core.classes import IGNORE
from refiner.data.synthetic import make_scene
from refiner.data.write import write_raster
from refiner.train.rnn import FINETUNE_DEFAULTS
from tests.helpers import REPO


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing imported yet) and return what it printed."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return out.stdout.strip()


def test_import_refiner_loads_no_heavy_library():
    """``import refiner`` (what ``refiner --help`` and Dask workers pay) brings in neither torch nor rasterio."""
    out = _fresh("import sys, refiner; print(sorted({'torch', 'rasterio', 'scipy'} & set(sys.modules)))")
    assert out == "[]"


def test_a_public_name_imports_its_module_on_first_use():
    out = _fresh(
        "import sys, refiner\n"
        "before = 'refiner.models.inference' in sys.modules\n"
        "f = refiner.predict_coarse\n"
        "print(before, 'refiner.models.inference' in sys.modules, 'torch' in sys.modules)"
    )
    assert out == "False True True"


@pytest.mark.parametrize("name", refiner.__all__)
def test_every_public_name_is_the_object_its_module_defines(name):
    value = getattr(refiner, name)
    if name == "__version__":
        assert re.fullmatch(r"\d+\.\d+\.\d+", value)
        return
    module = importlib.import_module(refiner._MODULE_OF[name])
    assert value is getattr(module, name)
    assert name in dir(refiner)


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'predict'"):
        refiner.predict  # noqa: B018
    assert not hasattr(refiner, "_not_there")


def test_all_lazy_table_and_type_checking_imports_agree():
    """``__all__``, the lazy table and the ``if TYPE_CHECKING:`` imports name the same (module, name) pairs."""
    tree = ast.parse((REPO / "refiner" / "__init__.py").read_text())
    checked = {
        (node.module, alias.name)
        for block in tree.body
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    lazy = {(module, name) for name, module in refiner._MODULE_OF.items()}
    assert checked == lazy
    assert sorted(refiner.__all__) == sorted(["__version__", *refiner._MODULE_OF])
    assert len(refiner.__all__) == len(set(refiner.__all__))


def _readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Use it as a library") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
@pytest.mark.skipif(not (refiner.pretrained_root() / "coarse_1m").is_dir(), reason="no shipped pretrained models")
def test_the_readme_library_snippet_runs(tmp_path, monkeypatch, capsys):
    """The snippet as printed, on a synthetic 1 m scene: files written, three scores printed.

    Only the fine-tune is cut from FINETUNE_DEFAULTS' 300 steps to 5 (the whole budget takes
    minutes on two busy cores); everything else runs as a reader would run it.
    """
    scene = make_scene(192, seed=3)
    write_raster(tmp_path / "tile.tif", (scene.image * 255 + 0.5).astype(np.uint8), scene.georef)
    write_raster(tmp_path / "truth.tif", scene.classes.decode(scene.truth), scene.georef, nodata=IGNORE)
    painted = np.full_like(scene.truth, IGNORE)
    painted[:96, :96] = scene.truth[:96, :96]
    write_raster(tmp_path / "labels.tif", scene.classes.decode(painted), scene.georef, nodata=IGNORE)
    monkeypatch.chdir(tmp_path)
    full = refiner.finetune_from_pretrained
    short = dataclasses.replace(FINETUNE_DEFAULTS, steps=5)
    monkeypatch.setattr(refiner, "finetune_from_pretrained", lambda *a, **kw: full(*a, cfg=short, **kw))

    exec(compile(_readme_snippet(), "README.md", "exec"), {})

    lines = capsys.readouterr().out.splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == ["coarse", "dense CRF", "RNN"]
    scores = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
    # coarse 0.61, dense CRF 0.69, RNN 0.59 measured (the shipped real-data models on this synthetic
    # scene, 5 fine-tune steps); an all-background map scores 0.29
    assert min(scores.values()) > 0.5 and scores["RNN"] > scores["coarse"] - 0.05, scores
    class_map = refiner.read_labels("map.tif", scene.classes)
    assert class_map.shape == scene.truth.shape
    probs, classes, _ = refiner.read_probs("refined.tif")
    assert probs.shape == (3, *scene.truth.shape) and classes.names == scene.classes.names


PUBLIC = [n for n in refiner.__all__ if n not in ("__version__", "IGNORE")]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_documents_its_use_with_an_example(name):
    """Google-style sections (what ``make docs`` renders): Args for every parameter, Returns,
    Raises when the body raises, and one example that at least compiles."""
    import inspect
    import textwrap

    obj = getattr(refiner, name)
    doc = inspect.getdoc(obj) or ""
    example = re.search(r"^Example:\n    ```python\n(.*?)\n    ```$", doc, re.S | re.M)
    assert example, f"{name}: no 'Example:' with a ```python block"
    compile(textwrap.dedent(example.group(1)), f"{name} example", "exec")
    assert example.group(1).count("refiner.") >= 1, f"{name}: the example does not use the API"
    if inspect.isclass(obj):
        return
    params = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
    if params:
        args = doc.split("Args:\n", 1)[1].split("\n\n", 1)[0] if "Args:\n" in doc else ""
        missing = [p for p in params if not re.search(rf"^    {p}:", args, re.M)]
        assert not missing, f"{name}: Args does not describe {missing}"
    assert "\nReturns:\n" in doc, f"{name}: no Returns section"
    if re.search(r"^\s+raise \w", inspect.getsource(obj), re.M):
        assert "\nRaises:\n" in doc, f"{name}: raises, but has no Raises section"
