"""The package's layers, enforced: a module imports only its own layer and the layers below it.

The order is the one ``docs/architecture.md`` draws. Every import counts, also those inside
functions (a lazy import is still a dependency); only ``if TYPE_CHECKING:`` blocks are exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "refiner"

#: Layer of each sub-package, lowest first. Equal numbers are side by side: they may not import
#: each other (train and baselines, scale and recipes), only what is below them.
LAYERS = {
    "core": 0,
    "data": 1,
    "models": 2,
    "train": 3,
    "baselines": 3,
    "scale": 4,
    "recipes": 4,
    "app": 5,
    "cli": 6,  # the command line: every engine layer, never the app's
    "__main__": 7,
    "__init__": 7,  # the public API re-exports from the engine
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """``refiner.data.read`` -> ``data``; the package itself (``refiner``) is its public API."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name | ast.Attribute) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) for every ``refiner`` import in ``path``, skipping ``if TYPE_CHECKING:`` blocks."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "refiner")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module_name(path, package).split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "refiner":
                # ``from refiner.app import jobs`` imports the module refiner.app.jobs; a name that
                # is not a module resolves to the module that defines it (see :func:`edges`)
                found.extend(
                    (node.lineno, f"{target}.{a.name}")
                    for a in node.names
                    if (target, a.name) != ("refiner", "__version__")  # a constant, not the API
                )
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _is_module(name: str, package: Path) -> bool:
    rel = Path(*name.split(".")[1:])
    return (package / rel).with_suffix(".py").is_file() or (package / rel / "__init__.py").is_file()


def edges(package: Path = PACKAGE) -> list[tuple[str, int, str]]:
    """(importing module, line, imported module) for every import inside ``package``."""
    out = []
    for path in sorted(package.rglob("*.py")):
        for line, target in imports_of(path, package):
            while not _is_module(target, package) and "." in target:  # `from refiner.x import name`
                target = target.rsplit(".", 1)[0]
            out.append((module_name(path, package), line, target))
    return out


def violations(package: Path = PACKAGE) -> list[str]:
    wrong = []
    for source, line, target in edges(package):
        a, b = layer_of(source), layer_of(target)
        if a != b and LAYERS[b] >= LAYERS[a]:
            wrong.append(f"{source}:{line} imports {target} ({a} is layer {LAYERS[a]}, {b} is {LAYERS[b]})")
    return wrong


def test_every_subpackage_has_a_layer():
    named = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    named |= {p.stem for p in PACKAGE.glob("*.py")}
    assert named <= set(LAYERS), f"give {sorted(named - set(LAYERS))} a layer in LAYERS and docs/architecture.md"


def test_lower_layers_never_import_higher_ones():
    wrong = violations()
    assert not wrong, "\n".join(wrong)


def test_there_is_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for source, _, target in edges():
        if source != target and not target.startswith(source + "."):  # a package imports its own modules
            graph.setdefault(source, set()).add(target)
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_violation(tmp_path):
    """The check can fail: in a copy of the layout, a data module importing the app (lazily) is reported."""
    fake = tmp_path / "refiner"
    for name, text in {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/read.py": "from refiner.core.classes import ClassSpec\n\n\ndef f():\n"
        "    from refiner.app import workspace\n",
        "core/__init__.py": "",
        "core/classes.py": "ClassSpec = object\n",
        "app/__init__.py": "",
        "app/workspace.py": "from refiner.data.read import f\n",
    }.items():
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(text)
    assert violations(fake) == ["refiner.data.read:5 imports refiner.app.workspace (data is layer 1, app is 5)"]


def test_the_models_know_nothing_of_workspaces():
    """Workspaces are the app's (``refiner/app``): no module of ``models/`` names one, not even as a Protocol.

    A Protocol standing in for the workspace once carried app logic into ``models/`` past the
    import check above; the word itself is the tell.
    """
    models = sorted((PACKAGE / "models").glob("*.py"))
    assert len(models) > 5
    named = [
        f"{p.relative_to(PACKAGE.parent)}:{i}"
        for p in models
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "workspace" in line.lower()
    ]
    assert not named, f"models code that knows about workspaces (move it to refiner/app): {named}"


def test_tools_scripts_and_benchmarks_never_import_the_tests():
    """What they share with the tests lives in ``tools/`` (``tools/browser.py``), not in ``tests/``."""
    import ast

    outside = [p for d in ("tools", "scripts", "benchmarks") for p in sorted((PACKAGE.parent / d).rglob("*.py"))]
    assert any(p.name == "screenshots.py" for p in outside)
    found = [
        f"{p.relative_to(PACKAGE.parent)}:{n.lineno}"
        for p in outside
        for n in ast.walk(ast.parse(p.read_text()))
        if (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "tests")
        or (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "tests" for a in n.names))
    ]
    assert not found, f"tools, scripts and benchmarks import test code (move it to tools/): {found}"
