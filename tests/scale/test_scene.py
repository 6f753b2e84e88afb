"""Scenes by windows: the stitched files equal whole-image inference, borders included."""

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS

from refiner.core.classes import ClassSpec
from refiner.data.read import read_image
from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.inference import EDGE_PAD, mirror_edges, predict_coarse
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle, load_model, save_model
from refiner.scale.scene import predict_scene, refine_scene
from tests.helpers import coarse_probs_from_labels

CLASSES = ClassSpec.parse("background,building,road", "0,1,2")
H, W = 157, 203  # odd sizes: edge windows are partial
GEO = {"crs": CRS.from_epsg(32619), "transform": Affine(1.0, 0, 300000.0, 0, -1.0, 4700000.0)}


@pytest.fixture(scope="module")
def files(tmp_path_factory, scene):
    d = tmp_path_factory.mktemp("scene")
    img = (np.clip(scene.image[:, :H, :W], 0, 1) * 255).astype(np.uint8)
    img = np.pad(img, ((0, 0), (0, max(0, H - img.shape[1])), (0, max(0, W - img.shape[2]))), mode="reflect")
    img[:, :9, -12:] = 0  # a nodata corner
    with rasterio.open(
        d / "image.tif", "w", driver="GTiff", height=H, width=W, count=3, dtype="uint8", nodata=0, **GEO
    ) as ds:
        ds.write(img)
    labels = np.pad(scene.truth, ((0, max(0, H - scene.truth.shape[0])), (0, max(0, W - scene.truth.shape[1]))))
    probs = coarse_probs_from_labels(labels[:H, :W], 3)
    with rasterio.open(d / "probs.tif", "w", driver="GTiff", height=H, width=W, count=3, dtype="float32", **GEO) as ds:
        ds.write(probs)
    torch.manual_seed(3)
    rnn = RefinerRNN(RNNConfig(3, iterations=3))
    with torch.no_grad():
        for p in rnn.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model(ModelBundle("rnn", rnn.eval(), CLASSES, resolution=1.0), d / "rnn")
    coarse = CoarseCNN(CoarseConfig(3)).eval()
    save_model(ModelBundle("coarse", coarse, CLASSES, resolution=1.0), d / "coarse")
    return {"dir": d, "image": img, "probs": probs, "rnn": rnn.eval(), "coarse": coarse}


def _normalised(files):
    x = torch.from_numpy(files["image"].astype(np.float32) / 255)[None]
    x[:, :, ~(files["image"] > 0).all(0)] = 0
    return (x - 0.5) / 0.25


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.crs, ds.transform, ds.profile


def test_refine_scene_by_windows_equals_whole_image_reference(files, tmp_path):
    out, pout, iters = tmp_path / "map.tif", tmp_path / "p.tif", tmp_path / "it.tif"
    refine_scene(
        files["dir"] / "rnn", files["dir"] / "image.tif", files["dir"] / "probs.tif", out,
        probs_out=pout, iterations_out=iters, window=64,
    )  # fmt: skip
    with torch.no_grad():
        ref = files["rnn"](_normalised(files), torch.from_numpy(files["probs"])[None], reference=True)
    ref_probs = [torch.softmax(u, 1)[0].numpy() for u in ref]
    stack, crs, transform, profile = _read(iters)
    assert stack.shape == (3 * 4, H, W) and crs == GEO["crs"] and transform == GEO["transform"]
    assert profile["tiled"] and profile["compress"] == "deflate"
    np.testing.assert_allclose(stack, np.concatenate(ref_probs), atol=2e-5)
    final, *_ = _read(pout)
    np.testing.assert_allclose(final, ref_probs[-1], atol=2e-5)
    cls, *_ = _read(out)
    cls = cls[0]
    valid = (files["image"] > 0).all(0)
    assert (cls[~valid] == 255).all()
    top2 = np.sort(ref_probs[-1], 0)[-2:]
    clear = valid & (top2[1] - top2[0] > 1e-4)
    assert (cls[clear] == ref_probs[-1].argmax(0)[clear]).all()


def test_refine_scene_window_size_does_not_change_the_result(files, tmp_path):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    args = (files["dir"] / "rnn", files["dir"] / "image.tif", files["dir"] / "probs.tif")
    refine_scene(*args, a, probs_out=tmp_path / "pa.tif", window=48)
    refine_scene(*args, b, probs_out=tmp_path / "pb.tif", window=512)
    np.testing.assert_allclose(_read(tmp_path / "pa.tif")[0], _read(tmp_path / "pb.tif")[0], atol=2e-5)


def test_predict_scene_by_windows_equals_whole_image(files, tmp_path):
    out = tmp_path / "coarse.tif"
    predict_scene(files["dir"] / "coarse", files["dir"] / "image.tif", out, window=64)
    with torch.no_grad():
        x = torch.from_numpy(files["image"].astype(np.float32) / 255)[None]
        x[:, :, ~(files["image"] > 0).all(0)] = 0
        padded, core = mirror_edges(x[0].numpy(), EDGE_PAD)  # as predict_coarse does for the whole image
        ref = torch.softmax(files["coarse"]((torch.from_numpy(padded)[None] - 0.5) / 0.25), 1)[0].numpy()
        ref = ref[(slice(None), *core)]
    got, crs, transform, _ = _read(out)
    assert crs == GEO["crs"] and transform == GEO["transform"]
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_predict_scene_with_tta_equals_whole_image_tta(files, tmp_path):
    """Each window averages its own 8 turns and flips; stitched, that is the whole image's average."""
    out = tmp_path / "tta.tif"
    predict_scene(files["dir"] / "coarse", files["dir"] / "image.tif", out, window=64, tta=True)
    bundle = load_model(files["dir"] / "coarse", expect="coarse")
    whole = predict_coarse(bundle, read_image(files["dir"] / "image.tif"), device="cpu", window=4096, tta=True)
    got, *_ = _read(out)
    np.testing.assert_allclose(got, whole, atol=2e-5)
    plain = predict_coarse(bundle, read_image(files["dir"] / "image.tif"), device="cpu", window=4096)
    assert np.abs(got - plain).max() > 1e-3


