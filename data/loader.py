"""The training stream: WebDataset-style shards to endless batches, each sample once per epoch, exact resume.

    loader = StreamLoader(["shards/{000000..000127}.tar"], tokenizer, batch_size=256, image_size=224,
                          rank=rank, world_size=world_size, workers=8)
    batches = iter(loader)
    batch = next(batches)            # Batch(images uint8 [B,3,H,W], tokens [B,L], keys, captions, epochs)
    state = loader.state_dict()      # this rank's position after the last batch handed out
    loader.load_state_dict(state)    # on resume, before iter(): continues the same batch sequence
    note = loader.resume(states)     # or every rank's states: the same sequence on the same layout, else
                                     # data.elastic (each sample of the epochs begun once); note says so

Slot l of this rank is DataLoader worker (l - first_slot) mod W, where first_slot is the slot whose
batch comes next: the DataLoader always starts at worker 0 and then goes round-robin, so rotating
the slots keeps the uninterrupted order after resuming at any step.
"""
from __future__ import annotations

import os
from typing import Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data.decode import ImageTransform
from data.elastic import remap
from data.errors import DataError
from data.patterns import expand_patterns
from data.plural import count
from data.slot import Batch, SlotBatcher, SlotState, Tokenizer, initial_slot_state
from data.workers import stop_immune_worker_init

__all__ = ["Batch", "StreamLoader"]

STATE_FORMAT = 1


class _SlotBatches(IterableDataset):
    """What each DataLoader worker runs: the SlotBatcher of its slot, from that slot's saved state."""

    def __init__(self, loader: StreamLoader, states: list[SlotState], first_slot: int):
        self.loader, self.states, self.first_slot = loader, states, first_slot

    def __iter__(self) -> Iterator[tuple[int, SlotState, Batch]]:
        info = get_worker_info()
        loader = self.loader
        local_slot = ((info.id if info else 0) + self.first_slot) % loader.slots_per_rank
        batcher = SlotBatcher(loader.sources, loader.weights, slot=loader.rank * loader.slots_per_rank + local_slot,
                              num_slots=loader.num_slots, seed=loader.seed, shuffle_buffer=loader.shuffle_buffer,
                              transform=loader.transform, tokenizer=loader.tokenizer, batch_size=loader.batch_size,
                              state=self.states[local_slot])
        for batch, state in batcher:
            yield local_slot, state, batch


