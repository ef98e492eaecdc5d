"""How long a checkpoint blocks the training loop, written synchronously or asynchronously
(`train.checkpoint_async=true`: from a copy in CPU memory, by a background thread), for both formats: a single file
(DDP runs) and a sharded checkpoint (FSDP runs, torch.distributed.checkpoint; here in one process), on CPU.

    python benchmarks/checkpoint_stall.py [--configs demo clip_b16] [--checkpoints 4] [--spacing 3]

Each checkpoint is written by the training loop's own `save` (contrastive/train.py). Between two checkpoints the loop
runs AdamW steps on fixed gradients: they change every weight and moment in place, as training does, and keep the CPU
busy while a background write runs, without the forward and backward pass that would take a ViT-B/16 on CPU tens of
seconds. There are as many as take `--spacing` times as long as the first synchronous write (so that a background
write can end before the next checkpoint, as it does between checkpoints hundreds of steps apart), the same number in
both variants of a row.
Figures, medians over `--checkpoints` checkpoints after one warm-up checkpoint:

    stall     the wall time of `save`, the loop blocked: synchronously the whole write; asynchronously the copy, the
              gathering of the stream and RNG states, and the wait for the previous write if it has not ended
              (`waiting`: that part alone, which a slower background write, competing with the steps, costs)
    interval  the steps between two checkpoints plus the save: what checkpointing costs the loop overall, the
              background write's competition for the CPU included; `none` is the same steps without checkpoints

A run's final checkpoint is always written before training returns, so it stalls as a synchronous one; it is not
among these.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from contrastive.checkpoint import Checkpointer
from contrastive.config import load_config
from contrastive.distributed import DistEnv
from contrastive.model import build_model
from contrastive.optim import build_optimizer
from contrastive.train import save

FORMATS = {"single file": "ddp", "sharded": "fsdp"}


class _StreamState:
    """What `save` asks of the data loader: its stream position."""

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": 0, "samples": 0}


def measure(name: str, strategy: str, in_background: bool, checkpoints: int, steps_between: int | None,
            spacing: float, root: Path) -> dict[str, float]:
    """One variant; `steps_between` None: as many steps as take `spacing` times the warm-up checkpoint's write."""
    run_dir = root / f"{name}-{strategy}-{'async' if in_background else 'sync'}"
    cfg = load_config(name, [f"run_dir={run_dir}", f"train.strategy={strategy}", "train.keep_checkpoints=1",
                             f"train.checkpoint_async={in_background}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss, vocab_size=1000, pad_id=0)
    optimizer = build_optimizer(model, cfg.optim)
    for param in model.parameters():
        param.grad = torch.randn_like(param) * 1e-3
    optimizer.step()  # the moments exist, as in a checkpoint of a running job
    run_dir.mkdir(parents=True)
    (run_dir / "tokenizer.json").write_text("{}")  # save carries the run's tokenizer file
    checkpointer = Checkpointer(run_dir, keep=1, sharded=strategy == "fsdp")
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))

    def steps(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            optimizer.step()
        return time.perf_counter() - started

    def checkpoint(step: int) -> tuple[float, float]:
        """(the stall, the part of it spent waiting for the previous write)."""
        started = time.perf_counter()
        assert checkpointer.wait() is None  # what save does first, timed apart
        waited = time.perf_counter() - started
        assert save(checkpointer, step, model, optimizer, _StreamState(), env, cfg, final=False)
        return time.perf_counter() - started, waited

    warm_up, _ = checkpoint(1)
    if steps_between is None:  # counted, not computed from a step's time: on a shared machine that varies 100-fold
        steps_between, started = 0, time.perf_counter()
        while steps_between == 0 or time.perf_counter() - started < spacing * warm_up:
            optimizer.step()
            steps_between += 1
        checkpointer.wait()
    stalls, waits, intervals = [], [], []
    for index in range(checkpoints):
        compute = steps(steps_between)
        stall, waited = checkpoint(index + 2)
        stalls.append(stall)
        waits.append(waited)
        intervals.append(compute + stall)
    failure = checkpointer.wait()
    assert failure is None, failure
    plain = statistics.median(steps(steps_between) for _ in range(3))
    latest = checkpointer.latest()
    files = [latest] if latest.is_file() else [p for p in latest.rglob("*") if p.is_file()]
    return {"params": sum(p.numel() for p in model.parameters()), "mib": sum(p.stat().st_size for p in files) / 2**20,
            "steps_between": steps_between, "stall": statistics.median(stalls), "wait": statistics.median(waits),
            "interval": statistics.median(intervals), "plain": plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["demo", "clip_b16"])
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--spacing", type=float, default=3.0, help="steps between checkpoints: as many as take this "
                                                                   "many times a synchronous write")
    args = parser.parse_args()
    print(f"{'config':<10}{'params':>8}{'checkpoint':>12}  {'format':<13}{'stall sync':>11}{'stall async':>13}"
          f"{'(waiting)':>11}{'ratio':>8}{'steps':>7}{'interval: none':>16}{'sync':>8}{'async':>8}")
    with tempfile.TemporaryDirectory() as root:
        for name in args.configs:
            for label, strategy in FORMATS.items():
                sync = measure(name, strategy, False, args.checkpoints, None, args.spacing, Path(root))
                gc.collect()
                background = measure(name, strategy, True, args.checkpoints, sync["steps_between"], args.spacing,
                                     Path(root))
                gc.collect()
                print(f"{name:<10}{sync['params'] / 1e6:>7.1f}M{sync['mib']:>8.0f} MiB  {label:<13}"
                      f"{sync['stall']:>10.3f}s{background['stall']:>12.3f}s{background['wait']:>10.3f}s"
                      f"{sync['stall'] / background['stall']:>7.1f}x{sync['steps_between']:>7}"
                      f"{statistics.median([sync['plain'], background['plain']]):>15.2f}s{sync['interval']:>7.2f}s"
                      f"{background['interval']:>7.2f}s", flush=True)


if __name__ == "__main__":
    main()
