"""Atomic file writes: readers see the old file or the complete new one, never a partial file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType


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
        directory = os.open(self.path.parent, os.O_RDONLY)  # the rename itself survives a crash only once
        try:                                                # the directory is on disk too
            os.fsync(directory)
        finally:
            os.close(directory)

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
