"""Every bad-input case through the whole loader: skipped, counted by reason, never fatal unless nearly all bad."""
import itertools
from pathlib import Path

import pytest

from data.errors import DataError
from data.loader import StreamLoader
from tests.data.loader_fixtures import ByteTokenizer, good_sample, image_bytes, truncate_inside, write_shard

BAD_SAMPLES = {
    "corrupt_image": {"__key__": "bad-corrupt", "jpg": b"\xff\xd8 not a jpeg", "txt": "x"},
    "truncated_image": {"__key__": "bad-truncated", "jpg": image_bytes((9, 9, 9), (64, 64), "JPEG")[:200], "txt": "x"},
    "missing_caption": {"__key__": "bad-nocaption", "png": image_bytes((9, 9, 9))},
    "empty_caption": {"__key__": "bad-empty", "png": image_bytes((9, 9, 9)), "txt": "\n \n"},
    "no_image": {"__key__": "bad-noimage", "txt": "a caption without its picture"},
    "non_utf8_caption": {"__key__": "bad-latin1", "png": image_bytes((9, 9, 9)), "txt": "café".encode("latin-1")},
    "corrupt_json": {"__key__": "bad-json", "png": image_bytes((9, 9, 9)), "json": '{"caption": '},
}


def _loader(shards: list[str], **kwargs) -> StreamLoader:
    return StreamLoader(shards, ByteTokenizer(), **(dict(batch_size=1, image_size=8, shuffle_buffer=0,
                                                          workers=0) | kwargs))


def test_each_bad_sample_is_skipped_and_counted_by_reason(tmp_path: Path):
    good = [good_sample(f"good-{i}") for i in range(4)]
    # Bad samples between good ones and a good one last: after 4 batches every bad sample has been met once.
    write_shard(tmp_path / "mixed.tar", [good[0], *list(BAD_SAMPLES.values())[:4], good[1], good[2],
                                         *list(BAD_SAMPLES.values())[4:], good[3]])
    loader = _loader([str(tmp_path / "mixed.tar")])
    assert sorted(k for batch in itertools.islice(iter(loader), 4) for k in batch.keys) == [s["__key__"] for s in good]
    assert loader.skipped() == {"corrupt_image": 2, "missing_caption": 1, "empty_caption": 1, "no_image": 1,
                                "non_utf8_caption": 1, "corrupt_json": 1}


def test_truncated_and_unreadable_shards_are_one_event_each(tmp_path: Path):
    write_shard(tmp_path / "a-good.tar", [good_sample(f"a{i}") for i in range(3)])
    write_shard(tmp_path / "b-truncated.tar", [good_sample(f"b{i}") for i in range(4)])
    truncate_inside(tmp_path / "b-truncated.tar", "b2.txt")
    (tmp_path / "c-not-a-tar.tar").write_bytes(b"<html>rate limited</html>" * 40)
    loader = _loader([str(tmp_path / "*.tar"), "pipe:exit 7"])
    keys = [k for batch in itertools.islice(iter(loader), 5) for k in batch.keys]
    assert sorted(keys) == ["a0", "a1", "a2", "b0", "b1"]  # b2 was cut mid-sample
    stream = iter(loader)
    for _ in range(5 * 6):  # six more epochs: every epoch meets each of the 3 broken shards once
        next(stream)
    assert 3 * 6 <= loader.skipped()["unreadable_shard"] <= 3 * 8


@pytest.mark.parametrize("workers", [0, 2])
def test_nearly_all_bad_stops_with_an_error_naming_the_counts(tmp_path: Path, workers: int):
    for shard in range(2):
        write_shard(tmp_path / f"{shard}.tar", [good_sample(f"{shard}-{i}") if i % 4 == 0 else
                                                {"__key__": f"{shard}-{i}", "png": b"??", "txt": "x"}
                                                for i in range(60)])
    with pytest.raises(DataError, match=r"of 1\d\d samples read by slot \d were skipped \(corrupt image: \d+\)"):
        list(itertools.islice(iter(_loader([str(tmp_path / "*.tar")], workers=workers)), 200))


def test_shards_that_never_yield_a_sample_raise_instead_of_hanging(tmp_path: Path):
    (tmp_path / "empty.tar").write_bytes(b"")
    with pytest.raises(DataError, match="read no sample"):
        next(iter(_loader([str(tmp_path / "empty.tar")])))


def test_a_pattern_matching_nothing_is_an_error_naming_it(tmp_path: Path):
    with pytest.raises(DataError, match=r"shard pattern '.*/missing-\*\.tar' matches no file"):
        _loader([str(tmp_path / "missing-*.tar")])
