"""Evaluation tasks: zero-shot classification, image-text retrieval, and any type registered with
`@register_task` (see docs/eval.md).

    from eval import evaluate
    metrics = evaluate(model, tokenizer, image_size=224, zeroshot={"imagenet": "imagenet/val"},
                       retrieval={"coco": "coco"})   # {"zeroshot/imagenet/top1": 0.71, ...}

Depends only on the model protocol in eval/runtime.py and on `data` (image decoding, shards), never on the rest of
the repository.
"""
from __future__ import annotations

from typing import Any

from eval.errors import EvalError

__all__ = ["EvalError", "Pixels", "Task", "evaluate", "get_task", "open_tasks", "register_task", "task_types"]


def __getattr__(name: str) -> Any:
    # The registry imports every task module: on first use, not with the package, so that the light modules
    # (eval.results, eval.errors) load alone for commands that must start at once.
    if name in __all__:
        from eval import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
