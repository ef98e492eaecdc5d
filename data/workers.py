"""Worker processes (DataLoader workers, `ordered_map`'s processes) leave stopping to their parent.

SIGTERM, SIGINT and SIGUSR2 sent to the whole process group (Slurm's scancel and time limit, `timeout`,
Ctrl-C in a terminal) reach the workers too. torch's DataLoader worker re-raises a SIGTERM that does not
come from its parent and dies of it, and the parent then fails with "DataLoader worker (pid N) is killed by
signal: Terminated"; a Ctrl-C raises KeyboardInterrupt in every pool worker. So workers ignore these
signals: the parent decides when to stop and shuts its workers down itself. A worker whose parent is gone
exits on its own (torch's worker watchdog; an `ordered_map` worker reads EOF from its task pipe).

    with ordered_map(workers=4) as mapper:       # `map`, in order, over spawned processes (plain map if <= 1)
        for result in mapper(fn, items): ...     # a stop raised here kills the workers on the way out
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import multiprocessing
import signal
import threading
from collections import deque
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Callable, Iterable, Iterator, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
CHUNK = 16  # items per message to a worker of ordered_map


def ignore_stop_signals(*_: object) -> None:
    """Run in a worker (it may get its worker id): the stop signals are ignored from then on."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def stop_immune_worker_init() -> Callable[[int], None]:
    """The `worker_init_fn` for a DataLoader, called in the parent as the loader is made. Workers that ignore
    SIGTERM cannot be ended with it: multiprocessing ends the daemonic children still alive at exit (an iterator
    an exception kept referenced) with SIGTERM and then waits for them, forever. So at exit, before it, this
    process kills them."""
    _kill_daemonic_children_at_exit()
    return ignore_stop_signals


@functools.cache
def _kill_daemonic_children_at_exit() -> None:
    # Registered after multiprocessing's own exit handler (torch imported multiprocessing), so it runs first.
    atexit.register(lambda: [child.kill() for child in multiprocessing.active_children() if child.daemon])


@contextlib.contextmanager
def ordered_map(workers: int) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """`map` in this process (workers <= 1) or the same, in order, over `workers` processes (_Workers).

    The workers ignore stop signals sent to the whole process group: this process stops (an exception or
    `Stopped` raised here) and kills them on the way out."""
    if workers <= 1:
        yield map
        return
    resource_tracker.ensure_running()  # before the hold: spawn starts it once, which unblocks SIGINT and SIGTERM
    release = _hold_stops()
    pool: Optional[_Workers] = None
    try:
        pool = _Workers(workers)
        release()  # a stop that came while they started is raised here
        yield pool.imap
    except BaseException:
        if pool is not None:
            pool.kill()
        release()
        raise
    pool.close()


def _hold_stops() -> Callable[[], None]:
    """Stop signals wait until the returned function is called: blocked in this thread, so processes started
    meanwhile begin with them blocked (then ignore them: ignore_stop_signals), and only noted by the handlers,
    since another thread (torch's, tokenizers') may still receive one. The call puts both back and raises a
    noted signal again, for the handler in place before; calling it again does nothing."""
    held: list[int] = []
    in_main = threading.current_thread() is threading.main_thread()  # the only thread that runs handlers
    handlers = {sig: signal.signal(sig, lambda signum, _frame: held.append(signum)) for sig in STOP_SIGNALS} \
        if in_main else {}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def release() -> None:
        nonlocal handlers
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # runs the noting handler for a pending signal
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        handlers = {}
        if held:
            signum = held[0]
            held.clear()
            signal.raise_signal(signum)

    return release


class _Workers:
    """Spawned processes, each with its own task and result pipe, mapping chunks of items in order.

    Spawned, not forked: a fork copies locks other threads hold (torch's pools, a tensorboard writer) and the
    children can deadlock on them. Not multiprocessing.Pool: its workers share queue locks, and its terminate()
    can hang on one that a worker holds while it writes a large result nobody reads any more."""

    def __init__(self, count: int):
        context = multiprocessing.get_context("spawn")
        self.processes: list[SpawnProcess] = []
        self.links: list[tuple[Connection, Connection]] = []  # (tasks to, results from) each worker
        for _ in range(count):
            task_reader, task_writer = context.Pipe(duplex=False)
            result_reader, result_writer = context.Pipe(duplex=False)
            process = context.Process(target=_work, args=(task_reader, result_writer))
            process.start()
            task_reader.close()
            result_writer.close()
            self.processes.append(process)
            self.links.append((task_writer, result_reader))

    def imap(self, fn: Callable, items: Iterable) -> Iterator:
        # One chunk per worker at a time: a worker reads its next chunk only after it has sent its results, so
        # a second one waiting in a full pipe could block this process while the worker blocks sending to it.
        items = iter(items)
        pending: deque[int] = deque()  # the worker of each chunk sent and not yet received, in order

        def send(worker: int) -> None:
            chunk = list(itertools.islice(items, CHUNK))
            if chunk:
                self.links[worker][0].send((fn, chunk))
                pending.append(worker)

        for worker in range(len(self.processes)):
            send(worker)
        while pending:
            worker = pending.popleft()
            try:
                results = self.links[worker][1].recv()
            except EOFError:
                self.processes[worker].join()
                raise RuntimeError(f"worker (pid {self.processes[worker].pid}) died with exit code "
                                   f"{self.processes[worker].exitcode}") from None
            send(worker)
            yield from results

    def close(self) -> None:
        for tasks, _ in self.links:
            tasks.send(None)
        self._join()

    def kill(self) -> None:
        for process in self.processes:
            process.kill()
        self._join()

    def _join(self) -> None:
        for process in self.processes:
            process.join()
        for tasks, results in self.links:
            tasks.close()
            results.close()


def _work(tasks: Connection, results: Connection) -> None:
    """A worker's loop: (fn, chunk) in, [fn(item) for item in chunk] out, until None or its parent is gone."""
    ignore_stop_signals()
    while True:
        try:
            task = tasks.recv()
        except EOFError:
            return
        if task is None:
            return
        fn, chunk = task
        results.send([fn(item) for item in chunk])
