"""Atomic writes: readers see the old file (or no folder) or the complete new one, never a partial one."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Iterator


class AtomicFile:
    """A binary file written under a hidden temp name beside `path`, fsynced and renamed on commit.

    As a context manager it commits on success and discards the temp file on an exception.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.tmp_path = Path(tmp_name)
        self.file = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.tmp_path, 0o644)  # mkstemp creates 0600; what we write is meant to be read by others
        os.replace(self.tmp_path, self.path)
        fsync_directory(self.path.parent)  # the rename itself survives a crash only once the directory is on disk

    def discard(self) -> None:
        self.file.close()
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:  # a full disk at fsync, a refused rename: no temp file is left behind either
            self.discard()
            raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with AtomicFile(path) as out:
        out.file.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def is_free_folder(path: str | os.PathLike) -> bool:
    """Whether a folder may be written at `path`: nothing is there, or an empty folder."""
    path = Path(path)
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A folder that appears complete or not at all: the block writes into a hidden staging folder beside `path`
    (yielded), renamed to `path` when it ends without an exception, removed when it raises (or is stopped: a
    SIGTERM turned into an exception). `path` must not exist, or be an empty folder. A staging folder a killed
    process left (kill -9) is removed by the next writer of the same `path`."""
    path = Path(path)
    if not is_free_folder(path):
        raise FileExistsError(f"{path} exists and is not an empty folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = path.parent / f".{path.name}.staging-{os.getpid()}"
    try:
        staging.mkdir()
        yield staging
        _fsync_tree(staging)
        if path.exists():
            path.rmdir()  # empty (checked above): the rename needs the name free
        os.replace(staging, path)
        fsync_directory(path.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(Path(folder))


def fsync_directory(folder: Path) -> None:
    """A rename or a new entry in `folder` survives a crash only once the folder itself is on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
