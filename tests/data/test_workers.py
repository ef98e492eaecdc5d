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
