import random
from pathlib import Path

import pytest

from data.errors import DataError
from data.patterns import expand_patterns
from data.shards import RawSample
from data.stream import SourceStream, epoch_shards, shuffled
from tests.data.loader_fixtures import write_dataset


def test_epoch_shards_partition_every_epoch_and_reshuffle():
    shards = [f"s{i}" for i in range(10)]
    orders = []
    for epoch in range(3):
        parts = [epoch_shards(shards, seed=5, source=0, epoch=epoch, slot=s, num_slots=4) for s in range(4)]
        assert sorted(u for part in parts for u in part) == shards
        assert [len(p) for p in parts] == [3, 3, 2, 2]
        orders.append(parts)
    assert orders[0] != orders[1] != orders[2]


def test_shuffle_buffer_permutes_and_replays():
    samples = [RawSample(str(i), "s", {}) for i in range(50)]
    first = [s.key for s in shuffled(iter(samples), 8, random.Random(1))]
    assert sorted(first, key=int) == [str(i) for i in range(50)] and first != [str(i) for i in range(50)]
    assert first == [s.key for s in shuffled(iter(samples), 8, random.Random(1))]
    assert [s.key for s in shuffled(iter(samples), 0, random.Random(1))] == [str(i) for i in range(50)]


def _stream(shards: list[str], events: list) -> SourceStream:
    """events receives (shard name, the stream's epoch) for each unreadable shard."""
    stream = SourceStream(shards, source=0, slot=0, num_slots=1, seed=3, buffer_size=4,
                          on_shard_error=lambda url, message: events.append((Path(url).name, stream.epoch)))
    return stream


def test_source_stream_seek_continues_exactly_and_moves_through_epochs(tmp_path: Path):
    write_dataset(tmp_path, num_shards=3, per_shard=4)
    shards = expand_patterns([str(tmp_path / "shard-*.tar")])
    stream = _stream(shards, [])
    full = [(e, p, s.key) for e, p, s in (next(stream) for _ in range(30))]
    assert [(e, p) for e, p, _ in full[:13]] == [(0, i) for i in range(12)] + [(1, 0)]
    assert sorted(k for e, _, k in full if e == 1) == sorted(k for e, _, k in full if e == 0)
    for epoch, position in [(0, 0), (0, 7), (1, 3), (2, 0)]:
        resumed = _stream(shards, [])
        resumed.seek(epoch, position)
        start = full.index(next(t for t in full if t[:2] == (epoch, position)))
        assert [(e, p, s.key) for e, p, s in (next(resumed) for _ in range(5))] == full[start:start + 5]


def test_unreadable_shards_are_one_event_each_and_not_recounted_on_seek(tmp_path: Path):
    write_dataset(tmp_path, num_shards=2, per_shard=3)
    (tmp_path / "garbage.tar").write_bytes(b"not a tar" * 100)
    shards = expand_patterns([str(tmp_path / "*.tar")]) + ["pipe:exit 1"]
    events: list = []
    stream = _stream(shards, events)
    while next(stream)[0] == 0:
        pass
    assert sorted(e for e in events if e[1] == 0) == [("garbage.tar", 0), ("pipe:exit 1", 0)]
    replay_events: list = []
    _stream(shards, replay_events).seek(0, 6)
    assert replay_events == []


def test_stream_of_only_unreadable_shards_raises_instead_of_spinning(tmp_path: Path):
    (tmp_path / "garbage.tar").write_bytes(b"x" * 1000)
    with pytest.raises(DataError, match="read no sample of source 0 in 10 epochs"):
        next(_stream([str(tmp_path / "garbage.tar")], []))


def test_seek_past_the_data_says_the_shards_changed(tmp_path: Path):
    write_dataset(tmp_path, num_shards=1, per_shard=3)
    with pytest.raises(DataError, match="hold only 3 samples"):
        _stream(expand_patterns([str(tmp_path / "*.tar")]), []).seek(0, 5)
