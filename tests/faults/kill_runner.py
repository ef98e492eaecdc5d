"""`python -m tests.faults.kill_runner ARGS...` runs `contrastive ARGS...` with a SIGKILL planted by FAULT_KILL:

    FAULT_KILL=step:N        the process kills itself as training step N (1-based) begins
    FAULT_KILL=checkpoint:N  the process kills itself half-way through writing the checkpoint of step N:
                             the temp file holds half its bytes, fsynced, and nothing is renamed
    FAULT_KILL=hang:N        the process stops making progress as step N begins (a hung rank), until killed
    FAULT_KILL=shards:N      the process kills itself inside writing its shard file of the step-N sharded checkpoint
                             (train.strategy=fsdp): the file holds its first tensor, fsynced, and nothing is renamed
    FAULT_KILL=shards_full:N writing its shard file of the step-N sharded checkpoint fails with ENOSPC (a full disk)
                             after its first tensor
    FAULT_RANK=R             only rank R plants the fault (default: every rank)

The kill is a real SIGKILL of this process; only where it lands is chosen. Test code only: production has no hook.
"""
import errno
import os
import signal
import sys
import time

import torch
from torch.distributed.checkpoint import filesystem

from contrastive import cli, train
from tests.faults.partial_write import half_written_save, shard_write_failing_at


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _hang() -> None:
    while True:
        time.sleep(60)


def _as_step_begins(step: int, fault) -> None:
    original = train.lr_at

    def lr_at(index: int, *args, **kwargs):
        if index + 1 == step:
            fault()
        return original(index, *args, **kwargs)

    train.lr_at = lr_at


def _kill_inside_checkpoint_write(step: int) -> None:
    def sync_and_die(f) -> None:
        f.flush()
        os.fsync(f.fileno())
        _die()

    torch.save = half_written_save(step, sync_and_die)


def _fail_inside_shard_write(step: int, full_disk: bool) -> None:
    def sync_and_die(f) -> None:
        f.flush()
        os.fsync(f.fileno())
        _die()

    def disk_full(f) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    filesystem._write_item = shard_write_failing_at(step, disk_full if full_disk else sync_and_die)


def main() -> int:
    kind, _, step = os.environ.get("FAULT_KILL", "").partition(":")
    if kind and os.environ.get("FAULT_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0"):
        {"step": lambda n: _as_step_begins(n, _die), "hang": lambda n: _as_step_begins(n, _hang),
         "checkpoint": _kill_inside_checkpoint_write, "shards": lambda n: _fail_inside_shard_write(n, False),
         "shards_full": lambda n: _fail_inside_shard_write(n, True)}[kind](int(step))
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
