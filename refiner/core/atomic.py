"""Writing files and folders whole or not at all.

Every writer goes through a temporary name unique to it, in the same folder as the final one
(same file system, so the rename is atomic), flushes it to disk and renames it into place. A
crash, a ``kill -9`` or a full disk therefore never leaves half a file or half a model folder
under the final name; a failed write removes its temporary (no ``.part`` or 0-byte files), and
what was there before stays as it was. Unique names let several writers (two browser sessions)
write the same file at once: the last rename wins, and no one renames another's half-written
file away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    D = TypeVar("D", bound=DataclassInstance)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(path: str | Path) -> None:
    """Remove the temporaries that writers of ``path`` killed mid-write (``kill -9``) left beside it.

    Temporary names carry their writer's process id; only those of processes that no longer run
    are removed, so a writer busy in another process is never disturbed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    for p in path.parent.glob(f".{glob.escape(path.name)}.*"):
        pid = p.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if p.name.endswith(".old") and (p / "m").is_dir() and not path.exists():
            os.replace(p / "m", path)  # killed between moving the old folder aside and the new one in
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def temp_beside(path: str | Path, suffix: str = ".tmp") -> Path:
    """A new, empty file with a unique hidden name in ``path``'s folder (created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=_prefix(path), suffix=suffix)
    os.close(fd)
    return Path(name)


def commit(tmp: Path, path: str | Path) -> None:
    """Sync the finished temporary ``tmp`` and rename it to ``path``."""
    _fsync_path(tmp)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are ordinary files
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is synced and renamed to ``path``.

    ``suffix`` ends the temporary name (GDAL picks its driver by it: ``.tif`` for GeoTIFFs).
    """
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path`` to fill; on success it replaces ``path``.

    The files are synced, the previous folder (if any) is moved aside, the new one renamed into
    place and the old one removed: at no moment does ``path`` hold a mix of old and new files.
    On failure the temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_prefix(path), suffix=".tmp"))
    old: Path | None = None
    try:
        yield tmp
        for f in tmp.iterdir():
            if f.is_file():
                _fsync_path(f)
        os.chmod(tmp, 0o755)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=_prefix(path), suffix=".old"))
            os.replace(path, old / "m")
        os.replace(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "m").exists() and not path.exists():
            os.replace(old / "m", path)  # put the previous folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def check_writable(path: str | Path) -> None:
    """Raise ``ValueError`` unless a file or folder can be created as ``path``, before any work.

    Its nearest existing parent must accept a new file: tried, not guessed from permission bits,
    which say nothing for root or on a read-only mount; nothing is left behind.
    """
    parent = Path(path).absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {path}: {parent} is a file, not a folder — give another output path")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".refiner-write-test.")
    except OSError as exc:
        why = f"{exc.strerror} in {parent}"
        raise ValueError(f"cannot write {path}: {why} — give an output path you can write") from exc
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing), for read-modify-write of a workspace.

    ``flock`` locks belong to the open file, so two threads of one server block each other as
    two processes do; the kernel drops the lock if its holder dies (no stale lock files).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, whole or not at all; numpy scalars and paths are allowed."""
    atomic_write_bytes(path, json.dumps(data, indent=2, default=_json_default).encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when the file is missing or not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def unknown_keys(cls: type[DataclassInstance], d: Mapping[str, Any]) -> list[str]:
    """The keys of ``d`` that are no field of the dataclass ``cls``, sorted."""
    return sorted(set(d) - {f.name for f in dataclasses.fields(cls)})


def from_known_fields(cls: type[D], d: Mapping[str, Any]) -> D:
    """The dataclass ``cls`` from a JSON object, its fields taken from ``d`` and any other key ignored.

    One behaviour for every record Refiner reads back (job status files, the model history, the
    CRF parameters in a workspace's settings): a key with no field was written by another version
    (a field added later, or removed since), and refusing it would lock the user out of their own
    workspace after an upgrade. Where a person types the keys (``refiner crf --params``, an
    experiment's options), the caller refuses :func:`unknown_keys` first, so a typo is an error
    there and never a silently kept default.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
