"""Progress bars of the data commands (tqdm, on stderr): samples/s, and an ETA where the total is known or estimated.

`progress=None` shows a bar on a terminal and hides it elsewhere (a Slurm log, a test); True or False forces it.
"""
from __future__ import annotations

import shutil
from typing import Iterable, Optional, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bar(items: Optional[Iterable[T]] = None, *, desc: str, total: Optional[int] = None,
        progress: Optional[bool] = None, unit: str = "sample") -> tqdm:
    # tqdm draws nothing on a terminal that reports 0 rows (a bare pty); shutil falls back to 24 there.
    return tqdm(items, desc=desc, total=total, unit=unit, disable=None if progress is None else not progress,
                nrows=shutil.get_terminal_size().lines)


class ShardProgress:
    """Samples read from `shards` shards (or other files: `noun`) one after the other, on one bar. How many there
    are is known only once the last one is read; until then the bar's total (and so its ETA) is the mean of those
    done x their number."""

    def __init__(self, shards: int, desc: str, progress: Optional[bool] = None, noun: str = "shard"):
        self.shards, self.done, self.desc, self.noun = shards, 0, desc, noun
        self.bar = bar(desc=f"{desc} ({noun} 0/{shards})", progress=progress)

    def sample(self, n: int = 1) -> None:
        self.bar.update(n)

    def shard_done(self) -> None:
        self.done += 1
        self.bar.total = round(self.bar.n * self.shards / self.done)
        self.bar.set_description(f"{self.desc} ({self.noun} {self.done}/{self.shards})", refresh=False)
        self.bar.refresh()

    def __enter__(self) -> ShardProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
