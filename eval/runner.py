"""One call that runs every configured evaluator and names the results (see docs/eval.md for the names)."""
from __future__ import annotations

import os
from typing import Mapping, Optional

import torch

from eval.classification_data import ClassificationSet, open_classification_set
from eval.errors import EvalError
from eval.protocol import EvaluableModel, Tokenizer
from eval.retrieval import evaluate_retrieval
from eval.retrieval_data import RetrievalSet, open_retrieval_set
from eval.runtime import Runtime
from eval.similarity import DEFAULT_BLOCK
from eval.zeroshot import evaluate_zeroshot

Datasets = Optional[Mapping[str, str | os.PathLike]]


def open_datasets(zeroshot: Datasets = None, retrieval: Datasets = None, *, image_size: int,
                  templates: str = "openai", split: str = "test") -> tuple[dict[str, ClassificationSet], dict[str, RetrievalSet]]:
    """Every dataset opened and its layout checked at listing cost (no image is decoded): what `evaluate` runs
    on, and a pre-flight's check that evaluation will not fail on a path after hours of training."""
    zeroshot, retrieval = dict(zeroshot or {}), dict(retrieval or {})
    for name in [*zeroshot, *retrieval]:
        if not name or "/" in name:
            raise EvalError(f"dataset name {name!r} must be non-empty and without '/' (it becomes part of a metric name)")
    return ({name: open_classification_set(path, image_size, templates, split) for name, path in zeroshot.items()},
            {name: open_retrieval_set(path, image_size, split) for name, path in retrieval.items()})


def evaluate(model: EvaluableModel, tokenizer: Tokenizer, *, image_size: int, zeroshot: Datasets = None,
             retrieval: Datasets = None, batch_size: int = 256, workers: int = 2,
             device: torch.device | str = "cpu", autocast_dtype: Optional[torch.dtype] = None,
             progress: bool = True, templates: str = "openai", split: str = "test",
             block: tuple[int, int] = DEFAULT_BLOCK) -> dict[str, float]:
    """Zero-shot classification on each `zeroshot` {name: path} and retrieval on each `retrieval` {name: path}.

    Returns {"zeroshot/NAME/top1": ..., "retrieval/NAME/t2i_R@1": ..., ...}, fractions in [0, 1].
    Every dataset is opened (and its layout checked) before any model work starts. `templates` is the
    shipped prompt set ("openai": 80, "simple": 7) for zero-shot sets that bring none; `split` picks the
    Karpathy split and the shard folder; `block` is (images, texts) per `model.logits` call. The model is
    put in eval mode and given back in the mode it came in.
    """
    classification_sets, retrieval_sets = open_datasets(zeroshot, retrieval, image_size=image_size,
                                                         templates=templates, split=split)
    runtime = Runtime(torch.device(device), batch_size, workers, autocast_dtype, progress)
    metrics: dict[str, float] = {}
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        for name, data in classification_sets.items():
            results = evaluate_zeroshot(model, tokenizer, data, runtime, block, desc=f"zeroshot/{name}")
            metrics.update({f"zeroshot/{name}/{key}": value for key, value in results.items()})
        for name, data in retrieval_sets.items():
            results = evaluate_retrieval(model, tokenizer, data, runtime, block, desc=f"retrieval/{name}")
            metrics.update({f"retrieval/{name}/{key}": value for key, value in results.items()})
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)
    return metrics
