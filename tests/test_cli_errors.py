"""Bad input gets one line ``error: <what> — <what to do>``, exit 2, before any work: numbers, devices,
labels and probabilities that do not fit the image, tampered or disguised model files, outputs."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from refiner import cli
from refiner.cli import main

REPO = Path(__file__).resolve().parents[1]
TC = ["train-coarse", "--images", "a.tif", "--labels", "b.tif", "--classes", "a,b", "--out", "o"]
FT = ["finetune", "--image", "a", "--probs", "p", "--labels", "l", "--out", "o"]


PROGRESS = re.compile(r"^[\w -]+: \d+/\d+ \(\d+ %\), \d+ s$")  # a log line of work done before a failure


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line and not PROGRESS.match(line)]
    assert len(err) == 1 and err[0].startswith("error: ") and " — " in err[0], err
    return err[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([*TC, "--steps", "0"], "--steps 0"),
        ([*TC, "--steps", "-3"], "--steps -3"),
        ([*TC, "--batch-size", "0"], "--batch-size"),
        ([*FT, "--holdout", "1.5"], "--holdout"),
        ([*FT, "--patch-size", "0"], "--patch-size"),
        ([*FT, "--device", "bogus"], "bogus"),
        ([*FT, "--lr", "0"], "--lr 0.0"),
        ([*FT, "--distill", "-1"], "--distill -1.0"),
        ([*FT, "--resolution", "-1"], "--resolution -1.0"),
        ([*FT, "--max-seconds", "-1"], "--max-seconds -1.0"),
        ([*TC, "--degrade-drop", "2"], "--degrade-drop 2.0"),
        (["demo-data", "--out", "x", "--size", "0"], "--size 0"),
    ],
)
def test_out_of_range_options_are_refused_before_any_work(argv, needle, capsys, monkeypatch):
    for name in [n for n in vars(cli) if n.startswith("cmd_")]:  # every subcommand's work, not one
        monkeypatch.setattr(cli, name, lambda a, name=name: pytest.fail(f"{name} started"))
    assert main(argv) == 2
    assert needle in one_error_line(capsys)


def test_cuda_on_a_machine_without_it(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["finetune", "--image", "a", "--probs", "p", "--labels", "l", "--out", "o", "--device", "cuda"]
    assert main(argv) == 2
    assert "no CUDA GPU" in one_error_line(capsys)


def test_an_unexpected_error_is_one_line_and_a_traceback_with_debug(capsys, monkeypatch, tmp_path):
    def boom(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "check_args", lambda a: boom(a))
    assert main(["demo-data", "--out", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert "ZeroDivisionError" in line and "run again with --debug" in line
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "demo-data", "--out", str(tmp_path)])


# --------------------------------------------------------------------------- bad files, in one line

CLASSES3 = ["--classes", "background,building,road", "--values", "0,1,2"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Demo scenes, untrained models saved as the CLI saves them, and the coarse probabilities."""
    import torch

    from refiner.core.classes import ClassSpec
    from refiner.models.coarse import CoarseCNN, CoarseConfig
    from refiner.models.rnn import RefinerRNN, RNNConfig
    from refiner.models.store import ModelBundle, save_model
    from refiner.recipes.demo import write_demo_data

    d = tmp_path_factory.mktemp("chain")
    write_demo_data(d, size=64, seed=0)
    torch.manual_seed(0)
    classes = ClassSpec(("background", "building", "road"))
    save_model(ModelBundle("coarse", CoarseCNN(CoarseConfig(3)).eval(), classes, 1.0), d / "coarse")
    save_model(ModelBundle("rnn", RefinerRNN(RNNConfig(3, iterations=2)).eval(), classes, 1.0), d / "rnn")
    argv = ["predict", "--model", str(d / "coarse"), "--image", str(d / "enhance.tif"), "--out", str(d / "p.tif")]
    assert main(argv) == 0
    return d


