"""A locked image tower (LiT, `model.image.frozen=true`) against both towers trained: the same model, batch and
synthetic in-memory batches, one training step (forward, loss, backward, AdamW) timed per variant.

    python benchmarks/frozen_tower.py [--configs demo clip_b32] [--steps 5]

The frozen tower runs under no_grad, so its activations are not kept and it has no backward, no gradients and no
optimizer state. Each variant runs in a fresh process, so that its peak memory is its own: the peak resident set
(the whole process: Python, torch and the model included; on CPU). The optimizer state is counted exactly: gradients
and AdamW's two moments are three fp32 copies of the trained parameters.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

from contrastive.config import load_config
from training_throughput import step_benchmark

VARIANTS = {"both trained": [], "image frozen": ["model.image.frozen=true"]}
BATCH = {"demo": 128, "clip_b32": 16}


def measure(name: str, overrides: list[str], batch: int, steps: int) -> dict[str, float]:
    """One variant in this process: seconds per step (median), peak memory in MiB, trained parameters."""
    step = step_benchmark(load_config(name, overrides), "fp32", batch, steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    return {"s_per_step": step["s_per_step"], "peak_mib": peak, "trained_params": step["trained_params"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(BATCH))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one measurement in a child process: CONFIG/VARIANT
    args = parser.parse_args()
    if args.variant:
        name, variant = args.variant.split("/", 1)
        print(json.dumps(measure(name, VARIANTS[variant], BATCH[name], args.steps)))
        return
    print(f"{'config':<10}{'variant':<14}{'batch':>6}{'s/step':>8}{'samples/s':>11}{'speed-up':>10}"
          f"{'trained params':>16}{'optimizer state':>17}{'peak memory':>13}{'saved':>9}")
    for name in args.configs:
        rows = {}
        for variant in VARIANTS:
            child = subprocess.run([sys.executable, Path(__file__), "--variant", f"{name}/{variant}",
                                    "--steps", str(args.steps)], check=True, capture_output=True, text=True)
            rows[variant] = json.loads(child.stdout.strip().splitlines()[-1])
        both = rows["both trained"]
        for variant, row in rows.items():
            state_mib = 3 * 4 * row["trained_params"] / 2**20
            print(f"{name:<10}{variant:<14}{BATCH[name]:>6}{row['s_per_step']:>8.3f}"
                  f"{BATCH[name] / row['s_per_step']:>11.1f}{both['s_per_step'] / row['s_per_step']:>9.2f}x"
                  f"{row['trained_params'] / 1e6:>15.2f}M{state_mib:>13.1f} MiB{row['peak_mib']:>9.0f} MiB"
                  f"{both['peak_mib'] - row['peak_mib']:>5.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
