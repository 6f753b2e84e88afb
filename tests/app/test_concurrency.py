"""Two writers at once on one workspace: both strokes survive, no writer trips on another's temp file."""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path

import numpy as np
import rasterio

from refiner.app.workspace import Workspace
from refiner.core.classes import IGNORE
from refiner.data.synthetic import DEMO_CLASSES, make_scene
from refiner.data.write import write_raster

SIZE, STROKES = 32, 6


def make_ws(root: Path) -> Workspace:
    ws = Workspace.create(root, "w", make_scene(SIZE, seed=2).tile(), DEMO_CLASSES, source={"kind": "test"})
    ws.write_labels(np.full((SIZE, SIZE), IGNORE, np.uint8), undo=False)
    return ws


def paint(root: str, writer: int) -> None:
    """Writer ``writer`` paints its own rows, one stroke (one read-modify-write) per row."""
    ws = Workspace.open(Path(root), "w")
    for i in range(STROKES):
        row = writer * STROKES + i

        def stroke(labels: np.ndarray, row: int = row) -> np.ndarray:
            out = labels.copy()
            out[row] = 1 + writer % 2
            return out

        ws.edit_labels(stroke)


def expected_rows(writers: int) -> dict[int, int]:
    return {w * STROKES + i: 1 + w % 2 for w in range(writers) for i in range(STROKES)}


def check_all_strokes(ws: Workspace, writers: int) -> None:
    labels = ws.labels()
    for row, value in expected_rows(writers).items():
        assert (labels[row] == value).all(), f"stroke on row {row} was lost"


def test_two_threads_painting_at_once_keep_both_strokes(tmp_path):
    ws = make_ws(tmp_path)
    threads = [threading.Thread(target=paint, args=(str(tmp_path), w)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check_all_strokes(ws, 2)


def test_two_processes_painting_at_once_keep_both_strokes(tmp_path):
    ws = make_ws(tmp_path)
    ctx = mp.get_context("spawn")  # a second server process: no shared memory, only the file lock
    procs = [ctx.Process(target=paint, args=(str(tmp_path), w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    check_all_strokes(ws, 2)
    assert not list(ws.path.glob("*.part")) and not list(ws.path.glob("*.tmp"))  # no debris


def test_concurrent_cache_and_raster_writes_use_their_own_temp_files(tmp_path):
    ws = make_ws(tmp_path)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for _ in range(5):
                ws.save_result("refinement", f"s{k}", probs=np.full((4, 4), k, np.float32))
                write_raster(tmp_path / "same.tif", np.full((8, 8), k, np.uint8), None)
        except BaseException as exc:  # any writer tripping on another's temp file fails the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    stamp = next(f"s{k}" for k in range(4) if ws.load_result("refinement", f"s{k}") is not None)
    assert ws.load_result("refinement", stamp)["probs"][0, 0] == int(stamp[1])  # a whole file, not a mix
    with rasterio.open(tmp_path / "same.tif") as ds:
        arr = ds.read(1)
    assert len(np.unique(arr)) == 1
    assert not [p.name for p in ws.results_dir().iterdir() if not p.name.endswith(".npz")]
    assert sorted(p.name for p in tmp_path.glob("same.tif*")) == ["same.tif"]
