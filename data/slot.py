"""The batches of one slot (a rank's DataLoader worker): mix sources, decode, skip bad samples, tag positions.

A slot's position is a small dict of ints, taken after each batch: per source (epoch, samples
handed out by its shuffle buffer in that epoch, bad ones included), the number of mixing draws,
and the skip counts; after a resume on another layout also, per source, the segments of other slots this one
finishes first (data.elastic). Restoring it replays each source to its position by reading without decoding;
mixing draws and per-sample randomness are keyed by counters, so the continuation is identical.
"""
from __future__ import annotations

import bisect
import itertools
import logging
import time
from typing import Callable, Iterator, NamedTuple

import torch

from data.decode import ImageTransform, decode
from data.errors import DataError
from data.seeding import generator, unit_interval
from data.stream import Segment, SourceStream
from data.validate import BadSample, label

log = logging.getLogger("data.loader")

Tokenizer = Callable[[list[str]], torch.Tensor]
# {"draws": int, "samples_read": int, "skipped": {reason: int}, "sources": [[epoch, position], ...]}, plus
# "segments": [[[num_slots, slot, epoch, position], ...] per source] while any are left to finish
SlotState = dict

BAD_FRACTION_LIMIT = 0.5
BAD_FRACTION_MIN_SAMPLES = 100
LOG_INTERVAL_S = 10.0


class Batch(NamedTuple):
    images: torch.Tensor  # uint8 [B, 3, H, W]; normalisation happens on the device
    tokens: torch.Tensor  # long [B, L]
    keys: list[str]
    captions: list[str]  # the caption drawn for each sample this visit
    epochs: list[int]  # the epoch of its source each sample was read in


def initial_slot_state(num_sources: int) -> SlotState:
    return {"draws": 0, "samples_read": 0, "skipped": {}, "sources": [[0, 0] for _ in range(num_sources)]}


class _RateLimitedWarnings:
    """At most one warning per interval; the next one says how many were held back."""

    def __init__(self, interval_s: float):
        self.interval_s, self.last, self.held_back = interval_s, -float("inf"), 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self.last < self.interval_s:
            self.held_back += 1
            return
        more = f" (and {self.held_back} more skips since the last message)" if self.held_back else ""
        log.warning("data: %s%s", message, more)
        self.last, self.held_back = now, 0


class SlotBatcher:
    def __init__(self, sources: list[list[str]], weights: list[float], *, slot: int, num_slots: int, seed: int,
                 shuffle_buffer: int, transform: ImageTransform, tokenizer: Tokenizer, batch_size: int,
                 state: SlotState):
        self.slot, self.seed, self.transform = slot, seed, transform
        self.tokenizer, self.batch_size = tokenizer, batch_size
        self.cumulative_weights = list(itertools.accumulate(weights))
        self.warnings = _RateLimitedWarnings(LOG_INTERVAL_S)
        self.draws, self.samples_read = state["draws"], state["samples_read"]
        self.skipped: dict[str, int] = dict(state["skipped"])
        self.streams = [SourceStream(shards, source=i, slot=slot, num_slots=num_slots, seed=seed,
                                     buffer_size=shuffle_buffer, on_shard_error=self._shard_error)
                        for i, shards in enumerate(sources)]
        segments = state.get("segments", [[] for _ in sources])
        for stream, (epoch, position), pending in zip(self.streams, state["sources"], segments):
            stream.seek(epoch, position, [Segment(*segment) for segment in pending])

    def state(self) -> SlotState:
        state = {"draws": self.draws, "samples_read": self.samples_read, "skipped": dict(self.skipped),
                 "sources": [[s.epoch, s.position] for s in self.streams]}
        if any(s.segments for s in self.streams):  # absent otherwise: a stream never remapped keeps its old state
            state["segments"] = [[list(segment) for segment in s.segments] for s in self.streams]
        return state

    def __iter__(self) -> Iterator[tuple[Batch, SlotState]]:
        while True:
            keys, images, captions, epochs = [], [], [], []
            for _ in range(self.batch_size):
                key, image, caption, epoch = self._next_sample()
                keys.append(key)
                images.append(image)
                captions.append(caption)
                epochs.append(epoch)
            yield Batch(torch.stack(images), self.tokenizer(captions), keys, captions, epochs), self.state()

    def _choose_source(self) -> int:
        if len(self.streams) == 1:
            return 0
        u = unit_interval("mix", self.seed, self.slot, self.draws) * self.cumulative_weights[-1]
        return min(bisect.bisect_right(self.cumulative_weights, u), len(self.streams) - 1)

    def _next_sample(self) -> tuple[str, torch.Tensor, str, int]:
        source = self._choose_source()
        self.draws += 1
        stream = self.streams[source]
        while True:
            epoch, position, raw = next(stream)
            self.samples_read += 1
            try:
                # Keyed by the slot whose share it is: a sample another slot left draws what that slot would have.
                image, caption = decode(raw.members, self.transform,
                                        generator("sample", self.seed, source, epoch, stream.sample_slot, position))
                return raw.key, image, caption, epoch
            except BadSample as e:
                self._count(e.reason)
                self.warnings.warn(f"skipped sample {raw.key} in shard {raw.shard}: {e}")
                self._check_bad_fraction(raw.shard)

    def _shard_error(self, url: str, message: str) -> None:
        self._count("unreadable_shard")
        self.warnings.warn(f"{message}; kept the samples before the break")

    def _count(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _check_bad_fraction(self, shard: str) -> None:
        bad = sum(n for reason, n in self.skipped.items() if reason != "unreadable_shard")
        if self.samples_read >= BAD_FRACTION_MIN_SAMPLES and bad > BAD_FRACTION_LIMIT * self.samples_read:
            reasons = ", ".join(f"{label(r)}: {n}" for r, n in sorted(self.skipped.items()))
            raise DataError(f"data: {bad} of {self.samples_read} samples read by slot {self.slot} were skipped "
                            f"({reasons}); most recent in shard {shard}. Are these img2dataset-style shards "
                            f"(KEY.jpg|png|webp + KEY.txt)?")
