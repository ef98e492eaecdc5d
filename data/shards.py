"""The shard format (img2dataset layout) and its two sides: writing shards and reading them back.

A shard `shard-000000.tar` holds samples as consecutive tar members sharing a key:
`KEY.jpg|png|webp` (the image), `KEY.txt` (UTF-8, one caption per line) and `KEY.json`
(metadata, at least {"key", "caption"}). Keys are zero-padded and unique across a dataset's shards.
Writing is reproducible (fixed member mtimes, owners and modes: the same samples give the same
bytes) and atomic (a shard appears under its name only once complete). Reading is the one tar reader,
of training and of evaluation's CLIP_benchmark shards: samples in tar order, grouped as webdataset groups them.
"""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Optional

from data.atomic import AtomicFile
from data.errors import DataError, ShardReadError
from data.patterns import PIPE_PREFIX

# A sample with several image members is read as its first in this order, by training and evaluation alike:
# CLIP_benchmark's order (its webdataset `to_tuple(["webp", "png", "jpg", "jpeg"], ...)`), which evaluation
# must follow to see the images that benchmark's published numbers saw.
IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
TAR_BLOCK = 512


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def sample_key(index: int) -> str:
    return f"{index:09d}"


def _tar_member_bytes(size: int) -> int:
    return TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


class ShardWriter:
    """Writes samples into `out_dir/shard-NNNNNN.tar`, starting a new shard when the current one
    holds `max_samples` samples or adding the next sample would pass `max_bytes`.

    A sample is `{extension: bytes}`; members are written in sorted extension order. Use as a
    context manager: leaving it normally closes the last shard, an exception discards it.
    """

    def __init__(self, out_dir: str | os.PathLike, max_samples: int = 1000, max_bytes: Optional[int] = None):
        if max_samples < 1:
            raise DataError(f"max samples per shard must be at least 1, got {max_samples}")
        if max_bytes is not None and max_bytes < 1:
            raise DataError(f"max shard bytes must be positive, got {max_bytes}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.shards: list[Path] = []  # completed shards, in order
        self.samples_written = 0
        self._keys: set[str] = set()
        self._file: Optional[AtomicFile] = None
        self._tar: Optional[tarfile.TarFile] = None
        self._shard_samples = 0
        self._shard_bytes = 0

    def write(self, key: str, sample: dict[str, bytes]) -> None:
        if key in self._keys:
            raise DataError(f"duplicate sample key {key!r} (keys must be unique across shards)")
        if "." in key or "/" in key:
            raise DataError(f"sample key {key!r} must not contain '.' or '/'")
        size = sum(_tar_member_bytes(len(data)) for data in sample.values())
        if self._tar is not None and (
            self._shard_samples >= self.max_samples
            or (self.max_bytes is not None and self._shard_bytes + size > self.max_bytes)
        ):
            self._close_shard()
        if self._tar is None:
            self._open_shard()
        for extension in sorted(sample):
            self._add_member(f"{key}.{extension}", sample[extension])
        self._keys.add(key)
        self._shard_samples += 1
        self._shard_bytes += size
        self.samples_written += 1

    def close(self) -> None:
        if self._tar is not None:
            self._close_shard()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        if self._file is not None:
            self._file.discard()
        # An exception raised while a shard was being opened (a stop signal can land anywhere) may leave its
        # temp file unrecorded in self._file; it is the only one this writer can have made, so find it by name.
        for tmp in self.out_dir.glob(f".{shard_name(len(self.shards))}.*.tmp"):
            tmp.unlink(missing_ok=True)

    def _open_shard(self) -> None:
        self._file = AtomicFile(self.out_dir / shard_name(len(self.shards)))
        self._tar = tarfile.open(fileobj=self._file.file, mode="w", format=tarfile.USTAR_FORMAT)
        self._shard_samples = 0
        self._shard_bytes = 0

    def _add_member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        assert self._tar is not None
        self._tar.addfile(info, io.BytesIO(data))

    def _close_shard(self) -> None:
        assert self._tar is not None and self._file is not None
        self._tar.close()
        self._file.commit()
        self.shards.append(self._file.path)
        self._tar = self._file = None


@dataclass
class RawSample:
    key: str
    shard: str  # the path or `pipe:` command it was read from
    members: dict[str, bytes]  # lower-cased extension (after the key's first dot) -> bytes


def find_image(members: dict[str, bytes]) -> Optional[tuple[str, bytes]]:
    """(extension, bytes) of a sample's image member, the first of IMAGE_EXTENSIONS it has."""
    for extension in IMAGE_EXTENSIONS:
        if extension in members:
            return extension, members[extension]
    return None


def split_member_name(name: str) -> Optional[tuple[str, str]]:
    """`dir/000000012.seg.JPG` -> (`dir/000000012`, `seg.jpg`): the key ends at the base name's first dot, as
    webdataset splits it. None for a member of no sample, whose base name has no dot or starts with one:
    webdataset skips these, e.g. the `._KEY.jpg` resource forks a macOS tar writes before each member."""
    directory, slash, basename = name.rpartition("/")
    stem, dot, extension = basename.partition(".")
    if not stem or not dot:
        return None
    return directory + slash + stem, extension.lower()


class _PipeStream:
    """stdout of a `pipe:` command; a non-zero exit after a complete read is a read error."""

    def __init__(self, command: str):
        self.command = command
        self.process = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE)
        self.stdout: IO[bytes] = self.process.stdout  # type: ignore[assignment]

    def __enter__(self) -> IO[bytes]:
        return self.stdout

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            while self.stdout.read(1 << 16):  # the tar reader stops at the end marker; let the command finish
                pass
        else:
            self.process.kill()
        self.stdout.close()
        status = self.process.wait()
        if exc_type is None and status != 0:
            raise OSError(f"command {self.command!r} exited with status {status}")


