"""Evaluation of a model or a checkpoint with the evaluators in eval/: `contrastive eval RUN_DIR_OR_CHECKPOINT`.

Results go to RUN_DIR/eval/step_XXXXXX.json (atomically) and to tensorboard, under the stable names the
evaluators give them (zeroshot/NAME/top1, retrieval/NAME/t2i_R@1, ...). What tasks keep for the next evaluation of
the same weights (the linear probe's features) goes to RUN_DIR/eval/cache/, keyed by a digest of the weights.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf

from contrastive.checkpoint import (Checkpointer, CheckpointError, is_checkpoint, load_checkpoint_header,
                                   load_checkpoint_weights)
from contrastive.config import Config, from_yaml_text, load_config
from contrastive.distributed import pick_device
from contrastive.model import ContrastiveModel, build_model
from contrastive.step import autocast_dtype
from contrastive.text_tower import text_tokenizer
from data.tokenizer import Tokenizer
from eval import Task, evaluate, get_task
from eval.results import read_json, write_json


TaskSpecs = dict[str, dict[str, Any]]  # "TYPE/NAME" (its metrics' prefix) -> {type, path, the type's arguments}


def configured_tasks(cfg: Config) -> TaskSpecs:
    """eval.zeroshot and eval.retrieval (the short forms), then eval.tasks, by the prefix of their metrics."""
    short = [*((name, {"type": "zeroshot", "path": path, "templates": cfg.eval.templates})
               for name, path in cfg.eval.zeroshot.items()),
             *((name, {"type": "retrieval", "path": path}) for name, path in cfg.eval.retrieval.items())]
    return {f"{spec['type']}/{name}": spec for name, spec in [*short, *cfg.eval.tasks.items()]}


def has_evaluators(cfg: Config) -> bool:
    return bool(configured_tasks(cfg))


def build_tasks(specs: TaskSpecs) -> list[tuple[str, Task]]:
    """(name, task) pairs; tasks of two types may share a name."""
    return [(prefix.split("/", 1)[1], get_task(spec["type"])(**{k: v for k, v in spec.items() if k != "type"}))
            for prefix, spec in specs.items()]


def results_path(run_dir: Path, step: int) -> Path:
    return run_dir / "eval" / f"step_{step:06d}.json"


def cache_dir(run_dir: Path) -> Path:
    return run_dir / "eval" / "cache"


def weights_key(model: torch.nn.Module, cfg: Config) -> str:
    """A digest of the model's weights and its config (the image normalisation is not a saved tensor): the same
    for the model training holds at step N and for its checkpoint loaded later, different for any other weights."""
    digest = hashlib.sha256(OmegaConf.to_yaml(OmegaConf.structured(cfg.model)).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def evaluate_model(model: ContrastiveModel, tokenizer: Tokenizer, cfg: Config, device: torch.device, step: int,
                   run_dir: Path, progress: bool = False, tasks: Optional[TaskSpecs] = None) -> dict[str, float]:
    """The configured tasks (or only `tasks`); their metrics are merged into the step's results file, so an
    evaluation of other tasks keeps what an earlier one found."""
    metrics = evaluate(
        model, tokenizer, build_tasks(configured_tasks(cfg) if tasks is None else tasks),
        image_size=cfg.model.image.image_size, resize=cfg.model.image.resize, batch_size=cfg.eval.batch_size,
        workers=cfg.eval.workers, device=device, autocast_dtype=autocast_dtype(cfg.train.precision), progress=progress,
        cache_dir=cache_dir(run_dir), model_key=weights_key(model, cfg),
    )
    path = results_path(run_dir, step)
    write_json(path, {**(read_json(path)[1] if path.is_file() else {}), **metrics}, step=step)
    return metrics


def missing_evaluations(cfg: Config, run_dir: Path, step: int) -> TaskSpecs:
    """The configured tasks without results for `step` (its evaluation failed or was stopped, or tasks were added
    since)."""
    path = results_path(run_dir, step)
    done = read_json(path)[1] if path.is_file() else {}
    return {prefix: spec for prefix, spec in configured_tasks(cfg).items()
            if not any(key.startswith(f"{prefix}/") for key in done)}


@dataclass
class LoadedRun:
    cfg: Config
    run_dir: Path
    tokenizer: Tokenizer


def load_run(run_dir: Path, overrides: list[str]) -> LoadedRun:
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory: {config_path} does not exist")
    cfg = load_config(str(config_path), overrides)
    tokenizer_path = run_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise CheckpointError(f"{tokenizer_path} does not exist (every run dir holds the tokenizer it trained with)")
    return LoadedRun(cfg, run_dir, text_tokenizer(tokenizer_path.read_text(encoding="utf-8"), cfg.model.text,
                                                  str(tokenizer_path)))


def load_model(run: LoadedRun, checkpoint: Path, device: torch.device) -> tuple[ContrastiveModel, int]:
    state = load_checkpoint_weights(checkpoint)
    model = build_model(run.cfg.model, run.cfg.loss, vocab_size=run.tokenizer.vocab_size, pad_id=run.tokenizer.pad_id)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {checkpoint} does not fit the model of {run.run_dir / 'config.yaml'} "
                              f"(another architecture?): {str(e).splitlines()[0]}") from None
    return model.to(device), int(state["step"])


def checkpoints_to_evaluate(path: Path, all_checkpoints: bool) -> tuple[Path, list[Path]]:
    """(run dir, checkpoints) for a run dir (its latest, or all) or a single checkpoint of either format (a file, or
    a sharded checkpoint's directory); a checkpoint outside a run dir (RUN/checkpoints/step_N.pt or step_N.dcp) is a
    run dir of its own, its folder (its results go to FOLDER/eval/)."""
    if is_checkpoint(path):
        in_run_dir = path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file()
        return path.parent.parent if in_run_dir else path.parent, [path]
    if not path.is_dir():
        raise CheckpointError(f"{path} is neither a run directory nor a checkpoint file or sharded checkpoint")
    checkpointer = Checkpointer(path)
    if all_checkpoints:
        found = checkpointer.checkpoints()
    else:
        latest = checkpointer.latest()
        found = [latest] if latest is not None else []
    if not found:
        raise CheckpointError(f"{path} holds no checkpoint ({checkpointer.dir} has no `latest`)")
    return path, found


def checkpoint_of(source: Path, step: Optional[int]) -> tuple[Path, Path]:
    """(run dir, checkpoint) as checkpoints_to_evaluate finds the latest, or the run dir's checkpoint of `step`."""
    if step is None:
        run_dir, (checkpoint,) = checkpoints_to_evaluate(source, all_checkpoints=False)
        return run_dir, checkpoint
    if is_checkpoint(source):
        raise CheckpointError(f"--step {step} picks a checkpoint of a run dir; {source} is a checkpoint")
    if not source.is_dir():
        raise CheckpointError(f"{source} is not a run directory")
    checkpointer = Checkpointer(source)
    checkpoint = checkpointer.at(step)
    if checkpoint is None:
        steps = ", ".join(map(str, checkpointer.steps())) or "none"
        raise CheckpointError(f"{source} has no checkpoint of step {step} (its steps: {steps})")
    return source, checkpoint


def run_of(run_dir: Path, checkpoint: Path, overrides: list[str]) -> LoadedRun:
    """The run `checkpoint` (one of checkpoints_to_evaluate's) belongs to: its run dir's config.yaml and
    tokenizer.json, or, for a checkpoint outside any run dir, the config and tokenizer it carries."""
    if checkpoint.parent.parent == run_dir:
        return load_run(run_dir, overrides)
    state = load_checkpoint_header(checkpoint)
    if "config" not in state or "tokenizer" not in state:
        raise CheckpointError(f"checkpoint {checkpoint} carries no {'config' if 'config' not in state else 'tokenizer'}"
                              " (it was written before checkpoints carried them): evaluate it inside its run dir, "
                              "RUN/checkpoints/, beside RUN/config.yaml and RUN/tokenizer.json")
    cfg = from_yaml_text(state["config"], overrides)
    return LoadedRun(cfg, run_dir, text_tokenizer(state["tokenizer"], cfg.model.text, f"the tokenizer in {checkpoint}"))


def evaluate_checkpoint(path: str | Path, overrides: list[str] = (), all_checkpoints: bool = False,
                        progress: bool = True) -> tuple[Path, list[dict[str, float]]]:
    """(the run dir whose eval/ holds the results, {"step": N, METRIC: value, ...} per checkpoint)."""
    run_dir, checkpoints = checkpoints_to_evaluate(Path(path), all_checkpoints)
    run = run_of(run_dir, checkpoints[0], list(overrides))
    if not has_evaluators(run.cfg):
        raise CheckpointError("nothing to evaluate: name datasets with eval.zeroshot.NAME=PATH, "
                              "eval.retrieval.NAME=PATH or eval.tasks.NAME={type: TYPE, path: PATH}")
    device = pick_device(run.cfg.train.device)
    from torch.utils.tensorboard import SummaryWriter

    results = []
    with SummaryWriter(str(run_dir / "tb")) as writer:
        for checkpoint in checkpoints:
            model, step = load_model(run, checkpoint, device)
            metrics = evaluate_model(model, run.tokenizer, run.cfg, device, step, run_dir, progress=progress)
            for name, value in metrics.items():
                writer.add_scalar(name, value, step)
            results.append({"step": step, **metrics})
    return run_dir, results
