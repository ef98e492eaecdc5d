"""Training throughput: samples/s and achieved GFLOP/s of the training step, against the machine's matmul peak.

    python benchmarks/training_throughput.py [--configs demo clip_b32] [--steps 5]

For each config and precision (fp32, bf16), in one run:
- the step on synthetic in-memory batches (model + loss + AdamW, no data): seconds per step, samples/s, and
  GFLOP/s from a FLOP count of one forward + backward (torch.utils.flop_counter);
- the real loop, `contrastive.train.train`, on demo shards (`contrastive data synth`, small) with 2 loader
  workers: samples/s and the data-wait fraction it logs;
- the machine's measured dense matmul peak for that dtype, so the gap to the limit is visible (MFU).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from contrastive.config import Config, load_config
from contrastive.model import build_model
from contrastive.optim import build_optimizer
from contrastive.step import autocast_for, forward_backward

BATCH = {"demo": 128, "clip_b32": 16}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def synthetic_batch(cfg: Config, batch: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    size, length = cfg.model.image.image_size, cfg.model.text.context_length
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    tokens = torch.randint(1, vocab, (batch, length))
    tokens[:, length // 2:] = 0
    return images, tokens


def step_benchmark(cfg: Config, precision: str, batch: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    vocab = 1000
    model = build_model(cfg.model, cfg.loss, vocab_size=vocab, pad_id=0)
    optimizer = build_optimizer(model, cfg.optim)
    images, tokens = synthetic_batch(cfg, batch, vocab)
    autocast = autocast_for(precision, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter:
        forward_backward(model, model, images, tokens, autocast)
    optimizer.zero_grad(set_to_none=True)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        forward_backward(model, model, images, tokens, autocast)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    seconds = sorted(times[1:])[len(times[1:]) // 2]  # median after one warm-up step
    flops = counter.get_total_flops()
    return {"s_per_step": seconds, "samples_per_s": batch / seconds, "gflops": flops / seconds / 1e9,
            "gflop_per_step": flops / 1e9,
            "trained_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def last_scalar(run_dir: Path, tag: str) -> float:
    """The last value a run logged to tensorboard under `tag`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return events.Scalars(tag)[-1].value


def run_loop(name: str, precision: str, batch: int, steps: int, data_dir: Path, root: Path) -> dict[str, float]:
    """The real training loop on demo shards; samples/s and data-wait fraction as it logs them."""
    from contrastive.train import train

    run_dir = root / f"{name}-{precision}"
    cfg = load_config(name, [
        f"run_dir={run_dir}", f"data.shards={data_dir}/train/shard-{{000000..000003}}.tar",
        f"data.tokenizer={data_dir}/tokenizer.json", "data.workers=2", f"train.precision={precision}",
        f"train.batch_size={batch}", f"train.steps={steps}", f"train.log_every={steps}",
        f"train.checkpoint_every={steps}", "eval.zeroshot={}", "eval.retrieval={}", "optim.warmup_steps=1",
    ])
    train(cfg)
    return {"samples_per_s": last_scalar(run_dir, "train/samples_per_s"),
            "data_wait": last_scalar(run_dir, "train/data_wait_fraction")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(BATCH))
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    peaks = {p: matmul_peak_gflops(dtype) for p, dtype in DTYPES.items()}
    print(f"matmul peak (2048^2, {torch.get_num_threads()} threads): "
          + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in peaks.items()))
    header = (f"{'config':<10}{'prec':<6}{'batch':>6}{'GFLOP/step':>11}{'s/step':>8}{'samples/s':>11}"
              f"{'GFLOP/s':>9}{'MFU':>6}{'loop samples/s':>16}{'data wait':>11}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from data.synth import synthesize

        data_dir = Path(tmp) / "data"
        synthesize(data_dir, seed=0, train_samples=2048, samples_per_shard=512, images_per_class=1,
                   retrieval_images=5)
        for name in args.configs:
            cfg = load_config(name, [])
            for precision in DTYPES:
                step = step_benchmark(cfg, precision, BATCH[name], args.steps)
                loop = run_loop(name, precision, BATCH[name], args.steps + 2, data_dir, Path(tmp))
                rows.append(f"{name:<10}{precision:<6}{BATCH[name]:>6}{step['gflop_per_step']:>11.1f}"
                            f"{step['s_per_step']:>8.3f}{step['samples_per_s']:>11.1f}{step['gflops']:>9.1f}"
                            f"{step['gflops'] / peaks[precision]:>6.0%}{loop['samples_per_s']:>16.1f}"
                            f"{loop['data_wait']:>11.0%}")
                print(rows[-1] if len(rows) > 1 else f"{header}\n{rows[-1]}", flush=True)


if __name__ == "__main__":
    main()
