"""Atomic file writes: the one way this project replaces a file.

A kill at any moment must leave either the old file or the new one, never a half-written one: every
writer (downloads, HDF5 datasets, checkpoints, ``results.json``) writes a temporary file in the target's
directory, flushes it to disk and renames it into place (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(path: str | Path, tag: str = "tmp") -> Path:
    """The hidden temporary name ``.NAME.PID.TAG`` beside ``path`` (pid: concurrent writers never collide)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{tag}")


@contextmanager
def atomic_path(path: str | Path, tag: str = "tmp") -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync it and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is untouched. A block that wrote nothing
    (e.g. a non-zero DDP rank whose checkpoint rank 0 writes) changes nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, tag)
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) atomically."""
    write_bytes_atomic(path, text.encode())


def remove_stale_temps(path: str | Path) -> None:
    """Delete temporary files of ``path`` left by a writer that was killed mid-write."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.*"):
        stale.unlink(missing_ok=True)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk_size`` chunks (constant memory for any size)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_state(path: str | Path) -> tuple[str, int, int, int, int]:
    """(resolved path, size, mtime_ns, inode, ctime_ns): changes whenever the file is written or replaced.

    Replacing a file (a rename into place, a copy that keeps the old mtime) changes its inode or ctime, so
    two equal states bracket a read that saw one unchanged file.
    """
    path = Path(path).resolve()
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns


def read_yaml(path: str | Path) -> object:
    """Parse a YAML file; a syntax error is one ``ConfigError`` line naming the file, line and column."""
    import yaml

    from mopo_lightning.guards import ConfigError

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
