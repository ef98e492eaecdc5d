"""The samples a command keeps of a pool of shards, repacked into new shards: what `data filter` and `data curate`
write.

    sources = repacker.sources(pool_shards(patterns))    # one SourceShard per shard, in pool order
    for outcome in mapper(select_shard, sources):        # a worker per shard: RunWriter(source).write(...)
        for members in repacker.take_run(outcome.source): # this process, in pool order
            repacker.write(members)

A worker reads one source shard, decides each sample, and writes the samples it keeps, in order, into the shard's
run: a temporary tar in the output's staging folder, so that only small per-sample facts go back through the pipe
and no shard's images sit in memory. This process takes the runs in pool order (ordered_map returns results in
order) and writes their samples into shard-NNNNNN.tar of at most `max_samples` each, keyed 000000000, 000000001,
... in that order. So the output depends on the pool, the decisions and `max_samples`, never on the worker count;
ShardWriter's fixed tar metadata makes it the same bytes. Members keep their bytes, except KEY.json, which is what
the worker wrote (the source's fields and what the command adds) with "key" set to the new key.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from data.atomic import is_free_folder
from data.errors import DataError
from data.patterns import expand_patterns
from data.shards import ShardWriter, read_shard, sample_key
from data.validate import CORRUPT_JSON, BadSample

RUNS = ".runs"  # in the staging folder; removed before it becomes the output
SUMMARY = "summary.json"


def pool_shards(patterns: Sequence[str]) -> list[str]:
    """The shard files of brace/glob patterns or folders, in order. Their file names must differ: the output names
    each sample's source by its shard's file name (a path would tie it to one machine)."""
    shards = expand_patterns(patterns, noun="shard pattern", allow_pipe=False)
    by_name: dict[str, str] = {}
    for shard in shards:
        name = Path(shard).name
        if name in by_name:
            raise DataError(f"shards {by_name[name]} and {shard} have the same file name: the output names each "
                            "sample's source shard by its file name, so the pool's shards need distinct names")
        by_name[name] = shard
    return shards


def check_output_folder(out: str | os.PathLike) -> None:
    if not is_free_folder(out):
        raise DataError(f"{out} exists and is not an empty folder: write into a new folder (nothing is added to, "
                        "or replaced in, an existing one)")


def source_metadata(members: dict[str, bytes]) -> dict[str, Any]:
    """A source sample's KEY.json fields, which its output sample keeps ({} without one); BadSample for a KEY.json
    that is not a JSON object."""
    if "json" not in members:
        return {}
    try:
        metadata = json.loads(members["json"])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadSample(CORRUPT_JSON, f"KEY.json does not parse ({e})") from None
    if not isinstance(metadata, dict):
        raise BadSample(CORRUPT_JSON, "KEY.json is not a JSON object")
    return metadata


def metadata_bytes(metadata: dict[str, Any]) -> bytes:
    """KEY.json as data.convert writes it."""
    return json.dumps(metadata, sort_keys=True).encode("utf-8")


@dataclass(frozen=True)
class SourceShard:
    index: int  # position in the pool
    path: str
    run: str  # the folder of its run

    @property
    def name(self) -> str:
        return Path(self.path).name


class RunWriter:
    """A worker's side: the samples it keeps of `source`, in order, each with its whole new KEY.json."""

    def __init__(self, source: SourceShard):
        self._writer = ShardWriter(source.run, max_samples=sys.maxsize)

    def write(self, members: dict[str, bytes], metadata: dict[str, Any]) -> None:
        self._writer.write(sample_key(self._writer.samples_written), {**members, "json": metadata_bytes(metadata)})

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._writer.__exit__(*exc)


class Repacker:
    """This process's side: the runs, taken in pool order, into `folder`/shard-NNNNNN.tar. Use as a context manager
    inside the staging folder; leaving it normally closes the last shard (as `close`, which a summary of the shards
    written comes after)."""

    def __init__(self, folder: Path, max_samples: int):
        self.folder = folder
        self._writer = ShardWriter(folder, max_samples=max_samples)

    def sources(self, shards: Sequence[str]) -> list[SourceShard]:
        return [SourceShard(index, shard, str(self.folder / RUNS / f"{index:06d}")) for index, shard in
                enumerate(shards)]

    def take_run(self, source: SourceShard, remove: bool = True) -> Iterator[dict[str, bytes]]:
        """The members of each sample of the run, in order; the run is removed once read, unless `remove` is False
        (a run kept until the output is complete, so that a stopped repacking can start again)."""
        for run_shard in sorted(Path(source.run).glob("*.tar")):
            for sample in read_shard(run_shard):
                yield sample.members
        if remove:
            shutil.rmtree(source.run, ignore_errors=True)

    def write(self, members: dict[str, bytes]) -> None:
        key = sample_key(self._writer.samples_written)
        metadata = json.loads(members["json"])
        self._writer.write(key, {**members, "json": metadata_bytes({**metadata, "key": key})})

    @property
    def samples(self) -> int:
        return self._writer.samples_written

    @property
    def shards(self) -> list[Path]:
        return self._writer.shards

    def close(self) -> None:
        """Closes the last shard; the runs are all taken by now."""
        self._writer.close()
        shutil.rmtree(self.folder / RUNS, ignore_errors=True)

    def __enter__(self) -> Repacker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._writer.__exit__(exc_type, exc, tb)
