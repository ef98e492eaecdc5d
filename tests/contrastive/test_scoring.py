"""`contrastive data score` and `contrastive submit score`: per-sample scores of tiny shards with tiny runs, checked
against the model's own similarities computed directly; determinism, resume after a stop and after kill -9, bad
input, and a job array that writes the same files as one process."""
from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from contrastive import scoring
from contrastive.cli import main
from contrastive.commands import submit
from contrastive.evaluate import load_model, load_run
from contrastive.scoring import ScoreJob, score_shards, shard_list, split_job
from contrastive.train import train
from data.decode import square_pixels
from data.errors import DataError
from data.scores import read_scores, scores_path, shard_keys_sha256
from data.shards import ShardWriter
from data.validate import decode_image
from tests.contrastive.command_line import run_command
from tests.contrastive.tiny_run import COLOURS, tiny_config

REPO = Path(__file__).resolve().parents[2]
SHARDS, PER_SHARD = 3, 10
CORRUPT = {  # key in shard 1 -> what is wrong with it
    "000000012": ("corrupt_image", {"png": b"not an image", "txt": b"a red square"}),
    "000000014": ("empty_caption", {"txt": b" \n\n"}),
    "000000016": ("missing_caption", {}),
    "000000018": ("non_utf8_caption", {"txt": b"a \xff square"}),
}


def _image(colour: tuple[int, int, int], size: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size + 8), colour).save(buf, format=fmt)
    return buf.getvalue()


def write_pool(root: Path) -> Path:
    """SHARDS shards of PER_SHARD samples with one to three caption lines each, and four bad samples in shard 1."""
    names = list(COLOURS)
    with ShardWriter(root, max_samples=PER_SHARD) as writer:
        for i in range(SHARDS * PER_SHARD):
            key = f"{i:09d}"
            name = names[i % len(names)]
            lines = [f"a {name} square", f"a photo of something {names[(i + 1) % len(names)]}", "a picture"]
            sample = {"jpg" if i % 3 else "png": _image(COLOURS[name], 40 + i, "JPEG" if i % 3 else "PNG"),
                      "txt": "\n".join(lines[:1 + i % 3]).encode()}
            if key in CORRUPT:
                sample = {**{"png": sample.get("png", _image(COLOURS[name], 40, "PNG"))}, **CORRUPT[key][1]}
            writer.write(key, sample)
    return root


def trained_run(root: Path, loss: str) -> Path:
    cfg = tiny_config(root, "train.steps=2", f"loss.name={loss}", f"run_dir={root / f'run-{loss}'}")
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg)
    return Path(cfg.run_dir)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scoring")
    return {"pool": write_pool(root / "pool"), "clip": trained_run(root, "clip"), "llip": trained_run(root, "llip")}


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory) -> Path:
    """The clip run's score files of the pool, with embeddings, written by one process with two workers."""
    out = tmp_path_factory.mktemp("reference") / "scores"
    score_shards(job(setup, out), progress=False)
    return out


def job(setup: dict[str, Path], out: Path, model: str = "clip", shards: list[str] | None = None,
        **options) -> ScoreJob:
    return ScoreJob(shards or shard_list([str(setup["pool"])]), str(setup[model]), str(out),
                    **{"embeddings": True, "batch_size": 4, "workers": 2, **options})


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def direct_similarities(run_dir: Path, shard: Path, keys: list[str]) -> tuple[list[np.ndarray], torch.nn.Module, list]:
    """Each sample's caption similarities as the model's towers and scorer give them, one sample at a time."""
    from data.shards import read_shard
    from data.validate import sample_captions

    run = load_run(run_dir, [])
    model, _ = load_model(run, run_dir / "checkpoints" / "step_000002.pt", torch.device("cpu"))
    model.eval()
    samples = {s.key: s.members for s in read_shard(shard)}
    size, resize = run.cfg.model.image.image_size, run.cfg.model.image.resize
    result, reprs = [], []
    with torch.no_grad():
        for key in keys:
            members = samples[key]
            image_bytes = members.get("png", members.get("jpg"))
            pixels = square_pixels(decode_image(image_bytes, key, draft_short_side=size), size, resize)
            image_repr = model.encode_image(pixels[None])
            text_repr = model.encode_text(run.tokenizer(sample_captions(members)))
            if model.loss.scorer == "dot":
                result.append((F.normalize(image_repr, dim=-1) @ F.normalize(text_repr, dim=-1).T)[0].numpy())
            else:
                result.append(model.loss.similarity(image_repr, text_repr)[0].numpy())
            reprs.append((image_repr, text_repr))
    return result, model, reprs


