"""Every bad input the project answers, in one suite: ``pytest tests/test_reliability.py -v`` lists them.

``docs/security.md`` has the table (input, answer, test). The sections follow issue #23: one checked
opener for every raster a browser or the command line hands in, training sizes, non-finite pixels,
``refine``'s probability checks, server-issued sessions, class names as text, and the small ones.
Other suites keep the older cases (``tests/test_cli_errors.py``, ``tests/pages/test_security.py``,
``tests/app/test_sessions.py``); this one is what a hostile or careless user was seen to do.
"""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from refiner.app import sessions
from refiner.app.workspace import Workspace
from refiner.cli import build_parser, main
from refiner.core.classes import ClassSpec
from refiner.data.read import MAX_READ_PIXELS_ENV, read_image, read_probs
from refiner.data.synthetic import DEMO_CLASSES, coarse_like, make_scene
from refiner.data.tile import RasterError
from tests.helpers import REPO, TOKEN, make_workspace, run, session

CLASSES = ["--classes", "background,building,road", "--values", "0,1,2"]
PRETRAINED = REPO / "assets" / "pretrained"
CRS = "EPSG:32614"


def _tif(path: Path, array: np.ndarray, *, georef: bool = True, nodata: float | None = None) -> Path:
    array = array if array.ndim == 3 else array[None]
    profile = dict(driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0],
                   dtype=array.dtype.name, nodata=nodata)  # fmt: skip
    if georef:
        profile.update(crs=CRS, transform=from_origin(500000, 4000000, 1.0, 1.0))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array)
    return path


def bomb(path: Path, height: int, width: int, count: int = 1) -> Path:
    """A sparse TIFF declaring ``height x width`` pixels: a few hundred KB on disk, gigabytes when read."""
    profile = dict(driver="GTiff", height=height, width=width, count=count, dtype="uint8", tiled=True,
                   blockxsize=1024, blockysize=1024, compress="deflate", sparse_ok=True)  # fmt: skip
    with rasterio.open(path, "w", **profile):
        pass
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A small, valid 64 x 64 scene for the command line: image, probabilities, labels."""
    d = tmp_path_factory.mktemp("inputs")
    scene = make_scene(64, seed=3)
    probs = coarse_like(scene.truth, 3).astype(np.float32)
    return {
        "image": _tif(d / "image.tif", (scene.image * 255).astype(np.uint8)),
        "probs": _tif(d / "probs.tif", probs),
        "labels": _tif(d / "labels.tif", scene.truth),
        "dir": d,
    }


def cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


# =========================================================================== 1. one checked opener
# Every raster option of every command, with a file declaring more pixels than the limit there.
# Whole reads say "declares … above the limit"; the scene commands read window by window and
# refuse scenes above their own limit; refine's probabilities must match the image first.
WHOLE = "declares 1200 x 1200 pixels, above the limit"
CLI_RASTER_INPUTS = {
    ("train-coarse", "images"): WHOLE,
    ("train-coarse", "labels"): WHOLE,
    ("finetune", "image"): WHOLE,
    ("finetune", "probs"): WHOLE,
    ("finetune", "labels"): WHOLE,
    ("crf", "image"): WHOLE,
    ("crf", "probs"): WHOLE,
    ("crf", "search_labels"): WHOLE,
    ("evaluate", "pred"): WHOLE,
    ("evaluate", "truth"): WHOLE,
    ("predict", "image"): "above the scene limit",
    ("refine", "image"): "above the scene limit",
    ("refine", "probs"): "differ in size",
    ("adapt", "image"): WHOLE,
    ("adapt", "labels"): WHOLE,
}
RASTER_DESTS = {"image", "images", "probs", "labels", "pred", "truth", "search_labels"}


def _argv(command: str, f: dict[str, Path], out: Path) -> list:
    return {
        "train-coarse": ["train-coarse", "--images", f["image"], "--labels", f["labels"], *CLASSES, "--steps", 1,
                         "--out", out / "m"],
        "finetune": ["finetune", "--image", f["image"], "--probs", f["probs"], "--labels", f["labels"], "--steps", 1,
                     *CLASSES, "--out", out / "m"],
        "crf": ["crf", "--image", f["image"], "--probs", f["probs"], "--search-labels", f["labels"],
                *CLASSES, "--out", out / "c.tif"],
        "evaluate": ["evaluate", "--pred", f["labels"], "--truth", f["labels"], *CLASSES],
        "predict": ["predict", "--model", PRETRAINED / "coarse_1m", "--image", f["image"], "--out", out / "p.tif"],
        "refine": ["refine", "--model", PRETRAINED / "rnn_1m", "--image", f["image"], "--probs", f["probs"],
                   "--out", out / "r.tif"],
        "adapt": ["adapt", "--image", f["image"], "--labels", f["labels"], "--out", out / "a"],
    }[command]  # fmt: skip


def test_every_cli_raster_input_is_walked():
    """A new raster option fails here until it is added to the walk below."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.choices and isinstance(a.choices, dict)]
    found = {(name, a.dest) for name, sp in sub.choices.items() for a in sp._actions if a.dest in RASTER_DESTS}
    assert found == set(CLI_RASTER_INPUTS)


