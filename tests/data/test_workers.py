"""ordered_map: the results of `map`, in order, over processes; a worker that dies is an error, not a hang; workers
ignore the stop signals a process group gets."""
import os
import signal

import pytest

from data.workers import ordered_map


def _square(x: int) -> int:
    return x * x


def _dies(_item: int) -> None:
    os._exit(3)


def _survives_group_signals(x: int) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
        os.kill(os.getpid(), sig)  # ignored: the worker goes on
    return x


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_results_come_in_order_for_any_worker_count(workers):
    with ordered_map(workers) as mapper:
        assert list(mapper(_square, range(100))) == [x * x for x in range(100)]


def test_a_worker_that_dies_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match=r"worker \(pid \d+\) died with exit code 3"), ordered_map(2) as mapper:
        list(mapper(_dies, range(40)))


def test_workers_ignore_stop_signals():
    with ordered_map(2) as mapper:
        assert list(mapper(_survives_group_signals, range(40))) == list(range(40))


LEFT_ALIVE_AT_EXIT = """
import torch
from torch.utils.data import DataLoader, IterableDataset
from data.workers import stop_immune_worker_init

class Endless(IterableDataset):
    def __iter__(self):
        while True:
            yield torch.zeros(1)

loader = DataLoader(Endless(), batch_size=None, num_workers=2, persistent_workers=True,
                    worker_init_fn=stop_immune_worker_init())
kept = iter(loader)  # still referenced when the interpreter exits, as after an exception
next(kept)
print("exiting", flush=True)
"""


def test_dataloader_workers_left_alive_at_exit_do_not_hold_the_exit():
    """multiprocessing ends daemonic children at exit with SIGTERM, which these workers ignore, then waits."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", LEFT_ALIVE_AT_EXIT], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "exiting\n", done.stderr
