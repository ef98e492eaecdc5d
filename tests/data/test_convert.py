import csv
import io
import json
import re
import tarfile

import pytest
from PIL import Image

from data.convert import ConvertOptions, convert, describe_stopped, imagefolder_records, table_records
from data.errors import DataError


def _png(path, size=(40, 20), colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _read_shards(out):
    """{key: {extension: bytes}} from every shard, with plain tarfile."""
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def _skipped(out):
    return [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]


def test_csv_round_trip_keeps_bytes_captions_and_metadata(tmp_path):
    src = tmp_path / "src"
    for i in range(5):
        _png(src / "img" / f"{i}.png", colour=(i * 40, 0, 0))
    with open(src / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "text", "license"])
        for i in range(5):
            writer.writerow([f"img/{i}.png", f"a red  square {i}", "cc-by"])
    records = table_records([str(src / "pairs.csv")], image_column="path", caption_column="text")
    report = convert(records, tmp_path / "out", max_samples_per_shard=2)
    assert (report.records, report.samples, len(report.shards), report.skipped) == (5, 5, 3, {})
    samples = _read_shards(tmp_path / "out")
    assert sorted(samples) == [f"{i:09d}" for i in range(5)]
    assert samples["000000003"]["png"] == (src / "img/3.png").read_bytes()  # kept as is, not re-encoded
    assert samples["000000003"]["txt"] == b"a red square 3"
    meta = json.loads(samples["000000003"]["json"])
    assert meta == {"key": "000000003", "caption": "a red square 3", "source": "pairs.csv:5", "license": "cc-by",
                    "width": 40, "height": 20, "original_width": 40, "original_height": 20}
    assert _skipped(tmp_path / "out") == []


def test_imagefolder_round_trip_with_templates_resize_and_format(tmp_path):
    root = tmp_path / "folder"
    _png(root / "golden_retriever" / "a.png", size=(300, 100))
    _png(root / "tabby_cat" / "b.png", size=(50, 60))
    (root / "tabby_cat" / "notes.txt").write_text("not an image")
    records = imagefolder_records(root, ["a photo of a {}.", "a {c} in the wild"])
    report = convert(records, tmp_path / "out", ConvertOptions(resize_longer=64, image_format="jpg"))
    assert report.samples == 2
    samples = _read_shards(tmp_path / "out")
    first, second = samples["000000000"], samples["000000001"]
    assert first["txt"].decode().splitlines() == ["a photo of a golden retriever.", "a golden retriever in the wild"]
    assert Image.open(io.BytesIO(first["jpg"])).size == (64, 21)
    assert Image.open(io.BytesIO(second["jpg"])).size == (50, 60)  # never enlarged; png re-encoded as jpg
    meta = json.loads(second["json"])
    assert (meta["class"], meta["label"], meta["classname"], meta["source"]) == ("tabby_cat", 1, "tabby cat",
                                                                                 "tabby_cat/b.png")


def test_classnames_file_names_imagefolder_classes(tmp_path):
    root = tmp_path / "folder"
    _png(root / "n01" / "a.png")
    _png(root / "n02" / "b.png")
    (root / "classnames.txt").write_text("tench\ngoldfish\n")
    captions = [r.captions for r in imagefolder_records(root, ["{}"])]
    assert captions == ["tench", "goldfish"]
    (root / "classnames.txt").write_text("tench\n")
    with pytest.raises(DataError, match="has 1 names for 2 class folders"):
        list(imagefolder_records(root))


def test_every_bad_input_is_skipped_listed_and_counted(tmp_path):
    src = tmp_path / "src"
    _png(src / "good.png")
    _png(src / "good2.png")
    (src / "corrupt.png").write_bytes(_png(src / "tmp.png").read_bytes()[:60])
    (src / "garbage.jpg").write_bytes(b"this is not an image")
    rows = [b"image,caption", b"good.png,a fine caption", b"missing.png,caption of a missing file",
            b"corrupt.png,a cut png", b"garbage.jpg,not an image", b"good.png,", b"good.png,   ",
            b"good.png,caf\xe9 latin-1 caption", b",no image path", b"good2.png,another fine caption"]
    (src / "pairs.csv").write_bytes(b"\n".join(rows) + b"\n")
    report = convert(table_records([str(src / "pairs.csv")]), tmp_path / "out", max_samples_per_shard=1)
    assert report.samples == 2 and sorted(_read_shards(tmp_path / "out")) == ["000000000", "000000008"]
    assert report.skipped == {"missing file": 2, "corrupt image": 2, "empty caption": 2, "non-UTF-8 caption": 1}
    listed = {(s["source"], s["reason"]) for s in _skipped(tmp_path / "out")}
    assert listed == {("pairs.csv:3", "missing file"), ("pairs.csv:4", "corrupt image"),
                      ("pairs.csv:5", "corrupt image"), ("pairs.csv:6", "empty caption"),
                      ("pairs.csv:7", "empty caption"), ("pairs.csv:8", "non-UTF-8 caption"),
                      ("pairs.csv:9", "missing file")}
    assert "converted 2 of 9 records into 2 shards" in report.summary()
    assert "skipped 7 (corrupt image: 2, empty caption: 2, missing file: 2, non-UTF-8 caption: 1)" in report.summary()


