"""Markers mean what they say: a module marked slow leaves nothing in the quick pass (``-m "not slow"``).

``tests/test_real_data.py`` once set ``pytestmark = pytest.mark.slow`` and then replaced it with a
``skipif``, so its real-data trainings ran in the quick pass. A module sets its marks once, as a
list when there are several, and what ``-m "not slow"`` collects is checked with pytest itself.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from tests.helpers import REPO

TESTS = REPO / "tests"
MODULES = sorted(TESTS.rglob("test_*.py"))


def module_marks(source: str) -> list[set[str]]:
    """The marks each module-level ``pytestmark = ...`` names (``pytest.mark.<name>``), in order."""
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue  # ``pytestmark += [...]`` adds to the marks: fine
        if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets):
            assert node.value is not None
            found.append({
                n.attr for n in ast.walk(node.value)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute) and n.value.attr == "mark"
            })  # fmt: skip
    return found


def test_the_check_sees_a_module_that_replaces_its_marks():
    replaced = "import pytest\npytestmark = pytest.mark.slow\npytestmark = pytest.mark.skipif(True, reason='')\n"
    assert module_marks(replaced) == [{"slow"}, {"skipif"}]
    listed = "import pytest\npytestmark = [pytest.mark.slow, pytest.mark.skipif(True, reason='')]\n"
    assert module_marks(listed) == [{"slow", "skipif"}]


def test_every_module_sets_its_marks_once():
    twice = [str(p.relative_to(REPO)) for p in MODULES if len(module_marks(p.read_text())) > 1]
    assert not twice, f"a second `pytestmark = ...` replaces the first (use one list): {twice}"


def test_modules_marked_slow_leave_nothing_in_the_quick_pass():
    slow = [p for p in MODULES if any("slow" in marks for marks in module_marks(p.read_text()))]
    assert TESTS / "test_real_data.py" in slow
    control = TESTS / "test_layers.py"  # a quick module: it must be collected, or the check sees nothing
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow", "-p", "no:cacheprovider"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([*cmd, *map(str, [*slow, control])], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    leaked = [i for i in ids if not i.startswith(str(control.relative_to(REPO)))]
    assert not leaked, f"tests of modules marked slow in the quick pass: {leaked}"
    assert any(i.startswith("tests/test_layers.py::") for i in ids), out.stdout


def test_every_mark_used_is_declared():
    """``-m "not slow"`` filters on declared names: a misspelt mark would quietly select nothing."""
    import tomllib

    declared = {m.split(":")[0] for m in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]["markers"]}  # fmt: skip
    builtin = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings"}
    used = {
        n.attr: p.relative_to(REPO)
        for p in [*MODULES, TESTS / "conftest.py"]
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute) and n.value.attr == "mark"
    }
    assert {"slow", "browser", "gpu"} <= declared
    assert not set(used) - declared - builtin, {m: used[m] for m in set(used) - declared - builtin}
