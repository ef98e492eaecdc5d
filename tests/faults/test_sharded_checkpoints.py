"""Faults in sharded checkpoints (train.strategy=fsdp): a full disk while shards are written (in one process, and on
one of two ranks) and a rank killed inside its shard write leave `latest` on the previous complete checkpoint, the
partial directory is removed (at once, or by the next writer) and the run resumes; a missing or truncated file is one
error naming it; a metadata pickle that would run code is refused by `contrastive eval` and by resuming."""
from __future__ import annotations

import errno
import os
import pickle
import signal
from pathlib import Path

import pytest
from torch.distributed.checkpoint import filesystem

from contrastive import cli, stopping
from contrastive.checkpoint import Checkpointer, load_checkpoint
from contrastive.sharded_checkpoint import METADATA
from tests.faults.partial_write import shard_write_failing_at
from tests.faults.runs import assert_same_weights, final_weights, run_ranks_as_processes, tiny_run_overrides

FSDP = "train.strategy=fsdp"
DCP_ATOL = 1e-6  # as for DDP pairs (tests/faults/test_ranks.py): gloo's reductions are deterministic at a fixed W
GLOO_EXIT_ABORT = "terminate called without an active exception"  # torch 2.14.1's gloo, now and then, at exit


@pytest.fixture(autouse=True)
def clear_stop_flag():
    stopping.reset()
    yield
    stopping.reset()


def partial_writes(checkpoints: Checkpointer) -> list[str]:
    return sorted(p.name for p in checkpoints.dir.iterdir() if p.name.endswith((".partial", ".tmp")))


def disk_full(f) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_a_full_disk_during_a_sharded_write_keeps_latest_loadable(tmp_path, monkeypatch, capsys, policy, figures):
    run_dir = tmp_path / "run"
    overrides = tiny_run_overrides(tmp_path, run_dir, "train.steps=6", FSDP, f"train.on_checkpoint_error={policy}")
    monkeypatch.setattr(filesystem, "_write_item", shard_write_failing_at(4, disk_full))
    code = cli.main(["train", *overrides])
    out, err = capsys.readouterr()
    checkpoints = Checkpointer(run_dir)
    assert partial_writes(checkpoints) == []  # the partial directory is gone
    message = (f"checkpoint {checkpoints.dir / 'step_000004.dcp'} could not be written ([Errno 28] No space left on "
               "device); `latest` still names step_000002.dcp")
    if policy == "stop":
        assert code == 2
        assert err == f"error: {message}; training stopped (train.on_checkpoint_error=stop)\n"
        assert checkpoints.steps() == [2] and load_checkpoint(checkpoints.latest())["step"] == 2
        monkeypatch.undo()
        assert cli.main(["train", *overrides]) == 0  # the disk has room again: resumes from step 2
    else:
        assert code == 0
        assert f"warning: {message}; training goes on (train.on_checkpoint_error=continue)" in out
    assert checkpoints.steps() == ([2, 4, 6] if policy == "stop" else [2, 6])
    assert checkpoints.latest().name == "step_000006.dcp" and load_checkpoint(checkpoints.latest())["step"] == 6
    figures["sharded checkpoint writes failed (ENOSPC) with latest intact"] += 1


def test_a_full_disk_on_one_of_two_ranks_stops_both_with_one_error_and_latest_intact(tmp_path, figures):
    run_dir = tmp_path / "run"
    overrides = tiny_run_overrides(tmp_path, run_dir, FSDP)
    results = run_ranks_as_processes(overrides, 2, kill="shards_full:4", kill_rank=1)
    checkpoints = Checkpointer(run_dir)
    expected = (f"error: checkpoint {checkpoints.dir / 'step_000004.dcp'} could not be written (rank 1: [Errno 28] No "
                "space left on device); `latest` still names step_000002.dcp; training stopped "
                "(train.on_checkpoint_error=stop)")
    for result in results:
        lines = [line for line in result.output.splitlines() if line != GLOO_EXIT_ABORT]
        assert lines[-1] == expected and "Traceback" not in result.output, result.output[-3000:]
        # exit 2 as the CLI returns it, or gloo's abort at process exit after the error was printed (DESIGN.md)
        assert result.returncode == (-signal.SIGABRT if GLOO_EXIT_ABORT in result.output else 2)
    assert checkpoints.latest().name == "step_000002.dcp" and partial_writes(checkpoints) == []
    assert_finished(run_ranks_as_processes(overrides, 2))  # room again: the pair resumes
    assert checkpoints.latest().name == "step_000010.dcp" and checkpoints.steps() == [6, 8, 10]
    figures["sharded checkpoint writes failed (ENOSPC) with latest intact"] += 1


