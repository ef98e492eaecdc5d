"""Zero-shot classification and image-text retrieval evaluators (see docs/eval.md).

    from eval import evaluate
    metrics = evaluate(model, tokenizer, image_size=224, zeroshot={"imagenet": "imagenet/val"},
                       retrieval={"coco": "coco"})   # {"zeroshot/imagenet/top1": 0.71, ...}

Depends only on the model protocol in eval/protocol.py, never on the rest of the repository.
"""
from __future__ import annotations

from typing import Any

from eval.errors import EvalError

__all__ = ["EvalError", "evaluate", "open_datasets"]


def __getattr__(name: str) -> Any:
    # `evaluate` and `open_datasets` import torchvision and torchmetrics on first use, not with the package: the
    # light modules (eval.results, eval.errors) are read by commands that must start at once.
    if name in ("evaluate", "open_datasets"):
        from eval import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
