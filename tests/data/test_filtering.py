import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contrastive import cli
from data.errors import DataError
from data.filtering import FilterOptions, ShardScores, filter_pool, score_cuts
from data.scores import ScoreMetadata, score_table, scores_path, shard_keys_sha256, write_scores
from data.shards import ShardWriter, read_shard, sample_key, shard_keys

NO_SCORE = None  # a sample the score command skipped


def _png(colour: int, size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (colour % 256, colour // 256 % 256, 7)).save(out, format="PNG")
    return out.getvalue()


def _sample(caption: str = "a photo of a thing", image: bytes | None = None, **fields) -> dict:
    return {"caption": caption, "image": image, "fields": fields}


def _pool(root: Path, shards: list[list[dict]]) -> list[Path]:
    """Shards root/pool/part-N.tar of the given samples, keyed across the pool; each image distinct unless given."""
    paths, index = [], 0
    for number, samples in enumerate(shards):
        staging = root / f"staging-{number}"
        with ShardWriter(staging, max_samples=len(samples)) as writer:
            for sample in samples:
                key = sample_key(index)
                members = {"png": sample["image"] or _png(index), "txt": sample["caption"].encode()}
                if sample["fields"] is not None:
                    members["json"] = json.dumps({"key": key, "caption": sample["caption"].split("\n")[0],
                                                  **sample["fields"]}).encode()
                writer.write(key, members)
                index += 1
        path = root / "pool" / f"part-{number}.tar"
        path.parent.mkdir(exist_ok=True)
        shutil.move(staging / "shard-000000.tar", path)
        paths.append(path)
    return paths


def _write_scores(shard: Path, scores_dir: Path, scores: list) -> None:
    """The score file `contrastive data score` writes: a row per score, none for NO_SCORE (skipped as corrupt)."""
    keys = shard_keys(shard)
    assert len(keys) == len(scores)
    rows = [(key, s) for key, s in zip(keys, scores) if s is not NO_SCORE]
    table = score_table([k for k, _ in rows], shard.name, [np.array([s], np.float32) for _, s in rows])
    skipped = {"corrupt_image": len(keys) - len(rows)} if len(rows) < len(keys) else {}
    write_scores(scores_path(scores_dir, shard), table, ScoreMetadata(
        shard=shard.name, shard_bytes=os.path.getsize(shard), shard_keys_sha256=shard_keys_sha256(keys),
        samples=len(keys), model="runs/scorer", skipped=skipped))


def _scored_pool(tmp_path: Path, shards: list[list[dict]], scores: list[list]) -> tuple[list[str], Path]:
    paths = _pool(tmp_path, shards)
    for path, shard_scores in zip(paths, scores):
        _write_scores(path, tmp_path / "scores", shard_scores)
    return [str(p) for p in paths], tmp_path / "scores"


def _kept(out: Path) -> list[dict]:
    """The output's samples in order: KEY.json plus the caption and image bytes."""
    kept = []
    for shard in sorted(out.glob("shard-*.tar")):
        for sample in read_shard(shard):
            meta = json.loads(sample.members["json"])
            assert meta["key"] == sample.key
            kept.append({**meta, "txt": sample.members["txt"].decode(), "png": sample.members["png"]})
    return kept


def _source_keys(out: Path) -> list[str]:
    return [s["source_key"] for s in _kept(out)]


def test_keep_fraction_is_the_global_top_with_ties_at_the_threshold_broken_by_pool_order(tmp_path):
    shards, scores = _scored_pool(tmp_path, [[_sample()] * 4, [_sample()] * 4],
                                  [[0.875, 0.5, 0.5, 0.25], [0.5, 0.75, 0.125, 0.5]])
    report = filter_pool(shards, scores, tmp_path / "out", FilterOptions(keep_fraction="0.5"))
    # N = 8 scored, floor(0.5 x 8) = 4: 0.875 and 0.75 above the threshold 0.5, then the first two of the four 0.5s
    assert _source_keys(tmp_path / "out") == ["000000000", "000000001", "000000002", "000000005"]
    assert report.score == {"rule": "keep_fraction", "keep_fraction": "0.5", "scored": 8, "selected": 4,
                            "threshold": 0.5, "at_threshold": 4, "at_threshold_selected": 2}
    assert (report.kept, report.samples) == (4, 8)
    assert report.per_shard == {"part-0.tar": {"samples": 4, "kept": 3}, "part-1.tar": {"samples": 4, "kept": 1}}


def test_keep_fraction_counts_the_decimal_written_exactly():
    # As binary floats 0.29 x 100 is 28.999999999999996 and 0.3 x 10 is 3.0000000000000004: the count is 29 and 3
    for fraction, n, selected in (("0.29", 100, 29), ("0.3", 10, 3), ("1", 7, 7), ("0.01", 50, 0)):
        checked = [ShardScores("a.tar", n, np.linspace(0, 1, n, dtype=np.float32))]
        summary, cuts = score_cuts(FilterOptions(keep_fraction=fraction), checked)
        assert summary["selected"] == selected
        kept = sum(int((c.scores > cut.threshold).sum()) + cut.ties for c, cut in zip(checked, cuts))
        assert kept == selected


def test_min_score_keeps_every_score_at_or_above_it(tmp_path):
    shards, scores = _scored_pool(tmp_path, [[_sample()] * 4], [[0.25, 0.5, 0.75, 0.5]])
    report = filter_pool(shards, scores, tmp_path / "out", FilterOptions(min_score=0.5))
    assert _source_keys(tmp_path / "out") == ["000000001", "000000002", "000000003"]
    assert report.score == {"rule": "min_score", "min_score": 0.5, "scored": 4, "selected": 3}


def _mixed_pool(tmp_path):
    samples = [[_sample(f"caption {'word ' * (i % 5)}", source=f"site{i % 3}", language="en" if i % 4 else "de")
                for i in range(j * 30, j * 30 + 30)] for j in range(3)]
    duplicate = _png(9999)
    samples[0][3]["image"] = samples[2][7]["image"] = duplicate
    rng = np.random.default_rng(0)
    scores = [[float(rng.choice([0.25, 0.5, 0.75])) for _ in shard] for shard in samples]
    scores[1][4] = NO_SCORE
    return _scored_pool(tmp_path, samples, scores)


def test_output_is_byte_identical_for_one_or_several_workers(tmp_path):
    shards, scores = _mixed_pool(tmp_path)
    options = FilterOptions(keep_fraction="0.6", min_caption_words=2, languages=("en",), dedup=True,
                            source_field="source")
    outputs = {}
    for workers in (1, 3):
        out = tmp_path / f"out-{workers}"
        filter_pool(shards, scores, out, options, max_samples_per_shard=7, workers=workers)
        outputs[workers] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert len([name for name in outputs[1] if name.endswith(".tar")]) > 2
    assert outputs[1] == outputs[3]


def test_key_json_keeps_its_fields_and_gains_the_source_and_the_score(tmp_path):
    shards, scores = _scored_pool(tmp_path, [[_sample("a cat", license="cc-by", width=8, height=8)],
                                             [_sample("a dog\nanother dog", license="cc0")]], [[0.5], [0.3]])
    filter_pool(shards, scores, tmp_path / "out", FilterOptions(min_score=0.0))
    first, second = _kept(tmp_path / "out")
    assert {k: first[k] for k in ("key", "caption", "license", "width", "source_shard", "source_key", "score")} == {
        "key": "000000000", "caption": "a cat", "license": "cc-by", "width": 8, "source_shard": "part-0.tar",
        "source_key": "000000000", "score": 0.5}
    assert second["score"] == float(np.float32(0.3)) and second["source_shard"] == "part-1.tar"
    assert second["txt"] == "a dog\nanother dog"  # members other than KEY.json keep their bytes
    with tarfile.open(sorted((tmp_path / "out").glob("shard-*.tar"))[0]) as tar:
        assert {(m.mtime, m.uid, m.uname, m.mode) for m in tar.getmembers()} == {(0, 0, "", 0o644)}


def test_caption_words_bound_every_caption_line(tmp_path):
    captions = ["one", "two words", "three words here", "two words\nand a long second line of words", "four a b c"]
    shards, scores = _scored_pool(tmp_path, [[_sample(c) for c in captions]], [[0.5] * 5])
    report = filter_pool(shards, scores, tmp_path / "out",
                         FilterOptions(min_score=0, min_caption_words=2, max_caption_words=3))
    assert [s["txt"] for s in _kept(tmp_path / "out")] == ["two words", "three words here"]
    assert report.removed["caption_words"] == 3


def test_min_image_size_reads_key_json_else_the_image_header(tmp_path):
    big, small = _png(1, (32, 20)), _png(2, (12, 40))
    samples = [_sample(image=big), _sample(image=small), _sample(image=big, width=10, height=10),
               _sample(image=small, width=30, height=30), _sample(image=big, width="32")]
    samples.append({"caption": "no json", "image": big, "fields": None})
    shards, scores = _scored_pool(tmp_path, [samples], [[0.5] * 6])
    report = filter_pool(shards, scores, tmp_path / "out", FilterOptions(min_score=0, min_image_size=20))
    # KEY.json's width/height win over the pixels where both are ints; else the header's size
    assert _source_keys(tmp_path / "out") == ["000000000", "000000003", "000000004", "000000005"]
    assert report.removed["image_size"] == 2


def test_language_filter_reads_the_field_named(tmp_path):
    samples = [_sample(lang="en"), _sample(lang="de"), _sample(), _sample(lang="fr"), _sample(language="de")]
    shards, scores = _scored_pool(tmp_path, [samples], [[0.5] * 5])
    report = filter_pool(shards, scores, tmp_path / "out",
                         FilterOptions(min_score=0, languages=("en", "fr"), language_field="lang"))
    assert _source_keys(tmp_path / "out") == ["000000000", "000000003"]
    assert report.removed["language"] == 3


def test_dedup_keeps_the_first_copy_that_passes_the_other_rules(tmp_path):
    a, b = _png(500), _png(600)
    samples = [[_sample(image=a), _sample(image=b), _sample(image=a)], [_sample(image=b), _sample(image=a)]]
    # the first copy of b fails the score rule: the next one is kept
    shards, scores = _scored_pool(tmp_path, samples, [[0.5, 0.1, 0.5], [0.5, 0.5]])
    report = filter_pool(shards, scores, tmp_path / "out", FilterOptions(min_score=0.25, dedup=True))
    assert _source_keys(tmp_path / "out") == ["000000000", "000000003"]
    assert report.removed == {"unscored": 0, "score": 1, "duplicate": 2}


def test_summary_counts_each_rule_per_shard_and_per_source(tmp_path):
    shards, scores = _mixed_pool(tmp_path)
    out = tmp_path / "out"
    report = filter_pool(shards, scores, out, FilterOptions(keep_fraction="0.6", min_caption_words=2,
                                                            languages=("en",), dedup=True, source_field="source"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(report.to_json()))
    kept = _kept(out)
    assert summary["kept"] == len(kept) and summary["samples"] == 90
    assert summary["score"]["selected"] == 53  # floor(0.6 x 89 scored)
    removed = summary["removed"]
    assert list(removed) == ["unscored", "score", "caption_words", "language", "duplicate"]
    assert removed["unscored"] == 1 and summary["unscored"] == {"corrupt_image": 1}
    assert sum(removed.values()) + len(kept) == 90
    assert removed["score"] == 89 - 53
    per_source = summary["per_source"]["values"]
    assert {v: c["kept"] for v, c in per_source.items()} == {
        f"site{i}": sum(1 for s in kept if s["source"] == f"site{i}") for i in range(3)}
    assert {v: c["samples"] for v, c in per_source.items()} == {"site0": 30, "site1": 30, "site2": 30}
    assert sum(c["kept"] for c in summary["per_shard"].values()) == len(kept)
    assert all(s["language"] == "en" and len(s["caption"].split()) >= 2 for s in kept)
    assert "kept" in report.summary() and "per 'source'" in report.summary()


def test_bad_inputs_are_one_line_errors_naming_the_shard_before_any_output(tmp_path):
    shards, scores = _scored_pool(tmp_path, [[_sample()] * 3, [_sample()] * 3], [[0.5] * 3, [0.5] * 3])
    out = tmp_path / "out"
    options = FilterOptions(keep_fraction="0.5")

    def error() -> str:
        with pytest.raises(DataError) as e:
            filter_pool(shards, scores, out, options)
        assert not out.exists()
        assert "\n" not in str(e.value)
        return str(e.value)

    moved = scores / "part-1.parquet"
    moved.rename(tmp_path / "aside.parquet")
    assert error().startswith(f"shard {shards[1]} has no score file")
    (tmp_path / "aside.parquet").rename(moved)

    # another pool's shard of the same name and size: one key differs
    original = Path(shards[1]).read_bytes()
    with tarfile.open(shards[1]) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shards[1], "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            member.name = member.name.replace("000000004", "000000009")
            tar.addfile(member, io.BytesIO(data))
    assert os.path.getsize(shards[1]) == len(original)
    message = error()
    assert message.startswith(f"shard {shards[1]}: its score file") and "another pool" in message
    assert "other sample keys" in message
    with open(shards[1], "ab") as f:
        f.write(b"\0" * 10240)
    assert "another pool" in error() and "bytes" in error()
    Path(shards[1]).write_bytes(original)

    # a score file that leaves out a sample without counting it as skipped
    keys = shard_keys(shards[0])
    table = score_table(keys[:2], "part-0.tar", [np.array([0.5], np.float32)] * 2)
    write_scores(scores / "part-0.parquet", table, ScoreMetadata(
        shard="part-0.tar", shard_bytes=os.path.getsize(shards[0]), shard_keys_sha256=shard_keys_sha256(keys),
        samples=3, model="runs/scorer"))
    assert error().startswith(f"shard {shards[0]} is not fully scored")


def test_cli_prints_the_summary_and_refuses_a_used_folder(tmp_path, capsys):
    shards, scores = _scored_pool(tmp_path, [[_sample()] * 4], [[0.25, 0.5, 0.75, 1.0]])
    out = tmp_path / "out"
    argv = ["data", "filter", *shards, str(out), "--scores", str(scores), "--keep-fraction", "0.5", "--dedup"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"filter: kept 2 of 4 samples (50.0%) in 1 shard in {out}")
    assert "score >= 0.75" in printed
    assert cli.main(argv) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert cli.main(["data", "filter", *shards, str(tmp_path / "b"), "--scores", str(scores),
                     "--keep-fraction", "1.5"]) == 2
    assert "--keep-fraction must be in (0, 1]" in capsys.readouterr().err


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _split_pool(tmp_path):
    """Five shards (the mixed pool's three and two more), a duplicate image across task slices."""
    samples = [[_sample(f"caption {'word ' * (i % 5)}", source=f"site{i % 3}") for i in range(j * 12, j * 12 + 12)]
               for j in range(5)]
    samples[0][3]["image"] = samples[4][7]["image"] = _png(9999)
    rng = np.random.default_rng(1)
    return _scored_pool(tmp_path, samples, [[float(rng.choice([0.25, 0.5, 0.75])) for _ in s] for s in samples])


def test_any_split_into_tasks_writes_the_bytes_of_one_run(tmp_path):
    shards, scores = _split_pool(tmp_path)
    options = FilterOptions(keep_fraction="0.5", min_caption_words=2, dedup=True, source_field="source")
    filter_pool(shards, scores, tmp_path / "whole", options, max_samples_per_shard=5)
    whole = _files(tmp_path / "whole")
    assert len([name for name in whole if name.endswith(".tar")]) > 3
    for tasks, workers in ((2, 1), (3, 2), (7, 1)):  # 7 tasks for 5 shards: two have nothing to do
        out = tmp_path / f"out-{tasks}"
        reports = [filter_pool(shards, scores, out, options, max_samples_per_shard=5, workers=workers,
                               task=(index, tasks)) for index in reversed(range(tasks))]
        assert not out.exists() and sum(len(r.shards) for r in reports) == 5
        assert reports[-1].finished == 5 and "without --task writes OUT" in reports[-1].summary()
        report = filter_pool(shards, scores, out, options, max_samples_per_shard=5)
        assert _files(out) == whole, f"{tasks} tasks"
        assert report.kept == json.loads(whole["summary.json"])["kept"]
        assert not Path(f"{out}.parts").exists()


def test_a_rerun_task_redoes_only_the_shard_it_had_not_finished(tmp_path):
    shards, scores = _split_pool(tmp_path)
    options = FilterOptions(keep_fraction="0.5", dedup=True)
    filter_pool(shards, scores, tmp_path / "whole", options, max_samples_per_shard=5)
    out = tmp_path / "out"
    first = filter_pool(shards, scores, out, options, max_samples_per_shard=5, task=(0, 2))
    assert (first.shards, first.filtered) == (["part-0.tar", "part-1.tar", "part-2.tar"], 3)
    parts = Path(f"{out}.parts")
    # as a task killed in its third shard leaves it: the outcome missing, a half-written run
    (parts / "000002.json").unlink()
    (parts / "000002" / "shard-000000.tar").write_bytes(b"half a tar")
    again = filter_pool(shards, scores, out, options, max_samples_per_shard=5, task=(0, 2))
    assert again.filtered == 1 and "1 filtered, 2 had finished before" in again.summary()
    filter_pool(shards, scores, out, options, max_samples_per_shard=5)  # does task 1's shards itself, then packs
    assert _files(out) == _files(tmp_path / "whole")


def test_parts_of_another_filter_are_refused(tmp_path):
    shards, scores = _split_pool(tmp_path)
    out = tmp_path / "out"
    filter_pool(shards, scores, out, FilterOptions(keep_fraction="0.5"), task=(0, 2))
    for options in (FilterOptions(keep_fraction="0.6"), FilterOptions(keep_fraction="0.5", dedup=True)):
        with pytest.raises(DataError, match=r"out.parts holds the parts of another filter"):
            filter_pool(shards, scores, out, options, task=(1, 2))
    _write_scores(Path(shards[4]), scores, [0.5] * 12)  # the same options over other scores
    with pytest.raises(DataError, match="holds the parts of another filter"):
        filter_pool(shards, scores, out, FilterOptions(keep_fraction="0.5"))
    assert not out.exists()


def test_cli_task_runs_a_slice_and_the_plain_command_packs(tmp_path, capsys):
    shards, scores = _split_pool(tmp_path)
    out = tmp_path / "out"
    argv = ["data", "filter", *shards, f"{out}/", "--scores", str(scores), "--min-score", "0.5"]  # OUT.parts beside
    for task in ("1/2", "0/2"):
        assert cli.main([*argv, "--task", task]) == 0
    printed = capsys.readouterr().out
    assert f"filter task 1/2: 2 shards (part-3.tar to part-4.tar), 2 shards filtered, into {out}.parts" in printed
    assert "5 of 5 shards of the pool finished" in printed
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith("filter: kept ")
    for bad in ("2/2", "1", "-1/2", "a/b"):
        assert cli.main([*argv[:3], str(tmp_path / "other"), *argv[4:], f"--task={bad}"]) == 2
        assert "must be I/N with 0 <= I < N" in capsys.readouterr().err


def _split_pool_filtered_whole(tmp_path):
    """The split pool, and in tmp_path/whole what one process makes of it with _submit_filter's options."""
    shards, scores = _split_pool(tmp_path)
    filter_pool(shards, scores, tmp_path / "whole", FilterOptions(keep_fraction="0.5", dedup=True),
                max_samples_per_shard=5)
    return shards, scores


def _submit_filter(shards, scores, out, *extra) -> list[str]:
    return ["submit", "filter", *shards, str(out), "--scores", str(scores), "--keep-fraction", "0.5", "--dedup",
            "--max-samples-per-shard", "5", "slurm.cpus_per_task=1", "slurm.timeout_min=10",
            "slurm.signal_delay_s=30", *extra]


@pytest.mark.slow
def test_submit_filter_locally_writes_the_bytes_of_one_process(tmp_path, capsys):
    shards, scores = _split_pool_filtered_whole(tmp_path)
    out = tmp_path / "out"
    argv = _submit_filter(shards, scores, out, "--tasks", "2", "--local")
    assert cli.main([*argv, "--check"]) == 0
    assert ("check passed: 5 shards to filter in 2 tasks, then a job packing them into "
            f"{out}; nothing submitted") in capsys.readouterr().out
    assert cli.main([*argv, "--wait"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished: filter task ") == 2 and "finished: filter: kept " in printed, printed
    assert _files(out) == _files(tmp_path / "whole")
    assert cli.main(argv) == 2  # OUT is complete: refused before anything is submitted
    assert "is not an empty folder" in capsys.readouterr().err


@pytest.mark.slurm
def test_submit_filter_on_slurm_packs_after_the_array_the_bytes_of_one_process(tmp_path, capsys):
    shards, scores = _split_pool_filtered_whole(tmp_path)
    out = tmp_path / "out"
    assert cli.main(_submit_filter(shards, scores, out, "--tasks", "3", "--wait")) == 0
    printed = capsys.readouterr().out
    array = [line.split()[2].rstrip(":") for line in printed.splitlines() if "filter task" in line
             and line.startswith("submitted job")]
    assert [job.split("_")[1] for job in array] == ["0", "1", "2"], printed
    assert f"once every task of job {array[0].split('_')[0]} has succeeded" in printed
    scripts = [p.read_text() for p in Path(f"{out}.slurm").rglob("*_submission.sh")]
    assert sum(f"#SBATCH --dependency=afterok:{array[0].split('_')[0]}" in s for s in scripts) == 1
    assert not Path(f"{out}.parts").exists()
    assert _files(out) == _files(tmp_path / "whole")
