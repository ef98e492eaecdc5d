"""What training prints: the start banner, a console line at the first and tenth step of every start and at every
`train.log_every` steps, and tensorboard points at the log steps only, so a resumed run's curves are those of an
uninterrupted one."""
import re
from pathlib import Path

import pytest
import torch

from contrastive import stopping
from contrastive.commands.report import read_scalar
from contrastive.distributed import DistEnv
from contrastive.logger import start_banner
from contrastive.model import build_model
from contrastive.train import train
from tests.contrastive.test_train import fail_on_call
from tests.contrastive.tiny_run import tiny_config

STEP_LINE = re.compile(r"^step (\d+)/(\d+)  loss \d+\.\d{4}  lr \S+  [\d.]+ samples/s  data wait \d+%  "
                       r"ETA \d+:\d\d:\d\d$", flags=re.MULTILINE)


@pytest.fixture(autouse=True)
def clear_stop_flag():
    stopping.reset()
    yield
    stopping.reset()


def logged_steps(out: str) -> list[int]:
    return [int(step) for step, _ in STEP_LINE.findall(out)]


def tensorboard_steps(run_dir: Path) -> list[int]:
    return [step for step, _ in read_scalar(run_dir / "tb", "train/loss")]


def test_the_banner_says_what_the_run_does_before_its_first_step(tmp_path, capsys):
    train(tiny_config(tmp_path, "train.steps=3"))
    out = capsys.readouterr().out
    banner = out[out.index("training "):out.index("\nstep 1/3 ")].splitlines()
    assert banner == [
        f"training {tmp_path / 'run'}",
        "  parameters  image tower 0.02M, text tower 0.02M, loss 1 (0.04M in all)",
        "  steps       3, from the start; log every 2 (and steps 1, 10 after each start), checkpoint every 2",
        "  batch       8 global, 8 per rank",
        "  data        2 shards, loaded in the training process",
        "  processes   world size 1 (ddp), device cpu, precision fp32",
    ]
    cfg = tiny_config(tmp_path, "data.workers=2", "train.batch_size=16", "train.accum_steps=2")
    model = build_model(cfg.model, cfg.loss, vocab_size=300, pad_id=0)
    banner = start_banner(cfg, DistEnv(rank=0, world_size=2, local_rank=0, device=torch.device("cpu")), model,
                          shards=1, start_step=0).splitlines()
    assert banner[3:5] == ["  batch       16 global, 8 per rank in 2 micro-batches",
                           "  data        1 shard, 2 loader workers per rank"]


def test_console_lines_at_steps_1_and_10_and_every_log_every_steps_tensorboard_at_log_steps_only(tmp_path, capsys):
    train(tiny_config(tmp_path, "train.steps=12", "train.log_every=4", "train.checkpoint_every=100"))
    assert logged_steps(capsys.readouterr().out) == [1, 4, 8, 10, 12]
    assert tensorboard_steps(tmp_path / "run") == [4, 8, 12]


def test_a_resumed_run_prints_its_first_step_and_keeps_the_uninterrupted_curves(tmp_path, monkeypatch, capsys):
    settings = ("train.steps=12", "train.log_every=4", "train.checkpoint_every=100")
    train(tiny_config(tmp_path, f"run_dir={tmp_path / 'straight'}", *settings))
    stopped = tiny_config(tmp_path, f"run_dir={tmp_path / 'stopped'}", *settings)
    fail_on_call(monkeypatch, 8, stopping.request_stop)
    train(stopped)
    monkeypatch.undo()
    stopping.reset()
    capsys.readouterr()
    train(stopped)
    out = capsys.readouterr().out
    assert "  steps       12, resuming at step 8; log every 4" in out
    assert logged_steps(out) == [9, 12]
    assert read_scalar(tmp_path / "stopped" / "tb", "train/loss") == read_scalar(tmp_path / "straight" / "tb",
                                                                                  "train/loss")
    assert tensorboard_steps(tmp_path / "stopped") == [4, 8, 12]