def _ft(chain, out, *extra, probs=None, labels=None, image=None):
    return main(["finetune", "--image", str(image or chain / "enhance.tif"), "--probs", str(probs or chain / "p.tif"),
                 "--labels", str(labels or chain / "enhance_truth.tif"), "--out", str(out), "--values", "0,1,2",
                 "--steps", "2", "--batch-size", "2", "--patch-size", "16", *extra])  # fmt: skip


def _refine(chain, out, *extra, model=None, probs=None, image=None):
    return main(["refine", "--model", str(model or chain / "rnn"), "--image", str(image or chain / "enhance.tif"),
                 "--probs", str(probs or chain / "p.tif"), "--out", str(out), *extra])  # fmt: skip


def no_work(monkeypatch):
    """Make any training or inference fail the test: the check must come before the work."""
    import refiner.scale.scene
    import refiner.train.coarse
    import refiner.train.rnn

    def fail(*a, **k):
        pytest.fail("work started before the input was checked")

    targets = [(refiner.train.rnn, "train_rnn"), (refiner.train.coarse, "train_coarse"),
               (refiner.scale.scene, "_run_scene")]  # fmt: skip
    for mod, name in targets:
        monkeypatch.setattr(mod, name, fail)


def _geojson(path, coords, crs=None, features=True):
    import json

    feats = [{"type": "Feature", "properties": {"class": "road"},
              "geometry": {"type": "LineString", "coordinates": coords}}] if features else []  # fmt: skip
    data = {"type": "FeatureCollection", "features": feats}
    if crs:
        data["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("coords", "crs", "features", "needle"),
    [
        ([[500, 100], [600, 120]], None, True, "outside EPSG:4326's range"),  # metres given as lon/lat
        ([[1e7, 1e7], [2e7, 1e7]], "EPSG:32619", True, "outside the range of its CRS EPSG:32619"),
        ([[100000, 100000], [100100, 100000]], "EPSG:32614", True, "lies on the image"),  # right CRS, elsewhere
        ([], None, False, "has no polygon or line features"),  # an empty FeatureCollection
    ],
)
def test_geojson_labels_that_cannot_be_placed_are_refused(chain, tmp_path, capsys, monkeypatch, coords, crs, features,
                                                          needle):  # fmt: skip
    path = _geojson(tmp_path / "labels.geojson", coords, crs, features)
    no_work(monkeypatch)
    assert _ft(chain, tmp_path / "m", labels=path) == 2
    line = one_error_line(capsys)
    assert needle in line and "labels.geojson" in line
    assert not (tmp_path / "m").exists()


def _pickle_bomb(path, marker):
    """A pickle that creates ``marker`` if anything ever unpickles it."""
    import pickle

    class Bomb:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps(Bomb()))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_a_pickle_named_model_safetensors_is_refused_and_never_unpickled(chain, tmp_path, capsys, how):
    import shutil

    import torch

    model, marker = tmp_path / "model", tmp_path / "unpickled"
    shutil.copytree(chain / "rnn", model)
    if how == "pickle":
        _pickle_bomb(model / "model.safetensors", marker)
    else:
        torch.save({"w": torch.zeros(2)}, model / "model.safetensors")
    assert _refine(chain, tmp_path / "o.tif", model=model) == 2
    line = one_error_line(capsys)
    assert "model.safetensors is not a safetensors file" in line and "never loads pickles" in line
    assert not marker.exists() and not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize(
    ("tamper", "needle"),
    [
        (lambda c: c["architecture"].update(hidden=16), "do not match: blocks.0.hidden.weight is (96, 64, 1, 1)"),
        (lambda c: c["architecture"].update(bogus=1), "unknown architecture key(s) ['bogus']"),
        (None, "config.json is not valid JSON"),
        (lambda c: c.pop("classes"), "lacks ['classes']"),
    ],
)
def test_a_tampered_config_json_is_named_with_what_to_do(chain, tmp_path, capsys, tamper, needle):
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(chain / "rnn", model)
    cfg = json.loads((model / "config.json").read_text())
    if tamper is None:
        (model / "config.json").write_text(json.dumps(cfg)[:-9])
    else:
        tamper(cfg)
        (model / "config.json").write_text(json.dumps(cfg))
    assert _refine(chain, tmp_path / "o.tif", model=model) == 2
    line = one_error_line(capsys)
    assert needle in line and str(model) in line and "train the model again" in line