class StreamLoader:
    """Endless batches of this rank. `shards` are brace patterns (local paths, globs, `pipe:` commands).

    Without weights all patterns form one source; with weights each pattern is a source, and every
    sample is drawn from source i with probability weights[i] / sum(weights). Each source needs at
    least world_size x max(workers, 1) shards (one per slot).
    """

    def __init__(self, shards: Sequence[str], tokenizer: Tokenizer, batch_size: int, image_size: int, *,
                 weights: Optional[Sequence[float]] = None, train: bool = True,
                 crop_scale: tuple[float, float] = (0.9, 1.0), shuffle_buffer: int = 1000, seed: int = 0,
                 rank: int = 0, world_size: int = 1, workers: int = 2):
        if isinstance(shards, str):
            raise TypeError("shards must be a list of patterns, not one string")
        if not shards:
            raise DataError("no shard patterns given")
        if batch_size < 1 or image_size < 1:
            raise ValueError(f"batch_size and image_size must be positive, got {batch_size} and {image_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        if weights is None:
            self.sources = [expand_patterns(shards, noun="shard pattern")]
            self.weights = [1.0]
        else:
            if len(weights) != len(shards) or any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"weights must be one non-negative number per shard pattern ({len(shards)}) "
                                 f"with a positive sum, got {list(weights)}")
            self.sources = [expand_patterns([pattern], noun="shard pattern") for pattern in shards]
            self.weights = [float(w) for w in weights]
        self.tokenizer, self.batch_size, self.seed = tokenizer, batch_size, seed
        self.transform = ImageTransform(image_size, train, (float(crop_scale[0]), float(crop_scale[1])))
        self.shuffle_buffer, self.rank, self.world_size, self.workers = shuffle_buffer, rank, world_size, workers
        self.slots_per_rank = max(workers, 1)
        self.num_slots = world_size * self.slots_per_rank
        for i, urls in enumerate(self.sources):
            if len(urls) < self.num_slots:
                what = f"shard pattern {shards[i]!r}" if weights is not None else f"shard patterns {list(shards)}"
                raise DataError(f"{what}: {count(len(urls), 'shard')} for {count(world_size, 'rank')} x "
                                f"{count(self.slots_per_rank, 'worker slot')} = {count(self.num_slots, 'slot')}; "
                                f"each slot needs its own shard. Write more, smaller shards or use fewer workers.")
        self._slot_states = [initial_slot_state(len(self.sources)) for _ in range(self.slots_per_rank)]
        self._next_slot = 0
        self._iterator_generation = 0

    def __iter__(self) -> Iterator[Batch]:
        """A fresh stream from the current position; a previously returned iterator stops being valid."""
        self._iterator_generation += 1
        return self._batches(self._iterator_generation)

    def _batches(self, generation: int) -> Iterator[Batch]:
        dataset = _SlotBatches(self, [dict(s) for s in self._slot_states], self._next_slot)
        if self.workers > 0:
            # `tokenizers` keeps a thread pool; a forked worker does not inherit its threads. Once the parent has
            # encoded in parallel, a worker that encodes with TOKENIZERS_PARALLELISM=true deadlocks (tested), and
            # with it unset prints a warning and falls back to one thread. Workers are the parallelism here.
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        loader = DataLoader(dataset, batch_size=None, num_workers=self.workers,
                            pin_memory=torch.cuda.is_available(), prefetch_factor=2 if self.workers else None,
                            persistent_workers=self.workers > 0, worker_init_fn=stop_immune_worker_init(),
                            generator=torch.Generator().manual_seed(self.seed))  # leaves the global RNG alone
        for local_slot, state, batch in loader:
            if generation != self._iterator_generation:
                raise RuntimeError("this iterator was replaced by a newer iter(loader) or load_state_dict()")
            if local_slot != self._next_slot:
                raise RuntimeError(f"DataLoader returned slot {local_slot}'s batch, expected slot {self._next_slot}'s")
            self._slot_states[local_slot] = state
            self._next_slot = (local_slot + 1) % self.slots_per_rank
            yield batch

    def state_dict(self) -> dict:
        """This rank's stream position after the last batch handed out (ints, strings, lists, dicts only)."""
        return {"format": STATE_FORMAT, "rank": self.rank, "world_size": self.world_size, "workers": self.workers,
                "seed": self.seed, "shuffle_buffer": self.shuffle_buffer,
                "shards_per_source": [len(urls) for urls in self.sources], "next_slot": self._next_slot,
                "slots": [dict(s) for s in self._slot_states]}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a state_dict() of the same rank, world size and worker count (call before iter())."""
        self._check_inputs(state)
        saved = f"{count(state['world_size'], 'rank')} x {count(max(state['workers'], 1), 'worker slot')}"
        now = f"{count(self.world_size, 'rank')} x {self.slots_per_rank}"
        if not self._same_layout(state):
            raise DataError(f"cannot resume the data stream: it was saved with {saved} (world_size="
                            f"{state['world_size']}, workers={state['workers']}), this run has {now} (world_size="
                            f"{self.world_size}, workers={self.workers}); the exact sample sequence needs the same "
                            f"world size and worker count (resume() with every rank's state continues on another)")
        if state["rank"] != self.rank:
            raise DataError(f"data stream state belongs to rank {state['rank']}, this is rank {self.rank}; give each "
                            f"rank its own state")
        self._slot_states = [dict(s) for s in state["slots"]]
        self._next_slot = state["next_slot"]
        self._iterator_generation += 1

    def resume(self, states: Sequence[dict]) -> Optional[str]:
        """Continue from the state_dict() of every rank of a run, in rank order (call before iter()).

        Saved with this world size and worker count (0 and 1 are the same), it is load_state_dict(states[rank]):
        the uninterrupted sequence, and None. Saved with another, every sample of the epochs already begun is
        still read exactly once and later epochs follow this layout (data.elastic); returns the line that says so.
        """
        if isinstance(states, dict):
            raise TypeError("resume() takes the list of every rank's state_dict(); load_state_dict() takes one")
        ranks = [state.get("rank") for state in states]
        saved_world_size = states[0].get("world_size") if states else None
        if saved_world_size is None or ranks != list(range(saved_world_size)):
            raise DataError(f"data stream states: expected one per rank of the saved run (world_size="
                            f"{saved_world_size}), in rank order; got ranks {ranks}")
        for state in states:
            self._check_inputs(state)
            if state["workers"] != states[0]["workers"]:
                raise DataError(f"data stream states: rank {state['rank']} was saved with workers={state['workers']}"
                                f", rank 0 with workers={states[0]['workers']}; a run has one worker count")
        saved = states[0]
        if self._same_layout(saved):
            self.load_state_dict(states[self.rank])
            return None
        remapped = remap([slot for state in states for slot in state["slots"]], self.num_slots,
                         saved["shards_per_source"])
        first = self.rank * self.slots_per_rank
        self._slot_states = remapped.slots[first:first + self.slots_per_rank]
        self._next_slot = 0
        self._iterator_generation += 1
        return (f"resuming {_layout(saved['world_size'], saved['workers'])} as "
                f"{_layout(self.world_size, self.workers)}: {_continuing(remapped.epochs)}, sample order differs")

    def _same_layout(self, state: dict) -> bool:
        return state["world_size"] == self.world_size and max(state["workers"], 1) == self.slots_per_rank

    def _check_inputs(self, state: dict) -> None:
        """A state of this code's format, saved from the same shards, seed and shuffle buffer."""
        if state.get("format") != STATE_FORMAT:
            raise DataError(f"data stream state has format {state.get('format')!r}, this code reads {STATE_FORMAT}")
        mismatches = [f"{name}: saved {state[name]!r}, now {current!r}" for name, current in
                      [("seed", self.seed), ("shuffle_buffer", self.shuffle_buffer),
                       ("shards_per_source", [len(urls) for urls in self.sources])] if state[name] != current]
        if mismatches:
            raise DataError(f"cannot resume the data stream, its inputs changed ({'; '.join(mismatches)})")

    def skipped(self) -> dict[str, int]:
        """Samples skipped so far by reason (plus unreadable_shard events), up to the last batch handed out. After a
        resume on another layout rank 0 holds the counts from before it (data.elastic), so the run's sum is kept."""
        total: dict[str, int] = {}
        for state in self._slot_states:
            for reason, n in state["skipped"].items():
                total[reason] = total.get(reason, 0) + n
        return total


def _layout(world_size: int, workers: int) -> str:
    return f"{count(world_size, 'rank')} x {count(workers, 'worker')}"


def _continuing(epochs: list[range]) -> str:
    """`epoch 0 continues exactly-once`, `epochs 2-3 continue ...`, per source when there are several."""
    def named(begun: range) -> str:
        return f"epoch {begun[0]}" if len(begun) == 1 else f"epochs {begun[0]}-{begun[-1]}"

    if not any(epochs):
        return "no epoch had begun"
    if len(epochs) == 1:
        return f"{named(epochs[0])} {'continues' if len(epochs[0]) == 1 else 'continue'} exactly-once"
    return ", ".join(f"source {i} {named(begun)}" for i, begun in enumerate(epochs) if begun) + " continue exactly-once"
