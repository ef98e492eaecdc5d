"""A new run from weights trained elsewhere: `model.init_from` (the whole model: both towers and the loss's scale and
bias), `model.image.init_from`, `model.text.init_from` (one tower; the other as the seed initialises it). A source is
a run dir (its latest checkpoint: trained here, or made by `contrastive import`) or a checkpoint (a file, or a
sharded checkpoint's directory, read whole in this process). Only weights are taken: the optimizer, schedule, step
counter and data stream start fresh. The run's own config says the architecture (e.g. `-c SOURCE/config.yaml`);
every tensor taken is checked against it, and a mismatch is one error naming the tensors, at the pre-flight (before
the run dir exists) as at the start. Position embeddings of another length are resampled: the image grid's
bicubically (another image size or patch grid), the text context's by `model.text.position_stretch` (Long-CLIP's, or
plain interpolation), so a run may grow its context beyond the source's. `model.image.init_from` also takes a timm
`.safetensors` checkpoint of the trunk's architecture.

    contrastive train -c runs/openai-b32/config.yaml model.init_from=runs/openai-b32 data.shards=...   # fine-tune
    contrastive train -c demo model.image.init_from=runs/demo model.image.frozen=true run_dir=runs/lit  # LiT
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch
from timm.layers import resample_abs_pos_embed

from contrastive.checkpoint import load_checkpoint_weights
from contrastive.config import Config, ConfigError
from contrastive.errors import CheckpointError
from contrastive.evaluate import checkpoints_to_evaluate
from contrastive.model import ContrastiveModel

# config key -> the entries of our state dict it takes
SOURCES = {"model.init_from": "", "model.image.init_from": "image_tower.", "model.text.init_from": "text_tower."}
TIMM_CLASSIFIER = ("head.", "fc_norm.")  # a timm classifier's entries, which a trunk built with num_classes=0 lacks
KEPT = 20  # the positions Long-CLIP's stretching keeps as they are


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


def initial_weights(cfg: Config, model: ContrastiveModel, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The tensors the init_from keys take, under our names, checked against `model` (one built from cfg, on any
    device, the meta device included), position embeddings resampled to its image grid and text context. {} when no
    init_from is set."""
    expected = model.state_dict()
    taken: dict[str, torch.Tensor] = {}
    for key, path in init_sources(cfg).items():
        prefix, state = _source_state(key, Path(path), mmap)
        wanted = {name for name in expected if name.startswith(prefix)}
        found = {name: _resampled(name, value, expected[name].shape, model, cfg)
                 for name, value in state.items() if name.startswith(prefix)}
        _check(key, path, found, {name: expected[name] for name in wanted})
        taken.update(found)
    return taken


def _source_state(key: str, path: Path, mmap: bool) -> tuple[str, Mapping[str, Any]]:
    """(the prefix of the entries the key takes, the source's entries under our names). For the image tower, a
    timm checkpoint (.safetensors, as timm's hub models ship) is a trunk's: its classifier head is left out."""
    if key == "model.image.init_from" and path.suffix == ".safetensors":
        from safetensors.torch import load_file
        if not path.is_file():
            raise ConfigError(f"config error: {key}={str(path)!r} does not exist")
        return "image_tower.trunk.", {f"image_tower.trunk.{name}": value for name, value in load_file(path).items()
                                      if not name.startswith(TIMM_CLASSIFIER)}
    try:
        _, (checkpoint,) = checkpoints_to_evaluate(path, all_checkpoints=False)
    except CheckpointError as e:
        raise ConfigError(f"config error: {key}={str(path)!r}: {e}") from None
    return SOURCES[key], load_checkpoint_weights(checkpoint, mmap=mmap)["model"]


def _resampled(name: str, value: torch.Tensor, shape: torch.Size, model: ContrastiveModel,
               cfg: Config) -> torch.Tensor:
    """A position embedding of another length as this run's: the image grid's bicubically (timm's resampling, the
    class and register tokens' positions kept), the text context's by model.text.position_stretch."""
    if value.shape == shape:
        return value
    if name == "image_tower.trunk.pos_embed" and value.shape[-1] == shape[-1]:
        trunk = model.image_tower.trunk
        prefix = 0 if getattr(trunk, "no_embed_class", False) else trunk.num_prefix_tokens
        old = math.isqrt(value.shape[1] - prefix)
        if old * old == value.shape[1] - prefix:
            return resample_abs_pos_embed(value.float(), list(trunk.patch_embed.grid_size), [old, old],
                                          num_prefix_tokens=prefix).to(value.dtype)
    if name == "text_tower.positional_embedding" and value.shape[1] == shape[1]:
        return stretch_positions(value, shape[0], cfg.model.text.position_stretch)
    return value


def stretch_positions(positions: torch.Tensor, length: int, how: str) -> torch.Tensor:
    """[L, width] -> [length, width]. Shorter: the first `length`. Longer: `long_clip` keeps the first KEPT
    positions as they are and stretches the other n by f = (length - KEPT) / n, linearly: original i lands at
    KEPT + f i, and the positions past the last original continue its last step (Long-CLIP's knowledge-preserving
    stretching, Zhang et al. 2024: 77 -> 248 keeps 20 and stretches 57 by 4); `interpolate` stretches all of them (as
    does long_clip for a context of at most KEPT + 1)."""
    if length <= positions.shape[0]:
        return positions[:length].clone()
    kept = KEPT if how == "long_clip" and positions.shape[0] > KEPT + 1 else 0
    rest = positions[kept:].float()
    if len(rest) == 1:
        return torch.cat([positions, positions[-1:].expand(length - len(positions), -1)])
    where = torch.arange(length - kept, dtype=torch.float64) * (len(rest) / (length - kept))
    left = where.floor().long().clamp(max=len(rest) - 2)
    weight = (where - left).float().unsqueeze(1)
    stretched = rest[left] * (1 - weight) + rest[left + 1] * weight
    return torch.cat([positions[:kept], stretched.to(positions.dtype)])


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
