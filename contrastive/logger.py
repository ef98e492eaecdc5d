"""What training prints and logs on rank 0: the start banner, and the metrics, accumulated on the device every
step and read (one host sync) only every `log_every` steps, written to tensorboard (RUN_DIR/tb) and as one console
line; the first and tenth step of every start get a console line too, without a tensorboard point."""
from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path

import torch

from contrastive.config import Config
from contrastive.distributed import DistEnv
from contrastive.model import ContrastiveModel
from data.plural import count

EARLY_LINES = (1, 10)  # steps after each start that print a console line whatever train.log_every is


class TrainLogger:
    def __init__(self, run_dir: Path, enabled: bool, total_steps: int, global_batch: int):
        self.enabled = enabled
        self.total_steps = total_steps
        self.global_batch = global_batch
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
        self._sums: dict[str, torch.Tensor] = {}
        self._updates: torch.Tensor | float = 0.0  # steps not skipped, on the device
        self._steps = 0
        self._data_wait = 0.0
        self._t0 = time.perf_counter()
        self.bad_steps_total = 0

    def update(self, metrics: dict[str, torch.Tensor], data_wait_s: float, skipped: torch.Tensor) -> None:
        """One step's metrics, left out of the means if its update was `skipped` (1.0), without reading it."""
        for name, value in metrics.items():
            value = torch.where(skipped > 0, 0.0, value.detach().float())
            self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._updates = self._updates + (1 - skipped)
        self._steps += 1
        self._data_wait += data_wait_s

    def log(self, step: int, lr: float, skipped: dict[str, int]) -> dict[str, float]:
        values = self._values(lr)
        values.update({f"data/skipped_{reason}": float(n) for reason, n in skipped.items()})
        if self.enabled:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)
            self.writer.flush()
            self._print(step, values)
        self._sums, self._updates, self._steps, self._data_wait, self._t0 = {}, 0.0, 0, 0.0, time.perf_counter()
        return values

    def show(self, step: int, lr: float) -> None:
        """The console line of a step between log points: the means since the last one, which go on accumulating
        for the next. No tensorboard point: the curves keep the points of train.log_every."""
        if self.enabled:
            self._print(step, self._values(lr))

    def _values(self, lr: float) -> dict[str, float]:
        elapsed = time.perf_counter() - self._t0
        values = {f"train/{k}": (v / self._updates).item() for k, v in self._sums.items()}
        values.update({
            "train/lr": lr,
            "train/samples_per_s": self._steps * self.global_batch / elapsed,
            "train/data_wait_fraction": self._data_wait / elapsed,
            "train/bad_steps_total": float(self.bad_steps_total),
        })
        return values

    def _print(self, step: int, values: dict[str, float]) -> None:
        rate = values["train/samples_per_s"]
        eta = (self.total_steps - step) * self.global_batch / rate if rate > 0 else float("nan")
        print(f"step {step}/{self.total_steps}  loss {values.get('train/loss', float('nan')):.4f}  "
              f"lr {values['train/lr']:.2e}  {rate:.1f} samples/s  "
              f"data wait {100 * values['train/data_wait_fraction']:.0f}%  ETA {_duration(eta)}", flush=True)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.enabled:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def start_banner(cfg: Config, env: DistEnv, model: ContrastiveModel, shards: int, start_step: int) -> str:
    """What the run is about to do, printed before its first step."""
    t = cfg.train
    towers = {"image tower": model.image_tower, "text tower": model.text_tower, "loss": model.loss}
    sizes = {name: sum(p.numel() for p in module.parameters()) for name, module in towers.items()}
    parameters = ", ".join(f"{name} {_millions(n)}" for name, n in sizes.items())
    start = f"resuming at step {start_step}" if start_step else "from the start"
    local = t.batch_size // env.world_size
    micro = f" in {t.accum_steps} micro-batches" if t.accum_steps > 1 else ""
    rows = [
        ("parameters", f"{parameters} ({_millions(sum(sizes.values()))} in all)"),
        ("steps", f"{t.steps}, {start}; log every {t.log_every} (and steps {', '.join(map(str, EARLY_LINES))} "
                  f"after each start), checkpoint every {t.checkpoint_every}"),
        ("batch", f"{t.batch_size} global, {local} per rank{micro}"),
        ("data", f"{count(shards, 'shard')}, " + (f"{count(cfg.data.workers, 'loader worker')} per rank"
                                                  if cfg.data.workers else "loaded in the training process")),
        ("processes", f"world size {env.world_size} ({t.strategy}), device {env.device}, precision {t.precision}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"training {cfg.run_dir}", *(f"  {name:<{width}}  {value}" for name, value in rows)])


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10_000 else str(n)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def merge_counts(per_rank: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for counts in per_rank:
        for reason, n in counts.items():
            total[reason] += n
    return dict(total)
