"""The training loop: `contrastive train [-c CONFIG] [key=value ...]`.

Step-based, global batch, AdamW + warmup/cosine, bf16 autocast, DDP over torch.distributed, exact
resume from RUN_DIR/checkpoints/latest (model, optimizer, every rank's data-stream position and RNG).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from contrastive import sharding, stopping
from contrastive.checkpoint import Checkpointer, load_checkpoint_header
from contrastive.config import Config, ConfigError, diff, from_yaml_text, import_plugins, to_yaml
from contrastive.distributed import DistEnv, StopVote, all_gather_objects, barrier, init_distributed
from contrastive.errors import CheckpointError, TrainingDiverged
from contrastive.evaluate import (LoadedRun, TaskSpecs, evaluate_model, has_evaluators, load_model,
                                  missing_evaluations, results_path)
from contrastive.init_from import initial_weights
from contrastive.logger import EARLY_LINES, TrainLogger, merge_counts, start_banner
from contrastive.model import ContrastiveModel, build_model
from contrastive.optim import build_optimizer
from contrastive.preflight import preflight, run_tokenizer, train_loader
from contrastive.rng import rng_state, set_rng_state
from contrastive.schedule import lr_at
from contrastive.step import Autocast, autocast_for, compiled_forward, forward_and_loss, train_step
from data.atomic import atomic_write_bytes
from data.loader import StreamLoader
from data.plural import count
from data.seeding import derive_seed
from data.tokenizer import Tokenizer
from eval.results import headline, metric_lines

# Keys that may change between a run and its resumption: they change how it is run, not what it computes.
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.max_bad_steps", "train.compile", "train.grad_checkpointing", "train.device",
                     "train.on_checkpoint_error", "train.collective_timeout_s", "train.checkpoint_async", "eval.",
                     "slurm.")


@dataclass
class TrainResult:
    step: int
    finished: bool
    stopped_by_signal: bool = False


def train(cfg: Config, allow_config_change: bool = False, check_paths: bool = True) -> TrainResult:
    import_plugins(cfg.plugins)  # a config that arrives built (a Slurm job's) was loaded in another process
    stopping.install_handlers()
    env = init_distributed(cfg.train.device, cfg.train.collective_timeout_s)
    run_dir = Path(cfg.run_dir)
    checkpointer = Checkpointer(run_dir, keep=cfg.train.keep_checkpoints, sharded=cfg.train.strategy == "fsdp",
                                collective_timeout_s=cfg.train.collective_timeout_s)
    resume_from = checkpointer.latest()
    if resume_from is not None:
        imported_from = load_checkpoint_header(resume_from).get("imported_from")
        if imported_from is not None:
            raise CheckpointError(f"{run_dir} holds an imported model ({imported_from}), weights without training "
                                  f"state: training does not resume from it; start a new run dir from it with "
                                  f"model.init_from={run_dir}")
        check_resume_config(run_dir, cfg, allow_config_change)
    warnings = preflight(cfg, env.world_size, check_paths)  # before the run dir exists: a refused config leaves nothing
    if env.is_main:
        for warning in warnings:
            print(warning, flush=True)
    if resume_from is not None and checkpointer.step_of(resume_from) >= cfg.train.steps:
        return _already_finished(cfg, env, resume_from)
    if env.is_main:
        prepare_run_dir(run_dir, cfg)
    barrier()

    tokenizer = run_tokenizer(cfg)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_model(cfg.model, cfg.loss, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
    if resume_from is None:  # a resumed run's weights are its checkpoint's
        model.load_state_dict(initial_weights(cfg, model), strict=False)  # the keys were checked: only these
    model = model.to(env.device)
    if cfg.train.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.train.compile == "towers":
        model.image_tower.compile()
        model.text_tower.compile()
    # Before the optimizer is built: FSDP replaces the parameters with sharded ones.
    wrapped = sharding.distribute(model, cfg.train.strategy, env.device, cfg.train.accum_steps)
    optimizer = build_optimizer(model, cfg.optim)
    loader = train_loader(cfg, tokenizer, env.rank, env.world_size)
    torch.manual_seed(cfg.train.seed * 1_000_003 + env.rank)  # per-rank randomness (patch dropout)

    start_step = 0
    if resume_from is not None:
        start_step = restore(load_checkpoint_header(resume_from), model, optimizer, loader, env, resume_from)
        if env.is_main:
            print(f"resuming {run_dir} from {resume_from.name} (step {start_step})", flush=True)
    if env.is_main:
        print(start_banner(cfg, env, model, sum(map(len, loader.sources)), start_step), flush=True)

    logger = TrainLogger(run_dir, env.is_main, cfg.train.steps, cfg.train.batch_size)
    try:
        return _loop(_Training(cfg, env, model, wrapped, optimizer, loader, checkpointer, logger,
                               autocast_for(cfg.train.precision, env.device), tokenizer, start_step))
    finally:
        logger.close()


@dataclass(frozen=True)
class _Training:
    """What `train` builds for the loop."""
    cfg: Config
    env: DistEnv
    model: ContrastiveModel
    wrapped: torch.nn.Module  # the model as sharding.distribute wrapped it
    optimizer: torch.optim.Optimizer
    loader: StreamLoader
    checkpointer: Checkpointer
    logger: TrainLogger
    autocast: Autocast
    tokenizer: Tokenizer
    start_step: int


def _loop(run: _Training) -> TrainResult:
    vote = StopVote(run.cfg.train.collective_timeout_s)
    try:
        return _steps(run, vote)
    finally:
        vote.close()


def _steps(run: _Training, vote: StopVote) -> TrainResult:
    """The loop. Between log steps nothing waits for the device: the skipped-step counts, the metrics and the stop
    vote stay where they are until `train.log_every` (or a checkpoint) reads them."""
    cfg, env, logger, t = run.cfg, run.env, run.logger, run.cfg.train
    batches = iter(run.loader)
    skips = SkippedSteps(env.device)
    step = run.start_step
    forward = compiled_forward() if t.compile == "step" else forward_and_loss
    run.model.train()
    while step < t.steps:
        t0 = time.perf_counter()
        batch = next(batches)
        data_wait = time.perf_counter() - t0
        images = batch.images.to(env.device, non_blocking=True)
        tokens = batch.tokens.to(env.device, non_blocking=True)
        lr = lr_at(step, cfg.optim.lr, cfg.optim.warmup_steps, t.steps, cfg.optim.min_lr_ratio)
        started = time.perf_counter()
        result = train_step(run.model, run.wrapped, run.optimizer, images, tokens, lr, run.autocast, t.accum_steps,
                            cfg.optim.clip_grad, forward)
        if step == run.start_step and t.compile == "step" and env.is_main:
            print(f"step {step + 1} compiled the step in {time.perf_counter() - started:.1f} s", flush=True)
        skips.add(result.skipped)
        logger.update(result.metrics, data_wait, result.skipped)
        step += 1

        stop = vote.agreed(stopping.stop_requested())
        logging = step % t.log_every == 0 or step == t.steps
        checkpointing = step % t.checkpoint_every == 0 or step == t.steps or stop
        if logging or checkpointing:
            logger.bad_steps_total += skips.check(step, t.max_bad_steps, env.is_main, run.checkpointer)
        if logging:
            logger.log(step, lr, merge_counts(all_gather_objects(run.loader.skipped())))
        elif step - run.start_step in EARLY_LINES:
            logger.show(step, lr)
        if cfg.eval.every_steps and step % cfg.eval.every_steps == 0 and step < t.steps and not stop:
            stop = _evaluate(cfg, env, _eval_model(cfg, env, run.model, run.tokenizer), run.tokenizer, logger, step)
        if checkpointing:
            saved = save(run.checkpointer, step, run.model, run.optimizer, run.loader, env, cfg,
                         final=step == t.steps, wait=stop)
        if stop:
            if env.is_main:
                how = f"stop requested ({stopping.signal_name(stopping.stop_signal())})"
                print(f"{how}: checkpoint written at step {step}, exiting; `contrastive train {cfg.run_dir}` "
                      "resumes" if saved else
                      f"{how} at step {step}, whose checkpoint failed; exiting, the run resumes from "
                      f"{run.checkpointer.latest()}", flush=True)
            return TrainResult(step=step, finished=False, stopped_by_signal=True)
    if has_evaluators(cfg) and _evaluate(cfg, env, _eval_model(cfg, env, run.model, run.tokenizer), run.tokenizer,
                                         logger, step):
        return _stopped_in_final_evaluation(cfg, env, step)
    if env.is_main:
        print(f"training finished at step {step}: {run.checkpointer.path(step)}", flush=True)
    return TrainResult(step=step, finished=True)


class SkippedSteps:
    """Steps whose update was skipped for a non-finite loss or gradient, counted on the device (the current run of
    them, the longest run and the number since the last check) and read, one host sync, only when checked."""

    def __init__(self, device: torch.device):
        self.in_a_row = torch.zeros((), device=device)
        self.longest = torch.zeros((), device=device)
        self.since_check = torch.zeros((), device=device)
        self.checked_at: Optional[int] = None

    def add(self, skipped: torch.Tensor) -> None:
        self.in_a_row = (self.in_a_row + 1) * skipped
        self.longest = torch.maximum(self.longest, self.in_a_row)
        self.since_check = self.since_check + skipped

    def check(self, step: int, limit: int, is_main: bool, checkpointer: Checkpointer) -> int:
        """How many were skipped since the last check (said in one line); a run of `limit` in a row ends training
        before anything else is written: skipped steps leave the weights as they were, so the latest checkpoint
        holds the last good ones."""
        longest, skipped = (int(n) for n in torch.stack([self.longest, self.since_check]).tolist())
        since = f"since step {self.checked_at}" if self.checked_at is not None else "in the steps so far"
        self.longest, self.since_check = self.in_a_row.clone(), torch.zeros_like(self.since_check)
        self.checked_at = step
        if skipped and is_main:
            print(f"step {step}: {count(skipped, 'update')} skipped {since} for a non-finite loss or gradient "
                  f"({longest} in a row at most, limit {limit})", flush=True)
        if longest >= limit:
            raise TrainingDiverged(f"{longest} consecutive steps with a non-finite loss or gradient "
                                   f"(train.max_bad_steps={limit}); the last good checkpoint {checkpointer.latest()} "
                                   "is intact")
        return skipped


def _eval_model(cfg: Config, env: DistEnv, model: ContrastiveModel, tokenizer: Tokenizer) -> ContrastiveModel:
    """The model whole on rank 0 (FSDP gathers its shards there; DDP's model already is)."""
    build = lambda: build_model(cfg.model, cfg.loss, tokenizer.vocab_size, tokenizer.pad_id).to(env.device)  # noqa: E731
    return sharding.unsharded_copy(model, build, env.is_main)


def _evaluate(cfg: Config, env: DistEnv, model: Optional[ContrastiveModel], tokenizer: Tokenizer,
              logger: TrainLogger, step: int, tasks: Optional[TaskSpecs] = None) -> bool:
    """Rank 0 evaluates (the other ranks wait); a stop signal ends the evaluation at once, nothing half-written.
    True, on every rank, if it was stopped."""
    stopped = False
    if env.is_main:
        try:
            with stopping.raising_on_stop():
                metrics = evaluate_model(model, tokenizer, cfg, env.device, step, Path(cfg.run_dir),
                                         tasks=tasks)
            logger.scalars(metrics, step)
            print("\n".join([f"evaluation at step {step}: {results_path(Path(cfg.run_dir), step)}",
                              *metric_lines(headline(metrics))]), flush=True)
        except stopping.Stopped:
            stopped = True
    return bool(all_gather_objects(stopped)[0])


def _stopped_in_final_evaluation(cfg: Config, env: DistEnv, step: int) -> TrainResult:
    if env.is_main:
        print(f"stop requested ({stopping.signal_name(stopping.stop_signal())}) during the evaluation of step "
              f"{step}: its checkpoint is complete, its results are not; `contrastive eval {cfg.run_dir}` or "
              f"`contrastive train {cfg.run_dir}` finishes them", flush=True)
    return TrainResult(step=step, finished=False, stopped_by_signal=True)


def _already_finished(cfg: Config, env: DistEnv, checkpoint: Path) -> TrainResult:
    """A finished run started again: its final evaluation is completed if it lacks any configured dataset
    (it failed or was stopped, or eval keys were added), and nothing is trained."""
    run_dir = Path(cfg.run_dir)
    step = Checkpointer.step_of(checkpoint)
    missing = missing_evaluations(cfg, run_dir, step)
    if missing:
        tokenizer = run_tokenizer(cfg)
        model = load_model(LoadedRun(cfg, run_dir, tokenizer), checkpoint, env.device)[0] if env.is_main else None
        logger = TrainLogger(run_dir, env.is_main, cfg.train.steps, cfg.train.batch_size)
        try:
            if env.is_main:
                print(f"{run_dir} finished at step {step}; evaluating what its results lack: "
                      f"{', '.join(missing)}", flush=True)
            if _evaluate(cfg, env, model, tokenizer, logger, step, tasks=missing):
                return _stopped_in_final_evaluation(cfg, env, step)
        finally:
            logger.close()
    if env.is_main:
        print(f"{run_dir} already finished at step {step}; pass train.steps=M with M > {step} to extend it",
              flush=True)
    return TrainResult(step=step, finished=True)


def save(checkpointer: Checkpointer, step: int, model: ContrastiveModel, optimizer: torch.optim.Optimizer,
         loader: StreamLoader, env: DistEnv, cfg: Config, final: bool, wait: bool = False) -> bool:
    """Write the checkpoint of `step`: under FSDP every rank writes its shards, otherwise rank 0 one file. True if it
    was written, or handed to the background: with train.checkpoint_async the write goes on from a copy in CPU memory
    while training does, and the next save first waits for it and reports its failure. The `final` checkpoint, and
    one the run stops after (`wait`), are written before this returns. A failed write stops training on every rank,
    unless train.on_checkpoint_error=continue and it is not the `final` one, without which the run would end looking
    finished but without its last steps."""
    if cfg.train.checkpoint_async:
        _check_written(checkpointer.wait(), env, cfg, final=False)
    background = cfg.train.checkpoint_async and not (final or wait)
    per_rank = all_gather_objects({"data": loader.state_dict(), "rng": rng_state()})
    run_state = {
        "step": step,
        "world_size": env.world_size,
        "data": [r["data"] for r in per_rank],
        "rng": [r["rng"] for r in per_rank],
        "config": to_yaml(cfg),
        "tokenizer": (Path(cfg.run_dir) / "tokenizer.json").read_text(encoding="utf-8"),  # self-describing
    }
    failure = None
    try:
        if checkpointer.sharded:
            checkpointer.save_sharded(step, sharding.sharded_state(model, optimizer), run_state, background)
        else:
            model_state, optimizer_state = sharding.full_state(model, optimizer)
            if env.is_main:
                checkpointer.save(step, {**run_state, "model": model_state, "optimizer": optimizer_state}, background)
    except CheckpointError as e:
        failure = str(e)
    return _check_written(failure, env, cfg, final)


def _check_written(failure: Optional[str], env: DistEnv, cfg: Config, final: bool) -> bool:
    """train.on_checkpoint_error applied to a write's outcome; True if it was written."""
    failure = all_gather_objects(failure)[0]  # every rank learns rank 0's outcome (and waits for it)
    if failure is not None:
        if cfg.train.on_checkpoint_error == "stop":
            raise CheckpointError(f"{failure}; training stopped (train.on_checkpoint_error=stop)")
        if final:
            raise CheckpointError(f"{failure}; it was the final checkpoint, so the run fails even with "
                                  "train.on_checkpoint_error=continue; rerun it to resume from `latest`")
        if env.is_main:
            print(f"warning: {failure}; training goes on (train.on_checkpoint_error=continue)", flush=True)
    return failure is None


def restore(state: dict[str, Any], model: ContrastiveModel, optimizer: torch.optim.Optimizer,
            loader: StreamLoader, env: DistEnv, path: Path) -> int:
    sharding.restore_state(model, optimizer, path)  # `state` is the header; the weights come from `path`
    layout_change = loader.resume(state["data"])  # another world size or data.workers: each sample still once
    if layout_change is not None and env.is_main:
        print(layout_change, flush=True)
    if state["world_size"] == env.world_size:
        set_rng_state(state["rng"][env.rank])
    else:  # the saved streams were another layout's: a fresh one from this rank's seed (set by train) and the step
        torch.manual_seed(derive_seed(torch.initial_seed(), int(state["step"])))
    return int(state["step"])


def prepare_run_dir(run_dir: Path, cfg: Config) -> None:
    """config.yaml (the resolved config) and a copy of the tokenizer (the pre-flight found it): everything eval and
    resume need."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.yaml", to_yaml(cfg).encode())
    tokenizer_copy = run_dir / "tokenizer.json"
    if not tokenizer_copy.exists():
        atomic_write_bytes(tokenizer_copy, Path(cfg.data.tokenizer).read_bytes())


def check_resume_config(run_dir: Path, cfg: Config, allow_config_change: bool) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    changed = {k: v for k, v in diff(from_yaml_text(saved_path.read_text()), cfg).items()
               if not k.startswith(RESUMABLE_CHANGES)}
    if changed and not allow_config_change:
        lines = "\n".join(f"  {k}: {old!r} (saved) -> {new!r}" for k, (old, new) in changed.items())
        raise ConfigError(f"config error: {run_dir} holds a run with a different config; resuming would change it:\n"
                          f"{lines}\n  use a new run_dir, or pass --allow-config-change to resume anyway")
