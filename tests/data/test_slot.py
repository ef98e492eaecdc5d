import itertools
import logging
import re
from pathlib import Path

import pytest

from data.decode import ImageTransform
from data.errors import DataError
from data.slot import SlotBatcher, initial_slot_state
from data.patterns import expand_patterns
from tests.data.loader_fixtures import ByteTokenizer, decode_tokens, good_sample, write_dataset, write_shard


def _batcher(sources: list[list[str]], weights: list[float], batch_size: int = 50, state=None) -> SlotBatcher:
    return SlotBatcher(sources, weights, slot=0, num_slots=1, seed=0, shuffle_buffer=8,
                       transform=ImageTransform(8, train=True, crop_scale=(0.9, 1.0)), tokenizer=ByteTokenizer(),
                       batch_size=batch_size, state=state or initial_slot_state(len(sources)))


def test_weighted_mixing_follows_the_weights(tmp_path: Path):
    write_dataset(tmp_path / "a", num_shards=1, per_shard=10, prefix="a")
    write_dataset(tmp_path / "b", num_shards=1, per_shard=10, prefix="b")
    sources = [expand_patterns([str(tmp_path / "a/*.tar")]), expand_patterns([str(tmp_path / "b/*.tar")])]
    keys = [k for batch, _ in itertools.islice(_batcher(sources, [3.0, 1.0]), 8) for k in batch.keys]
    share_a = sum(k.startswith("a") for k in keys) / len(keys)
    assert len(keys) == 400 and abs(share_a - 0.75) < 0.06  # binomial sd 0.022
    only_b = [k for batch, _ in itertools.islice(_batcher(sources, [0.0, 2.0]), 2) for k in batch.keys]
    assert all(k.startswith("b") for k in only_b)


def test_batches_carry_tokens_of_their_captions_and_positions(tmp_path: Path):
    write_dataset(tmp_path, num_shards=1, per_shard=5)
    batches = _batcher([expand_patterns([str(tmp_path / "*.tar")])], [1.0], batch_size=3)
    (batch, state), (_, state2) = itertools.islice(batches, 2)
    assert [decode_tokens(row) for row in batch.tokens] == batch.captions
    assert batch.captions == [f"caption of {k}" for k in batch.keys]
    assert state == {"draws": 3, "samples_read": 3, "skipped": {}, "sources": [[0, 3]]}
    assert state2["sources"] == [[1, 1]] and state2["draws"] == 6  # epoch 0 had 5 samples


def test_mostly_bad_data_stops_with_an_error(tmp_path: Path):
    samples = [good_sample(f"{i:03d}") if i % 5 < 2 else {"__key__": f"{i:03d}", "png": b"broken", "txt": "x"}
               for i in range(100)]
    write_shard(tmp_path / "bad.tar", samples)
    with pytest.raises(DataError, match=r"6\d of 10\d samples .* skipped \(corrupt image: 6\d\).*/bad\.tar"):
        list(itertools.islice(_batcher([[str(tmp_path / "bad.tar")]], [1.0], batch_size=10), 10))


def test_skip_warnings_are_rate_limited_and_name_shard_and_key(tmp_path: Path, caplog):
    samples = [{"__key__": f"{i:03d}", "png": b"broken", "txt": "x"} for i in range(10)] + [good_sample("good")]
    write_shard(tmp_path / "bad.tar", samples)
    with caplog.at_level(logging.WARNING, logger="data.loader"):
        batch, state = next(iter(_batcher([[str(tmp_path / "bad.tar")]], [1.0], batch_size=1)))
    assert batch.keys == ["good"] and state["skipped"] == {"corrupt_image": 10}
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()  # not PIL's "cannot identify image file <_io.BytesIO object at 0x...>"
    assert re.fullmatch(rf"data: skipped sample \d{{3}} in shard {re.escape(str(tmp_path / 'bad.tar'))}: "
                        r"corrupt image: cannot decode the image member: not in an image format PIL can read",
                        message.split(" (")[0]), message
