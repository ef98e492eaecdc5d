import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contrastive import cli
from data.curation import EntryCounts, EntryMatcher, coin, count_pool, curate_pool, read_entries
from data.errors import DataError
from data.shards import ShardWriter, read_shard, sample_key

IMAGE = io.BytesIO()
Image.new("RGB", (4, 4), (1, 2, 3)).save(IMAGE, format="PNG")


def _pool(folder: Path, captions: list[str], per_shard: int) -> list[str]:
    with ShardWriter(folder, max_samples=per_shard) as writer:
        for index, caption in enumerate(captions):
            key = sample_key(index)
            writer.write(key, {"png": IMAGE.getvalue(), "txt": caption.encode(),
                               "json": json.dumps({"key": key, "caption": caption, "site": "x"}).encode()})
    return [str(p) for p in writer.shards]


def _entries_file(tmp_path: Path, entries: list[str]) -> Path:
    path = tmp_path / "entries.txt"
    path.write_text("".join(f"{e}\n" for e in entries))
    return path


def _kept(out: Path) -> list[dict]:
    kept = []
    for shard in sorted(out.glob("shard-*.tar")):
        for sample in read_shard(shard):
            kept.append({**json.loads(sample.members["json"]), "txt": sample.members["txt"].decode()})
    return kept


def _shuffled(groups: dict[str, int], seed: int = 0) -> list[str]:
    captions = [caption for caption, n in groups.items() for _ in range(n)]
    return [captions[i] for i in np.random.default_rng(seed).permutation(len(captions))]


def test_matching_follows_metaclip_whole_entries_in_the_spaced_caption():
    matcher = EntryMatcher(["dog", "hot dog", "New York", "cat", "U.S.", "a"])

    def found(caption: str, m: EntryMatcher = matcher) -> set[str]:
        return {m.entries[i] for i in m.match(caption)}

    assert found("a hot dog, a cat.") == {"a", "hot dog", "dog", "cat"}  # overlapping entries all match
    assert found("dog;cat!") == {"dog", "cat"}  # , . ; : ? ! ` are spaced out
    assert found("cats and hotdogs") == set()  # partial words do not match
    assert found("the dog's bone (dog)") == set()  # other punctuation stays attached, as in MetaCLIP
    assert found("A Dog in new york") == set()  # case-sensitive, as MetaCLIP
    assert found("U.S. army") == set()  # entries are not spaced out: MetaCLIP's "U.S." never matches
    assert found("dog\tcat") == {"dog", "cat"}
    lowercase = EntryMatcher(["dog", "New York", "Apple", "apple"], lowercase=True)
    assert found("A Dog in NEW YORK, an APPLE", lowercase) == {"dog", "New York", "Apple", "apple"}


def test_entries_file_is_one_entry_a_line_without_duplicates(tmp_path):
    assert read_entries(_entries_file(tmp_path, ["dog", "", "  hot dog ", "cat"])) == ["dog", "hot dog", "cat"]
    with pytest.raises(DataError, match=r"entry 'dog' on line 3 is on line 1 already"):
        read_entries(_entries_file(tmp_path, ["dog", "cat", "dog"]))


