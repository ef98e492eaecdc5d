"""How long the command line takes to answer: `contrastive --help` and a config error, each a fresh process,
beside `import torch` alone (what every command that trains or evaluates pays, and what these must not).

    python benchmarks/startup.py            # median of 5 runs each
    python benchmarks/startup.py --runs 9

Prints one table row per command.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# name: (arguments to python, the exit code that shows the command did what is timed)
COMMANDS = {
    "contrastive --help": (["-m", "contrastive", "--help"], 0),
    "contrastive train --check optim.lrr=1 (config error)":
        (["-m", "contrastive", "train", "--check", "optim.lrr=1"], 2),
    "python -c 'import torch' (for scale)": (["-c", "import torch"], 0),
}


def seconds(argv: list[str], exit_code: int, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != exit_code:
            raise SystemExit(f"python {' '.join(argv)} exited with {done.returncode}, not {exit_code}:\n{done.stderr}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"| command | median of {args.runs} | fastest | slowest |")
    print("| --- | --- | --- | --- |")
    for name, (argv, exit_code) in COMMANDS.items():
        times = seconds(argv, exit_code, args.runs)
        print(f"| {name} | {statistics.median(times):.2f} s | {min(times):.2f} s | {max(times):.2f} s |")


if __name__ == "__main__":
    main()
