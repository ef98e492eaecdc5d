"""Input patterns to file lists, for every reader of data/: shards, tables, caption files.

    expand_patterns(["d/shard-{000000..000007}.tar", "e/*.tar", "pipe:curl -s URL/{0..9}.tar"])

Each pattern is brace-expanded; an item with glob characters matches files (sorted), a folder stands
for the .tar shards in it (sorted), any other item must be an existing file, and with `allow_pipe` a
`pipe:CMD` item is kept as given (read from CMD's stdout by data.shards.read_shard). A pattern that
matches nothing, or whose brace list names files that do not exist, is a DataError naming the pattern.
"""
from __future__ import annotations

import glob
import os
from typing import Sequence

import braceexpand

from data.errors import DataError
from data.plural import count

PIPE_PREFIX = "pipe:"


def expand_patterns(patterns: Sequence[str], *, noun: str = "pattern", allow_pipe: bool = True) -> list[str]:
    """Paths (and `pipe:` commands) in pattern order; errors call a pattern `noun` ("shard pattern 'd/*.tar' ...")."""
    if isinstance(patterns, str):
        raise TypeError("patterns must be a list of patterns, not one string")
    if not patterns:
        raise DataError(f"no {noun} given")
    urls: list[str] = []
    for pattern in patterns:
        matched: list[str] = []
        missing: list[str] = []
        for item in braceexpand.braceexpand(pattern):
            if allow_pipe and item.startswith(PIPE_PREFIX):
                matched.append(item)
            elif glob.has_magic(item):
                matched += sorted(glob.glob(item))
            elif os.path.isdir(item):  # a folder of shards, as `data convert` writes one
                shards = sorted(glob.glob(os.path.join(glob.escape(item), "*.tar")))
                if not shards:
                    raise DataError(f"{noun} {pattern!r}: folder {item} holds no .tar shards")
                matched += shards
            elif os.path.isfile(item):
                matched.append(item)
            else:
                missing.append(item)
        if not matched:
            raise DataError(f"{noun} {pattern!r} matches no file")
        if missing:
            raise DataError(f"{noun} {pattern!r}: {count(len(missing), 'file')} missing, first {missing[0]}")
        urls += matched
    return urls


def contiguous_slices(items: int, parts: int) -> list[range]:
    """At most `parts` contiguous, disjoint ranges covering range(items), in order, their sizes differing by at most
    one: how a job array's tasks split a shard list."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    parts = max(1, min(parts, items))
    size, extra = divmod(items, parts)
    starts = [i * size + min(i, extra) for i in range(parts + 1)]
    return [range(a, b) for a, b in zip(starts[:-1], starts[1:])]
