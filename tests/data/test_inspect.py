import io

import pytest
from PIL import Image

from data.errors import DataError
from data.inspect import format_report, inspect_shards
from data.shards import ShardWriter, sample_key


def _png(size):
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_counts_sizes_captions_and_bad_samples_by_reason(tmp_path):
    good = _png((32, 16))
    with ShardWriter(tmp_path, max_samples=6) as writer:
        for i in range(4):
            writer.write(sample_key(i), {"png": good, "txt": b"a red circle\nred disc", "json": b"{}"})
        writer.write(sample_key(4), {"png": _png((64, 48)), "txt": b"wide", "json": b"{}"})
        writer.write(sample_key(5), {"png": good[:50], "txt": b"cut image"})
        writer.write(sample_key(6), {"png": good})
        writer.write(sample_key(7), {"jpg": good, "txt": b" \n "})
        writer.write(sample_key(8), {"png": good, "txt": b"caf\xe9"})
        writer.write(sample_key(9), {"txt": b"caption without image"})
    # a third shard, cut inside its second sample, and a repeated key in it
    with ShardWriter(tmp_path / "more") as more:
        more.write(sample_key(0), {"png": good, "txt": b"repeated key"})
        more.write(sample_key(10), {"png": good, "txt": b"lost to the cut"})
    data = more.shards[0].read_bytes()
    (tmp_path / "shard-000002.tar").write_bytes(data[: 512 * 4 + 700])

    report = inspect_shards([str(tmp_path / "shard-{000000..000002}.tar")], progress=False)
    assert (report.shards, report.samples, report.good) == (3, 11, 5)
    assert report.bad == {"corrupt image": 1, "missing caption": 1, "empty caption": 1, "non-UTF-8 caption": 1,
                          "no image": 1, "duplicate key": 1, "truncated tar": 1}
    assert report.members == {"json+png+txt": 5, "png+txt": 3, "png": 1, "jpg+txt": 1, "txt": 1}
    assert report.first_keys == [sample_key(i) for i in range(5)]
    assert (report.image_width.min, report.image_width.max, report.image_width.mean) == (32, 64, 38.4)
    assert (report.caption_lines.min, report.caption_lines.max, report.caption_lines.mean) == (1, 2, 1.8)
    assert report.caption_chars.count == 9 and report.caption_chars.min == 4 and report.caption_chars.max == 12
    text = format_report(report)
    assert "11 (5 good, 6 bad)" in text and "truncated tar: 1" in text
    assert f"shard-000000.tar {sample_key(5)}: corrupt image" in text


def test_pattern_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(DataError, match="matches no file"):
        inspect_shards([str(tmp_path / "shard-{000000..000003}.tar")])


def test_json_captions_count_as_the_loader_reads_them(tmp_path):
    with ShardWriter(tmp_path) as writer:
        writer.write(sample_key(0), {"png": _png((8, 8)), "json": b'{"captions": ["a  red\\tdisc", " "]}'})
        writer.write(sample_key(1), {"png": _png((8, 8)), "json": b'{"caption": '})
        writer.write(sample_key(2), {"png": _png((8, 8)), "json": b'{"caption": 5}'})
    report = inspect_shards([str(tmp_path / "shard-*.tar")], progress=False)
    assert (report.samples, report.good, report.caption_chars.max) == (3, 1, len("a red disc"))
    assert report.bad == {"corrupt json": 1, "missing caption": 1}
