"""Raw samples of one source for one slot: seeded shard split, shuffle buffer, endless epochs.

A slot is a (rank, worker) pair. For epoch e the source's shard list is shuffled with a seed of
(seed, source, e) and slot s of S reads `shuffled[s::S]`, so every sample of an epoch goes to
exactly one slot. Each slot then passes its samples through a shuffle buffer seeded by
(seed, source, e, s) and moves on to epoch e+1 by itself. Samples stay raw bytes here: decoding
happens later, so a resumed stream can replay up to its checkpointed position by reading only.
"""
from __future__ import annotations

import random
from typing import Callable, Iterator

from data.errors import DataError, ShardReadError
from data.plural import count
from data.seeding import derive_seed
from data.shards import RawSample, read_shard

MAX_EMPTY_EPOCHS = 10


def epoch_shards(shards: list[str], *, seed: int, source: int, epoch: int, slot: int, num_slots: int) -> list[str]:
    order = list(shards)
    random.Random(derive_seed("shards", seed, source, epoch)).shuffle(order)
    return order[slot::num_slots]


def shuffled(samples: Iterator[RawSample], size: int, rng: random.Random) -> Iterator[RawSample]:
    """A shuffle buffer whose choices depend only on rng's seed and the number of samples, so it replays exactly."""
    if size <= 1:
        yield from samples
        return
    buffer: list[RawSample] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        index = rng.randrange(size)
        yield buffer[index]
        buffer[index] = sample
    rng.shuffle(buffer)
    yield from buffer


class SourceStream:
    """Endless raw samples of one source for one slot, tagged with (epoch, position within the epoch).

    `seek(epoch, position)` restores a checkpointed stream by reading without decoding; shard
    errors met while replaying were counted before the checkpoint, so they are not reported again.
    """

    def __init__(self, shards: list[str], *, source: int, slot: int, num_slots: int, seed: int,
                 buffer_size: int, on_shard_error: Callable[[str, str], None]):
        self.shards, self.source, self.slot, self.num_slots = shards, source, slot, num_slots
        self.seed, self.buffer_size, self.on_shard_error = seed, buffer_size, on_shard_error
        self._replaying = False
        self._start(epoch=0)

    def _start(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0
        self._epoch_urls = epoch_shards(self.shards, seed=self.seed, source=self.source, epoch=epoch,
                                        slot=self.slot, num_slots=self.num_slots)
        rng = random.Random(derive_seed("buffer", self.seed, self.source, epoch, self.slot))
        self._samples = shuffled(self._read(self._epoch_urls), self.buffer_size, rng)

    def _read(self, urls: list[str]) -> Iterator[RawSample]:
        for url in urls:
            try:
                yield from read_shard(url)
            except ShardReadError as e:
                if not self._replaying:
                    self.on_shard_error(url, str(e))

    def seek(self, epoch: int, position: int) -> None:
        self._start(epoch)
        self._replaying = True
        try:
            for read in range(position):
                if next(self._samples, None) is None:
                    raise DataError(f"cannot resume source {self.source} at epoch {epoch}, sample {position}: slot "
                                    f"{self.slot}'s shards hold only {count(read, 'sample')} in that epoch; did the "
                                    f"shards change since the checkpoint? ({', '.join(self._epoch_urls)})")
        finally:
            self._replaying = False
        self.position = position

    def __iter__(self) -> SourceStream:
        return self

    def __next__(self) -> tuple[int, int, RawSample]:
        empty_epochs = 0
        while (sample := next(self._samples, None)) is None:
            # An epoch can be empty for this slot when its few shards are all unreadable; only a run of them
            # means nothing is readable, and then spinning through epochs forever would hide it.
            empty_epochs = empty_epochs + 1 if self.position == 0 else 0
            if empty_epochs == MAX_EMPTY_EPOCHS:
                raise DataError(f"slot {self.slot} read no sample of source {self.source} in {MAX_EMPTY_EPOCHS} "
                                f"epochs in a row (up to epoch {self.epoch}): its shards are empty or unreadable, "
                                f"last tried: {', '.join(self._epoch_urls)}")
            self._start(self.epoch + 1)
        self.position += 1
        return self.epoch, self.position - 1, sample
