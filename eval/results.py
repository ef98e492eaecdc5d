"""Evaluation results on disk: {"step": STEP, "metrics": {"zeroshot/imagenet/top1": 0.71, ...}}, written atomically
(temp file in the same directory, fsync, rename), so a reader sees the old file or the new one, never a part; and
how they are printed: counts (`*/num_*`) as integers, scores with four decimals, the headline numbers first."""
from __future__ import annotations

import fnmatch
import json
import math
import os
from pathlib import Path
from typing import Mapping, Optional

from data.atomic import atomic_write_text
from eval.errors import EvalError

COUNTS = "*/num_*"  # dataset sizes the evaluators report next to the scores
HEADLINE = ("zeroshot/*/top1", "retrieval/*/t2i_R@1", "retrieval/*/i2t_R@1")  # what a run is judged by


def write_json(path: str | os.PathLike, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
    bad = [key for key, value in metrics.items() if not math.isfinite(value)]
    if bad:
        raise EvalError(f"refusing to write non-finite metrics to {path}: {', '.join(bad)}")
    text = json.dumps({"step": step, "metrics": dict(sorted(metrics.items()))}, indent=2) + "\n"
    atomic_write_text(path, text)


def read_json(path: str | os.PathLike) -> tuple[Optional[int], dict[str, float]]:
    """(step, metrics) from a file write_json wrote."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalError(f"cannot read results {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise EvalError(f"{path} is not an evaluation result: expected {{\"step\": ..., \"metrics\": {{...}}}}")
    return data.get("step"), {key: float(value) for key, value in data["metrics"].items()}


def is_count(name: str) -> bool:
    return fnmatch.fnmatchcase(name, COUNTS)


def format_metric(name: str, value: float) -> str:
    return f"{value:.0f}" if is_count(name) else f"{value:.4f}"


def headline(metrics: Mapping[str, float]) -> dict[str, float]:
    """Zero-shot top-1 and retrieval R@1 both ways of every dataset, in name order (as in the JSON)."""
    return {name: value for name, value in sorted(metrics.items())
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in HEADLINE)}


def metric_lines(metrics: Mapping[str, float]) -> list[str]:
    """`  name  value`, one per metric in the given order, names aligned."""
    width = max(map(len, metrics), default=0)
    return [f"  {name:<{width}}  {format_metric(name, value)}" for name, value in metrics.items()]
