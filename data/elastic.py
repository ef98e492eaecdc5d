"""Resuming the data stream on another layout (world size or worker count): every sample of an epoch still once.

The anchor is mosaicml streaming's "elastic determinism". Exact resume (data.loader) needs the same slots; when
the number of slots changes, what each old slot had left is handed to the new slots as segments:

- Per source, let E be the last epoch the old layout began (a slot at (e, 0) has not begun e). Every epoch up to
  E is finished under the layout that began it; epochs from E + 1 on are read by the new layout's own shares.
  So every epoch is read under exactly one layout, and each of its samples once.
- Old slot s at (epoch e_s, position p_s) leaves the segment (old num_slots, s, e_s, p_s), the rest of its share
  of e_s, and if e_s < E the full shares of e_s + 1 .. E (position 0). A segment is replayed to its position by
  reading without decoding, with the old slot's shard split and shuffle buffer, so it holds exactly the samples
  the old slot had not handed out. Segments an old slot had itself not finished (an earlier remap) are passed on
  as they are: a resume during segments, even to a third layout, redistributes what is left of them.
- The segments are dealt to the new slots, largest share first to the least loaded slot (loads counted in shards
  of the share: the samples left in a partly read one are not known without reading it), lowest slot on a tie;
  each new slot finishes its segments in epoch order, then begins epoch E + 1 of its own shares. A new slot with
  no segment begins E + 1 at once, as slots always move on by themselves. Each source is dealt on its own, so
  weighted mixing keeps each source's epochs.
- A sample's randomness stays keyed by (source, epoch, old slot, position): its crop and caption are what the old
  slot would have drawn. Mixing draws are keyed by (new slot, draw count); every new slot starts counting at the
  largest count of the old slots, so no draw sequence an old slot used starts again.
- Skip counts and samples read before the checkpoint were counted by the old slots: their totals go to new slot 0,
  so the run's totals stay counted once; what segments meet after their positions is counted when met.

Only the order of the samples changes (one line says so); which samples each epoch holds does not. Cost: each
new slot reads (without decoding) the shares of its partly read segments up to their positions, as exact resume
does, and a few new slots may finish an epoch later than the rest.
"""
from __future__ import annotations

import heapq
from typing import NamedTuple, Sequence

from data.slot import SlotState, initial_slot_state
from data.stream import Segment


class Remapped(NamedTuple):
    slots: list[SlotState]  # the new layout's slot states, in slot order
    epochs: list[range]  # per source, the epochs that continue in the old layouts (empty if none was begun)


def remap(old_slots: Sequence[SlotState], num_slots: int, shards_per_source: Sequence[int]) -> Remapped:
    """The states of `num_slots` new slots that finish what `old_slots` (all of them, in slot order) left."""
    new_slots = [initial_slot_state(len(shards_per_source)) for _ in range(num_slots)]
    draws = max(old["draws"] for old in old_slots)
    for state in new_slots:
        state["draws"] = draws
    new_slots[0]["samples_read"] = sum(old["samples_read"] for old in old_slots)
    for old in old_slots:
        for reason, n in old["skipped"].items():
            new_slots[0]["skipped"][reason] = new_slots[0]["skipped"].get(reason, 0) + n
    segments: list[list[list[Segment]]] = [[] for _ in range(num_slots)]  # [new slot][source]
    epochs = []
    for source, num_shards in enumerate(shards_per_source):
        last_begun, left = unfinished(old_slots, source)
        for slot, dealt in enumerate(deal(left, num_slots, num_shards)):
            new_slots[slot]["sources"][source] = [last_begun + 1, 0]
            segments[slot].append(dealt)
        epochs.append(range(min((s.epoch for s in left), default=last_begun + 1), last_begun + 1))
    for state, per_source in zip(new_slots, segments):
        if any(per_source):
            state["segments"] = [[list(segment) for segment in dealt] for dealt in per_source]
    return Remapped(new_slots, epochs)


def unfinished(old_slots: Sequence[SlotState], source: int) -> tuple[int, list[Segment]]:
    """The last epoch of `source` the old slots began (-1 if none) and the segments they leave of it and before."""
    own = [state["sources"][source] for state in old_slots]
    last_begun = max(epoch if position else epoch - 1 for epoch, position in own)
    left = []
    for slot, (state, (epoch, position)) in enumerate(zip(old_slots, own)):
        if "segments" in state:
            left += [Segment(*segment) for segment in state["segments"][source]]
        if epoch <= last_begun:
            left.append(Segment(len(old_slots), slot, epoch, position))
            left += [Segment(len(old_slots), slot, later, 0) for later in range(epoch + 1, last_begun + 1)]
    return last_begun, left


def share_size(segment: Segment, num_shards: int) -> int:
    """Shards in the segment's share: slot s of S reads shuffled[s::S]."""
    return len(range(segment.slot, num_shards, segment.num_slots))


def deal(segments: list[Segment], num_slots: int, num_shards: int) -> list[list[Segment]]:
    """Largest share first to the least loaded slot, lowest slot on a tie; each slot's segments in epoch order."""
    dealt: list[list[Segment]] = [[] for _ in range(num_slots)]
    loads = [(0, slot) for slot in range(num_slots)]  # a heap of (shards dealt, slot)
    for segment in sorted(segments, key=lambda s: (-share_size(s, num_shards), s.epoch, s.slot)):
        load, slot = heapq.heappop(loads)
        dealt[slot].append(segment)
        heapq.heappush(loads, (load + share_size(segment, num_shards), slot))
    return [sorted(mine, key=lambda s: (s.epoch, s.slot)) for mine in dealt]
