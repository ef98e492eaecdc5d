"""Raw samples of one source for one slot: seeded shard split, shuffle buffer, endless epochs.

A slot is a (rank, worker) pair. For epoch e the source's shard list is shuffled with a seed of
(seed, source, e) and slot s of S reads `shuffled[s::S]`, so every sample of an epoch goes to
exactly one slot. Each slot then passes its samples through a shuffle buffer seeded by
(seed, source, e, s) and moves on to epoch e+1 by itself. Samples stay raw bytes here: decoding
happens later, so a resumed stream can replay up to its checkpointed position by reading only.

After a resume on another layout (data.elastic) a slot first finishes segments, what other slots of an
earlier layout left of their epochs, each under the layout that began it, then reads its own shares.
"""
from __future__ import annotations

import random
from typing import Callable, Iterator, NamedTuple, Sequence

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


class Segment(NamedTuple):
    """What is left of slot `slot`'s share of `epoch` in a layout of `num_slots` slots: its samples from `position`."""
    num_slots: int
    slot: int
    epoch: int
    position: int


class SourceStream:
    """Endless raw samples of one source for one slot, tagged with (epoch, position within the epoch's share).

    `seek(epoch, position, segments)` restores a checkpointed stream by reading without decoding: the segments it
    has to finish first (the first one at its position), then its own shares from (epoch, position). Shard errors
    met while replaying were counted before the checkpoint, so they are not reported again. `sample_slot` is the
    slot whose share the last sample belongs to: this one, or the one whose segment this slot finishes.
    """

    def __init__(self, shards: list[str], *, source: int, slot: int, num_slots: int, seed: int,
                 buffer_size: int, on_shard_error: Callable[[str, str], None]):
        self.shards, self.source, self.slot, self.num_slots = shards, source, slot, num_slots
        self.seed, self.buffer_size, self.on_shard_error = seed, buffer_size, on_shard_error
        self.segments: list[Segment] = []
        self.sample_slot = slot
        self._replaying = False
        self._start(epoch=0)

    def _start(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0
        self._open(self.slot, self.num_slots, epoch)

    def _open(self, slot: int, num_slots: int, epoch: int) -> None:
        self._epoch_urls = epoch_shards(self.shards, seed=self.seed, source=self.source, epoch=epoch, slot=slot,
                                        num_slots=num_slots)
        rng = random.Random(derive_seed("buffer", self.seed, self.source, epoch, slot))
        self._samples = shuffled(self._read(self._epoch_urls), self.buffer_size, rng)

    def _read(self, urls: list[str]) -> Iterator[RawSample]:
        for url in urls:
            try:
                yield from read_shard(url)
            except ShardReadError as e:
                if not self._replaying:
                    self.on_shard_error(url, str(e))

    def seek(self, epoch: int, position: int, segments: Sequence[Segment] = ()) -> None:
        self.segments = list(segments)
        self.epoch, self.position = epoch, position
        self._open_next()

    def _open_next(self) -> None:
        """Open the first segment, or this slot's own share once none is left, and replay it to its position."""
        num_slots, slot, epoch, position = self.segments[0] if self.segments else Segment(
            self.num_slots, self.slot, self.epoch, self.position)
        self._open(slot, num_slots, epoch)
        self._replaying = True
        try:
            for read in range(position):
                if next(self._samples, None) is None:
                    raise DataError(f"cannot resume source {self.source} at epoch {epoch}, sample {position}: the "
                                    f"shards of slot {slot} (of {num_slots}) hold only {count(read, 'sample')} in "
                                    f"that epoch; did the shards change since the checkpoint? "
                                    f"({', '.join(self._epoch_urls)})")
        finally:
            self._replaying = False

    def __iter__(self) -> SourceStream:
        return self

    def __next__(self) -> tuple[int, int, RawSample]:
        while self.segments:
            segment = self.segments[0]
            if (sample := next(self._samples, None)) is not None:
                self.segments[0] = segment._replace(position=segment.position + 1)
                self.sample_slot = segment.slot
                return segment.epoch, segment.position, sample
            self.segments.pop(0)
            self._open_next()
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
        self.sample_slot = self.slot
        return self.epoch, self.position - 1, sample
