import ast
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from refiner.core.classes import ClassSpec
from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle, _check_safetensors, load_model, save_model


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    classes = ClassSpec(("background", "road"), (0, 255))
    net = RefinerRNN(RNNConfig(2, variant="class_agnostic", iterations=3))
    bundle = ModelBundle(
        "rnn",
        net,
        classes,
        1.0,
        (0.1, 0.2, 0.3),
        (0.4, 0.5, 0.6),
        {"trained_steps": 7},
        optimizer_state={"blocks.0.hidden.weight": torch.ones(3)},
    )
    save_model(bundle, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
        "optimizer.safetensors",
    ]
    back = load_model(tmp_path / "m", expect="rnn")
    assert back.classes == classes and back.resolution == 1.0 and back.mean == (0.1, 0.2, 0.3)
    assert back.net.cfg == net.cfg and back.info["trained_steps"] == 7
    for (n, a), (_, b) in zip(net.state_dict().items(), back.net.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=n)
    torch.testing.assert_close(back.optimizer_state["blocks.0.hidden.weight"], torch.ones(3))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"]["variant"] == "class_agnostic"
    assert config["normalisation"]["std"] == [0.4, 0.5, 0.6]


def test_loading_checks_kind_and_folder(tmp_path):
    save_model(ModelBundle("coarse", CoarseCNN(CoarseConfig(2)), ClassSpec(("a", "b"))), tmp_path / "c")
    with pytest.raises(ValueError, match="coarse model, but a rnn model is needed"):
        load_model(tmp_path / "c", expect="rnn")
    with pytest.raises(FileNotFoundError, match="not a Refiner model folder"):
        load_model(tmp_path / "nothing")
    (tmp_path / "c" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(tmp_path / "c")


REPO = Path(__file__).resolve().parents[2]
#: safetensors' dtypes and their sizes in bytes
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def parse_safetensors(path: Path) -> dict[str, tuple[str, list[int]]]:
    """Parse ``path`` by the safetensors format alone, or fail the test: an 8-byte little-endian header
    length, a JSON header, tensors whose byte ranges fit their dtype and shape and tile the data
    exactly. Whatever ``torch.save`` or ``pickle`` writes fails here, whatever its first byte."""
    raw = path.read_bytes()
    assert len(raw) >= 8, f"{path}: shorter than a safetensors header"
    n = int.from_bytes(raw[:8], "little")
    assert 0 < n <= len(raw) - 8, f"{path}: header length {n} does not fit a {len(raw)}-byte file"
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AssertionError(f"{path}: the safetensors header is not JSON ({exc})") from exc
    assert isinstance(header, dict), path
    header.pop("__metadata__", None)
    data = len(raw) - 8 - n
    spans, out = [], {}
    for name, t in header.items():
        begin, end = t["data_offsets"]
        assert end - begin == DTYPE_BYTES[t["dtype"]] * math.prod(t["shape"]), f"{path}: {name}'s size"
        spans.append((begin, end))
        out[name] = (t["dtype"], t["shape"])
    spans.sort()
    assert [b for b, _ in spans] == [0] + [e for _, e in spans[:-1]], f"{path}: tensors do not tile the data"
    assert (spans[-1][1] if spans else 0) == data, f"{path}: {data} data bytes, the tensors cover {spans[-1][1]}"
    return out


def test_every_model_file_parses_as_safetensors(tmp_path):
    """Folders save_model writes (both kinds, with the optimizer state) and every shipped model."""
    rnn = ModelBundle("rnn", RefinerRNN(RNNConfig(2)), ClassSpec(("a", "b")), optimizer_state={"x": torch.ones(3)})
    save_model(ModelBundle("coarse", CoarseCNN(CoarseConfig(2)), ClassSpec(("a", "b"))), tmp_path / "c")
    save_model(rnn, tmp_path / "r")
    written = sorted(tmp_path.glob("*/*.safetensors"))
    shipped = sorted((REPO / "assets").rglob("*.safetensors"))
    assert len(written) == 3 and len(shipped) >= 4, (written, shipped)
    for f in written + shipped:
        tensors = parse_safetensors(f)
        with safe_open(str(f), "pt") as sf:  # and the library reads the same tensors
            assert sorted(sf.keys()) == sorted(tensors), f
    # no other files in a model folder than its JSON config and safetensors
    for folder in [tmp_path / "c", tmp_path / "r", *{f.parent for f in shipped}]:
        for f in folder.iterdir():
            assert f.suffix in (".safetensors", ".json", ".md"), f"{f}: not safetensors or JSON"
            if f.suffix in (".json",):
                json.loads(f.read_text())


def test_the_format_check_does_not_judge_by_the_first_byte(tmp_path):
    """A torch.save file starts ``PK`` (a zip with a pickle inside) and a valid safetensors file with a
    128-byte header starts ``0x80``, pickle's marker: the parser rejects the first and accepts the second."""
    torch.save({"w": torch.ones(2)}, tmp_path / "pickled.safetensors")
    assert (tmp_path / "pickled.safetensors").read_bytes()[:2] == b"PK"
    with pytest.raises(AssertionError, match="does not fit"):
        parse_safetensors(tmp_path / "pickled.safetensors")
    for pad in range(200):  # metadata padding until the header is 128 bytes long
        save_file({"w": torch.ones(2)}, str(tmp_path / "good.safetensors"), metadata={"p": "x" * pad})
        if (tmp_path / "good.safetensors").read_bytes()[0] == 0x80:
            break
    assert (tmp_path / "good.safetensors").read_bytes()[:1] == b"\x80"
    assert parse_safetensors(tmp_path / "good.safetensors") == {"w": ("F32", [2])}
    _check_safetensors(tmp_path / "good.safetensors")  # store's guard before any load lets it through too
    with pytest.raises(ValueError, match="not a safetensors file"):
        _check_safetensors(tmp_path / "pickled.safetensors")


#: calls that unpickle (torch.load, pickle.load(s), joblib, dill, ...) wherever they come from
UNPICKLING = {"torch.load", "torch.jit.load", "pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load",
              "dill.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load", "pandas.read_pickle",
              "pd.read_pickle", "torch.serialization.load"}  # fmt: skip


PICKLERS = ("pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib")


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin: ``load`` -> ``torch.load``, ``T`` -> ``torch``."""
    alias: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
    return alias


def _dotted(func: ast.expr, alias: dict[str, str]) -> str:
    """``T.load`` -> ``torch.load`` (numpy spelt ``np``); "" for calls on anything but a name."""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.insert(0, func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return ""
    dotted = ".".join([alias.get(func.id, func.id), *parts])
    return "np." + dotted[len("numpy.") :] if dotted.startswith("numpy.") else dotted


def unpickling_calls(source: str) -> list[str]:
    """Every import of a pickler and every call in ``source`` that may load pickled data, as ``line: what``."""
    tree = ast.parse(source)
    alias = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] + ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{node.lineno}: import {m}" for m in modules if m.split(".")[0] in PICKLERS]
        elif isinstance(node, ast.Call):
            dotted = _dotted(node.func, alias)
            if dotted in UNPICKLING:
                found.append(f"{node.lineno}: {dotted}")
            elif dotted == "np.load" and any(
                k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                for k in node.keywords
            ):
                found.append(f"{node.lineno}: np.load(allow_pickle=...)")
    return found


def test_the_scan_finds_unpickling_however_it_is_imported():
    src = (
        "import torch as T\nfrom torch import load as L\nimport numpy\nimport pickle\n"
        "T.load('a')\nL('b')\nnumpy.load('c', allow_pickle=True)\nnumpy.load('d')\n"
    )
    found = unpickling_calls(src)
    assert sorted(found) == ["4: import pickle", "5: torch.load", "6: torch.load", "7: np.load(allow_pickle=...)"]


def test_nothing_in_the_package_or_the_app_loads_weights_but_safetensors():
    files = [*(REPO / "refiner").rglob("*.py"), *(REPO / "pages").glob("*.py"), *(REPO / "webapp").rglob("*.py"),
             REPO / "app.py", *(REPO / "scripts").glob("*.py"), *(REPO / "tools").glob("*.py")]  # fmt: skip
    assert len(files) > 50
    found = {str(f.relative_to(REPO)): hits for f in files if (hits := unpickling_calls(f.read_text()))}
    assert not found, f"these load data that may be pickled; use safetensors (refiner.models.store): {found}"
