"""`contrastive eval` end to end: the demo's evaluation sets (written small by the synth code) on checkpoints of a
short tiny training run, through the CLI; and the errors for what is not a usable checkpoint."""
import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from contrastive.checkpoint import Checkpointer
from contrastive.cli import main
from contrastive.train import train
from data.synth import synthesize
from tests.contrastive.tiny_run import tiny_config

EVAL_SETS = ("zeroshot_attributes", "retrieval_attributes")


@pytest.fixture(scope="module")
def training(tmp_path_factory) -> tuple[Path, str]:
    """The run dir of a 4-step run evaluated at steps 2 and 4, and what it printed."""
    root = tmp_path_factory.mktemp("eval_run")
    data = root / "demo"
    synthesize(data, seed=0, train_samples=64, samples_per_shard=32, images_per_class=1, retrieval_images=6,
               progress=False)
    evaluators = [f"eval.zeroshot.attributes={data}/eval/zeroshot_attributes",
                  f"eval.retrieval.attributes={data}/eval/retrieval_attributes", "eval.every_steps=2"]
    cfg = tiny_config(root, f"data.shards={data}/train/shard-{{000000..000001}}.tar",
                      f"data.tokenizer={data}/tokenizer.json", "train.steps=4", *evaluators)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        train(cfg)
    return Path(cfg.run_dir), out.getvalue()


@pytest.fixture(scope="module")
def trained_run(training) -> Path:
    return training[0]


def test_training_evaluates_every_n_steps_and_at_the_end(trained_run):
    results = sorted(p.name for p in (trained_run / "eval").glob("*.json"))
    assert results == ["step_000002.json", "step_000004.json"]
    result = json.loads((trained_run / "eval" / "step_000004.json").read_text())
    assert result["step"] == 4
    assert 0 <= result["metrics"]["zeroshot/attributes/top1"] <= 1
    assert result["metrics"]["retrieval/attributes/num_images"] == 6


def test_training_prints_the_headline_of_each_evaluation_and_its_file_then_where_it_ended(training):
    run_dir, out = training
    score = r"  {:<28}  [01]\.\d{{4}}"
    for step in (2, 4):
        lines = out.split(f"evaluation at step {step}: {run_dir / 'eval' / f'step_{step:06d}.json'}\n")[1].splitlines()
        assert all(re.fullmatch(score.format(name), line) for name, line in zip(
            ["retrieval/attributes/i2t_R@1", "retrieval/attributes/t2i_R@1", "zeroshot/attributes/top1"], lines)), out
    assert out.splitlines()[-1] == f"training finished at step 4: {run_dir / 'checkpoints' / 'step_000004.pt'}"


def test_cli_evaluates_latest_and_reproduces_the_in_training_numbers(trained_run, capsys):
    in_training = json.loads((trained_run / "eval" / "step_000004.json").read_text())["metrics"]
    (trained_run / "eval" / "step_000004.json").unlink()
    assert main(["eval", str(trained_run)]) == 0
    again = json.loads((trained_run / "eval" / "step_000004.json").read_text())["metrics"]
    assert again == pytest.approx(in_training, abs=1e-6)
    out = capsys.readouterr().out
    assert re.search(r"^  zeroshot/attributes/top1 +[01]\.\d{4}$", out, flags=re.MULTILINE), out
    assert re.search(r"^  retrieval/attributes/num_images +6$", out, flags=re.MULTILINE), out  # a count, not 6.0000


def test_cli_evaluates_every_checkpoint_with_all(trained_run, capsys):
    assert main(["eval", str(trained_run), "--all"]) == 0
    assert capsys.readouterr().out.count("step ") == len(Checkpointer(trained_run).steps()) == 2


def test_a_checkpoint_file_can_be_named(trained_run, capsys):
    assert main(["eval", str(trained_run / "checkpoints" / "step_000002.pt")]) == 0
    assert "step 2" in capsys.readouterr().out


def test_unusable_checkpoints_are_clear_errors(trained_run, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "neither a run directory nor a checkpoint file" in capsys.readouterr().err

    corrupt = trained_run / "checkpoints" / "step_000099.pt"
    corrupt.write_bytes(b"not a checkpoint")
    try:
        assert main(["eval", str(corrupt)]) == 2
        assert "step_000099.pt cannot be loaded" in capsys.readouterr().err
    finally:
        corrupt.unlink()

    assert main(["eval", str(trained_run), "model.text.width=48"]) == 2  # another architecture
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "step_000004.pt" in err

    assert main(["eval", str(trained_run), "eval.zeroshot.attributes=/nonexistent/set"]) == 2
    assert "/nonexistent/set" in capsys.readouterr().err


def test_a_checkpoint_copied_out_of_its_run_dir_evaluates_with_the_config_and_tokenizer_it_carries(
        trained_run, tmp_path, capsys):
    loose = tmp_path / "shared" / "model.pt"
    loose.parent.mkdir()
    shutil.copy(Checkpointer(trained_run).latest(), loose)
    assert main(["eval", str(loose)]) == 0
    assert f"{tmp_path / 'shared' / 'eval' / 'step_000004.json'}" in capsys.readouterr().out
    again = json.loads((tmp_path / "shared" / "eval" / "step_000004.json").read_text())["metrics"]
    assert again == json.loads((trained_run / "eval" / "step_000004.json").read_text())["metrics"]


def test_a_loose_checkpoint_without_its_tokenizer_says_where_it_can_be_evaluated(trained_run, tmp_path, capsys):
    state = torch.load(Checkpointer(trained_run).latest(), weights_only=True)
    del state["tokenizer"]
    torch.save(state, tmp_path / "old.pt")
    assert main(["eval", str(tmp_path / "old.pt")]) == 2
    assert capsys.readouterr().err == (f"error: checkpoint {tmp_path / 'old.pt'} carries no tokenizer (it was written "
                                       "before checkpoints carried them): evaluate it inside its run dir, "
                                       "RUN/checkpoints/, beside RUN/config.yaml and RUN/tokenizer.json\n")
