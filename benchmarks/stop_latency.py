"""How long a stop from outside takes: SIGTERM to the whole process group of `contrastive train`, sent just after
a step's log line (so the stop waits for nearly a whole step), to the process's exit with its checkpoint written.
Slurm waits KillWait (30 s by default) between its SIGTERM and a SIGKILL, so this is the figure to hold against it.

    python benchmarks/stop_latency.py -c demo
    python benchmarks/stop_latency.py -c clip_b16 train.batch_size=8 model.image.image_size=224

Runs on the demo data (`make demo-data`) in a temporary run dir; prints one table row per run.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(config: str, overrides: list[str], signal_after_step: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "contrastive", "train", "-c", config, f"run_dir={run_dir}",
                   "train.log_every=1", "train.checkpoint_every=1000000", "train.steps=1000000", "eval.zeroshot={}",
                   "eval.retrieval={}", *overrides]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        step_times, last_line_at, sent_at, stop_line_at = [], None, None, None
        for line in process.stdout:
            if line.startswith("step "):
                now = time.perf_counter()
                if last_line_at is not None:
                    step_times.append(now - last_line_at)
                last_line_at = now
                if line.startswith(f"step {signal_after_step}/"):
                    sent_at = time.perf_counter()
                    os.killpg(process.pid, signal.SIGTERM)
            elif line.startswith(("stop requested", "error", "Traceback")):
                stop_line_at = time.perf_counter() if line.startswith("stop requested") else stop_line_at
                print(line.rstrip(), file=sys.stderr)
        code = process.wait()
        exited_at = time.perf_counter()
        if sent_at is None or stop_line_at is None or code != 0:
            raise SystemExit(f"the run ended with exit code {code} before or without a clean stop")
        checkpoint = next((run_dir / "checkpoints").glob("step_*.pt"))
        return {"step_s": sum(step_times[1:]) / max(1, len(step_times) - 1), "stop_s": exited_at - sent_at,
                "checkpointed_s": stop_line_at - sent_at, "checkpoint_mb": checkpoint.stat().st_size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="demo")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--signal-after-step", type=int, default=3)
    args = parser.parse_args()
    demo = [f"data.shards={REPO}/demo_data/train/shard-{{000000..000007}}.tar",
            f"data.tokenizer={REPO}/demo_data/tokenizer.json", "data.workers=2"]
    result = measure(args.config, [*demo, *args.overrides], args.signal_after_step)
    print("| config | step | checkpoint | signal to checkpoint written | signal to exit |")
    print(f"| {args.config} {' '.join(args.overrides)} | {result['step_s']:.2f} s | {result['checkpoint_mb']:.0f} MiB "
          f"| {result['checkpointed_s']:.2f} s | {result['stop_s']:.2f} s |")


if __name__ == "__main__":
    main()
