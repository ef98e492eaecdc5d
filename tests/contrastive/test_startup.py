"""The command line answers at once: parsing (every --help, usage errors, a command's arguments) imports none of
the heavy modules, and a config error none of the model's or the evaluators'. Judged in a fresh process by
sys.modules, not by time (benchmarks/startup.py has the figures)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "timm", "submitit", "tensorboard", "matplotlib", "losses", "eval.tasks",
         "data.synth", "data.tokenizer", "contrastive.model", "contrastive.train")
MODEL = ("timm", "torchvision", "eval.tasks", "contrastive.model", "contrastive.train")  # torch is fine: losses
PARSED = [
    ["--help"], ["train", "--help"], ["eval", "--help"], ["submit", "--help"], ["submit", "train", "--help"],
    ["submit", "eval", "--help"], ["report", "--help"], ["data", "--help"], ["data", "synth", "--help"],
    ["data", "convert", "--help"], ["data", "tokenizer", "--help"], ["data", "inspect", "--help"],
    [], ["nonsense"], ["train", "--bogus"], ["data", "synth", "x", "--seed", "one"],
    ["train", "-c", "demo", "optim.lr=1e-3", "--check"], ["eval", "runs/demo", "--all", "eval.zeroshot.x=/d"],
    ["submit", "train", "--sweep", "loss.name=clip,siglip", "--local"], ["submit", "eval", "runs/demo", "--all"],
    ["report", "runs/a", "--format", "csv"], ["data", "synth", "out"], ["data", "tokenizer", "a.tar", "tok.json"],
]


def modules_loaded(code: str, watched: tuple[str, ...]) -> list[str]:
    """Which of `watched` are in sys.modules after `code` runs in a fresh interpreter."""
    report = f"import json, sys\nprint(json.dumps([m for m in {watched!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_parsing_every_command_imports_no_heavy_module():
    code = f"""
import contextlib, io
from contrastive.cli import build_parser
parser = build_parser()
for argv in {PARSED!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit:
            pass
"""
    assert modules_loaded(code, HEAVY) == []


def test_a_config_error_imports_no_model_or_evaluator_module():
    code = """
from contrastive.cli import main
for argv in (["train", "--check", "optim.lrr=1"], ["train", "-c", "demo", "loss.name=nope"],
             ["submit", "train", "--check", "--local", "optim.lrr=1"]):
    assert main(argv) == 2, argv
"""
    assert modules_loaded(code, MODEL) == []


def test_scoring_an_evaluation_imports_none_of_the_metric_libraries():
    """torchmetrics would cost each evaluating process about 4 s (it loads scipy.signal, matplotlib and transformers
    when installed); the metrics are plain tensor code."""
    code = """
import torch
import eval.tasks  # every task type, as an evaluation registers them
from eval.metrics import classification_metrics
scores = torch.randn(6, 12)
classification_metrics(scores.argmax(1), torch.zeros(6, dtype=torch.long), torch.arange(6), num_classes=12)
"""
    assert modules_loaded(code, ("torchmetrics", "scipy", "sklearn", "transformers")) == []