def assert_finished(results) -> None:
    """Every rank exited 0, or in gloo's known abort at process exit after it finished."""
    for result in results:
        assert result.returncode == (-signal.SIGABRT if GLOO_EXIT_ABORT in result.output else 0), result.output[-3000:]


def kill_rank_1_inside_its_shard_write(overrides: list[str], checkpoints: Checkpointer) -> None:
    rank0, rank1 = run_ranks_as_processes(overrides, 2, kill="shards:4", kill_rank=1)
    assert rank1.returncode == -signal.SIGKILL and rank0.returncode != 0
    assert checkpoints.latest().name == "step_000002.dcp"  # `latest` always names a complete checkpoint
    partial = checkpoints.dir / "step_000004.dcp.partial"
    assert partial_writes(checkpoints) == [partial.name]  # the kill hit the write: its files are there, unnamed
    assert (partial / "__1_0.distcp").is_file() and not (partial / METADATA).exists()


def test_a_rank_killed_inside_its_shard_write_keeps_latest_and_the_pair_resumes(tmp_path, figures):
    run_dir = tmp_path / "run"
    overrides = tiny_run_overrides(tmp_path, run_dir, FSDP)
    checkpoints = Checkpointer(run_dir)
    kill_rank_1_inside_its_shard_write(overrides, checkpoints)
    assert_finished(run_ranks_as_processes(overrides, 2))
    assert partial_writes(checkpoints) == []  # removed by the next writer
    assert checkpoints.latest().name == "step_000010.dcp" and load_checkpoint(checkpoints.latest())["step"] == 10
    figures["SIGKILLs inside a sharded write survived (2 processes)"] += 1


@pytest.mark.all_faults
def test_a_pair_killed_inside_a_shard_write_and_resumed_equals_the_uninterrupted_pair(tmp_path, figures):
    straight = tmp_path / "straight"
    assert_finished(run_ranks_as_processes(tiny_run_overrides(tmp_path, straight, FSDP), 2))
    resumed = tmp_path / "resumed"
    overrides = tiny_run_overrides(tmp_path, resumed, FSDP)
    kill_rank_1_inside_its_shard_write(overrides, Checkpointer(resumed))
    assert_finished(run_ranks_as_processes(overrides, 2))
    assert_same_weights(final_weights(straight), final_weights(resumed), atol=DCP_ATOL)
    figures["SIGKILLs inside a sharded write survived (2 processes, exact resume)"] += 1


@pytest.fixture
def stopped_fsdp_run(tmp_path) -> tuple[Path, list[str]]:
    """A one-process FSDP run stopped at step 4 of 10 (its checkpoints sharded), and its overrides."""
    run_dir = tmp_path / "run"
    overrides = tiny_run_overrides(tmp_path, run_dir, FSDP)
    assert cli.main(["train", *overrides, "train.steps=4"]) == 0
    return run_dir, overrides


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


DAMAGE = {"missing": lambda p: p.unlink(), "truncated": lambda p: p.write_bytes(p.read_bytes()[:-100])}


@pytest.mark.parametrize("command", ["eval", "train"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_missing_or_truncated_shard_file_is_one_error_naming_it(stopped_fsdp_run, tmp_path, capsys, command,
                                                                  damage, figures):
    run_dir, overrides = stopped_fsdp_run
    shard = Checkpointer(run_dir).latest() / "__0_0.distcp"
    DAMAGE[damage](shard)
    capsys.readouterr()
    argv = [command, str(run_dir), f"eval.zeroshot.colours={tmp_path}"] if command == "eval" else ["train", *overrides]
    assert cli.main(argv) == 2
    assert one_line_error(capsys).startswith(f"error: checkpoint {shard.parent} is incomplete: its shard file {shard} "
                                             f"is {damage}")
    figures["damaged sharded checkpoints refused with one error naming the file"] += 1


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("command", ["eval", "train"])
def test_a_metadata_pickle_with_a_payload_is_refused_without_running_it(stopped_fsdp_run, tmp_path, capsys, command,
                                                                        figures):
    run_dir, overrides = stopped_fsdp_run
    marker = tmp_path / "payload-ran"
    metadata = Checkpointer(run_dir).latest() / METADATA
    metadata.write_bytes(pickle.dumps(Payload(marker)))
    capsys.readouterr()
    argv = [command, str(run_dir), f"eval.zeroshot.colours={tmp_path}"] if command == "eval" else ["train", *overrides]
    assert cli.main(argv) == 2
    assert f"{metadata} cannot be loaded: UnpicklingError: posix.system is not part of DCP metadata" in \
        one_line_error(capsys)
    assert not marker.exists()
    figures["untrusted files refused without running code"] += 1
