"""Stops from outside: SIGTERM, SIGINT and SIGUSR2, to the main process or to its whole process group (loader
workers included, as Slurm, `timeout` and a terminal's Ctrl-C send them), single process, DDP and under torchrun.
Each stops at a step boundary, writes the checkpoint, says so in one line and exits 0 (130 for Ctrl-C); the
resumed run ends as the uninterrupted one did. A second Ctrl-C exits at once and `latest` stays complete."""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest
import torch

import contrastive.evaluate as evaluate_module
import contrastive.train as train_module
from contrastive import cli, stopping
from contrastive.checkpoint import Checkpointer, load_checkpoint
from contrastive.config import load_config
from contrastive.train import train
from data.synth import synthesize
from tests.faults.runs import (assert_same_weights, final_weights, run_training, signal_ranks_in_one_group,
                               tiny_run_overrides)
from tests.faults.test_kill import assert_same_run
from tests.multiprocess import free_port

STEPS = 14  # room for six stops that each land a step or two after the one they were sent at
WITH_WORKERS = ("data.workers=2", f"train.steps={STEPS}", "train.checkpoint_every=100")


@pytest.fixture(autouse=True)
def own_signal_handlers():
    """In-process runs install the training handlers in pytest's own process: put pytest's back afterwards."""
    previous = {sig: signal.getsignal(sig) for sig in stopping.STOP_SIGNALS}
    stopping.reset()
    yield
    stopping.reset()
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def stopped_at(output: str, signal_name: str) -> int:
    """The step of the one stop line; nothing else may say the run failed."""
    lines = [line for line in output.splitlines() if line.startswith("stop requested")]
    assert len(lines) == 1 and lines[0].startswith(f"stop requested ({signal_name}): checkpoint written at step "), \
        output
    assert "Traceback" not in output and "killed by signal" not in output, output
    return int(lines[0].split("at step ")[1].split(",")[0])


STOPS = [(signal.SIGTERM, True, 0), (signal.SIGINT, True, 130)]
SLOW_STOPS = [*STOPS, (signal.SIGUSR2, False, 0), (signal.SIGTERM, False, 0), (signal.SIGINT, False, 130),
              (signal.SIGUSR2, True, 0)]


@pytest.mark.parametrize("stops", [pytest.param(STOPS, id="term-int-to-group"),
                                   pytest.param(SLOW_STOPS, id="every-signal-both-ways", marks=pytest.mark.all_faults)])
def test_signals_to_the_group_or_the_main_process_stop_with_workers_running_and_resume_exactly(
        tmp_path, stops, figures):
    straight = tmp_path / "straight"
    assert train(load_config(None, tiny_run_overrides(tmp_path, straight, *WITH_WORKERS))).finished
    stopping.reset()
    run_dir = tmp_path / "stopped"
    overrides = tiny_run_overrides(tmp_path, run_dir, *WITH_WORKERS)
    resumed_at = 0
    for sig, to_group, code in stops:
        result = run_training(overrides, signal_at_step=resumed_at + 1, signal_to_send=sig, to_group=to_group)
        assert result.returncode == code, result.output
        step = stopped_at(result.output, sig.name)
        assert resumed_at + 1 <= step < STEPS
        assert Checkpointer(run_dir).latest().name == f"step_{step:06d}.pt"
        resumed_at = step
        figures["stops from outside checkpointed (TERM/INT/USR2, group or main process)"] += 1
    finished = run_training(overrides)
    assert finished.returncode == 0 and "Traceback" not in finished.output, finished.output
    assert_same_run(straight, run_dir, STEPS)


@pytest.mark.parametrize("compared", [False, pytest.param(True, marks=pytest.mark.all_faults)],
                         ids=["resumed", "resumed-equals-uninterrupted"])