def _moved_copy(src, dst, *, crs=None, shift=(0, 0)):
    import rasterio
    from affine import Affine

    with rasterio.open(src) as ds:
        profile, data, tags = ds.profile, ds.read(), ds.tags()
    profile.update(crs=crs or profile["crs"], transform=profile["transform"] * Affine.translation(*shift))
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        out.update_tags(**tags)
    return dst


@pytest.mark.parametrize(("crs", "shift", "needle"), [("EPSG:32619", (0, 0), "is in EPSG:32619 but enhance.tif is in"),
                                                       (None, (40, 0), "is not where enhance.tif is")])  # fmt: skip
def test_probabilities_of_the_right_size_in_another_crs_or_place_are_refused(chain, tmp_path, capsys, monkeypatch,
                                                                             crs, shift, needle):  # fmt: skip
    probs = _moved_copy(chain / "p.tif", tmp_path / "p2.tif", crs=crs, shift=shift)
    no_work(monkeypatch)
    runs = {
        "finetune": lambda: _ft(chain, tmp_path / "m", probs=probs),
        "refine": lambda: _refine(chain, tmp_path / "o.tif", probs=probs),
        "crf": lambda: main(
            ["crf", "--image", str(chain / "enhance.tif"), "--probs", str(probs), "--out", str(tmp_path / "c.tif")]
        ),  # fmt: skip
    }
    for name, run in runs.items():
        assert run() == 2, name
        line = one_error_line(capsys)
        assert needle in line and "p2.tif" in line and "predict" in line, name
    assert not list(tmp_path.glob("[mco]*"))


def test_labels_of_the_right_size_elsewhere_are_refused(chain, tmp_path, capsys, monkeypatch):
    labels = _moved_copy(chain / "enhance_truth.tif", tmp_path / "l.tif", shift=(0, 30))
    no_work(monkeypatch)
    assert _ft(chain, tmp_path / "m", labels=labels) == 2
    line = one_error_line(capsys)
    assert "the label mask l.tif is not where enhance.tif is" in line and "(+0, -30) metre" in line


def test_evaluate_refuses_a_prediction_of_another_place(chain, tmp_path, capsys):
    pred = _moved_copy(chain / "test_truth.tif", tmp_path / "pred.tif", shift=(8, 0))
    assert main(["evaluate", "--pred", str(pred), "--truth", str(chain / "test_truth.tif"), *CLASSES3]) == 2
    assert "the prediction pred.tif is not where the truth test_truth.tif is" in one_error_line(capsys)