@pytest.mark.slow
def test_zipf_pool_with_one_entry_per_caption_caps_the_head_and_keeps_the_tail(tmp_path):
    cap = 100
    counts = {f"entry{i}": int(1500 / (i + 1) ** 1.1) for i in range(40)}  # 1500, 699, 447, ... 25
    groups = {f"a photo of entry{i} here": n for i, n in enumerate(counts.values())}
    groups["nothing to match"] = 300
    shards = _pool(tmp_path / "pool", _shuffled(groups), per_shard=1500)
    metadata = _entries_file(tmp_path, [*counts, "never seen"])
    report = curate_pool(shards, metadata, tmp_path / "out", cap, seed=1)
    kept = Counter(entry for sample in _kept(tmp_path / "out") for entry in sample["metadata_entries"])
    head = [e for e, n in counts.items() if n > cap]
    assert len(head) == 11
    for entry, n in counts.items():
        if n <= cap:
            assert kept[entry] == n  # the tail keeps every sample
        else:
            # kept ~ Binomial(n, cap / n): mean cap, sd <= sqrt(cap); 4 sd either side
            assert abs(kept[entry] - cap) <= 4 * math.sqrt(cap), (entry, n, kept[entry])
    assert report.removed["unmatched"] == 300
    d = report.distribution
    assert (d["entries"], d["matched_entries"], d["capped_entries"]) == (41, 40, 11)
    assert d["capped_fraction"] == pytest.approx(11 / 40)
    assert d["head"][0] == {"entry": "entry0", "before": 1500, "after": kept["entry0"],
                            "keep_probability": cap / 1500}
    assert d["tail"] == {"entries": 29, "samples_before": sum(n for n in counts.values() if n <= cap),
                         "samples_after": sum(n for n in counts.values() if n <= cap)}
    assert sum(row["before"] for row in d["histogram"]) == 41
    assert (tmp_path / "out" / "entry_counts.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["kept"] == report.kept == sum(kept.values())


@pytest.mark.slow
def test_keep_rate_with_several_entries_per_caption_is_one_minus_the_product(tmp_path):
    # counts: alpha 5000, beta 4000, gamma 2000; cap 500: p = 0.1, 0.125, 0.25
    groups = {"alpha beta": 3000, "alpha": 2000, "beta gamma": 1000, "gamma": 1000}
    shards = _pool(tmp_path / "pool", _shuffled(groups), per_shard=2000)
    curate_pool(shards, _entries_file(tmp_path, ["alpha", "beta", "gamma"]), tmp_path / "out", 500)
    p = {"alpha": 0.1, "beta": 0.125, "gamma": 0.25}
    samples = _kept(tmp_path / "out")
    assert {k: samples[0][k] for k in ("key", "site", "source_shard")} == {
        "key": "000000000", "site": "x", "source_shard": "shard-000000.tar"}  # KEY.json keeps its fields
    assert samples[0]["metadata_entries"] == samples[0]["txt"].split()
    kept = Counter(sample["txt"] for sample in samples)
    for caption, n in groups.items():
        expected = 1 - math.prod(1 - p[word] for word in caption.split())
        tolerance = 4 * math.sqrt(expected * (1 - expected) / n)  # 4 binomial sd of the rate over n samples
        assert abs(kept[caption] / n - expected) <= tolerance, (caption, kept[caption] / n, expected)


def _multi_entry_captions() -> list[str]:
    rng = np.random.default_rng(3)
    words = ["red", "green", "blue", "cube", "ball", "sky", "tree"]
    weights = np.array([30, 10, 5, 20, 8, 3, 1], float)
    return [" ".join(rng.choice(words, size=rng.integers(1, 4), p=weights / weights.sum())) + "."
            for _ in range(1500)]


@pytest.mark.slow
def test_result_is_independent_of_sharding_workers_and_counts_in_parts(tmp_path):
    captions = _multi_entry_captions()
    metadata = _entries_file(tmp_path, ["red", "green", "blue", "cube", "ball", "sky"])
    one = _pool(tmp_path / "one", captions, per_shard=len(captions))
    five = _pool(tmp_path / "five", captions, per_shard=300)
    curate_pool(one, metadata, tmp_path / "out-one", 100, seed=7)
    curate_pool(five, metadata, tmp_path / "out-five", 100, seed=7)

    def kept(out: Path) -> list[tuple]:
        return [(s["source_key"], s["txt"], tuple(s["metadata_entries"])) for s in _kept(out)]

    assert kept(tmp_path / "out-one") == kept(tmp_path / "out-five")
    assert 200 < len(kept(tmp_path / "out-one")) < 1200  # the coins did decide

    count_pool(five[:2], metadata).save(tmp_path / "part-a.json")
    count_pool(five[2:], metadata, workers=2).save(tmp_path / "part-b.json")
    curate_pool(five, metadata, tmp_path / "out-parts", 100, counts=[str(tmp_path / "part-*.json")], seed=7,
                workers=2)
    files = {p.name: p.read_bytes() for p in sorted((tmp_path / "out-five").iterdir())}
    assert files == {p.name: p.read_bytes() for p in sorted((tmp_path / "out-parts").iterdir())}


def test_coins_are_a_function_of_seed_key_and_entry():
    assert coin(0, "000000001", "dog") == coin(0, "000000001", "dog")
    draws = [coin(0, sample_key(i), "dog") for i in range(20000)]
    assert abs(np.mean(draws) - 0.5) < 0.01 and 0 <= min(draws) and max(draws) < 1
    assert coin(1, "000000001", "dog") != coin(0, "000000001", "dog") != coin(0, "000000001", "cat")


def test_counts_that_do_not_cover_the_pool_are_errors_before_any_output(tmp_path):
    shards = _pool(tmp_path / "pool", _multi_entry_captions(), per_shard=500)
    metadata = _entries_file(tmp_path, ["red", "green", "blue"])
    count_pool(shards[:2], metadata).save(tmp_path / "a.json")
    count_pool(shards[1:], metadata).save(tmp_path / "b.json")
    count_pool(shards[2:], metadata).save(tmp_path / "c.json")
    out = tmp_path / "out"

    def error(counts: list[str], metadata_file: Path = metadata) -> str:
        with pytest.raises(DataError) as e:
            curate_pool(shards, metadata_file, out, 50, counts=[str(tmp_path / c) for c in counts])
        assert not out.exists()
        return str(e.value)

    assert error(["a.json"]) == ("1 shard of the pool in no counts file, first shard-000002.tar: count every shard "
                                 "(--counts-only) and give every counts file")
    assert error(["a.json", "b.json"]).startswith("shard shard-000001.tar is counted twice")
    other = tmp_path / "other"
    other.mkdir()
    assert "another metadata list" in error(["a.json", "c.json"], _entries_file(other, ["red", "green"]))
    tampered = json.loads((tmp_path / "c.json").read_text())
    tampered["counts"][0] += 1
    (tmp_path / "c.json").write_text(json.dumps(tampered))
    assert error(["a.json", "c.json"]).startswith("the counts files do not count this pool: entry 'red'")
    with pytest.raises(DataError, match="not a counts file"):
        EntryCounts.load(metadata)


def test_cli_counts_in_parts_then_balances(tmp_path, capsys):
    shards = _pool(tmp_path / "pool", _multi_entry_captions(), per_shard=500)
    metadata = str(_entries_file(tmp_path, ["red", "green", "blue", "cube"]))
    assert cli.main(["data", "curate", *shards[:1], str(tmp_path / "c0.json"), "--metadata", metadata,
                     "--counts-only"]) == 0
    assert cli.main(["data", "curate", *shards[1:], str(tmp_path / "c1.json"), "--metadata", metadata,
                     "--counts-only"]) == 0
    assert "matching an entry, into" in capsys.readouterr().out
    out = tmp_path / "out"
    assert cli.main(["data", "curate", str(tmp_path / "pool"), str(out), "--metadata", metadata,
                     "--per-entry-cap", "100", "--counts", str(tmp_path / "c*.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("curate: kept ")
    assert "head entry" in printed and "tail:" in printed and f"plot: {out}/entry_counts.png" in printed
    assert cli.main(["data", "curate", *shards, str(tmp_path / "out2"), "--metadata", metadata]) == 2
    assert "--per-entry-cap" in capsys.readouterr().err
