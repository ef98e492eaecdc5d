"""`contrastive data score` on this machine: `python benchmarks/score_throughput.py [--quick]`.

A randomly initialised model of the demo config (the demo's widths at 64 px; scores of random weights cost what
trained ones cost) saved as a run dir scores generated demo shards (`contrastive data synth`, several caption lines
per sample) with 2 loader workers, end to end: read, decode, tokenize, both towers, Parquet files. The pool is
scored at 1x and at 10x its size (the same shards copied under other names), each in a fresh process, so that each
peak resident set is its own: the main process's, and the largest loader worker's. Also measured, in a third
process: the model's forward alone on one decoded batch held in memory, the rate scoring would reach if decoding
and I/O cost nothing. Data wait is the fraction of the run the main process spent waiting for the loader.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from contrastive.checkpoint import Checkpointer
from contrastive.config import load_config, to_yaml
from contrastive.model import build_model
from contrastive.text_tower import text_tokenizer
from data.synth import synthesize

BATCH, WORKERS = 256, 2


def make_run(data: Path, run_dir: Path) -> None:
    """The demo config's model, randomly initialised, as a run dir (config.yaml, tokenizer.json, a checkpoint)."""
    cfg = load_config("demo", [f"run_dir={run_dir}", f"data.tokenizer={data / 'tokenizer.json'}"])
    tokenizer_json = (data / "tokenizer.json").read_text(encoding="utf-8")
    tokenizer = text_tokenizer(tokenizer_json, cfg.model.text, "tokenizer.json")
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    (run_dir / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    Checkpointer(run_dir).save(0, {"model": model.state_dict(), "step": 0})


def make_pool(shards: list[Path], copies: int, pool: Path) -> None:
    pool.mkdir(parents=True)
    for copy in range(copies):
        for shard in shards:
            os.link(shard, pool / f"copy{copy:02d}-{shard.name}")


def measure_scoring(pool: Path, run_dir: Path, out: Path) -> dict[str, float]:
    from contrastive.scoring import ScoreJob, score_shards, shard_list

    report = score_shards(ScoreJob(shard_list([str(pool)]), str(run_dir), str(out), batch_size=BATCH,
                                   workers=WORKERS), progress=False)
    return {"samples": report.samples, "samples_per_s": report.scored / report.seconds,
            "data_wait": report.data_wait_seconds / report.seconds,
            "main_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10,
            "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**10}


def measure_forward(pool: Path, run_dir: Path, rounds: int = 5) -> dict[str, float]:
    """Both towers and the pair similarities on one decoded batch, `rounds` times: scoring's rate without data."""
    from contrastive import scoring
    from contrastive.evaluate import load_model, run_of
    from contrastive.step import autocast_dtype
    from data.shard_batches import Pixels, ShardBatch, ShardBatches

    run_dir, checkpoint = scoring.model_checkpoint(str(run_dir))
    run = run_of(run_dir, checkpoint, [])
    model, _ = load_model(run, checkpoint, torch.device("cpu"))
    model.eval()
    image = run.cfg.model.image
    dataset = ShardBatches(scoring.shard_list([str(pool)]), Pixels(image.image_size, image.resize), run.tokenizer,
                           BATCH)
    batch = next(item for item in dataset.shard_items(0) if isinstance(item, ShardBatch))
    encode = scoring._Encoder(model, torch.device("cpu"), autocast_dtype(run.cfg.train.precision), BATCH, False)
    encode(batch)
    start = time.perf_counter()
    for _ in range(rounds):
        encode(batch)
    return {"samples_per_s": rounds * len(batch.keys) / (time.perf_counter() - start),
            "captions_per_sample": sum(batch.captions) / len(batch.keys)}


def child(*args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a pool of 200 samples instead of 1000: a smoke run")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # one measurement in a fresh process
    args = parser.parse_args()
    if args.child:
        kind, *paths = args.child
        result = measure_scoring(*map(Path, paths)) if kind == "score" else measure_forward(*map(Path, paths))
        print(json.dumps(result))
        return
    shards, per_shard = (2, 100) if args.quick else (4, 250)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize(root / "data", train_samples=shards * per_shard, samples_per_shard=per_shard, images_per_class=1,
                   retrieval_images=1, progress=False)
        make_run(root / "data", root / "run")
        originals = sorted((root / "data" / "train").glob("*.tar"))
        rows = {}
        for copies in (1, 10):
            make_pool(originals, copies, root / f"pool{copies}")
            rows[copies] = child("score", str(root / f"pool{copies}"), str(root / "run"), str(root / f"out{copies}"))
            shutil.rmtree(root / f"out{copies}")
        forward = child("forward", str(root / "pool1"), str(root / "run"))
    print(f"score benchmark (demo model, random weights, 64 px, {forward['captions_per_sample']:.1f} captions per "
          f"sample, batch {BATCH}, {WORKERS} workers; torch threads {torch.get_num_threads()}, load average at "
          f"start {load:.1f})")
    print(f"{'pool':<8}{'samples':>9}{'samples/s':>11}{'data wait':>11}{'main peak':>11}{'worker peak':>13}")
    for copies, row in rows.items():
        print(f"{f'{copies}x':<8}{row['samples']:>9}{row['samples_per_s']:>11.1f}{100 * row['data_wait']:>10.1f}%"
              f"{row['main_peak_mib']:>7.0f} MiB{row['worker_peak_mib']:>9.0f} MiB")
    print(f"model forward alone (one batch in memory): {forward['samples_per_s']:.1f} samples/s; scoring at 10x "
          f"reaches {rows[10]['samples_per_s'] / forward['samples_per_s']:.2f}x of it; peak memory 10x / 1x: main "
          f"{rows[10]['main_peak_mib'] / rows[1]['main_peak_mib']:.2f}x, "
          f"workers {rows[10]['worker_peak_mib'] / rows[1]['worker_peak_mib']:.2f}x")


if __name__ == "__main__":
    main()