def test_scores_are_the_models_own_cosines_and_the_best_caption(setup, reference):
    table, metadata = read_scores(reference / "shard-000000.parquet")
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == [f"{i:09d}" for i in range(PER_SHARD)]
    assert {r["shard"] for r in rows} == {"shard-000000.tar"} and metadata.model == str(setup["clip"])
    expected, _, _ = direct_similarities(setup["clip"], setup["pool"] / "shard-000000.tar", [r["key"] for r in rows])
    for row, direct in zip(rows, expected):
        assert len(row["similarities"]) == len(direct) == 1 + int(row["key"]) % 3
        np.testing.assert_allclose(row["similarities"], direct, atol=1e-5)
        assert row["score"] == max(row["similarities"])
        image, texts = np.array(row["image_embedding"]), np.array(row["text_embeddings"])
        assert texts.shape == (len(direct), 16) and abs(np.linalg.norm(image) - 1) < 2e-3
        assert abs(image @ texts[int(np.argmax(row["similarities"]))] - row["score"]) < 3e-3


def test_a_llip_model_scores_with_the_similarity_before_its_scale_and_bias(setup, tmp_path):
    score_shards(job(setup, tmp_path, model="llip", embeddings=False, shards=[str(setup["pool"] / "shard-000000.tar")]),
                 progress=False)
    table, _ = read_scores(tmp_path / "shard-000000.parquet")
    assert table.column_names == ["key", "shard", "score", "similarities"]
    keys = table.column("key").to_pylist()
    expected, model, reprs = direct_similarities(setup["llip"], setup["pool"] / "shard-000000.tar", keys)
    for similarities, direct, (image_repr, text_repr) in zip(table.column("similarities").to_pylist(), expected,
                                                            reprs):
        np.testing.assert_allclose(similarities, direct, atol=1e-5)
        with torch.no_grad():
            logits = model.logits(image_repr, text_repr)[0].numpy()
            scale, bias = model.loss.logit_scale.exp().item(), model.loss.logit_bias.item()
        np.testing.assert_allclose(similarities, (logits - bias) / scale, atol=1e-4)
        assert not np.allclose(similarities, logits, atol=0.1)


def test_bad_samples_are_counted_by_reason_and_every_key_is_in_the_digest(setup, reference):
    table, metadata = read_scores(reference / "shard-000001.parquet")
    keys = [f"{i:09d}" for i in range(PER_SHARD, 2 * PER_SHARD)]
    assert metadata.skipped == {reason: 1 for reason, _ in CORRUPT.values()}
    assert table.column("key").to_pylist() == [k for k in keys if k not in CORRUPT]
    assert (metadata.samples, metadata.scored) == (PER_SHARD, PER_SHARD - len(CORRUPT))
    assert metadata.shard_keys_sha256 == shard_keys_sha256(keys)
    assert metadata.shard_bytes == (setup["pool"] / "shard-000001.tar").stat().st_size


