"""Evaluation tasks: a registry of task types, and the one call that runs a set of tasks on a model.

A type is one module with one decorated class; its constructor's parameters are its arguments (`path` and what
else it takes: the config checks them when it loads, as it checks a loss's), `metrics` names what it reports:

    @register_task("zeroshot")
    class ZeroShot(Task):
        metrics = ("top1", "top5", "mean_per_class_recall", "num_images")
        def __init__(self, path: str, templates: Literal["openai", "simple"] = "openai", split: str = "test"): ...
        def open(self, pixels): ...              # the data, its layout checked at listing cost
        def run(self, model, tokenizer, data, runtime, desc): ...   # {"top1": 0.71, ...}

Results are named TYPE/NAME/METRIC (zeroshot/imagenet/top1). Every module of this package is imported with
the registry (as the losses' are), so a new type is one file here, or a module outside named in `plugins:`.
Modules stay light at import (torchvision loads when a task runs): a config is checked
against the registry without loading any evaluator.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Optional, TypeVar

import torch

import eval as package
from eval.errors import EvalError
from eval.loading import Pixels
from eval.runtime import DEFAULT_BLOCK, EvaluableModel, Runtime, Tokenizer

T = TypeVar("T")


class Task(ABC):
    type_name: ClassVar[str]  # set by register_task
    metrics: ClassVar[tuple[str, ...]]  # what `run` may return (zeroshot's top5 needs 5 classes): TYPE/NAME/METRIC

    @abstractmethod
    def open(self, pixels: Pixels) -> Any:
        """The task's data, as images the model takes (`pixels`: size, resize mode), opened and its layout checked
        at listing cost (no image decoded): what `run` gets, and what a pre-flight calls so that evaluation does
        not fail on a path after hours of training."""

    @abstractmethod
    def run(self, model: EvaluableModel, tokenizer: Tokenizer, data: Any, runtime: Runtime,
            desc: str) -> dict[str, float]:
        """{METRIC: value} for names in `metrics`; `desc` labels progress bars (TYPE/NAME)."""


_TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[T], T]:
    def add(cls: T) -> T:
        if name in _TASKS:
            raise ValueError(f"task type {name!r} is already registered by {_TASKS[name]}")
        if not getattr(cls, "metrics", None):
            raise ValueError(f"task type {name!r} ({cls}) declares no metrics")
        cls.type_name = name  # type: ignore[attr-defined]
        _TASKS[name] = cls  # type: ignore[assignment]
        return cls

    return add


def task_types() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> type[Task]:
    if name not in _TASKS:
        close = difflib.get_close_matches(name, _TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise EvalError(f"unknown task type {name!r}{hint}; known types: {', '.join(task_types())}")
    return _TASKS[name]


def open_tasks(tasks: Iterable[tuple[str, Task]], pixels: Pixels) -> dict[str, tuple[Task, Any]]:
    """{TYPE/NAME: (task, its data)}: every task's data opened, its layout checked, before any model work starts."""
    opened: dict[str, tuple[Task, Any]] = {}
    for name, task in tasks:
        if not name or "/" in name:
            raise EvalError(f"task name {name!r} must be non-empty and without '/' (it becomes part of a metric name)")
        prefix = f"{task.type_name}/{name}"
        if prefix in opened:
            raise EvalError(f"two {task.type_name} tasks are named {name!r}")
        opened[prefix] = (task, task.open(pixels))
    return opened


def evaluate(model: EvaluableModel, tokenizer: Tokenizer,
             tasks: Mapping[str, Task] | Iterable[tuple[str, Task]] = (), *,
             image_size: int, resize: str = "crop", zeroshot: Optional[Mapping[str, Any]] = None,
             retrieval: Optional[Mapping[str, Any]] = None, templates: str = "openai", batch_size: int = 256,
             workers: int = 2, device: torch.device | str = "cpu", autocast_dtype: Optional[torch.dtype] = None,
             progress: bool = True, block: tuple[int, int] = DEFAULT_BLOCK, cache_dir: Optional[Path] = None,
             model_key: str = "") -> dict[str, float]:
    """Every task in `tasks` ({name: Task}, or (name, Task) pairs: tasks of two types may share a name), after the
    short forms `zeroshot` and `retrieval` ({name: path}; zero-shot
    sets that bring no prompts take the shipped `templates`, "openai": 80 or "simple": 7).

    Returns {"zeroshot/NAME/top1": ..., "retrieval/NAME/t2i_R@1": ..., ...}, fractions in [0, 1]. Images are made
    image_size x image_size by `resize` ("crop" or "squash", data.decode.RESIZE_MODES). `block` is
    (images, texts) per `model.logits` call. The model is put in eval mode and given back in the mode it came in.
    With a `cache_dir` and a `model_key` naming the model's weights, tasks keep what they computed from the model
    there (Runtime.cached: the linear probe's features), for the next evaluation of the same weights.
    """
    every = [*((name, get_task("zeroshot")(str(path), templates=templates)) for name, path in (zeroshot or {}).items()),
             *((name, get_task("retrieval")(str(path))) for name, path in (retrieval or {}).items()),
             *(tasks.items() if isinstance(tasks, Mapping) else tasks)]
    opened = open_tasks(every, Pixels(image_size, resize))
    runtime = Runtime(torch.device(device), batch_size, workers, autocast_dtype, progress, block, cache_dir,
                      model_key)
    metrics: dict[str, float] = {}
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        for prefix, (task, data) in opened.items():
            results = task.run(model, tokenizer, data, runtime, prefix)
            undeclared = sorted(set(results) - set(task.metrics))
            if undeclared:
                raise EvalError(f"task type {task.type_name!r} reported {', '.join(undeclared)}, which it does not "
                                f"declare (its metrics: {', '.join(task.metrics)})")
            metrics.update({f"{prefix}/{key}": value for key, value in results.items()})
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)
    return metrics


for _module in pkgutil.iter_modules(package.__path__):
    importlib.import_module(f"{package.__name__}.{_module.name}")
