"""Run a function on W spawned processes joined in a gloo group on 127.0.0.1.

Results travel through files, not pipes: gloo sometimes aborts at process exit after all work
is done (torch 2.14.1), so a rank is judged by the result it wrote, not by its exit code.
"""
from __future__ import annotations

import datetime
import os
import socket
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    out = Path(out_dir)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=60))
        result = fn(*args)
        torch.save({"result": result}, out / f"rank{rank}.pt")
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        (out / f"rank{rank}.error").write_text(traceback.format_exc())
        raise


def run_ranks(fn: Callable[..., Any], world_size: int, *args: Any, timeout_s: float = 240) -> list[Any]:
    """Call fn(*args) on every rank of a fresh gloo group; return the results in rank order.

    fn must be importable (a module-level function) since the processes are spawned.
    """
    with tempfile.TemporaryDirectory() as out_dir:
        ctx = mp.start_processes(_worker, args=(world_size, free_port(), out_dir, fn, args),
                                 nprocs=world_size, join=False, start_method="spawn")
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout_s)
        while not all(p.join(timeout=0.5) is not None or not p.is_alive() for p in ctx.processes):
            if datetime.datetime.now() > deadline:
                for p in ctx.processes:
                    p.kill()
                raise TimeoutError(f"ranks did not finish within {timeout_s} s")
        errors = sorted(Path(out_dir).glob("rank*.error"))
        if errors:
            raise RuntimeError("\n".join(f"{e.stem}:\n{e.read_text()}" for e in errors))
        results = []
        for rank in range(world_size):
            path = Path(out_dir) / f"rank{rank}.pt"
            if not path.exists():
                codes = [p.exitcode for p in ctx.processes]
                raise RuntimeError(f"rank {rank} wrote no result (exit codes {codes})")
            results.append(torch.load(path, weights_only=False)["result"])
        return results