def test_the_command_logs_one_line_per_shard_with_its_skips(setup, tmp_path, capsys):
    assert main(["data", "score", str(setup["pool"] / "shard-000001.tar"), "--model", str(setup["clip"]),
                 "--out", str(tmp_path), "--workers", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"scored shard-000001.tar: 6 of 10 samples (4 skipped: corrupt image: 1, empty caption: 1, "
                      f"missing caption: 1, non-UTF-8 caption: 1) -> {tmp_path / 'shard-000001.parquet'}")
    assert out[1].startswith("1 shard scored: 6 of 10 samples (4 skipped: corrupt image: 1, ")
    assert out[1].endswith(f"; score files in {tmp_path}")


def test_two_runs_and_any_worker_count_write_byte_identical_files(setup, reference, tmp_path):
    for workers in (2, 0):
        score_shards(job(setup, tmp_path / str(workers), workers=workers), progress=False)
        assert files(tmp_path / str(workers)) == files(reference)
    assert sorted(files(reference)) == [f"shard-{i:06d}.parquet" for i in range(SHARDS)]


def test_a_run_stopped_after_one_shard_resumes_with_the_others_and_the_same_files(setup, reference, tmp_path,
                                                                                     monkeypatch):
    finish = scoring._finish_shard
    finished = []

    def stop_after_one(*args):
        if finished:
            raise KeyboardInterrupt
        finish(*args)
        finished.append(args[0])

    monkeypatch.setattr(scoring, "_finish_shard", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        score_shards(job(setup, tmp_path), progress=False)
    monkeypatch.undo()
    (first,) = tmp_path.iterdir()
    assert first == scores_path(tmp_path, finished[0])
    written = first.stat().st_mtime_ns
    report = score_shards(job(setup, tmp_path), progress=False)
    assert (report.shards, report.already_scored) == (SHARDS, 1)
    assert first.stat().st_mtime_ns == written
    assert files(tmp_path) == files(reference)
    again = score_shards(job(setup, tmp_path), progress=False)
    assert (again.already_scored, again.samples) == (SHARDS, 0)


@pytest.mark.slow
def test_kill_9_while_writing_a_shard_leaves_no_file_under_its_name_and_a_rerun_finishes(setup, reference,
                                                                                           tmp_path):
    # The second shard's writer is killed half-way through its file: a real SIGKILL of the whole command.
    script = textwrap.dedent(f"""
        import os, signal, sys
        import pyarrow.parquet as pq
        write_table, calls = pq.write_table, []
        def killed_while_writing(table, where, **options):
            calls.append(1)
            if len(calls) == 2:
                where.write(b"PAR1 half a file"); where.flush(); os.kill(os.getpid(), signal.SIGKILL)
            write_table(table, where, **options)
        pq.write_table = killed_while_writing
        from contrastive.cli import main
        sys.exit(main(["data", "score", {str(setup["pool"])!r}, "--model", {str(setup["clip"])!r}, "--out",
                       {str(tmp_path)!r}, "--embeddings", "--batch-size", "4", "--workers", "2"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == -signal.SIGKILL, done.stderr
    temp, written = sorted(p.name for p in tmp_path.iterdir())
    assert temp.startswith(".shard-") and temp.endswith(".tmp") and written.endswith(".parquet")
    assert temp.split(".")[1] != written.split(".")[0] and files(tmp_path)[temp] == b"PAR1 half a file"
    report = score_shards(job(setup, tmp_path), progress=False)
    assert report.already_scored == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files(reference))
    assert files(tmp_path) == files(reference)


@pytest.mark.parametrize("problem", ["missing shard", "missing model", "out is a file"])
def test_bad_input_is_one_clear_error_and_writes_nothing(setup, tmp_path, capsys, problem):
    out, shard, model = tmp_path / "scores", str(setup["pool"]), str(setup["clip"])
    if problem == "missing shard":
        shard = f"{setup['pool']}/shard-{{000000..000003}}.tar"
        expected = r"shard pattern '.*shard-\{000000..000003\}.tar': 1 file missing, first .*/shard-000003.tar"
    elif problem == "missing model":
        model, expected = str(tmp_path / "no-run"), r".*no-run is neither a run directory nor a checkpoint file or sharded checkpoint"
    else:
        out.write_text("")
        expected = r"--out .*scores is a file, not a folder for score files"
    assert main(["data", "score", shard, "--model", model, "--out", str(out)]) == 2
    assert re.fullmatch(f"error: {expected}\n", capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == ([out] if problem == "out is a file" else [])


def test_a_score_file_of_another_model_is_refused(setup, reference, tmp_path):
    shard = str(setup["pool"] / "shard-000000.tar")
    target = scores_path(tmp_path, shard)
    target.write_bytes((reference / target.name).read_bytes())
    with pytest.raises(DataError, match=rf"{target} exists but does not belong to this run: it scores model "
                                        rf".*run-clip, this run .*run-llip\. Delete it"):
        score_shards(job(setup, tmp_path, model="llip", shards=[shard]), progress=False)
    with pytest.raises(DataError, match="it was written with --embeddings"):
        score_shards(job(setup, tmp_path, embeddings=False, shards=[shard]), progress=False)


def test_two_shards_of_one_name_are_refused(setup, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "shard-000000.tar").write_bytes((setup["pool"] / "shard-000000.tar").read_bytes())
    with pytest.raises(DataError, match="would both be scored into OUT/shard-000000.parquet"):
        shard_list([str(setup["pool"]), str(other)])


def test_the_split_is_contiguous_disjoint_and_covers_every_shard():
    whole = ScoreJob([f"s{i}.tar" for i in range(7)], "run", "out")
    parts = split_job(whole, 3)
    assert [p.shards for p in parts] == [["s0.tar", "s1.tar", "s2.tar"], ["s3.tar", "s4.tar"], ["s5.tar", "s6.tar"]]
    assert [len(p.shards) for p in split_job(whole, 20)] == [1] * 7


@pytest.mark.slow
def test_a_local_job_array_of_two_tasks_writes_the_files_of_one_process(setup, reference, tmp_path, capsys):
    args = ["submit", "score", str(setup["pool"]), "--model", str(setup["clip"]), "--out", str(tmp_path),
            "--embeddings", "--batch-size", "4", "--workers", "1", "--tasks", "2", "slurm.gpus_per_node=0",
            "slurm.cpus_per_task=1", "--local"]
    assert run_command(submit, *args, "--check") == 0
    assert "check passed: 3 shards to score in 2 tasks; nothing submitted" in capsys.readouterr().out
    assert run_command(submit, *args, "--wait") == 0
    out = capsys.readouterr().out
    assert out.count("submitted job") == 2 and "scoring 2 shards, " in out and "scoring 1 shard, " in out
    assert out.count("finished: scored ") == 2, out
    assert files(tmp_path) == files(reference)
    assert run_command(submit, *args) == 0
    assert f"all 3 shards already have their score file in {tmp_path}; nothing submitted" in capsys.readouterr().out


@pytest.mark.slurm
def test_a_slurm_job_array_writes_the_files_of_one_process(setup, reference, tmp_path, capsys):
    args = ["submit", "score", str(setup["pool"]), "--model", str(setup["clip"]), "--out", str(tmp_path),
            "--embeddings", "--batch-size", "4", "--workers", "1", "--tasks", "3", "slurm.gpus_per_node=0",
            "slurm.cpus_per_task=1", "slurm.timeout_min=10", "slurm.signal_delay_s=30", "--wait"]
    assert run_command(submit, *args) == 0
    jobs = [line.split()[2].rstrip(":") for line in capsys.readouterr().out.splitlines()
            if line.startswith("submitted job")]
    assert len({j.split("_")[0] for j in jobs}) == 1 and [j.split("_")[1] for j in jobs] == ["0", "1", "2"]
    assert files(tmp_path) == files(reference)
    assert os.path.isdir(tmp_path / "slurm")