def test_jsonl_with_caption_lists_missing_fields_and_malformed_lines(tmp_path):
    src = tmp_path / "src"
    _png(src / "a.png")
    lines = [json.dumps({"url": "a.png", "captions": ["first", "second"], "id": 7}), "{broken",
             json.dumps({"url": "a.png"}), json.dumps({"url": "a.png", "captions": []})]
    (src / "data.jsonl").write_text("\n".join(lines) + "\n")
    report = convert(table_records([str(src / "data.jsonl")], "url", "captions"), tmp_path / "out", workers=2)
    samples = _read_shards(tmp_path / "out")
    assert samples["000000000"]["txt"] == b"first\nsecond" and json.loads(samples["000000000"]["json"])["id"] == 7
    assert report.skipped == {"malformed record": 1, "missing caption": 1, "empty caption": 1}


def test_patterns_and_columns_that_match_nothing_are_errors(tmp_path):
    with pytest.raises(DataError, match=r"pattern '.*nothing-\*.csv' matches no file"):
        list(table_records([str(tmp_path / "nothing-*.csv")]))
    (tmp_path / "t.csv").write_text("file,text\n")
    with pytest.raises(DataError, match=r"t.csv: no column 'image'; columns are file, text"):
        list(table_records([str(tmp_path / "t.csv")]))
    (tmp_path / "t.parquet").write_text("")
    with pytest.raises(DataError, match="unknown table format '.parquet'"):
        list(table_records([str(tmp_path / "t.parquet")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        list(imagefolder_records(tmp_path / "empty"))
    with pytest.raises(DataError, match="has no '{}'"):
        list(imagefolder_records(tmp_path, ["a photo"]))


def test_refuses_to_mix_with_existing_shards_and_names_the_clean_up(tmp_path):
    _png(tmp_path / "src" / "c" / "a.png")
    out = tmp_path / "out"
    convert(imagefolder_records(tmp_path / "src"), out)
    with pytest.raises(DataError, match=re.escape(f"{out} already holds shards: a finished convert (1 shard, "
                                                  f"skipped.jsonl); convert into another directory, or remove them "
                                                  f"first with `rm -r {out}`")):
        convert(imagefolder_records(tmp_path / "src"), out)
    (out / "skipped.jsonl").unlink()  # as a convert that was stopped leaves it
    (out / ".shard-000001.tar.k2j4_x9a.tmp").write_bytes(b"")  # and one killed while writing
    with pytest.raises(DataError, match=re.escape(f"{out} already holds shards: 1 shard of a convert that did not "
                                                  f"finish (no skipped.jsonl); convert does not resume or add to them: "
                                                  f"remove them with `rm -r {out}` and run it again")):
        convert(imagefolder_records(tmp_path / "src"), out)
    (out / "notes.txt").write_text("not convert's")
    with pytest.raises(DataError, match=re.escape(f"remove them with `rm {out}/shard-*.tar` and run it again")):
        convert(imagefolder_records(tmp_path / "src"), out)
    (out / "skipped.jsonl").write_text("")
    with pytest.raises(DataError, match=re.escape(f"remove them first with `rm {out}/shard-*.tar "
                                                  f"{out}/skipped.jsonl`")):
        convert(imagefolder_records(tmp_path / "src"), out)


def test_describes_what_a_stop_left(tmp_path):
    out = tmp_path / "out"
    assert describe_stopped(out) == f"no shard was complete, {out} holds none; run the same command again to convert " \
                                    "from the start"
    _png(tmp_path / "src" / "c" / "a.png")
    convert(imagefolder_records(tmp_path / "src"), out)
    assert describe_stopped(out) == f"the convert had finished: {out} holds its 1 shard and skipped.jsonl"
    (out / "skipped.jsonl").unlink()
    assert describe_stopped(out) == (f"{out} holds the first 1 complete shard and no skipped.jsonl; convert does not "
                                     f"resume: run `rm -r {out}`, then the same command again")


def test_workers_give_the_same_shards_as_one_process(tmp_path):
    src = tmp_path / "src"
    for i in range(50):  # several chunks per worker, and a bad record among them
        _png(src / f"c{i % 3}" / f"{i:02d}.png", colour=(i * 5, 0, 0))
    (src / "c1" / "bad.png").write_bytes(b"not a png")
    one = convert(imagefolder_records(src), tmp_path / "one", max_samples_per_shard=7)
    three = convert(imagefolder_records(src), tmp_path / "three", max_samples_per_shard=7, workers=3)
    assert (three.samples, three.skipped) == (one.samples, one.skipped) == (50, {"corrupt image": 1})
    assert [p.read_bytes() for p in three.shards] == [p.read_bytes() for p in one.shards]
    assert (tmp_path / "three" / "skipped.jsonl").read_text() == (tmp_path / "one" / "skipped.jsonl").read_text()