def test_float_imagery_in_0_255_is_scaled_with_a_note_not_clipped_to_white(chain, tmp_path, capsys):
    import rasterio

    from refiner.data.read import read_image

    with rasterio.open(chain / "enhance.tif") as ds:
        profile, data = ds.profile, ds.read()
    profile.update(dtype="float32")
    with rasterio.open(tmp_path / "f.tif", "w", **profile) as out:
        out.write(data.astype(np.float32))
    np.testing.assert_allclose(read_image(tmp_path / "f.tif").image, read_image(chain / "enhance.tif").image, atol=1e-6)
    capsys.readouterr()
    assert main(["predict", "--model", str(chain / "coarse"), "--image", str(tmp_path / "f.tif"),
                 "--out", str(tmp_path / "pf.tif")]) == 0  # fmt: skip
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "taken as 0-255 and divided by 255" in notes[0]
    with rasterio.open(tmp_path / "pf.tif") as a, rasterio.open(chain / "p.tif") as b:
        np.testing.assert_allclose(a.read(), b.read(), atol=1e-5)  # the same as the 8-bit original
    with rasterio.open(tmp_path / "f.tif", "r+") as ds:
        ds.write(data.astype(np.float32) * 40)  # up to 10000: neither 0-1 nor 0-255
    assert main(["predict", "--model", str(chain / "coarse"), "--image", str(tmp_path / "f.tif"),
                 "--out", str(tmp_path / "pf2.tif")]) == 2  # fmt: skip
    assert "neither 0-1 nor 0-255" in one_error_line(capsys) and not (tmp_path / "pf2.tif").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["refine", "--iterations", "-1"], "--iterations -1"),
        (["finetune", "--steps", "0"], "--steps 0"),
        (["finetune", "--steps", "-5"], "--steps -5"),
        (["finetune", "--batch-size", "0"], "--batch-size 0"),
        (["finetune", "--checkpoint-every", "-1"], "--checkpoint-every"),
        (["train-coarse", "--batch-size", "0"], "--batch-size 0"),
    ],
)
def test_more_numbers_out_of_range(chain, tmp_path, capsys, monkeypatch, argv, needle):
    no_work(monkeypatch)
    cmd, *opts = argv
    if cmd == "refine":
        code = _refine(chain, tmp_path / "o.tif", *opts)
    elif cmd == "finetune":
        code = main(["finetune", "--image", str(chain / "enhance.tif"), "--probs", str(chain / "p.tif"), "--labels",
                     str(chain / "enhance_truth.tif"), "--out", str(tmp_path / "m"), *opts])  # fmt: skip
    else:
        code = main([*TC, *opts])
    assert code == 2 and needle in one_error_line(capsys)


def test_the_engine_refuses_zero_steps_too():
    from refiner.core.classes import ClassSpec
    from refiner.train.coarse import CoarseTrainConfig, train_coarse
    from refiner.train.rnn import RNNTrainConfig, train_rnn

    im, lab = np.zeros((3, 40, 40), np.float32), np.zeros((40, 40), np.uint8)
    with pytest.raises(ValueError, match="steps 0 is below 1"):
        train_coarse([im], [lab], ClassSpec(("a", "b")), CoarseTrainConfig(steps=0))
    probs = np.full((2, 40, 40), 0.5, np.float32)
    with pytest.raises(ValueError, match="patch size 0 is below 1"):
        train_rnn(im, probs, lab, ClassSpec(("a", "b")), RNNTrainConfig(patch_size=0))
    with pytest.raises(ValueError, match="holdout 1.5"):
        train_rnn(im, probs, lab, ClassSpec(("a", "b")), RNNTrainConfig(holdout=1.5))
    with pytest.raises(ValueError, match="distill -1.0 is negative"):  # it was ignored: no pull at all
        train_rnn(im, probs, lab, ClassSpec(("a", "b")), RNNTrainConfig(distill=-1.0))


def test_bad_json_files_are_named(chain, tmp_path, capsys):
    bad = tmp_path / "params.json"
    bad.write_text("{oops")
    assert main(["crf", "--image", str(chain / "enhance.tif"), "--probs", str(chain / "p.tif"),
                 "--out", str(tmp_path / "c.tif"), "--params", str(bad)]) == 2  # fmt: skip
    line = one_error_line(capsys)
    assert f"{bad} is not valid JSON" in line


# --------------------------------------------------------------------------- outputs, checked first


