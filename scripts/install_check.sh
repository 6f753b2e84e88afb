#!/usr/bin/env bash
# What `pip install .` gives a user, checked for real (`make install-check`, part of `make test`):
# the wheel holds the package, the C kernel and the shipped assets and nothing else; installed
# with its dependencies into a fresh virtual environment (no system site-packages) and used from
# outside the source tree, the `refiner` command and the library work, and nothing is written
# into site-packages.
#
#   bash scripts/install_check.sh [BUILD_PYTHON]   # BUILD_PYTHON builds the wheel (default python3)
set -euo pipefail

build_py=${1:-python3}
base_py=${PYTHON:-python3}  # the interpreter the fresh venv is made from
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; rm -rf "$repo/build" "$repo/refiner.egg-info"' EXIT
t0=$SECONDS

# setuptools copies into build/lib and never empties it: a stale file there would go into the wheel
rm -rf "$repo/build" "$repo/refiner.egg-info"
"$build_py" -m pip wheel -q --no-deps "$repo" -w "$tmp/dist"
wheel=$(echo "$tmp"/dist/refiner-*.whl)
echo "install-check: built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB) in $((SECONDS - t0)) s"

"$build_py" - "$wheel" "$repo" <<'EOF'
import sys, zipfile
from pathlib import Path

wheel, repo = sys.argv[1], Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
tops = {n.split("/")[0] for n in names}
assert {t for t in tops if not t.endswith(".dist-info")} == {"refiner"}, f"top-level entries: {sorted(tops)}"
need = {"refiner/models/rnn_step.c", "refiner/py.typed"} | {
    "refiner/assets/" + p.relative_to(repo / "assets").as_posix() for p in (repo / "assets").rglob("*") if p.is_file()
}
need |= {p.relative_to(repo).as_posix() for p in (repo / "refiner").rglob("*.py")}
missing = sorted(need - names)
assert not missing, f"missing from the wheel: {missing}"
print(f"install-check: the wheel holds all {len(need)} package files, rnn_step.c, py.typed and the assets")
EOF

t1=$SECONDS
"$base_py" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -qq --upgrade pip
"$tmp/venv/bin/python" -m pip install -qq "$wheel"  # -qq: not the index's "Location ... is ignored" lines
echo "install-check: fresh venv with the wheel and its dependencies in $((SECONDS - t1)) s"

cd "$tmp"  # away from the checkout: only the installed package can be imported
site=$("$tmp/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
touch "$tmp/before"
"$tmp/venv/bin/refiner" --help >/dev/null
"$tmp/venv/bin/refiner" --version
demo="$site/refiner/assets/demo"
REFINER_CACHE="$tmp/cache" "$tmp/venv/bin/refiner" predict --model "$demo/coarse" --image "$demo/tile.tif" \
    --out "$tmp/probs.tif" 2>/dev/null
test -s "$tmp/probs.tif"
REFINER_CACHE="$tmp/cache" XDG_DATA_HOME="$tmp/share" "$tmp/venv/bin/python" - "$site" "$tmp" <<'EOF'
import sys
from pathlib import Path

import refiner

site, tmp = Path(sys.argv[1]), Path(sys.argv[2])
assert Path(refiner.__file__).is_relative_to(site), refiner.__file__
assert "torch" not in sys.modules, "import refiner loaded torch"

from refiner.app.demos import create_demo
from refiner.app.workspace import default_root
from refiner.core import paths
from refiner.models import native
from refiner.models.pretrained import catalogue

assert paths.INSTALLED and paths.CHECKOUT is None and paths.ASSETS == site / "refiner" / "assets", paths.ASSETS
assert {m.name for m in catalogue()} >= {"coarse_1m", "rnn_1m"}, catalogue()
scene = refiner.make_scene(96, seed=1)
coarse = refiner.load_model(refiner.pretrained_root() / "coarse_1m", expect="coarse")
rnn = refiner.load_model(refiner.pretrained_root() / "rnn_1m", expect="rnn")
probs = refiner.predict_coarse(coarse, scene.tile())
assert refiner.refine(rnn, scene.tile(), probs).final.shape == (3, 96, 96)
if native.load(rnn.net.cfg.kernel_size) is not None:  # compiled from the installed rnn_step.c
    assert native.cache_dir().is_relative_to(tmp / "cache") and any(native.cache_dir().glob("*.so"))
ws = create_demo(default_root())  # the shipped demo, into the per-user workspaces
assert ws.path.is_relative_to(tmp / "share" / "refiner" / "workspaces"), ws.path
print("install-check: the installed library works: pretrained models, the native kernel, the demo workspace")
EOF
written=$(find "$site/refiner" -newer "$tmp/before" -type f ! -name '*.pyc')
test -z "$written" || { echo "install-check: written into site-packages: $written" >&2; exit 1; }
echo "install-check: passed in $((SECONDS - t0)) s"
