"""The compiled training step (`train.compile=step`) against the eager one, on CPU.

    python benchmarks/compiled_step.py [--configs demo clip_b32] [--steps 5] [--backend inductor]
    python benchmarks/compiled_step.py --quick --backend aot_eager     # a smoke run: 1-layer demo towers

The step is the loop's own, contrastive.step.train_step (forward, loss, backward, clipping, fused AdamW), on a
synthetic in-memory batch, in the config's train.precision; the compiled variant hands it
contrastive.step.compiled_forward(backend), the function `train.compile=step` compiles (both towers and the loss).
Each variant runs in a fresh process with an empty inductor cache of its own, so that the compile is a cold one and
neither variant inherits the other's caches, threads or memory. Figures: seconds per step (the median of --steps
after two warm-up steps), the speed-up (eager s/step over compiled s/step), and the compile time: the compiled
variant's first step minus its median step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BATCH = {"demo": 128, "clip_b32": 16}
QUICK = {"config": "demo", "label": "demo, 1-layer towers", "batch": 16,
         "overrides": ["model.image.kwargs.depth=1", "model.text.depth=1"]}
VOCAB = 1000
WARMUP_STEPS = 2


def measure(case: dict[str, Any]) -> dict[str, float]:
    """One variant in this process: every step's seconds, first step included."""
    import torch

    from contrastive.config import load_config
    from contrastive.model import build_model
    from contrastive.optim import build_optimizer
    from contrastive.step import autocast_for, compiled_forward, forward_and_loss, train_step
    from training_throughput import synthetic_batch

    cfg = load_config(case["config"], case["overrides"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss, vocab_size=VOCAB, pad_id=0)
    optimizer = build_optimizer(model, cfg.optim)
    images, tokens = synthetic_batch(cfg, case["batch"], VOCAB)
    autocast = autocast_for(cfg.train.precision, torch.device("cpu"))
    forward = compiled_forward(case["backend"]) if case["compiled"] else forward_and_loss
    seconds = []
    for _ in range(WARMUP_STEPS + case["steps"]):
        start = time.perf_counter()
        train_step(model, model, optimizer, images, tokens, cfg.optim.lr, autocast, clip_grad=cfg.optim.clip_grad,
                   forward=forward)
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "precision": cfg.train.precision}


def run_variant(case: dict[str, Any]) -> dict[str, float]:
    """`case` measured in a child process with its own, empty, inductor cache."""
    with tempfile.TemporaryDirectory() as cache:
        child = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(case)],
                               capture_output=True, text=True, env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
    if child.returncode != 0:
        raise SystemExit(f"{case['label']} ({'compiled' if case['compiled'] else 'eager'}) failed with exit code "
                         f"{child.returncode}:\n{child.stderr[-3000:]}")
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    median = statistics.median(measured["seconds"][WARMUP_STEPS:])
    return {"s_per_step": median, "first_extra_s": measured["seconds"][0] - median,
            "precision": measured["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=list(BATCH), default=list(BATCH))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant, after the warm-up")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: a smoke run)")
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK['label']}, batch {QUICK['batch']}")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one variant, as JSON, measured in this process
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    cases = [QUICK] if args.quick else [{"config": name, "label": name, "batch": BATCH[name], "overrides": []}
                                        for name in args.configs]
    print(f"{'config':<24}{'prec':<6}{'batch':>6}{'eager s/step':>14}{'compiled s/step':>17}{'speed-up':>10}"
          f"{'compile s':>11}  backend", flush=True)
    for case in cases:
        eager, compiled = (run_variant({**case, "compiled": variant, "backend": args.backend, "steps": args.steps})
                           for variant in (False, True))
        print(f"{case['label']:<24}{eager['precision']:<6}{case['batch']:>6}{eager['s_per_step']:>14.3f}"
              f"{compiled['s_per_step']:>17.3f}{eager['s_per_step'] / compiled['s_per_step']:>9.2f}x"
              f"{compiled['first_extra_s']:>11.1f}  {args.backend}", flush=True)


if __name__ == "__main__":
    main()