def test_refine_scene_checks_its_inputs(files, tmp_path):
    other = ClassSpec.parse("background,road", "0,1")
    bad = tmp_path / "probs2.tif"
    with rasterio.open(bad, "w", driver="GTiff", height=H, width=W, count=2, dtype="float32", **GEO) as ds:
        ds.write(np.full((2, H, W), 0.5, np.float32))
        ds.update_tags(refiner_classes=__import__("json").dumps(other.to_dict()))
    with pytest.raises(ValueError, match="classes"):
        refine_scene(files["dir"] / "rnn", files["dir"] / "image.tif", bad, tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists()


def at_pixel_size(files, folder, pixel: float):
    """The scene's image and probabilities relabelled as ``pixel`` m/px (the models work at 1 m)."""
    transform = Affine(pixel, 0, 300000.0, 0, -pixel, 4700000.0)
    paths = folder / "image.tif", folder / "probs.tif"
    for name, path in zip(("image.tif", "probs.tif"), paths, strict=True):
        with (
            rasterio.open(files["dir"] / name) as src,
            rasterio.open(path, "w", **(src.profile | {"transform": transform})) as dst,
        ):
            dst.write(src.read())
            dst.update_tags(**src.tags())
    return paths


@pytest.mark.parametrize("pixel", [0.5, 2.0])  # a coarser working grid (area average) and a finer one
def test_scenes_at_another_resolution_stream_and_equal_whole_tile_inference(files, tmp_path, monkeypatch, pixel):
    """Windows on the working grid, then windows back on the scene grid: the whole-tile path's result."""
    import refiner.scale.scene
    from refiner.data.read import read_image
    from refiner.models.inference import predict_coarse, refine
    from refiner.models.store import load_model

    monkeypatch.setattr(refiner.scale.scene, "REGRID_WINDOW", 50)  # several windows on the way back too
    image, probs = at_pixel_size(files, tmp_path, pixel)
    tile = read_image(image)
    rnn, coarse = load_model(files["dir"] / "rnn"), load_model(files["dir"] / "coarse")

    predict_scene(files["dir"] / "coarse", image, tmp_path / "c.tif", window=32)
    np.testing.assert_allclose(_read(tmp_path / "c.tif")[0], predict_coarse(coarse, tile), atol=2e-5)

    out, pout, iters = tmp_path / "map.tif", tmp_path / "p.tif", tmp_path / "it.tif"
    seen = []
    refine_scene(
        files["dir"] / "rnn", image, probs, out, probs_out=pout, iterations_out=iters, window=24,
        progress=lambda d, n: seen.append((d, n)),
    )  # fmt: skip
    ref = refine(rnn, tile, files["probs"], keep_all=True)
    cls_map = ref.class_map()
    cls_map[~tile.valid] = 255
    got, crs, transform, _ = _read(out)
    assert crs == GEO["crs"] and transform == Affine(pixel, 0, 300000.0, 0, -pixel, 4700000.0)
    np.testing.assert_array_equal(got[0], CLASSES.decode(cls_map))
    np.testing.assert_allclose(_read(pout)[0], ref.final, atol=2e-5)
    np.testing.assert_allclose(_read(iters)[0], np.concatenate(ref.probs), atol=2e-5)
    assert seen == [(d, seen[-1][1]) for d in range(1, seen[-1][1] + 1)] and len(seen) > 2  # one count, both passes
    left = sorted(p.name for p in tmp_path.iterdir())  # the working-grid files are gone
    assert left == ["c.tif", "image.tif", "it.tif", "map.tif", "p.tif", "probs.tif"]


def test_a_failing_resampled_scene_run_leaves_no_outputs_and_no_working_files(files, tmp_path, monkeypatch):
    """Bad input is refused before any work; a failure in the second pass removes every output."""
    import refiner.scale.scene

    image, probs = at_pixel_size(files, tmp_path, 0.5)
    out = tmp_path / "out"
    small = tmp_path / "probs_small.tif"
    with rasterio.open(small, "w", driver="GTiff", height=40, width=50, count=3, dtype="float32", **GEO) as ds:
        ds.write(np.full((3, 40, 50), 1 / 3, np.float32))
    with pytest.raises(ValueError, match="differ in size"):  # probabilities for another grid
        refine_scene(files["dir"] / "rnn", image, small, out / "map.tif")
    calls = []

    def broken(*args):
        calls.append(1)
        raise OSError("disk full")

    monkeypatch.setattr(refiner.scale.scene, "probs_back_on", broken)
    with pytest.raises(OSError, match="disk full"):
        refine_scene(files["dir"] / "rnn", image, probs, out / "map.tif", probs_out=out / "p.tif", window=32)
    assert calls and not list(out.iterdir())  # no map, no probabilities, no .part, no working folder
