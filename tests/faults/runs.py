"""Tiny training runs as real processes (`python -m tests.faults.kill_runner train ...`), signalled from outside
or killed from inside, and what a finished run leaves: its weights and its logged curves."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from contrastive.checkpoint import Checkpointer, load_checkpoint
from contrastive.commands.report import read_scalar
from tests.contrastive.tiny_run import TINY_MODEL, write_tiny_dataset

REPO = Path(__file__).resolve().parents[2]
CURVES = ("train/loss", "train/grad_norm", "train/logit_scale", "train/lr")


def tiny_run_overrides(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """A 10-step fp32 run on 2 shards x 32 samples, logged every step, checkpointed every 2 steps."""
    if not (root / "tokenizer.json").exists():
        write_tiny_dataset(root)
    return [f"run_dir={run_dir}", f"data.shards={root / 'shards' / 'shard-{000000..000001}.tar'}",
            f"data.tokenizer={root / 'tokenizer.json'}", "data.workers=0", "data.shuffle_buffer=16",
            "train.batch_size=8", "train.steps=10", "train.precision=fp32", "train.log_every=1",
            "train.checkpoint_every=2", "optim.warmup_steps=2", "optim.lr=1e-3", *TINY_MODEL, *extra]


@dataclass
class Finished:
    returncode: int
    output: str  # stdout and stderr together


def run_training(overrides: list[str], *, kill: str = "", env: Optional[dict[str, str]] = None,
                 signal_at_step: Optional[int] = None, signal_to_send: int = signal.SIGTERM, delay_s: float = 0.0,
                 to_group: bool = False, launcher: Sequence[str] = (), timeout_s: float = 120) -> Finished:
    """`contrastive train OVERRIDES` in its own process (under `launcher`, e.g. torchrun's command line, if given).
    `kill` plants a SIGKILL from inside (kill_runner's FAULT_KILL); `signal_at_step` sends `signal_to_send` from
    outside `delay_s` after the line of that step: to the main process, or with `to_group` to its whole process
    group (its loader workers too), as Slurm, `timeout` and a terminal's Ctrl-C do."""
    full_env = {**os.environ, "FAULT_KILL": kill, "PYTHONUNBUFFERED": "1", **(env or {})}
    command = [*launcher, "-m", "contrastive"] if launcher else [sys.executable, "-m", "tests.faults.kill_runner"]
    process = subprocess.Popen([*command, "train", *overrides], cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=to_group)
    timer = threading.Timer(timeout_s, process.kill)
    timer.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if signal_at_step is not None and line.startswith(f"step {signal_at_step}/"):
                time.sleep(delay_s)
                if to_group:
                    os.killpg(process.pid, signal_to_send)
                else:
                    process.send_signal(signal_to_send)
                signal_at_step = None
        returncode = process.wait()
    finally:
        timer.cancel()
        process.stdout.close()
    if returncode == -signal.SIGKILL and not kill and signal_to_send != signal.SIGKILL:
        raise TimeoutError(f"training did not end within {timeout_s} s:\n{''.join(lines)}")
    return Finished(returncode, "".join(lines))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(Checkpointer(run_dir).latest())["model"]


def curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    return {tag: read_scalar(run_dir / "tb", tag) for tag in CURVES}


def assert_same_weights(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor], atol: float = 0.0):
    assert expected.keys() == actual.keys()
    for name in expected:
        if atol == 0.0:
            assert torch.equal(expected[name], actual[name]), name
        else:
            torch.testing.assert_close(actual[name], expected[name], atol=atol, rtol=0, msg=name)


def run_ranks_as_processes(overrides: list[str], world_size: int, *, kill: str = "", kill_rank: int = 0,
                           timeout_s: float = 180) -> list[Finished]:
    """`contrastive train` as `world_size` processes joined over gloo on 127.0.0.1 (as torchrun would start them,
    without an agent that tears the others down when one dies), one thread each. A rank planted with a hang is
    killed once the others have ended."""
    from tests.multiprocess import free_port

    port = str(free_port())
    processes = []
    for rank in range(world_size):
        env = {**os.environ, "FAULT_KILL": kill, "FAULT_RANK": str(kill_rank), "PYTHONUNBUFFERED": "1",
               "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        processes.append(subprocess.Popen([sys.executable, "-m", "tests.faults.kill_runner", "train", *overrides],
                                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
    outputs: dict[int, str] = {}
    # The faulty rank last: a hung rank ends only when killed, after the others have ended.
    for rank in sorted(range(world_size), key=lambda r: r == kill_rank):
        if kill.startswith("hang") and rank == kill_rank:
            processes[rank].kill()
        try:
            outputs[rank], _ = processes[rank].communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise TimeoutError(f"rank {rank} did not end within {timeout_s} s")
    return [Finished(processes[rank].returncode, outputs[rank]) for rank in range(world_size)]


def signal_ranks_in_one_group(overrides: list[str], world_size: int, signal_at_step: int, signal_to_send: int,
                              timeout_s: float = 180) -> list[Finished]:
    """`contrastive train` as `world_size` processes over gloo, all in one process group (as srun's tasks or a
    terminal's job are), which gets `signal_to_send` once rank 0 has logged `signal_at_step`."""
    from tests.multiprocess import free_port

    port = str(free_port())
    processes: list[subprocess.Popen] = []
    for rank in range(world_size):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        processes.append(subprocess.Popen([sys.executable, "-m", "contrastive", "train", *overrides], cwd=REPO,
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          process_group=processes[0].pid if processes else 0))
    timer = threading.Timer(timeout_s, lambda: [p.kill() for p in processes])
    timer.start()
    try:
        lines = []
        for line in processes[0].stdout:
            lines.append(line)
            if line.startswith(f"step {signal_at_step}/"):
                os.killpg(processes[0].pid, signal_to_send)
                signal_at_step = -1
        outputs = ["".join(lines)] + [p.communicate()[0] for p in processes[1:]]
        return [Finished(p.wait(), out) for p, out in zip(processes, outputs)]
    finally:
        timer.cancel()
