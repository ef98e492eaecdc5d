"""Training metrics: accumulated on the device every step, read (one host sync) only every `log_every` steps,
written to tensorboard (RUN_DIR/tb) and as one console line on rank 0."""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import torch


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
        self._steps = 0
        self._data_wait = 0.0
        self._t0 = time.perf_counter()
        self.bad_steps_total = 0

    def update(self, metrics: dict[str, torch.Tensor], data_wait_s: float) -> None:
        for name, value in metrics.items():
            value = value.detach().float()
            self._sums[name] = self._sums[name] + value if name in self._sums else value.clone()
        self._steps += 1
        self._data_wait += data_wait_s

    def log(self, step: int, lr: float, skipped: dict[str, int]) -> dict[str, float]:
        elapsed = time.perf_counter() - self._t0
        values = {f"train/{k}": (v / self._steps).item() for k, v in self._sums.items()}
        values.update({
            "train/lr": lr,
            "train/samples_per_s": self._steps * self.global_batch / elapsed,
            "train/data_wait_fraction": self._data_wait / elapsed,
            "train/bad_steps_total": float(self.bad_steps_total),
        })
        values.update({f"data/skipped_{reason}": float(n) for reason, n in skipped.items()})
        if self.enabled:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)
            self.writer.flush()
            eta = (self.total_steps - step) * elapsed / max(1, self._steps)
            print(f"step {step}/{self.total_steps}  loss {values.get('train/loss', float('nan')):.4f}  "
                  f"lr {lr:.2e}  {values['train/samples_per_s']:.1f} samples/s  "
                  f"data wait {100 * values['train/data_wait_fraction']:.0f}%  ETA {_duration(eta)}", flush=True)
        self._sums, self._steps, self._data_wait, self._t0 = {}, 0, 0.0, time.perf_counter()
        return values

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.enabled:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def merge_counts(per_rank: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for counts in per_rank:
        for reason, n in counts.items():
            total[reason] += n
    return dict(total)
