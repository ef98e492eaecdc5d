"""Evaluation results on disk: {"step": STEP, "metrics": {"zeroshot/imagenet/top1": 0.71, ...}}, written atomically
(temp file in the same directory, fsync, rename), so a reader sees the old file or the new one, never a part."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping, Optional

from data.atomic import atomic_write_text
from eval.errors import EvalError


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
