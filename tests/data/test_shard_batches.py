"""data.shard_batches: every sample of every shard once, in shard order, batched within a shard, whatever the worker
count; a shard's end names every key and its skips; a shard cut short says so."""
from pathlib import Path

import pytest
import torch

from data.shard_batches import Pixels, ShardBatch, ShardBatches, ShardEnd, shard_batch_loader
from tests.data.loader_fixtures import ByteTokenizer, decode_tokens, good_sample, truncate_inside, write_shard


def _shards(tmp_path: Path) -> list[str]:
    shards = []
    for shard in range(3):
        samples = [good_sample(f"{shard}{i:02d}") for i in range(5 + shard)]
        samples[1]["txt"] = "first line\n\n  second   line "
        if shard == 1:
            samples[2] = {"__key__": samples[2]["__key__"], "png": b"broken", "txt": "a caption"}
            samples[3] = {"__key__": samples[3]["__key__"], "png": samples[3]["png"]}
        shards.append(str(write_shard(tmp_path / f"s{shard}.tar", samples)))
    return shards


def _items(shards: list[str], workers: int, batch_size: int = 2) -> list:
    dataset = ShardBatches(shards, Pixels(8), ByteTokenizer(), batch_size)
    return list(shard_batch_loader(dataset, workers))


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_each_shard_is_batched_alone_in_its_order_then_ended(tmp_path, workers):
    shards = _shards(tmp_path)
    items = _items(shards, workers)
    for shard in range(3):
        mine = [item for item in items if item.shard == shard]
        *batches, end = mine
        assert isinstance(end, ShardEnd) and all(isinstance(b, ShardBatch) for b in batches)
        assert end.keys == [f"{shard}{i:02d}" for i in range(5 + shard)] and end.error is None
        batched = [key for batch in batches for key in batch.keys]
        assert batched == [k for k in end.keys if shard != 1 or k not in ("102", "103")]
        assert end.skipped == ({"corrupt_image": 1, "missing_caption": 1} if shard == 1 else {})
        assert [len(b.keys) for b in batches[:-1]] == [2] * (len(batches) - 1)
    batches = [item for item in items if isinstance(item, ShardBatch)]
    assert {tuple(b.images.shape[1:]) for b in batches} == {(3, 8, 8)} and batches[0].images.dtype == torch.uint8
    first = next(b for b in batches if b.keys == ["000", "001"])
    assert first.captions == [1, 2]
    assert [decode_tokens(row) for row in first.tokens] == ["caption of 000", "first line", "second line"]
    one_worker = [(i.shard, i.keys) for i in _items(shards, 0)]
    assert sorted(one_worker) == sorted((i.shard, i.keys) for i in items)


def test_a_truncated_shard_ends_with_its_error_after_the_samples_before_the_cut(tmp_path):
    shards = _shards(tmp_path)
    truncate_inside(Path(shards[2]), "204.png")
    *batches, end = [item for item in _items(shards, 0) if item.shard == 2]
    assert [k for b in batches for k in b.keys] == ["200", "201", "202", "203"]
    assert "truncated or unreadable" in end.error and end.keys == ["200", "201", "202", "203"]


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        ShardBatches([], Pixels(8), ByteTokenizer(), 0)
