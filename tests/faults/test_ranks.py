"""Two training processes: one dies and the other ends with an error instead of waiting forever; killed and
resumed, the pair ends with the weights of an uninterrupted pair (to a stated tolerance)."""
from __future__ import annotations

import signal
import time

import pytest

from contrastive.checkpoint import Checkpointer
from tests.faults.runs import assert_same_weights, final_weights, run_ranks_as_processes, tiny_run_overrides

# Gloo's reductions are deterministic for a fixed world size, so resumed DDP runs have matched bit for bit here;
# the tolerance allows for an all-reduce that sums in another order (another gloo version or algorithm).
DDP_ATOL = 1e-6


def test_a_rank_killed_mid_run_ends_the_other_with_an_error(tmp_path, figures):
    overrides = tiny_run_overrides(tmp_path, tmp_path / "run", "train.collective_timeout_s=600")
    start = time.monotonic()
    survivor, killed = run_ranks_as_processes(overrides, 2, kill="step:4", kill_rank=1)
    assert killed.returncode == -signal.SIGKILL
    assert survivor.returncode == 1 and time.monotonic() - start < 120  # long before the collective timeout
    assert "remote worker" in survivor.output.splitlines()[-1]  # gloo: the peer crashed or hangs
    figures["ranks killed or hung, the other ended with an error"] += 1


@pytest.mark.all_faults
def test_a_hung_rank_ends_the_other_with_a_timeout_error(tmp_path, figures):
    overrides = tiny_run_overrides(tmp_path, tmp_path / "run", "train.collective_timeout_s=15")
    start = time.monotonic()
    survivor, hung = run_ranks_as_processes(overrides, 2, kill="hang:4", kill_rank=1)
    assert survivor.returncode == 1 and hung.returncode == -signal.SIGKILL
    assert 15 < time.monotonic() - start < 120
    assert "Timed out" in survivor.output or "timeout" in survivor.output.lower(), survivor.output[-2000:]
    figures["ranks killed or hung, the other ended with an error"] += 1


@pytest.mark.all_faults
def test_two_processes_killed_and_resumed_equal_the_uninterrupted_pair(tmp_path, figures):
    straight = tmp_path / "straight"
    assert all(r.returncode == 0 for r in run_ranks_as_processes(tiny_run_overrides(tmp_path, straight), 2))
    resumed = tmp_path / "resumed"
    overrides = tiny_run_overrides(tmp_path, resumed)
    first, second = run_ranks_as_processes(overrides, 2, kill="checkpoint:6", kill_rank=0)
    assert first.returncode == -signal.SIGKILL and second.returncode != 0
    assert Checkpointer(resumed).latest().name == "step_000004.pt"
    assert all(r.returncode == 0 for r in run_ranks_as_processes(overrides, 2))
    assert_same_weights(final_weights(straight), final_weights(resumed), atol=DDP_ATOL)
    figures["kills survived (SIGKILL, 2 processes)"] += 1
