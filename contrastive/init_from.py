"""A new run from weights trained elsewhere: `model.init_from` (the whole model: both towers and the loss's scale and
bias), `model.image.init_from`, `model.text.init_from` (one tower; the other as the seed initialises it). A source is
a run dir (its latest checkpoint: trained here, or made by `contrastive import`) or a checkpoint file. Only weights
are taken: the optimizer, schedule, step counter and data stream start fresh. The run's own config says the
architecture (e.g. `-c SOURCE/config.yaml`); every tensor taken is checked against it, and a mismatch is one error
naming the tensors, at the pre-flight (before the run dir exists) as at the start.

    contrastive train -c runs/openai-b32/config.yaml model.init_from=runs/openai-b32 data.shards=...   # fine-tune
    contrastive train -c demo model.image.init_from=runs/demo model.image.frozen=true run_dir=runs/lit  # LiT
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from contrastive.checkpoint import load_checkpoint
from contrastive.config import Config, ConfigError
from contrastive.errors import CheckpointError
from contrastive.evaluate import checkpoints_to_evaluate

# config key -> the entries of our state dict it takes
SOURCES = {"model.init_from": "", "model.image.init_from": "image_tower.", "model.text.init_from": "text_tower."}


def init_sources(cfg: Config) -> dict[str, str]:
    """The init_from keys the config sets, each with its source path. The whole model and one of its towers from
    two sources would be two answers to one question: refused."""
    given = {key: path for key, path in {"model.init_from": cfg.model.init_from,
                                         "model.image.init_from": cfg.model.image.init_from,
                                         "model.text.init_from": cfg.model.text.init_from}.items() if path}
    if "model.init_from" in given and len(given) > 1:
        raise ConfigError(f"config error: model.init_from and {', '.join(k for k in given if k != 'model.init_from')}"
                          " both say where weights come from; set the whole model's or the towers'")
    return given


def initial_weights(cfg: Config, model: nn.Module, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The tensors the init_from keys take, under our names, checked against `model` (one built from cfg, on any
    device, the meta device included). {} when no init_from is set."""
    expected = model.state_dict()
    taken: dict[str, torch.Tensor] = {}
    for key, path in init_sources(cfg).items():
        prefix = SOURCES[key]
        state = _source_state(key, Path(path), mmap)
        wanted = {name for name in expected if name.startswith(prefix)}
        found = {name: value for name, value in state.items() if name.startswith(prefix)}
        _check(key, path, found, {name: expected[name] for name in wanted})
        taken.update(found)
    return taken


def _source_state(key: str, path: Path, mmap: bool) -> Mapping[str, Any]:
    try:
        _, (checkpoint,) = checkpoints_to_evaluate(path, all_checkpoints=False)
    except CheckpointError as e:
        raise ConfigError(f"config error: {key}={str(path)!r}: {e}") from None
    return load_checkpoint(checkpoint, mmap=mmap)["model"]


def _check(key: str, path: str, found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    shapes = [f"{name} {list(found[name].shape)} (this run: {list(expected[name].shape)})"
              for name in sorted(found.keys() & expected.keys()) if found[name].shape != expected[name].shape]
    missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    problems = [*(["shapes differ: " + ", ".join(shapes[:3]) + (" ..." if len(shapes) > 3 else "")] if shapes else []),
                *([f"it lacks {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "")] if missing else []),
                *([f"this run has no {', '.join(extra[:3])}" + (" ..." if len(extra) > 3 else "")] if extra else [])]
    if problems:
        raise ConfigError(f"config error: {key}={path!r} does not fit this run's architecture: {'; '.join(problems)} "
                          "(give the run the source's model config, e.g. -c SOURCE/config.yaml)")
