"""A checkpoint write that fails part-way (disk full): the partial file is removed, `latest` still loads, the
error says what happened, and training stops (train.on_checkpoint_error=stop, exit 2) or goes on (continue)."""
from __future__ import annotations

import errno

import pytest

from contrastive import checkpoint, cli, stopping, train
from contrastive.checkpoint import Checkpointer, load_checkpoint
from tests.faults.partial_write import half_written_save
from tests.faults.runs import tiny_run_overrides


@pytest.fixture(autouse=True)
def clear_stop_flag():
    stopping.reset()
    yield
    stopping.reset()


def fill_the_disk_at(monkeypatch, step: int, written: list[int]) -> None:
    """Writing the checkpoint of `step` fails with ENOSPC after half its bytes."""
    def disk_full(f) -> None:
        written.append(f.tell())
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", half_written_save(step, disk_full))


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_a_full_disk_during_a_checkpoint_keeps_latest_loadable(tmp_path, monkeypatch, capsys, policy, figures):
    run_dir = tmp_path / "run"
    overrides = tiny_run_overrides(tmp_path, run_dir, "train.steps=6", f"train.on_checkpoint_error={policy}")
    written: list[int] = []
    fill_the_disk_at(monkeypatch, 4, written)
    code = cli.main(["train", *overrides])
    err = capsys.readouterr().err if policy == "stop" else capsys.readouterr().out
    checkpoints = Checkpointer(run_dir)
    assert written and written[0] > 0
    assert not list(checkpoints.dir.glob(".*.tmp"))  # the partial file is gone
    message = (f"checkpoint {checkpoints.path(4)} could not be written ([Errno 28] No space left on device); "
               f"`latest` still names step_000002.pt")
    if policy == "stop":
        assert code == 2
        assert err == f"error: {message}; training stopped (train.on_checkpoint_error=stop)\n"
        assert checkpoints.steps() == [2] and load_checkpoint(checkpoints.latest())["step"] == 2
        monkeypatch.undo()
        assert cli.main(["train", *overrides]) == 0  # the disk has room again: resumes from step 2
    else:
        assert code == 0
        assert f"warning: {message}; training goes on (train.on_checkpoint_error=continue)" in err
    assert checkpoints.steps() == [2, 4, 6] if policy == "stop" else [2, 6]
    assert load_checkpoint(checkpoints.latest())["step"] == 6
    figures["checkpoint writes failed (ENOSPC) with latest intact"] += 1


def test_with_continue_a_failed_final_checkpoint_still_fails_the_run(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_run_overrides(tmp_path, run_dir, "train.steps=6", "train.on_checkpoint_error=continue")
    fill_the_disk_at(monkeypatch, 6, [])
    assert cli.main(["train", *overrides]) == 2
    checkpoints = Checkpointer(run_dir)
    assert capsys.readouterr().err == (
        f"error: checkpoint {checkpoints.path(6)} could not be written ([Errno 28] No space left on device); "
        "`latest` still names step_000004.pt; it was the final checkpoint, so the run fails even with "
        "train.on_checkpoint_error=continue; rerun it to resume from `latest`\n")
    assert checkpoints.steps() == [2, 4]
    monkeypatch.undo()
    assert cli.main(["train", *overrides]) == 0
    assert load_checkpoint(checkpoints.latest())["step"] == 6


def test_with_continue_a_stop_whose_checkpoint_failed_says_so(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_run_overrides(tmp_path, run_dir, "train.steps=6", "train.on_checkpoint_error=continue")
    fill_the_disk_at(monkeypatch, 3, [])
    lr_at = train.lr_at

    def stop_as_step_3_begins(index: int, *args):
        if index == 2:
            stopping.request_stop()
        return lr_at(index, *args)

    monkeypatch.setattr(train, "lr_at", stop_as_step_3_begins)
    assert cli.main(["train", *overrides]) == 0
    checkpoints = Checkpointer(run_dir)
    out = capsys.readouterr().out
    resumes = (f"stop requested (SIGTERM) at step 3, whose checkpoint failed; exiting, the run resumes from "
               f"{checkpoints.path(2)}")
    assert resumes in out
    assert "checkpoint written" not in out and checkpoints.steps() == [2]
