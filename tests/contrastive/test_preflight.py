"""Mistakes are caught before any compute, as one line with exit 2, naming the key or path, leaving no run dir:
through `contrastive train`, `train --check` and `submit train` (nothing is submitted); and a finished run started
again says so, finishing its evaluation first if that is missing."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from contrastive import cli
from contrastive.config import load_config
from contrastive.train import train
from data.synth import synthesize
from tests.contrastive.tiny_run import TINY_MODEL, write_tiny_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preflight")
    write_tiny_dataset(root)
    synthesize(root / "demo", seed=0, train_samples=64, samples_per_shard=32, images_per_class=1, retrieval_images=6,
               progress=False)
    return root


def tiny_run(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"run_dir={run_dir}", f"data.shards={data / 'shards' / 'shard-{000000..000001}.tar'}",
            f"data.tokenizer={data / 'tokenizer.json'}", "data.workers=0", "train.batch_size=8", "train.steps=2",
            "train.precision=fp32", "optim.warmup_steps=1", "slurm.gpus_per_node=0", *TINY_MODEL, *extra]


MISTAKES = [
    ("loss.init_scale=0", r"config error: loss: init_scale must be in \(0, 100\], got 0"),
    ("loss.tau=5", "config error: loss: loss 'clip' does not take tau; its arguments: init_scale=14.28"),
    ("model.text.heads=7", "config error: model.text: model.text.width=32 must be divisible by model.text.heads=7"),
    ("model.image.kwargs.num_heads=7",
     r"config error: model.image: timm cannot build vit_base_patch16_224\(.*num_heads=7"),
    ("eval.zeroshot.x=/typo", "config error: eval.zeroshot.x: zero-shot dataset /typo does not exist.*"
                              "pass --no-path-check"),
    ("data.shards=/nope/*.tar", "config error: data.shards: shard pattern '/nope/\\*.tar' matches no file"),
    ("data.workers=3", "config error: data.shards: .* 2 shards for 1 rank x 3 worker slots = 3 slots"),
    ("data.tokenizer=/nope.json", "config error: data.tokenizer='/nope.json' is not a file"),
    ("train.accum_steps=3", "config error: train.accum_steps=3 does not divide the local batch of 8"),
]


@pytest.mark.parametrize("command", [["train"], ["train", "--check"], ["submit", "train", "--local"]],
                         ids=["train", "train-check", "submit-local"])
@pytest.mark.parametrize("mistake, message", MISTAKES, ids=[m for m, _ in MISTAKES])
def test_a_mistake_is_one_line_exit_2_naming_it_before_any_run_dir(tiny_data, tmp_path, capsys, command, mistake,
                                                                   message):
    run_dir = tmp_path / "run"
    assert cli.main([*command, *tiny_run(tiny_data, run_dir, mistake)]) == 2
    captured = capsys.readouterr()
    assert re.match(f"error: {message}", captured.err), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not run_dir.exists()


def test_check_runs_nothing_and_names_what_it_skipped(tiny_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--check", *tiny_run(tiny_data, run_dir)]) == 0
    assert capsys.readouterr().out == f"check passed: {run_dir} at world size 1\n"
    nowhere = ["data.shards=/only/on/nodes/{0..7}.tar", "data.tokenizer=/only/on/nodes/tok.json",
               "eval.zeroshot.imagenet=/only/on/nodes/val"]
    assert cli.main(["train", "--check", *tiny_run(tiny_data, run_dir, *nowhere)]) == 2
    assert cli.main(["train", "--check", *tiny_run(tiny_data, run_dir, *nowhere), "--no-path-check"]) == 0
    assert "(paths not opened: --no-path-check)" in capsys.readouterr().out
    assert cli.main(["submit", "train", "--local", "--check", *tiny_run(tiny_data, run_dir)]) == 0
    assert "check passed: 1 run to submit at world size 1 (local); nothing submitted" in capsys.readouterr().out
    assert not run_dir.exists()


def test_submit_counts_shards_for_the_world_size_it_asks_for(tiny_data, tmp_path, capsys):
    """Two tasks x one worker need two shards (there are two); three tasks need three."""
    def check(*extra: str) -> int:
        return cli.main(["submit", "train", "--local", "--check",
                         *tiny_run(tiny_data, tmp_path / "run", "data.workers=1", *extra)])

    assert check("slurm.tasks_per_node=2") == 0
    assert "at world size 2 (local)" in capsys.readouterr().out
    assert check("slurm.tasks_per_node=3", "train.batch_size=9") == 2
    assert "2 shards for 3 ranks x 1 worker slot = 3 slots" in capsys.readouterr().err
    assert check("slurm.tasks_per_node=2", "train.batch_size=9") == 2
    assert "train.batch_size=9 (global) is not divisible by the world size 2" in capsys.readouterr().err


def test_local_submission_without_gpus_asks_for_none(tiny_data, tmp_path, capsys):
    """slurm.gpus_per_node defaults to 8: on a machine without GPUs, --local runs one CPU process."""
    run = tiny_run(tiny_data, tmp_path / "run", "slurm.gpus_per_node=8")
    assert cli.main(["submit", "train", "--local", "--check", *run]) == 0
    captured = capsys.readouterr()
    assert "at world size 1 (local)" in captured.out and "slurm.gpus_per_node=8 ignored" in captured.err


def test_warmup_longer_than_training_is_a_warning(tiny_data, tmp_path, capsys):
    assert cli.main(["train", "--check", *tiny_run(tiny_data, tmp_path / "run", "optim.warmup_steps=2")]) == 0
    assert capsys.readouterr().out.startswith(
        "warning: optim.warmup_steps=2 >= train.steps=2: the learning rate never reaches optim.lr=0.0005\n")


def test_a_finished_run_started_again_evaluates_what_it_lacks_then_says_how_to_extend_it(tiny_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    evals = tiny_data / "demo" / "eval"
    assert cli.main(["train", *tiny_run(tiny_data, run_dir)]) == 0
    assert not (run_dir / "eval").exists()
    capsys.readouterr()

    # Eval keys added to a finished run: only those are evaluated, into the final step's results.
    assert cli.main(["train", str(run_dir), f"eval.zeroshot.attributes={evals / 'zeroshot_attributes'}"]) == 0
    out = capsys.readouterr().out
    assert f"{run_dir} finished at step 2; evaluating what its results lack: zeroshot/attributes" in out
    assert out.endswith(f"{run_dir} already finished at step 2; pass train.steps=M with M > 2 to extend it\n")
    assert "resuming" not in out
    results = json.loads((run_dir / "eval" / "step_000002.json").read_text())["metrics"]
    assert "zeroshot/attributes/top1" in results

    # A second evaluator is added: the first's metrics are kept, the second's merged in.
    both = [f"eval.zeroshot.attributes={evals / 'zeroshot_attributes'}",
            f"eval.retrieval.attributes={evals / 'retrieval_attributes'}"]
    assert cli.main(["train", str(run_dir), *both]) == 0
    assert "evaluating what its results lack: retrieval/attributes\n" in capsys.readouterr().out
    merged = json.loads((run_dir / "eval" / "step_000002.json").read_text())["metrics"]
    assert merged["zeroshot/attributes/top1"] == results["zeroshot/attributes/top1"]
    assert "retrieval/attributes/t2i_R@1" in merged

    # Nothing lacking: nothing evaluated, nothing trained.
    assert cli.main(["train", str(run_dir), *both]) == 0
    finished = f"{run_dir} already finished at step 2; pass train.steps=M with M > 2 to extend it\n"
    assert capsys.readouterr().out == finished


def test_eval_merges_into_the_step_results(tiny_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    evals = tiny_data / "demo" / "eval"
    assert train(load_config(None, tiny_run(tiny_data, run_dir))).finished
    assert cli.main(["eval", str(run_dir), f"eval.zeroshot.attributes={evals / 'zeroshot_attributes'}"]) == 0
    assert cli.main(["eval", str(run_dir), f"eval.retrieval.relations={evals / 'retrieval_relations'}"]) == 0
    metrics = json.loads((run_dir / "eval" / "step_000002.json").read_text())["metrics"]
    assert "zeroshot/attributes/top1" in metrics and "retrieval/relations/i2t_R@1" in metrics

