"""Resuming the stream on another world size or worker count (data.elastic): each sample of an epoch once."""
from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Iterator, Optional

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest
import torch
from torchvision.transforms.v2.functional import to_pil_image

from data.errors import DataError
from data.loader import Batch, StreamLoader
from tests.data.loader_fixtures import ByteTokenizer, good_sample, write_dataset, write_shard

Seen = list[tuple[str, int]]  # (key, epoch) of each sample handed out, in order


class Run:
    """One loader per rank in this process, stepped together as the training loop steps its ranks."""

    def __init__(self, shards: list[str], world_size: int, workers: int, **options):
        options = dict(batch_size=2, image_size=8, shuffle_buffer=3) | options
        self.loaders = [StreamLoader(shards, ByteTokenizer(), rank=rank, world_size=world_size, workers=workers,
                                     **options) for rank in range(world_size)]
        self.notes: list[Optional[str]] = []
        self.streams: list[Iterator[Batch]] = []

    def resume(self, states: list[dict]) -> Run:
        self.notes = [loader.resume(states) for loader in self.loaders]
        return self

    def steps(self, n: int) -> list[Batch]:
        if not self.streams:
            self.streams = [iter(loader) for loader in self.loaders]
        return [next(stream) for _ in range(n) for stream in self.streams]

    def until_epochs_complete(self, seen: Seen, epochs: dict[str, int], max_steps: int = 200) -> Seen:
        """Step until `seen` and what follows hold `epochs[prefix]` samples of each source's epochs 0 and 1 (or
        max_steps pass); returns `seen` with what followed."""
        seen = list(seen)
        for _ in range(max_steps):
            if all(_count(seen, prefix, epoch) >= n for prefix, n in epochs.items() for epoch in (0, 1)):
                break
            seen += _seen(self.steps(1))
        return seen

    def states(self) -> list[dict]:
        """Every rank's state, through a weights_only round trip as the checkpoint makes."""
        buffer = io.BytesIO()
        torch.save([loader.state_dict() for loader in self.loaders], buffer)
        return torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)

    def skipped(self) -> Counter:
        return sum((Counter(loader.skipped()) for loader in self.loaders), Counter())


def _seen(batches: list[Batch]) -> Seen:
    return [(key, epoch) for batch in batches for key, epoch in zip(batch.keys, batch.epochs)]


def _count(seen: Seen, prefix: str, epoch: int) -> int:
    return sum(key.startswith(prefix) and e == epoch for key, e in seen)


def _epoch(seen: Seen, epoch: int, prefix: str = "") -> list[str]:
    return sorted(key for key, e in seen if e == epoch and key.startswith(prefix))


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[list[str], list[str]]:
    """6 shards of 3 samples: 18 samples, shards enough for 6 slots."""
    keys = write_dataset(tmp_path, num_shards=6, per_shard=3)
    return [str(tmp_path / "shard-{000000..000005}.tar")], keys


@pytest.mark.parametrize("new_world_size", [3, 1])
def test_another_world_size_reads_the_rest_of_the_epoch_once(dataset, new_world_size: int):
    shards, keys = dataset
    before = Run(shards, world_size=2, workers=0)
    seen = _seen(before.steps(3))
    after = Run(shards, world_size=new_world_size, workers=0).resume(before.states())
    seen = after.until_epochs_complete(seen, {"": len(keys)})
    assert _epoch(seen, 0) == sorted(keys) and _epoch(seen, 1) == sorted(keys)
    ranks = "1 rank" if new_world_size == 1 else f"{new_world_size} ranks"
    assert after.notes == [f"resuming 2 ranks x 0 workers as {ranks} x 0 workers: epoch 0 continues exactly-once, "
                           "sample order differs"] * new_world_size


def _write_textured_dataset(directory: Path) -> list[str]:
    """Like `dataset`, but noise images with three caption lines each, so crops and caption choices show."""
    keys = []
    for shard in range(6):
        samples = []
        for index in range(3):
            key = f"{shard:02d}{index:03d}"
            pixels = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(len(keys)))
            png = io.BytesIO()
            to_pil_image(pixels).save(png, "PNG")
            samples.append({"__key__": key, "png": png.getvalue(),
                            "txt": "\n".join(f"caption {line} of {key}" for line in range(3))})
            keys.append(key)
        write_shard(directory / f"shard-{shard:06d}.tar", samples)
    return keys