def _open(url: str) -> _PipeStream | IO[bytes]:
    return _PipeStream(url[len(PIPE_PREFIX):]) if url.startswith(PIPE_PREFIX) else open(url, "rb")


def read_shard(url: str | os.PathLike) -> Iterator[RawSample]:
    """Samples of one shard (a path, or `pipe:CMD` reading CMD's stdout; plain or compressed tar) in tar order.

    Raises ShardReadError when the shard is missing, not a tar, truncated or its command fails, after
    yielding the samples before the damage (all but the one being read; when the cut falls between
    members, the last sample may have lost members, so it is not yielded).
    """
    url = str(url)
    current: Optional[RawSample] = None
    try:
        with _open(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                key_and_extension = split_member_name(member.name) if member.isfile() else None
                if key_and_extension is None:
                    continue
                key, extension = key_and_extension
                if current is not None and current.key != key:
                    yield current
                    current = None
                if current is None:
                    current = RawSample(key, url, {})
                current.members[extension] = tar.extractfile(member).read()  # type: ignore[union-attr]
            # A tar cut at a member boundary reads like a complete one, except that it lacks the
            # end-of-archive marker (two zero blocks) after the last member. The reader has consumed
            # the first block after the last member (or what there was of it); read the second.
            end_marker = tar.fileobj.tell() - tar.offset + len(tar.fileobj.read(TAR_BLOCK))
            if end_marker < 2 * TAR_BLOCK:
                raise tarfile.ReadError("it ends without the end-of-archive marker")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardReadError(f"shard {url} is truncated or unreadable: {type(e).__name__}: {e}") from None
    if current is not None:
        yield current


def shard_keys(path: str | os.PathLike) -> list[str]:
    """The keys read_shard would yield for a shard file, in order, from the member headers alone: the reader
    seeks past each member's data instead of reading it."""
    keys: list[str] = []
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                key_and_extension = split_member_name(member.name) if member.isfile() else None
                if key_and_extension is not None and (not keys or keys[-1] != key_and_extension[0]):
                    keys.append(key_and_extension[0])
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardReadError(f"shard {path} is truncated or unreadable: {type(e).__name__}: {e}") from None
    return keys
