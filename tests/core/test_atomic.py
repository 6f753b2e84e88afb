"""Files and folders written whole or not at all: failures leave the previous version and no debris."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from refiner.core.atomic import atomic_dir, atomic_file, atomic_write_bytes, check_writable, sweep


def _full_disk(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_file_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_bytes(path, b"old")
    with pytest.raises(OSError, match="No space"), atomic_file(path) as tmp:
        tmp.write_bytes(b"half")
        _full_disk()
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.json"]


def test_a_failed_folder_write_keeps_the_old_folder_and_leaves_nothing(tmp_path):
    path = tmp_path / "model"
    with atomic_dir(path) as tmp:
        (tmp / "w").write_text("v1")
        (tmp / "extra").write_text("v1 only")
    with pytest.raises(OSError, match="No space"), atomic_dir(path) as tmp:
        (tmp / "w").write_text("v2")
        _full_disk()
    assert sorted(os.listdir(path)) == ["extra", "w"] and (path / "w").read_text() == "v1"
    assert os.listdir(tmp_path) == ["model"]
    with atomic_dir(path) as tmp:  # a success replaces the folder whole: no stale file from v1
        (tmp / "w").write_text("v3")
    assert os.listdir(path) == ["w"] and os.listdir(tmp_path) == ["model"]


def test_temporaries_of_a_killed_writer_are_swept_and_a_moved_aside_folder_restored(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    (tmp_path / f".labels.tif.{pid}.abc.part").write_bytes(b"")
    (tmp_path / f".labels.tif.{os.getpid()}.mine.part").write_bytes(b"")  # a live writer's: kept
    old = tmp_path / f".model.{pid}.xyz.old"
    (old / "m").mkdir(parents=True)
    (old / "m" / "config.json").write_text("{}")  # killed between moving v1 aside and v2 in
    sweep(tmp_path / "labels.tif")
    sweep(tmp_path / "model")
    assert sorted(os.listdir(tmp_path)) == [f".labels.tif.{os.getpid()}.mine.part", "model"]
    assert (tmp_path / "model" / "config.json").is_file()


def test_check_writable_tries_the_nearest_existing_folder(tmp_path):
    check_writable(tmp_path / "new" / "deeper" / "out.tif")  # folders to be made: fine
    assert os.listdir(tmp_path) == []  # and nothing made by the check
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_writable(tmp_path / "f" / "out.tif")


def test_records_read_back_ignore_keys_of_other_versions():
    """One behaviour for every record read back (job status, model history, CRF settings): a key with
    no field is dropped; ``unknown_keys`` is what callers that read typed input refuse."""
    from dataclasses import dataclass, field

    from refiner.core.atomic import from_known_fields, unknown_keys

    @dataclass
    class Record:
        name: str
        steps: int = 0
        tags: list[str] = field(default_factory=list)

    newer = {"name": "rnn", "steps": 3, "added_later": True, "zzz": 1}
    assert from_known_fields(Record, newer) == Record("rnn", 3)
    assert unknown_keys(Record, newer) == ["added_later", "zzz"]
    assert unknown_keys(Record, {"name": "x"}) == []
    with pytest.raises(TypeError, match="name"):
        from_known_fields(Record, {"steps": 1})  # a missing required field is still an error