@pytest.mark.parametrize("new_world_size", [1, 3])
def test_samples_left_keep_the_old_slots_crops_and_later_epochs_follow_the_new_layout(tmp_path: Path,
                                                                                      new_world_size: int):
    keys = _write_textured_dataset(tmp_path)
    shards = [str(tmp_path / "shard-{000000..000005}.tar")]
    uninterrupted = {(key, epoch): (image, caption) for batch in Run(shards, world_size=2, workers=0).steps(9)
                     for key, epoch, image, caption in zip(batch.keys, batch.epochs, batch.images, batch.captions)}
    assert len(uninterrupted) == 2 * len(keys)
    before = Run(shards, world_size=2, workers=0)
    before.steps(2)
    after = Run(shards, world_size=new_world_size, workers=0).resume(before.states())
    fresh = Run(shards, world_size=new_world_size, workers=0)
    resumed_batches, fresh_batches = after.steps(60 // new_world_size), fresh.steps(60 // new_world_size)
    left = [(key, image, caption) for batch in resumed_batches
            for key, epoch, image, caption in zip(batch.keys, batch.epochs, batch.images, batch.captions) if epoch == 0]
    assert len(left) == len(keys) - 2 * 2 * 2
    for key, image, caption in left:
        assert torch.equal(image, uninterrupted[key, 0][0]) and caption == uninterrupted[key, 0][1], key
    for rank in range(new_world_size):  # from epoch 1 on a rank reads what an uninterrupted run reads, in order
        later = [k for b in resumed_batches[rank::new_world_size] for k, e in zip(b.keys, b.epochs) if e >= 1]
        fresh_later = [k for b in fresh_batches[rank::new_world_size] for k, e in zip(b.keys, b.epochs) if e >= 1]
        common = min(len(later), len(fresh_later))
        assert common >= len(keys) // new_world_size and later[:common] == fresh_later[:common]


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes:UserWarning")  # on 2 cores
@pytest.mark.parametrize(("old_workers", "new_workers"), [(2, 0), (0, 3)])
def test_another_worker_count_reads_the_rest_of_the_epoch_once(dataset, old_workers: int, new_workers: int):
    shards, keys = dataset
    before = Run(shards, world_size=2, workers=old_workers)
    seen = _seen(before.steps(3))
    after = Run(shards, world_size=2, workers=new_workers).resume(before.states())
    seen = after.until_epochs_complete(seen, {"": len(keys)})
    assert _epoch(seen, 0) == sorted(keys) and _epoch(seen, 1) == sorted(keys)
    # 6 shards over 4 slots: the slots of one shard had begun epoch 1 after 2 of their batches
    epochs = "epoch 0 continues" if old_workers == 0 else "epochs 0-1 continue"
    assert after.notes[0] == (f"resuming 2 ranks x {old_workers} workers as 2 ranks x {new_workers} workers: "
                              f"{epochs} exactly-once, sample order differs")


def test_the_same_layout_continues_the_uninterrupted_sequence(dataset):
    shards, _ = dataset
    straight = [b.keys for b in Run(shards, world_size=2, workers=2).steps(7)]
    before = Run(shards, world_size=2, workers=2)
    before.steps(3)
    after = Run(shards, world_size=2, workers=2).resume(before.states())
    assert after.notes == [None, None]
    assert [b.keys for b in after.steps(4)] == straight[6:]


def test_weighted_sources_each_keep_their_own_epochs(tmp_path: Path):
    a = write_dataset(tmp_path / "a", num_shards=3, per_shard=3, prefix="a")
    b = write_dataset(tmp_path / "b", num_shards=4, per_shard=5, prefix="b")
    shards = [str(tmp_path / "a/*.tar"), str(tmp_path / "b/*.tar")]
    before = Run(shards, world_size=3, workers=0, weights=[2.0, 1.0])
    seen = _seen(before.steps(4))
    states = before.states()
    after = Run(shards, world_size=2, workers=0, weights=[2.0, 1.0]).resume(states)
    assert all(slot["draws"] == max(s["draws"] for state in states for s in state["slots"])
               for loader in after.loaders for slot in loader.state_dict()["slots"])  # no draw sequence restarts
    seen = after.until_epochs_complete(seen, {"a": len(a), "b": len(b)})
    for prefix, keys in [("a", a), ("b", b)]:
        assert _epoch(seen, 0, prefix) == sorted(keys) and _epoch(seen, 1, prefix) == sorted(keys)
    assert after.notes[0].startswith("resuming 3 ranks x 0 workers as 2 ranks x 0 workers: source 0 epoch")


@pytest.mark.parametrize(("stop", "skipped_per_rank"), [(1, [{}, {}]), (3, [{"corrupt_image": 1}] * 2)],
                         ids=["met-after-the-resume", "counted-by-both-ranks-before-the-stop"])
def test_corrupt_samples_are_counted_once_each_epoch_they_are_read(tmp_path: Path, stop: int,
                                                                   skipped_per_rank: list[dict]):
    keys = write_dataset(tmp_path, num_shards=4, per_shard=3)
    for shard in ("04", "05"):
        write_shard(tmp_path / f"shard-0000{shard}.tar", [{"__key__": f"{shard}000", "png": b"broken", "txt": "x"},
                                                         good_sample(f"{shard}001"), good_sample(f"{shard}002")])
        keys += [f"{shard}001", f"{shard}002"]
    shards = [str(tmp_path / "shard-{000000..000005}.tar")]
    # Without a shuffle buffer a slot reads its shards in tar order: it reads the corrupt 04000 on its way to
    # 04001, so 04000 was skipped in exactly the epochs that handed out 04001 (05000 likewise).
    before = Run(shards, world_size=2, workers=0, shuffle_buffer=0)
    seen = _seen(before.steps(stop))
    assert [loader.skipped() for loader in before.loaders] == skipped_per_rank
    after = Run(shards, world_size=3, workers=0, shuffle_buffer=0).resume(before.states())
    assert after.skipped() == sum(map(Counter, skipped_per_rank), Counter())  # kept (on rank 0), counted once
    seen = after.until_epochs_complete(seen, {"": len(keys)})
    assert _epoch(seen, 0) == _epoch(seen, 1) == sorted(keys)
    assert after.skipped() == Counter(corrupt_image=sum(key in ("04001", "05001") for key, _ in seen))


def test_a_resume_while_finishing_segments_redistributes_what_is_left(dataset):
    shards, keys = dataset
    first = Run(shards, world_size=2, workers=0)
    seen = _seen(first.steps(2))
    second = Run(shards, world_size=3, workers=0).resume(first.states())
    seen += _seen(second.steps(1))
    assert any("segments" in slot for state in second.states() for slot in state["slots"])
    third = Run(shards, world_size=1, workers=0).resume(second.states())
    seen = third.until_epochs_complete(seen, {"": len(keys)})
    assert _epoch(seen, 0) == sorted(keys) and _epoch(seen, 1) == sorted(keys)
    # the second run's slot 2 had no segment: it began epoch 1 at once
    assert third.notes == ["resuming 3 ranks x 0 workers as 1 rank x 0 workers: epochs 0-1 continue exactly-once, "
                           "sample order differs"]


def test_states_must_be_every_rank_of_one_run(dataset):
    shards, _ = dataset
    states = Run(shards, world_size=2, workers=0).states()
    with pytest.raises(DataError, match=r"one per rank of the saved run \(world_size=2\), in rank order; got ranks "
                                        r"\[1, 0\]"):
        Run(shards, world_size=3, workers=0).resume(states[::-1])
    with pytest.raises(DataError, match="seed: saved 0, now 1"):
        Run(shards, world_size=3, workers=0, seed=1).resume(states)
    with pytest.raises(TypeError, match="takes the list of every rank's state_dict"):
        Run(shards, world_size=2, workers=0).loaders[0].resume(states[0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layouts=st.lists(st.integers(1, 3), min_size=2, max_size=3),
       stops=st.lists(st.integers(0, 8), min_size=2, max_size=2))
def test_any_layouts_and_stop_points_read_each_sample_once_per_epoch(tmp_path: Path, layouts: list[int],
                                                                     stops: list[int]):
    """Ranks (one slot each) change at every resume; each run but the last stops after its number of steps. Shards
    of unequal sizes give the slots unequal shares, so some are an epoch ahead of others when a run stops."""
    keys = [f"{shard}{index}" for shard, size in enumerate([1, 4, 2, 3, 2]) for index in range(size)]
    for shard in range(5):
        if not (tmp_path / f"{shard}.tar").exists():  # one tmp_path for every example
            write_shard(tmp_path / f"{shard}.tar", [good_sample(key) for key in keys if key.startswith(str(shard))])
    shards = [str(tmp_path / "*.tar")]
    seen: Seen = []
    states = None
    for world_size, stop in zip(layouts[:-1], stops):
        run = Run(shards, world_size=world_size, workers=0, shuffle_buffer=2)
        if states is not None:
            run.resume(states)
        seen += _seen(run.steps(stop))
        states = run.states()
    last = Run(shards, world_size=layouts[-1], workers=0, shuffle_buffer=2).resume(states)
    seen = last.until_epochs_complete(seen, {"": len(keys)})
    assert _epoch(seen, 0) == sorted(keys) and _epoch(seen, 1) == sorted(keys)