@pytest.mark.parametrize(("command", "dest"), sorted(CLI_RASTER_INPUTS))
def test_no_cli_raster_input_bypasses_the_checked_opener(command, dest, inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(MAX_READ_PIXELS_ENV, str(2**20))
    monkeypatch.setenv("REFINER_MAX_SCENE_PIXELS", str(2**20))
    big = bomb(tmp_path / "big.tif", 1200, 1200, count=3)
    argv = _argv(command, inputs, tmp_path)
    option = f"--{dest.replace('_', '-')}"
    argv[argv.index(option) + 1] = big
    rc, err = cli(argv, capsys)
    assert rc == 2 and CLI_RASTER_INPUTS[(command, dest)] in err, err
    assert str(tmp_path) not in err.replace(str(big), "") and "Traceback" not in err


# Every upload widget of every page: key -> (page, the button that reads it, or None when the
# upload is read at once). ``coarse_model`` takes model files, not rasters (checked by load_model).
UPLOADS = {
    "tile_upload": ("pages/0_Tile.py", "create_upload"),
    "probs_upload": ("pages/0_Tile.py", "use_probs"),
    "mask_upload": ("pages/1_Label.py", None),
    "train_ref_file": ("pages/2_Train.py", None),
    "iter_ref_file": ("pages/3_Iterations.py", None),
    "compare_ref_file": ("pages/4_Compare.py", None),
}
NOT_RASTERS = {"coarse_model": "pages/0_Tile.py"}


def _uploader_call_sites() -> int:
    n = 0
    for path in [REPO / "app.py", *(REPO / "pages").glob("*.py"), *(REPO / "webapp").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "file_uploader":
                n += 1
    return n


@pytest.fixture()
def app_root(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINER_WORKSPACES", str(tmp_path))
    monkeypatch.chdir(REPO)
    monkeypatch.delenv(sessions.AUTH_ENV, raising=False)
    return tmp_path


def test_every_upload_widget_is_walked(app_root):
    """The widgets the pages show are the ones walked; a new uploader fails here until it is added."""
    make_workspace(app_root, size=48)
    shown = {}
    for page in sorted({p for p, _ in UPLOADS.values()} | set(NOT_RASTERS.values())):
        at = run(page)
        shown.update({u.key: page for u in at.get("file_uploader")})
    assert shown == {**{k: p for k, (p, _) in UPLOADS.items()}, **NOT_RASTERS}
    # call sites: 0_Tile (3), Label (1), the reference panel (1) shared by three pages
    assert _uploader_call_sites() == 5


@pytest.mark.parametrize("key", sorted(UPLOADS))
def test_no_upload_widget_bypasses_the_checked_opener(key, app_root, monkeypatch):
    monkeypatch.setenv(MAX_READ_PIXELS_ENV, str(2**20))
    make_workspace(app_root, size=48)
    page, button = UPLOADS[key]
    data = bomb(app_root / "b.tif", 1200, 1200, count=3).read_bytes()
    at = run(page)
    at.file_uploader(key=key).set_value(("huge.tif", data, "image/tiff")).run()
    if button:
        at.button(key=button).click().run()
    assert not at.exception, [e.value for e in at.exception]
    said = " ".join(e.value for e in at.error)
    # uploads of the tile's grid (a label mask, probabilities) are checked against the tile's size
    # from the header; the others against the pixel limit
    assert ("huge.tif declares 1200 x 1200 pixels, above the limit" in said) or (
        key in ("mask_upload", "probs_upload") and "1200x1200 pixels but the tile is 48x48" in said
    ), said
    assert str(app_root) not in said and "/tmp" not in said


def test_only_the_checked_opener_opens_what_people_hand_in():
    """No front-end or import module opens a raster itself (``rasterio.open``, ``MemoryFile``):
    the label-import and reference masks did, and read 100000 x 100000 px files whole. The
    workspace reads only its own files, written by the app."""
    own_files_only = {"refiner/app/workspace.py"}
    places = [REPO / "refiner" / "cli.py", REPO / "refiner" / "data" / "masks.py", REPO / "app.py",
              *(REPO / "refiner" / "app").rglob("*.py"), *(REPO / "pages").glob("*.py"),
              *(REPO / "webapp").glob("*.py")]  # fmt: skip
    found = []
    for path in places:
        rel = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
            if name == "MemoryFile" or (name == "open" and isinstance(node, ast.Attribute)
                                        and getattr(node.value, "id", "") == "rasterio"):  # fmt: skip
                found.append(rel)
    assert set(found) <= own_files_only, sorted(set(found) - own_files_only)


_MEMORY_PROBE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))  # 100000^2 px of one byte is 9.3 GiB
from pathlib import Path
from refiner.app import reference, uploads
from refiner.app.sessions import Session, browser_key
from refiner.data import masks
from refiner.data.synthetic import make_scene, DEMO_CLASSES
data = Path(sys.argv[1]).read_bytes()
tile = make_scene(48, seed=1).tile()
ws = Session(Path(sys.argv[2]), browser_key("p" * 40)).create("w", tile, DEMO_CLASSES)
for name, call in [
    ("tile", lambda: uploads.tile_from_upload(data, "huge.tif")),
    ("label import", lambda: masks.read_mask(data, "huge.tif", tile, DEMO_CLASSES)),
    ("reference", lambda: reference.read_mask(data, "huge.tif")),
    ("probabilities", lambda: ws.import_probs(data, "huge.tif")),
    ("labels", lambda: ws.import_labels(data, "huge.tif")),
]:
    try:
        call()
        print(name, "READ")
    except ValueError as exc:
        print(name, "REFUSED", exc)
"""


def test_a_sparse_tiff_declaring_100000_px_squared_is_refused_within_bounded_memory(tmp_path):
    """The file of the report (300 KB declaring 100000 x 100000 px took a server to 11.9 GB), through
    every upload entry, in a process that may not map more than 6 GiB: each is refused from its header."""
    big = bomb(tmp_path / "huge.tif", 100_000, 100_000, count=3)
    assert big.stat().st_size < 2**20
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(big), str(tmp_path / "root")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 5, out.stdout + out.stderr[-2000:]
    assert all(" REFUSED " in line and "100000" in line for line in lines), out.stdout


# =========================================================================== 2. training sizes


def test_a_patch_larger_than_the_tile_is_refused_before_training(inputs, tmp_path, capsys):
    rc, err = cli(_argv("finetune", inputs, tmp_path) + ["--patch-size", 4096, "--steps", 2], capsys)
    assert rc == 2 and "patch size 4096 is larger than the tile (64 x 64 pixels" in err, err


def test_a_batch_beyond_the_memory_budget_is_refused_before_training(inputs, tmp_path, capsys):
    rc, err = cli(_argv("finetune", inputs, tmp_path) + ["--patch-size", 64, "--batch-size", 100000], capsys)
    assert rc == 2 and "per training step, above the budget of 8.0 GiB" in err, err


# =========================================================================== 3. non-finite pixels


@pytest.fixture()
def nan_image(tmp_path) -> Path:
    scene = make_scene(64, seed=3)
    image = scene.image.copy()
    image[:, 10:20, 10:40] = np.nan
    image[1, 30, 30] = np.inf
    return _tif(tmp_path / "nan.tif", image.astype(np.float32))


def test_nan_and_inf_pixels_are_read_as_nodata(nan_image):
    tile = read_image(nan_image)
    assert np.isfinite(tile.image).all()
    assert not tile.valid[10:20, 10:40].any() and not tile.valid[30, 30] and tile.valid.sum() == 64 * 64 - 301


def test_finetune_on_nan_imagery_saves_finite_weights(nan_image, inputs, tmp_path, capsys):
    argv = ["finetune", "--image", nan_image, "--probs", inputs["probs"], "--labels", inputs["labels"],
            "--steps", 2, *CLASSES, "--out", tmp_path / "m"]  # fmt: skip
    rc, err = cli(argv, capsys)
    assert rc == 0, err
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_predict_on_nan_imagery_writes_no_nan_probabilities(nan_image, tmp_path, capsys):
    out = tmp_path / "p.tif"
    rc, err = cli(["predict", "--model", PRETRAINED / "coarse_1m", "--image", nan_image, "--out", out], capsys)
    assert rc == 0, err
    with rasterio.open(out) as ds:
        assert np.isfinite(ds.read()).all()


def test_non_finite_weights_are_never_saved(tmp_path):
    from refiner.models.store import load_model, save_model

    bundle = load_model(PRETRAINED / "rnn_1m")
    next(bundle.net.parameters()).data[0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite weights, so it was not saved"):
        save_model(bundle, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_training_that_turns_nan_stops_with_a_message():
    from refiner.models.store import load_model
    from refiner.train.rnn import DivergedError, RNNTrainConfig, train_rnn

    scene = make_scene(48, seed=2)
    start = load_model(PRETRAINED / "rnn_1m")
    next(start.net.parameters()).data.fill_(float("nan"))
    cfg = RNNTrainConfig(steps=3, holdout=0.0)
    with pytest.raises(DivergedError, match="training stopped at step 1: the weights .* became NaN"):
        train_rnn(scene.image, coarse_like(scene.truth, 3), scene.truth, DEMO_CLASSES, cfg, init=start)


def test_nan_probabilities_are_refused_naming_the_file_not_its_folder(tmp_path):
    probs = coarse_like(make_scene(32, seed=1).truth, 3).astype(np.float32)
    probs[0, 0, 0] = np.nan
    path = _tif(tmp_path / "secret-folder-probs.tif", probs)
    with pytest.raises(RasterError) as exc:
        read_probs(path)
    assert "secret-folder-probs.tif holds 1 NaN or infinite values" in str(exc.value)
    assert str(tmp_path) not in str(exc.value)


def test_a_workspace_with_nan_probabilities_names_no_server_path(app_root):
    ws = make_workspace(app_root, size=48)
    bad = ws.coarse_probs()
    bad[:, :4] = np.nan
    with rasterio.open(ws.path / "coarse_probs.tif", "r+") as ds:
        ds.write(bad)
    with pytest.raises(RasterError) as exc:
        ws.coarse_probs()
    assert "NaN" in str(exc.value) and str(app_root) not in str(exc.value)


# =========================================================================== 4. refine's probability checks


@pytest.mark.parametrize(
    ("what", "needle"),
    [("sums of 2.7", "sum to 2.70"), ("all zeros", "holds only zeros"), ("NaN", "NaN or infinite")],
)
def test_refine_checks_probabilities_as_finetune_and_crf_do(what, needle, inputs, tmp_path, capsys):
    probs = coarse_like(make_scene(64, seed=3).truth, 3).astype(np.float32)
    bad_values = {"sums of 2.7": np.full_like(probs, 0.9), "all zeros": probs * 0}
    probs = bad_values.get(what, np.where(probs > 0.9, np.nan, probs))
    bad = _tif(tmp_path / "bad_probs.tif", probs.astype(np.float32))
    argv = ["refine", "--model", PRETRAINED / "rnn_1m", "--image", inputs["image"], "--probs", bad,
            "--out", tmp_path / "r.tif"]  # fmt: skip
    rc, err = cli(argv, capsys)
    assert rc == 2 and needle in err, err
    assert not (tmp_path / "r.tif").exists()


# =========================================================================== 5. sessions the server issued


def test_session_keys_are_issued_and_signed_by_the_server(tmp_path, monkeypatch):
    monkeypatch.delenv(sessions.SECRET_ENV)
    issued = sessions.issue_session(tmp_path)
    assert sessions.session_known(issued, tmp_path)
    invented = "my-own-session-token-0123456789abcdefghijklmnop"
    assert sessions.valid_token(invented) and not sessions.session_known(invented, tmp_path)
    assert not sessions.session_known(issued[:-1] + ("A" if issued[-1] != "A" else "B"), tmp_path)
    assert not sessions.session_known(sessions.new_token(), tmp_path)  # well-formed, but not signed
    # the secret lives beside the workspaces, readable by the server's user only, and stays
    secret = tmp_path / sessions.SECRET_FILE
    assert secret.stat().st_mode & 0o077 == 0 and sessions.session_known(issued, tmp_path)


def test_an_invented_session_key_is_refused_and_a_new_session_issued(app_root):
    invented = "victim-session-chosen-by-attacker-0123456789"
    sessions.Session(app_root, sessions.browser_key(invented)).create(
        "planted", make_scene(48, seed=1).tile(), DEMO_CLASSES
    )
    at = run("pages/0_Tile.py", token=invented)
    now = at.query_params["session"]
    now = now[0] if isinstance(now, list) else now
    assert now != invented and sessions.session_known(now)
    assert "not made by this server" in " ".join(w.value for w in at.warning)
    assert "planted" not in at.sidebar.selectbox[0].options  # not the session the link named


# =========================================================================== 6. class names as text

EVIL = "![t](http://127.0.0.1:8622/md.png)"


def _rendered(at) -> list[str]:
    """Everything the page renders as Markdown: text, captions, labels, radio options, metric labels."""
    out = [m.value for m in [*at.markdown, *at.caption, *at.warning, *at.info, *at.success]]
    out += [o for r in at.radio for o in r.options] + [m.label for m in at.metric]
    out += [c.label for c in at.checkbox] + [c.value for c in at.sidebar.caption]
    return out


@pytest.mark.parametrize("guest", [False, True], ids=["owner", "share-link guest"])
def test_class_names_are_never_markdown(app_root, guest):
    classes = ClassSpec(("background", EVIL, "<img src=x>"), (0, 1, 2))
    owner = session(app_root).create("t", make_scene(48, seed=1).tile(), classes)
    assert owner
    if guest:
        link = session(app_root).share("t", "read")
        at = run("pages/1_Label.py", token=sessions.sign_session("guest-session-token-0123456789ab"), share=link)
    else:
        at = run("pages/1_Label.py")
    shown = _rendered(at)
    assert any("md\\.png" in s for s in shown)  # the name is there, as text
    assert not [s for s in shown if "](" in s or "<img" in s]


def test_class_names_are_text_in_score_tables(app_root):
    from refiner.models.rnn import RefinerRNN, RNNConfig
    from refiner.models.store import ModelBundle, save_model
    from tests.helpers import _fill

    scene = make_scene(96, seed=5)
    classes = ClassSpec(("background", EVIL, "road"), (0, 1, 2))
    ws = _fill(session(app_root).create("t", scene.tile(), classes), scene, with_rnn=False)
    rnn = RefinerRNN(RNNConfig(num_classes=3, iterations=3))
    save_model(ModelBundle("rnn", rnn, classes, 1.0), ws.model_dir("rnn"))
    at = run("pages/4_Compare.py")
    headers = [str(c) for t in at.table for c in t.value.columns]
    assert any("md\\.png" in h for h in headers), headers
    assert not [h for h in headers if "](" in h]


# =========================================================================== 7. small ones


def _png(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("shape", [(1, 1), (8, 200)])
def test_an_image_below_16_px_is_refused(shape):
    from refiner.app.uploads import tile_from_upload

    with pytest.raises(ValueError, match=rf"tiny.png is {shape[0]}x{shape[1]} pixels, smaller than the 16x16"):
        tile_from_upload(_png(*shape), "tiny.png")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"bilateral_srgb": "abc"}, "CRF parameter bilateral_srgb is 'abc', not a number"),
        ({"bilateral_sxy": -5}, "CRF parameter bilateral_sxy is -5, out of range"),
        ({"iterations": 2.5}, "CRF parameter iterations is 2.5, not a whole number"),
        ({"gaussian_compat": True}, "CRF parameter gaussian_compat is True, not a number"),
    ],
)
def test_crf_params_are_checked_per_key_naming_the_file(params, needle, inputs, tmp_path, capsys):
    path = tmp_path / "crf.json"
    path.write_text(json.dumps(params))
    argv = [
        "crf",
        "--image",
        inputs["image"],
        "--probs",
        inputs["probs"],
        "--params",
        path,
        *CLASSES,
        "--out",
        tmp_path / "c.tif",
    ]
    rc, err = cli(argv, capsys)
    assert rc == 2 and f"crf.json: {needle}" in err, err


def test_an_unwritable_workspace_keeps_the_stroke_and_says_so(app_root, monkeypatch):
    from refiner.app.painting import brush_colors, hex_color

    ws = make_workspace(app_root, size=96)
    before = ws.labels()
    at = run("pages/1_Label.py")
    (key,) = at.session_state["label_canvases"]
    real = Workspace.edit_labels

    def read_only(self, fn):
        raise PermissionError(13, "Permission denied", str(self.path / ".labels.tif.x1y2.part"))

    monkeypatch.setattr(Workspace, "edit_labels", read_only)
    road = hex_color(brush_colors(DEMO_CLASSES)[2])
    stroke = {"type": "Path", "stroke": road, "strokeWidth": 6, "path": [["M", 5, 500], ["Q", 100, 500, 300, 500]]}
    at.session_state[key] = {"drawing": {"raw": {"objects": [stroke]}, "data": None}, "backgroundFit": None}
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    said = " ".join(w.value for w in at.warning)
    assert "1 stroke(s) not saved yet: the workspace is read-only" in said and "kept in this page" in said
    assert str(app_root) not in said and ".part" not in said
    assert np.array_equal(ws.labels(), before)
    monkeypatch.setattr(Workspace, "edit_labels", real)  # writable again: the kept stroke is saved
    at.run()
    assert not at.warning and (ws.labels() != before).any()


def test_a_bad_model_upload_names_the_upload_not_a_temp_folder(app_root):
    make_workspace(app_root, size=48)
    config = (PRETRAINED / "coarse_1m" / "config.json").read_bytes()
    at = run("pages/0_Tile.py")
    files = [("config.json", config, "application/json"), ("model.safetensors", b"junk", "application/octet-stream")]
    at.file_uploader(key="coarse_model").set_value(files).run()
    at.button(key="use_coarse_model").click().run()
    said = " ".join(e.value for e in at.error)
    assert not at.exception and "model.safetensors" in said, said
    assert "tmp" not in said and str(app_root) not in said, said


def test_a_bad_geojson_upload_names_the_upload_not_a_temp_file():
    from refiner.data.masks import read_mask

    tile = make_scene(48, seed=1).tile()
    with pytest.raises(ValueError) as exc:
        read_mask(b'{"type": "FeatureCollection", "features": []}', "roads.geojson", tile, DEMO_CLASSES)
    assert "roads.geojson" in str(exc.value) and "tmp" not in str(exc.value), exc.value


def test_the_test_browser_key_is_one_the_server_issued():
    """Guard for this suite: the page tests' session is a signed one, as a real browser's is."""
    assert sessions.session_known(TOKEN)
