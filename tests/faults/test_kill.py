"""Kills at chosen and at random (seeded) moments, each followed by a resume: the run ends with the weights and
the logged curves of a run that was never interrupted (single process, fp32: bit for bit)."""
from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from contrastive.checkpoint import Checkpointer, load_checkpoint
from contrastive.config import load_config
from contrastive.train import train
from tests.faults.runs import assert_same_weights, curves, final_weights, run_training, tiny_run_overrides

STEPS = 10
LONG_STEPS = 24  # room for four faults that each land up to a few steps late


def uninterrupted(root: Path, *extra: str) -> Path:
    run_dir = root / "straight"
    assert train(load_config(None, tiny_run_overrides(root, run_dir, *extra))).finished
    return run_dir


def inflict(fault: tuple[str, int, float], overrides: list[str], run_dir: Path) -> None:
    """One attempt of the run that ends in `fault`, and what it must leave behind. The fault's step counts from
    where the attempt resumes; a kill inside a checkpoint write hits the first checkpoint from there on."""
    kind, offset, delay_s = fault
    before = Checkpointer(run_dir).latest()
    resumed_at = load_checkpoint(before)["step"] if before is not None else 0
    every = load_config(None, overrides).train.checkpoint_every
    step = resumed_at + offset
    if kind == "checkpoint":
        step = -(-step // every) * every
    if kind == "sigterm":
        result = run_training(overrides, signal_at_step=step, delay_s=delay_s)
        assert result.returncode == 0, result.output
        stopped = [line for line in result.output.splitlines() if line.startswith("stop requested")]
        assert len(stopped) == 1, result.output
        stopped_at = int(stopped[0].split("at step ")[1].split(",")[0])
        assert step <= stopped_at < load_config(None, overrides).train.steps
        assert Checkpointer(run_dir).latest().name == f"step_{stopped_at:06d}.pt"
        return
    if kind == "sigkill":
        result = run_training(overrides, signal_at_step=step, signal_to_send=signal.SIGKILL, delay_s=delay_s)
    else:
        result = run_training(overrides, kill=f"{kind}:{step}")
    assert result.returncode == -signal.SIGKILL, result.output
    latest = Checkpointer(run_dir).latest()
    if kind == "checkpoint":
        assert list(Checkpointer(run_dir).dir.glob(f".step_{step:06d}.pt.*.tmp")), "the kill missed the write"
        assert latest == before or latest.name < f"step_{step:06d}.pt"
    if latest is not None:
        saved = load_checkpoint(latest)["step"]  # `latest` always names a complete checkpoint
        assert saved <= step or kind == "sigkill"  # a signal from outside may land a few steps later


def interrupted(root: Path, plan: list[tuple[str, int, float]], *extra: str) -> Path:
    run_dir = root / "interrupted"
    overrides = tiny_run_overrides(root, run_dir, *extra)
    for fault in plan:
        inflict(fault, overrides, run_dir)
    result = run_training(overrides)
    assert result.returncode == 0, result.output
    return run_dir


def assert_same_run(straight: Path, resumed: Path, steps: int = STEPS) -> None:
    assert_same_weights(final_weights(straight), final_weights(resumed))
    expected, actual = curves(straight), curves(resumed)
    assert [s for s, _ in expected["train/loss"]] == list(range(1, steps + 1))
    assert actual == expected


def test_sigkill_inside_a_checkpoint_write_then_sigterm_then_resume_equal_the_uninterrupted_run(tmp_path, figures):
    plan = [("checkpoint", 3, 0.0), ("sigterm", 2, 0.0)]  # killed writing step 4, resumed at 2, stopped at 4 or 5
    assert_same_run(uninterrupted(tmp_path), interrupted(tmp_path, plan))
    figures["kills survived (SIGKILL, exact resume)"] += 1
    figures["SIGTERM stops checkpointed and resumed"] += 1


def random_plan(rng: random.Random) -> list[tuple[str, int, float]]:
    """Four faults in random order, each 1-3 steps after the previous resume point, signals 0-0.1 s after a step's
    log line (they land inside the next step, its checkpoint write or its logging)."""
    kinds = ["checkpoint", "step", "sigkill", "sigterm"]
    rng.shuffle(kinds)
    return [(kind, rng.randint(1, 3), rng.uniform(0.0, 0.1)) for kind in kinds]


@pytest.mark.all_faults
@pytest.mark.parametrize("workers", [0, 2])
def test_random_kills_and_resumes_equal_the_uninterrupted_run(tmp_path, workers, figures):
    plan = random_plan(random.Random(f"kill plan, workers={workers}"))
    extra = (f"data.workers={workers}", "train.checkpoint_every=3", f"train.steps={LONG_STEPS}")
    assert_same_run(uninterrupted(tmp_path, *extra), interrupted(tmp_path, plan, *extra), LONG_STEPS)
    figures["kills survived (SIGKILL, exact resume)"] += sum(kind != "sigterm" for kind, _, _ in plan)
    figures["SIGTERM stops checkpointed and resumed"] += 1
