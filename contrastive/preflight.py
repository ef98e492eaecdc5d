"""The pre-flight: everything a run would refuse, found before any compute, before a run dir exists.

    warnings = preflight(cfg, world_size=16)   # raises ConfigError / DataError / EvalError naming the key or path

`contrastive train` runs it on every rank before it creates the run dir, `contrastive submit` for every run
before anything is submitted, `--check` alone. Nothing here is a second list of rules: it builds what the
run builds, at no cost:
- the model on the meta device, so every refusal of the loss and tower constructors surfaces, for any width;
- rank 0's data stream, which expands the shard patterns (a `pipe:` URL is counted, never run) and needs one
  shard per (rank, worker) slot;
- every eval dataset, opened with its layout checked at listing cost (ImageNet's 50k files listed, not read).
With `check_paths=False` (paths that exist only on the compute nodes) no path is opened.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch

from contrastive.checkpoint import Checkpointer
from contrastive.config import Config, ConfigError
from contrastive.evaluate import build_tasks, configured_tasks
from contrastive.flags import PATH_CHECK_OPT_OUT
from contrastive.init_from import init_sources, initial_weights
from contrastive.model import build_model
from contrastive.sharding import check_strategy
from contrastive.text_tower import text_tokenizer
from data.errors import DataError
from data.loader import StreamLoader
from data.plural import count
from data.tokenizer import Tokenizer
from eval import Pixels, open_tasks
from eval.errors import EvalError

# Stands in for the tokenizer when paths are not checked: CLIP's vocabulary, padded with id 0.
UNCHECKED_VOCAB = 49408


def preflight(cfg: Config, world_size: int, check_paths: bool = True) -> list[str]:
    """Raises the run's first refusal; returns warnings (a config that runs but is probably not meant)."""
    if cfg.train.batch_size % world_size:
        raise ConfigError(f"config error: train.batch_size={cfg.train.batch_size} (global) is not divisible by "
                          f"the world size {world_size}")
    local_batch = cfg.train.batch_size // world_size
    if local_batch % cfg.train.accum_steps:
        raise ConfigError(f"config error: train.accum_steps={cfg.train.accum_steps} does not divide the local batch "
                          f"of {local_batch} (train.batch_size={cfg.train.batch_size} over "
                          f"{count(world_size, 'rank')})")
    check_strategy(cfg.train.strategy, cfg.train.accum_steps, world_size)
    tokenizer = run_tokenizer(cfg) if check_paths else None
    with torch.device("meta"):
        model = build_model(cfg.model, cfg.loss, vocab_size=tokenizer.vocab_size if tokenizer else UNCHECKED_VOCAB,
                            pad_id=tokenizer.pad_id if tokenizer else 0)
    init_sources(cfg)
    if check_paths:
        if Checkpointer(cfg.run_dir).latest() is None:  # a resumed run's weights are its checkpoint's
            initial_weights(cfg, model, mmap=True)  # every tensor checked against this run's architecture
        with _path_refusals_name("data.shards"):
            train_loader(cfg, tokenizer, rank=0, world_size=world_size)
        check_eval_datasets(cfg)
    warnings = []
    if cfg.optim.warmup_steps >= cfg.train.steps:
        warnings.append(f"warning: optim.warmup_steps={cfg.optim.warmup_steps} >= train.steps={cfg.train.steps}: "
                        f"the learning rate never reaches optim.lr={cfg.optim.lr:g}")
    return warnings


def check_eval_datasets(cfg: Config) -> None:
    specs = configured_tasks(cfg)
    for prefix, task in zip(specs, build_tasks(specs)):
        type_name, name = prefix.split("/", 1)
        in_tasks = cfg.eval.tasks.get(name, {}).get("type") == type_name  # else a short form (the config's check)
        key = f"eval.tasks.{name}" if in_tasks else f"eval.{type_name}.{name}"
        with _path_refusals_name(key):
            open_tasks([task], Pixels(cfg.model.image.image_size, cfg.model.image.resize))


@contextlib.contextmanager
def _path_refusals_name(key: str) -> Iterator[None]:
    try:
        yield
    except (DataError, EvalError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config error: {key}: {e} (pass {PATH_CHECK_OPT_OUT} for paths that exist only on the "
                          "compute nodes)") from None


def run_tokenizer(cfg: Config) -> Tokenizer:
    """The run dir's copy once a run has started there (it is what the run trains with), else data.tokenizer."""
    copy = Path(cfg.run_dir) / "tokenizer.json"
    source = copy if copy.is_file() else Path(cfg.data.tokenizer)
    if not source.is_file():
        raise ConfigError(f"config error: data.tokenizer={cfg.data.tokenizer!r} is not a file (train one with "
                          f"`contrastive data tokenizer`, or pass {PATH_CHECK_OPT_OUT} if it exists only on the "
                          "compute nodes)")
    return text_tokenizer(source.read_text(encoding="utf-8"), cfg.model.text, str(source))


def train_loader(cfg: Config, tokenizer: Tokenizer, rank: int, world_size: int) -> StreamLoader:
    """The endless batches of one rank (batch_size is global: each rank takes its share)."""
    if not cfg.data.shards:
        raise ConfigError("config error: data.shards is empty; give the training shards, "
                          "e.g. data.shards='/data/laion/{00000..09999}.tar'")
    return StreamLoader(
        list(cfg.data.shards), tokenizer, batch_size=cfg.train.batch_size // world_size,
        image_size=cfg.model.image.image_size, weights=list(cfg.data.weights) or None, train=True,
        crop_scale=tuple(cfg.data.crop_scale), shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.train.seed,
        rank=rank, world_size=world_size, workers=cfg.data.workers,
    )