@pytest.mark.parametrize(
    ("make", "argv", "needle"),
    [
        ("file", "finetune", "is a file, and a model is a folder"),
        ("full_dir", "finetune", "is a folder with other files in it"),
        ("file", "train-coarse", "is a file, and a model is a folder"),
        ("dir", "refine", "is a folder — give a file name"),
        ("input", "refine", "is also the input --probs"),
        ("under_file", "refine", "is a file, not a folder"),
    ],
)
def test_outputs_are_checked_before_any_work(chain, tmp_path, capsys, monkeypatch, make, argv, needle):
    out = tmp_path / "out"
    if make == "file":
        out.write_text("mine")
    elif make in ("dir", "full_dir"):
        out.mkdir()
        if make == "full_dir":
            (out / "notes.txt").write_text("mine")
    elif make == "input":
        out = chain / "p.tif"
    elif make == "under_file":
        (tmp_path / "f").write_text("mine")
        out = tmp_path / "f" / "o.tif"
    no_work(monkeypatch)
    if argv == "finetune":
        code = _ft(chain, out)
    elif argv == "train-coarse":
        code = main(["train-coarse", "--images", str(chain / "coarse.tif"), "--labels", str(chain / "coarse_osm.tif"),
                     *CLASSES3, "--out", str(out)])  # fmt: skip
    else:
        code = _refine(chain, out)
    assert code == 2 and needle in one_error_line(capsys)
    if make in ("file", "full_dir"):  # what was there is untouched
        assert (out if make == "file" else out / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- faults: full disk, kill -9


def _train_coarse(chain, out, seed: int) -> int:
    return main(["train-coarse", "--images", str(chain / "coarse.tif"), "--labels", str(chain / "coarse_osm.tif"),
                 *CLASSES3, "--out", str(out), "--steps", "1", "--batch-size", "1", "--seed", str(seed)])  # fmt: skip


def _full_disk_after_some_bytes(path, *a, **k):
    with open(path, "wb") as f:
        f.write(b"\0" * 100)  # half a file, as a disk filling up leaves it
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_saving_a_model_is_one_line_and_the_previous_model_stays(chain, tmp_path, capsys,
                                                                                    monkeypatch):  # fmt: skip
    import refiner.models.store

    out = tmp_path / "coarse"
    assert _train_coarse(chain, out, seed=1) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    monkeypatch.setattr(refiner.models.store, "save_file", lambda t, path, *a: _full_disk_after_some_bytes(path))
    assert _train_coarse(chain, out, seed=2) == 2
    assert "no space left on the device" in one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous model, whole
    assert os.listdir(tmp_path) == ["coarse"]  # no temporary folder, no .part, no 0-byte file


def test_a_full_disk_while_writing_a_raster_leaves_no_output_and_no_part_file(chain, tmp_path, capsys, monkeypatch):
    from refiner.data.write import RasterWriter

    monkeypatch.setattr(RasterWriter, "write", lambda self, *a, **k: _full_disk())
    assert _refine(chain, tmp_path / "map.tif", "--probs-out", str(tmp_path / "p.tif")) == 2
    assert "no space left on the device" in one_error_line(capsys)
    assert os.listdir(tmp_path) == []


def _full_disk(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.slow
def test_a_training_killed_with_sigkill_leaves_no_model_under_the_final_name(chain, tmp_path, capsys):
    from refiner.models.store import load_model

    out, ck = tmp_path / "rnn", tmp_path / "rnn.checkpoint"
    argv = [sys.executable, "-m", "refiner", "finetune", "--image", str(chain / "enhance.tif"), "--probs",
            str(chain / "p.tif"), "--labels", str(chain / "enhance_truth.tif"), "--out", str(out), *CLASSES3,
            "--steps", "1000000", "--batch-size", "2", "--patch-size", "16", "--checkpoint-every", "2",
            "--eval-seconds", "100000"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(3000):  # a checkpoint has been written (polling, not timing: no assertion on speed)
            if (ck / "config.json").is_file() or proc.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists()  # nothing under the final name
    assert load_model(ck).info["stopped"] == "checkpoint"  # the checkpoint says what it is
    assert _refine(chain, tmp_path / "map.tif", model=out) == 2
    line = one_error_line(capsys)
    assert f"there is no finished model in {out}" in line and f"--resume {ck}" in line
    assert _ft(chain, out, "--resume", str(ck), "--steps", "1", *CLASSES3[:2]) == 0  # continue it to the end
    assert load_model(out).info["stopped"] == "finished" and not ck.exists()
    assert sorted(os.listdir(tmp_path)) == ["rnn"]  # no temporaries left from the killed run
