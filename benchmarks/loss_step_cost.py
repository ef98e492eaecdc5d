"""Cost of one loss step (forward + backward) per rank, on CPU with gloo, every rank one thread.

    python benchmarks/loss_step_cost.py            # about 5 minutes on 2 cores
    python benchmarks/loss_step_cost.py --quick    # small sizes only, to check that it runs

Three tables, each measured side by side in one run:
  1. dot-product losses at W = 2 versus the per-device batch b: clip, siglip with ring, siglip with
     all_gather (embedding width 512);
  2. peak memory versus W at a fixed b (more ranks than cores, so no times): ring SigLIP stays at
     O(b^2) per rank while all_gather grows as O(b x B), B = W b;
  3. Llip at W = 2 versus the number of mixture tokens K and the text chunk size.
Memory is the rank's peak resident set during a step minus its resident set just before the step
(Linux: writing 5 to /proc/self/clear_refs resets the peak; glibc is told to mmap every block of
128 KiB or more, so freed blocks return to the OS and a step cannot hide in memory an earlier step
freed). It counts all that the step allocates (logits, what autograd saves, gradients, communication
buffers) plus allocator overhead; the maximum over ranks and timed steps is reported. Time is the
fastest timed step of the slowest rank (the best of a few steps filters out other processes' load).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import losses

MMAP_THRESHOLD = str(128 * 1024)  # bytes
DOT_WIDTH = 512
LLIP_WIDTH = 256


@dataclass(frozen=True)
class Case:
    loss: str
    batch: int  # per device
    kwargs: dict = field(default_factory=dict)
    mixture_tokens: int = 0  # Llip's K; 0 for dot-product losses

    @property
    def label(self) -> str:
        settings = [f"{k}={v}" for k, v in self.kwargs.items() if k not in ("image_dim", "text_dim", "embed_dim")]
        return " ".join([self.loss, *settings])


def _status_mib(key: str) -> float:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def _inputs(case: Case, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if case.mixture_tokens:
        image = torch.randn(case.batch, case.mixture_tokens, LLIP_WIDTH, generator=g)
        text = torch.randn(case.batch, LLIP_WIDTH, generator=g)
    else:
        image = F.normalize(torch.randn(case.batch, DOT_WIDTH, generator=g), dim=-1)
        text = F.normalize(torch.randn(case.batch, DOT_WIDTH, generator=g), dim=-1)
    return image.requires_grad_(), text.requires_grad_()


def _step(loss: torch.nn.Module, image: torch.Tensor, text: torch.Tensor) -> None:
    loss.zero_grad(set_to_none=True)
    image.grad = text.grad = None
    loss(image, text)["loss"].backward()


def _measure(case: Case, timed_steps: int) -> tuple[float, float]:
    """(seconds of the fastest step, peak MiB of a step) of this rank, maxed over ranks."""
    torch.manual_seed(0)
    loss = losses.build(case.loss, **case.kwargs)
    image, text = _inputs(case, seed=dist.get_rank())
    _step(loss, image, text)  # warm-up: first-call costs (collective setup, batch-size check)
    seconds, peaks = [], []
    for _ in range(timed_steps):
        image.grad = text.grad = None
        loss.zero_grad(set_to_none=True)
        before = _status_mib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        dist.barrier()
        start = time.perf_counter()
        _step(loss, image, text)
        seconds.append(time.perf_counter() - start)
        peaks.append(_status_mib("VmHWM") - before)
    worst = torch.tensor([min(seconds), max(peaks)], dtype=torch.float64)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return worst[0].item(), worst[1].item()


def _rank_main(rank: int, world: int, port: int, cases: list[Case], timed_steps: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(minutes=10))
    results = [(asdict(case), *_measure(case, timed_steps)) for case in cases]
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cases: list[Case], world: int, timed_steps: int) -> list[tuple[Case, float, float]]:
    """Measure `cases` in one fresh group of `world` spawned processes."""
    os.environ["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD  # read by glibc when each child starts
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        ctx = mp.get_context("spawn")
        port = _free_port()
        processes = [ctx.Process(target=_rank_main, args=(r, world, port, cases, timed_steps, str(out)))
                     for r in range(world)]
        for p in processes:
            p.start()
        for p in processes:
            p.join()
        # gloo may abort at exit after all work is done (torch 2.14.1): judge the run by its results
        if not out.exists():
            raise RuntimeError(f"benchmark ranks wrote no results (exit codes {[p.exitcode for p in processes]})")
        return [(Case(**c), seconds, mib) for c, seconds, mib in json.loads(out.read_text())]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _by_batch(results: list[tuple[Case, float, float]]) -> str:
    labels = list(dict.fromkeys(c.label for c, _, _ in results))
    cells = {(c.label, c.batch): (s, m) for c, s, m in results}
    rows = []
    for batch in sorted({c.batch for c, _, _ in results}):
        row = [str(batch), str(2 * batch)]
        for label in labels:
            seconds, mib = cells[(label, batch)]
            row += [f"{seconds * 1e3:.1f}", f"{mib:.1f}"]
        ring, gathered = cells[(labels[1], batch)], cells[(labels[2], batch)]
        row += [f"{ring[0] / gathered[0]:.2f}", f"{ring[1] / max(gathered[1], 0.1):.2f}"]
        rows.append(row)
    header = ["b", "B"] + [f"{label} {unit}" for label in labels for unit in ("ms", "MiB")]
    return _table(header + ["ring/all_gather time", "ring/all_gather memory"], rows)


def _by_world(results: dict[int, list[tuple[Case, float, float]]]) -> str:
    rows = []
    for world, measured in results.items():
        (ring_case, _, ring_mib), (_, _, gathered_mib) = measured
        rows.append([str(world), str(ring_case.batch), str(world * ring_case.batch), f"{ring_mib:.1f}",
                     f"{gathered_mib:.1f}", f"{gathered_mib / max(ring_mib, 0.1):.2f}"])
    return _table(["W", "b", "B", "siglip ring MiB", "siglip all_gather MiB", "all_gather/ring memory"], rows)


def _llip_rows(results: list[tuple[Case, float, float]]) -> str:
    base_seconds, base_mib = results[0][1], results[0][2]
    rows = [[c.label, str(c.mixture_tokens), str(c.kwargs.get("chunk_size")), f"{s * 1e3:.1f}", f"{m:.1f}",
             f"{s / base_seconds:.2f}", f"{m / max(base_mib, 0.1):.2f}"] for c, s, m in results]
    return _table(["loss", "K", "chunk", "ms", "MiB", "time vs first row", "memory vs first row"], rows)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (after one warm-up)")
    args = parser.parse_args()
    batches = [64, 256] if args.quick else [64, 256, 1024, 4096]
    worlds = {2: 256, 4: 256} if args.quick else {2: 1024, 4: 1024, 8: 512}
    llip_batch = 32 if args.quick else 128
    print(f"# benchmarks/loss_step_cost.py on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, gloo, 1 thread per rank; load average at start {_load()}\n")

    dot = [("clip", {}), ("siglip", {"exchange": "ring"}), ("siglip", {"exchange": "all_gather"})]
    results = run([Case(name, b, kw) for b in batches for name, kw in dot], world=2, timed_steps=args.steps)
    print(f"## Dot-product losses at W = 2, width {DOT_WIDTH}: time per step and peak memory per rank\n")
    print(_by_batch(results) + "\n")

    by_world = {w: run([Case("siglip", b, {"exchange": x}) for x in ("ring", "all_gather")],
                       world=w, timed_steps=1) for w, b in worlds.items()}
    print("## SigLIP peak memory per rank versus W (ranks share the cores, so no times)\n")
    print(_by_world(by_world) + "\n")

    dims = dict(image_dim=LLIP_WIDTH, text_dim=LLIP_WIDTH, embed_dim=LLIP_WIDTH)
    llip = [Case("llip", llip_batch, {**dims, "chunk_size": 32}, mixture_tokens=k) for k in (1, 8, 32)]
    llip += [Case("llip", llip_batch, {**dims, "chunk_size": c}, mixture_tokens=8) for c in (8, 128, None)]
    llip += [Case("llip", llip_batch, {**dims, "chunk_size": 32, "exchange": "all_gather"}, mixture_tokens=8),
             Case("llip", llip_batch, {**dims, "chunk_size": 32, "objective": "softmax"}, mixture_tokens=8)]
    print(f"## Llip at W = 2, b = {llip_batch}, width {LLIP_WIDTH}, 8 heads, versus K and chunk size\n")
    print(_llip_rows(run(llip, world=2, timed_steps=args.steps)))
    print(f"\nload average at the end {_load()} (other processes on the machine slow every time above)")


if __name__ == "__main__":
    main()