def test_two_ranks_signalled_as_one_group_stop_after_the_same_step_and_resume_to_the_end(tmp_path, compared,
                                                                                          figures):
    ddp = ("data.workers=1", f"train.steps={STEPS}", "train.checkpoint_every=100")
    run_dir = tmp_path / "ddp"
    overrides = tiny_run_overrides(tmp_path, run_dir, *ddp)
    ranks = signal_ranks_in_one_group(overrides, 2, signal_at_step=3, signal_to_send=signal.SIGTERM)
    step = stopped_at(ranks[0].output, "SIGTERM")
    assert "Traceback" not in ranks[1].output, ranks[1].output
    saved = load_checkpoint(Checkpointer(run_dir).latest())
    assert (saved["step"], saved["world_size"], len(saved["data"])) == (step, 2, 2)
    figures["stops from outside checkpointed (TERM/INT/USR2, group or main process)"] += 1
    ranks = signal_ranks_in_one_group(overrides, 2, signal_at_step=STEPS + 1, signal_to_send=signal.SIGTERM)
    assert f"resuming {run_dir} from step_{step:06d}.pt" in ranks[0].output, ranks[0].output
    assert Checkpointer(run_dir).latest().name == f"step_{STEPS:06d}.pt"
    if compared:  # gloo's reductions are deterministic at a fixed world size (docs/reliability.md)
        straight = tmp_path / "straight"
        signal_ranks_in_one_group(tiny_run_overrides(tmp_path, straight, *ddp), 2, signal_at_step=STEPS + 1,
                                  signal_to_send=signal.SIGTERM)
        assert_same_weights(final_weights(straight), final_weights(run_dir), atol=1e-6)


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.all_faults)])
def test_under_torchrun_a_signal_to_the_agent_reaches_both_ranks_which_checkpoint_and_resume(tmp_path, sig, figures):
    """torchrun starts its workers in sessions of their own and forwards the signal it gets (its agent then exits
    non-zero, whatever the workers did); the workers stop at a step boundary."""
    run_dir = tmp_path / "torchrun"
    overrides = tiny_run_overrides(tmp_path, run_dir, "data.workers=1", f"train.steps={STEPS}",
                                   "train.checkpoint_every=100")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                "--master-port", str(free_port())]
    result = run_training(overrides, signal_at_step=3, signal_to_send=sig, to_group=True, launcher=launcher,
                          env={"OMP_NUM_THREADS": "1"})
    agent_exit = result.output.rfind("Traceback")
    assert "SignalException" in result.output[agent_exit:], result.output  # the agent re-raises what it forwarded
    step = stopped_at(result.output[:agent_exit], sig.name)
    assert load_checkpoint(Checkpointer(run_dir).latest())["world_size"] == 2
    figures["stops from outside checkpointed (TERM/INT/USR2, group or main process)"] += 1
    launcher[-1] = str(free_port())
    resumed = run_training(overrides, launcher=launcher, env={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0 and f"from step_{step:06d}.pt" in resumed.output, resumed.output
    assert Checkpointer(run_dir).latest().name == f"step_{STEPS:06d}.pt"


def test_a_second_ctrl_c_during_the_checkpoint_write_exits_at_once_and_latest_stays_complete(
        tmp_path, monkeypatch, capsys, figures):
    run_dir = tmp_path / "run"
    overrides = tiny_run_overrides(tmp_path, run_dir, "train.steps=8", "train.checkpoint_every=2")
    real_save = torch.save

    def ctrl_c_twice_while_writing_step_3(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 3:
            f.write(b"half a checkpoint")
            time.sleep(stopping.SAME_CTRL_C_S + 0.2)  # a second press, not the first one delivered twice
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", ctrl_c_twice_while_writing_step_3)
    lr_at = train_module.lr_at

    def first_ctrl_c_as_step_3_begins(index: int, *args):
        if index == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return lr_at(index, *args)

    monkeypatch.setattr(train_module, "lr_at", first_ctrl_c_as_step_3_begins)
    started = time.monotonic()
    assert cli.main(["train", *overrides]) == 130
    assert time.monotonic() - started < 60
    checkpoints = Checkpointer(run_dir)
    assert checkpoints.latest().name == "step_000002.pt" and checkpoints.steps() == [2]
    assert not list(checkpoints.dir.glob(".*.tmp"))
    assert "checkpoint written" not in capsys.readouterr().out
    figures["second Ctrl-C during a checkpoint write: exit at once, latest complete"] += 1


def test_one_ctrl_c_delivered_twice_is_one_stop(tmp_path):
    """The terminal's Ctrl-C and a launcher's forwarded copy arrive within moments: one stop, not an abort."""
    stopping.install_handlers()
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)
    assert stopping.stop_requested() and stopping.stop_signal() == signal.SIGINT
    time.sleep(stopping.SAME_CTRL_C_S + 0.1)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs between bytecodes


def sigterm_as_evaluation_begins(monkeypatch) -> None:
    real_evaluate = evaluate_module.evaluate

    def evaluate(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler raises between two bytecodes of this wait
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", evaluate)


def test_a_stop_during_the_final_evaluation_leaves_a_run_that_eval_finishes(tmp_path, monkeypatch, capsys, figures):
    data = tmp_path / "demo"
    synthesize(data, seed=0, train_samples=64, samples_per_shard=32, images_per_class=1, retrieval_images=6,
               progress=False)
    run_dir = tmp_path / "run"
    overrides = [*tiny_run_overrides(tmp_path, run_dir, "train.steps=2"),
                 f"eval.zeroshot.attributes={data / 'eval' / 'zeroshot_attributes'}"]
    sigterm_as_evaluation_begins(monkeypatch)
    assert cli.main(["train", *overrides]) == 0
    assert capsys.readouterr().out.endswith(
        f"stop requested (SIGTERM) during the evaluation of step 2: its checkpoint is complete, its results are not; "
        f"`contrastive eval {run_dir}` or `contrastive train {run_dir}` finishes them\n")
    assert Checkpointer(run_dir).latest().name == "step_000002.pt" and not list((run_dir / "eval").glob("*"))

    # `contrastive eval` stopped too: one line, exit 0, nothing half-written.
    stopping.reset()
    assert cli.main(["eval", str(run_dir)]) == 0
    assert capsys.readouterr().err.startswith("stopped by SIGTERM: the checkpoints evaluated before the stop")
    assert not list((run_dir / "eval").glob("*"))
    figures["stops during an evaluation: exit 0, nothing half-written"] += 2

    monkeypatch.undo()
    stopping.reset()
    assert cli.main(["eval", str(run_dir)]) == 0
    assert "zeroshot/attributes/top1" in json.loads((run_dir / "eval" / "step_000002.json").read_text())["metrics"]
    assert cli.main(["train", *overrides]) == 0
    assert "already finished at step 2" in capsys.readouterr().out
