"""The training step on one GPU, ours and OpenCLIP's side by side: `make bench-gpu`, or

    python benchmarks/gpu.py --out DIR [--budget-s 240] [--models clip_b16 siglip_b16]
    python benchmarks/gpu.py --dry-run --out DIR     # CPU, tiny towers, aot_eager: the script's own test

ViT-B/16 CLIP (`clip_b16`) and SigLIP (`siglip_b16`) at 224 px, bf16 autocast, one process on one GPU. A step is
the training loop's own contrastive.step.train_step (towers, loss, backward, clipping, fused AdamW) on a synthetic
batch already on the device; eager, or compiled as `train.compile=step` compiles it (contrastive.step.
compiled_forward); without and with FLIP patch dropout 0.5 (`model.image.kwargs.patch_drop_rate`, timm's); at a
per-GPU batch of 256 and at the largest batch that fits (doubling from 256 until one runs out of memory). OpenCLIP
3.3.0's ViT-B-16 and ViT-B-16-SigLIP, random weights, step the same way through its own code: its loss classes,
AdamW parameter groups and schedule, and `open_clip_train.train.train_one_epoch` (torch.compile of the model for
its compiled rows, as its --torchcompile does). One row feeds our step from the training loop's StreamLoader
(contrastive.preflight.train_loader) on 256 px JPEG shards written to a temp dir, to show whether the data
pipeline keeps up.

Per row: the median step time after warm-up (CUDA events at the step boundaries, so timing adds no host sync),
samples/s, peak memory (torch.cuda.max_memory_allocated), FLOPs per step (torch.utils.flop_counter on one eager
forward + backward, counted once per model, patch dropout and batch) and MFU against the dense bf16 matmul peak
measured in the same run (an 8192^3 matmul) and against the GPU's datasheet peak; for compiled rows the compile
time (the first step's time over the median); for the loader row the share of time spent waiting for data.

The measurements run most important first, and before each one the remaining budget (--budget-s, counted from
the start of main) is checked against what that kind of measurement took so far; at the end of the budget, on
SIGTERM or on Ctrl-C the rows measured so far are written and the script exits 0. DIR/gpu.json and DIR/gpu.md are
rewritten after every row, so even a killed run leaves what it measured.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
from argparse import Namespace
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from contrastive.config import Config, load_config
from contrastive.model import build_model
from contrastive.optim import build_optimizer, torch_weight_decay
from contrastive.preflight import train_loader
from contrastive.step import autocast_for, compiled_forward, forward_and_loss, forward_backward, train_step
from data.tokenizer import Tokenizer, train_bpe
from loader_throughput import COLOURS, SHARDS, SOURCE_PX, write_jpeg_shards

OPENCLIP_MODELS = {"clip_b16": "ViT-B-16", "siglip_b16": "ViT-B-16-SigLIP"}
VOCAB = {"clip_b16": 49408, "siglip_b16": 32000}  # OpenCLIP's, so that both sides build the same embedding table
PATCH_DROP = 0.5
# Dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets, matched in order against
# torch.cuda.get_device_name(): the first entry whose key is part of the name.
DATASHEET_BF16_TFLOPS = (("GH200", 989.0), ("H200 NVL", 835.0), ("H200", 989.0), ("H100 NVL", 835.0),
                         ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0))
TINY_TOWERS = ["model.embed_dim=32", "model.image.image_size=32", "model.image.kwargs={embed_dim: 32, depth: 1, "
               "num_heads: 2}", "model.text.context_length=16", "model.text.width=32", "model.text.depth=1",
               "model.text.heads=2"]
OPENCLIP_TINY_VISION = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}
OPENCLIP_TINY_TEXT = {"context_length": 16, "width": 32, "heads": 2, "layers": 1}


@dataclass(frozen=True)
class Setup:
    """What a run measures at: the GPU's real shapes, or the dry run's tiny ones on CPU."""

    batch: int
    max_batch: int  # the largest-batch search stops here
    warmup_steps: int  # untimed steps first (the first compiles)
    steps: int  # timed steps per row
    probe_steps: int  # timed steps per batch the largest-batch search tries
    matmul_size: int
    backend: str  # torch.compile's, for the compiled rows
    overrides: tuple[str, ...]  # config overrides every model gets
    tiny_openclip: bool
    loader_samples: int
    loader_workers: int
    loader_steps: int
    first_guess_s: dict[str, float]  # what a kind of measurement is expected to take before one has run
    compiled_models: Optional[int] = None  # compiled rows for the first N models only; None: for all


GPU = Setup(batch=256, max_batch=8192, warmup_steps=3, steps=10, probe_steps=5, matmul_size=8192, backend="inductor",
            overrides=(), tiny_openclip=False, loader_samples=1536,
            loader_workers=max(1, min(SHARDS, (os.cpu_count() or 4) - 2)), loader_steps=24,
            first_guess_s={"eager": 15, "compiled": 120, "search": 45, "loader": 45})
DRY_RUN = Setup(batch=4, max_batch=8, warmup_steps=1, steps=2, probe_steps=2, matmul_size=256, backend="aot_eager",
                overrides=tuple(TINY_TOWERS), tiny_openclip=True, loader_samples=4 * SHARDS, loader_workers=1,
                loader_steps=3, first_guess_s={"eager": 1, "compiled": 5, "search": 2, "loader": 5},
                compiled_models=1)  # an aot_eager compile takes seconds on CPU, and the code is the same for both


@dataclass(frozen=True)
class Case:
    side: str  # "ours" or "OpenCLIP"
    model: str  # our config name (OPENCLIP_MODELS names OpenCLIP's)
    compiled: bool
    patch_drop: float
    batch: int

    @property
    def label(self) -> str:
        flip = f", FLIP {self.patch_drop}" if self.patch_drop else ""
        return f"{self.side} {self.model} {'compiled' if self.compiled else 'eager'}{flip}, batch {self.batch}"


@dataclass
class Row:
    side: str
    model: str
    step: str  # "eager" or "compiled"
    patch_drop: float
    batch: int
    data: str  # "synthetic" (in memory, on the device) or the loader
    s_per_step: float  # median after warm-up
    tflop_per_step: float  # forward + backward, torch.utils.flop_counter
    peak_memory_gib: Optional[float]  # torch.cuda.max_memory_allocated; None on CPU
    compile_s: Optional[float] = None  # compiled rows: the first step's time over the median
    data_wait: Optional[float] = None  # the loader row: share of the time spent waiting for a batch
    largest: Optional[str] = None  # a largest-batch row: how the search ended

    @property
    def samples_per_s(self) -> float:
        return self.batch / self.s_per_step

    @property
    def tflops(self) -> float:
        return self.tflop_per_step / self.s_per_step

    def counterpart_key(self) -> tuple:
        """What an OpenCLIP row must share with ours to be its counterpart (the largest batches may differ)."""
        return self.model, self.step, self.patch_drop, "largest" if self.largest else self.batch, self.data


class Stopped(BaseException):
    """The budget ran out, or SIGTERM / SIGINT came: write what was measured and exit 0. A BaseException, so that a
    measurement's own error handling does not swallow it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def stop_on_signals(budget_s: float) -> None:
    """SIGALRM at the end of the budget, SIGTERM and SIGINT raise Stopped once; a second Ctrl-C interrupts the
    writing of the report."""
    def handler(signum: int, frame: Any) -> None:
        stop_no_more()
        raise Stopped("budget" if signum == signal.SIGALRM else signal.Signals(signum).name)

    for signum in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
    signal.setitimer(signal.ITIMER_REAL, max(budget_s, 1e-3))


def stop_no_more() -> None:
    """From here on the report is being written: the alarm and SIGTERM are ignored, Ctrl-C interrupts."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    for signum in (signal.SIGALRM, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)


class Deadline:
    """The measuring budget, counted from the start of main."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def allows(self, seconds: float) -> bool:
        return self.elapsed() + seconds <= self.budget_s


class StepClock:
    """Step boundaries: CUDA events on a GPU (recorded in the stream: no host sync between steps), the host clock on
    CPU. An event recorded while the GPU idles (the first step compiling) is passed at once, so the first interval
    is wall time too."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        """The intervals between consecutive marks."""
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def median_and_compile(seconds: list[float], warmup_steps: int, compiled: bool) -> tuple[float, Optional[float]]:
    median = statistics.median(seconds[warmup_steps:])
    return median, (seconds[0] - median if compiled else None)


def matmul_tflops(device: torch.device, n: int, reps: int = 10) -> float:
    """Dense bf16 matmul throughput, n x n x n, the mean of `reps` after three warm-up products."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    clock = StepClock(device)
    clock.mark()
    for _ in range(reps):
        a @ b
    clock.mark()
    return 2 * n**3 * reps / clock.seconds()[0] / 1e12


def datasheet_peak(device_name: str) -> Optional[tuple[str, float]]:
    return next(((key, tflops) for key, tflops in DATASHEET_BF16_TFLOPS if key in device_name), None)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"


def peak_memory_gib(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_device_memory(device: torch.device) -> None:
    """What one measurement left: compiled graphs, the model, the optimizer's state, cached blocks."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def synthetic_batch(cfg: Config, vocab: int, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and token ids on the device, the second half of every text padding (id 0)."""
    generator = torch.Generator(device).manual_seed(1)
    size, length = cfg.model.image.image_size, cfg.model.text.context_length
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device, generator=generator)
    tokens = torch.randint(1, vocab, (batch, length), device=device, generator=generator)
    tokens[:, length // 2:] = 0
    return images, tokens


def model_config(setup: Setup, model: str, patch_drop: float, *overrides: str) -> Config:
    flip = [f"model.image.kwargs.patch_drop_rate={patch_drop}"] if patch_drop else []
    return load_config(model, [*setup.overrides, *flip, "train.precision=bf16", *overrides])


class FlopCounts:
    """FLOPs of one eager forward + backward, counted once per side, model, patch dropout and batch."""

    def __init__(self) -> None:
        self.counts: dict[tuple, float] = {}

    def get(self, key: tuple, forward_backward_once: Callable[[], None]) -> float:
        if key not in self.counts:
            with FlopCounterMode(display=False) as counter:
                forward_backward_once()
            self.counts[key] = counter.get_total_flops()
        return self.counts[key]


def measure_ours(case: Case, setup: Setup, device: torch.device, flops: FlopCounts, steps: int) -> Row:
    cfg = model_config(setup, case.model, case.patch_drop)
    torch.manual_seed(0)
    with torch.device(device):
        model = build_model(cfg.model, cfg.loss, vocab_size=VOCAB[case.model], pad_id=0)
    optimizer = build_optimizer(model, cfg.optim)
    images, tokens = synthetic_batch(cfg, VOCAB[case.model], case.batch, device)
    autocast = autocast_for("bf16", device)
    flop = flops.get(("ours", case.model, case.patch_drop, case.batch),
                     partial(_forward_backward_once, model, cfg, device, case.batch, VOCAB[case.model]))
    forward = compiled_forward(setup.backend) if case.compiled else forward_and_loss
    clock = StepClock(device)
    clock.mark()
    for _ in range(setup.warmup_steps + steps):
        train_step(model, model, optimizer, images, tokens, cfg.optim.lr, autocast, clip_grad=cfg.optim.clip_grad,
                   forward=forward)
        clock.mark()
    median, compile_s = median_and_compile(clock.seconds(), setup.warmup_steps, case.compiled)
    return Row("ours", case.model, "compiled" if case.compiled else "eager", case.patch_drop, case.batch, "synthetic",
               median, flop / 1e12, peak_memory_gib(device), compile_s)


def _forward_backward_once(model: torch.nn.Module, cfg: Config, device: torch.device, batch: int, vocab: int) -> None:
    """Our step's forward and backward on a synthetic batch, for the FLOP count; the gradients are dropped."""
    images, tokens = synthetic_batch(cfg, vocab, batch, device)
    forward_backward(model, model, images, tokens, autocast_for("bf16", device))
    model.zero_grad(set_to_none=True)


class MarkedBatches:
    """The `data["train"]` object OpenCLIP's train_one_epoch iterates: the same batch `steps` times, a clock mark
    at each step boundary (when the next batch is asked for, and after the last step)."""

    def __init__(self, images: torch.Tensor, tokens: torch.Tensor, steps: int, clock: StepClock):
        self.batch, self.num_batches, self.num_samples = (images, tokens), steps, steps * images.shape[0]
        self.clock, self.dataloader = clock, self

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        for _ in range(self.num_batches):
            self.clock.mark()
            yield self.batch
        self.clock.mark()


def openclip_model(case: Case, setup: Setup, device: torch.device) -> torch.nn.Module:
    """OpenCLIP's own model, random weights (nothing downloaded); the dry run's has OpenCLIP's tiny towers."""
    import open_clip

    name = OPENCLIP_MODELS[case.model]
    shrunk: dict[str, Any] = {}
    if setup.tiny_openclip:
        text = {**open_clip.get_model_config(name)["text_cfg"], **OPENCLIP_TINY_TEXT}
        shrunk = {"embed_dim": 32, "text_cfg": text,
                  "vision_cfg": {**OPENCLIP_TINY_VISION, "patch_dropout": case.patch_drop}}
    return open_clip.create_model(name, device=device, output_dict=True,
                                  force_patch_dropout=case.patch_drop or None, **shrunk)


def openclip_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.AdamW:
    """open_clip_train/main.py's parameter groups (no decay on gains, biases, logit_scale), our hyper-parameters."""
    exempt = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for n, p in named if exempt(n, p)], "weight_decay": 0.0},
                              {"params": [p for n, p in named if not exempt(n, p)],
                               "weight_decay": torch_weight_decay(cfg.optim)}],
                             lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)


def measure_openclip(case: Case, setup: Setup, device: torch.device, flops: FlopCounts, steps: int) -> Row:
    from open_clip.loss import ClipLoss, SigLipLoss
    from open_clip_train.scheduler import cosine_lr
    from open_clip_train.train import train_one_epoch

    cfg = model_config(setup, case.model, case.patch_drop)  # the same hyper-parameters and pixel statistics as ours
    torch.manual_seed(0)
    model = openclip_model(case, setup, device)
    optimizer = openclip_optimizer(model, cfg)
    loss = SigLipLoss(rank=0, world_size=1) if cfg.loss["name"] == "siglip" else ClipLoss(rank=0, world_size=1)
    uint8_images, tokens = synthetic_batch(cfg, VOCAB[case.model], case.batch, device)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (cfg.model.image.mean, cfg.model.image.std))
    images = (uint8_images.float() / 255 - mean) / std  # what OpenCLIP's loader workers hand its step
    del uint8_images

    def forward_backward_once() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            total = sum(loss(**model(images, tokens), output_dict=True).values())
        total.backward()
        model.zero_grad(set_to_none=True)

    flop = flops.get(("OpenCLIP", case.model, case.patch_drop, case.batch), forward_backward_once)
    args = Namespace(device=str(device), precision="amp_bf16", accum_freq=1, distill=False, skip_scheduler=False,
                     grad_clip_norm=cfg.optim.clip_grad, horovod=False, log_every_n_steps=10**9, world_size=1,
                     rank=0, local_rank=0, wandb=False, batch_size=case.batch, save_logs=False)
    scheduler = cosine_lr(optimizer, cfg.optim.lr, cfg.optim.warmup_steps, 10**6)
    stepped = torch.compile(model, backend=setup.backend) if case.compiled else model
    clock = StepClock(device)
    batches = MarkedBatches(images, tokens, setup.warmup_steps + steps, clock)
    train_one_epoch(stepped, {"train": batches}, loss, 0, optimizer, None, scheduler, None, args)
    median, compile_s = median_and_compile(clock.seconds(), setup.warmup_steps, case.compiled)
    return Row("OpenCLIP", case.model, "compiled" if case.compiled else "eager", case.patch_drop, case.batch,
               "synthetic", median, flop / 1e12, peak_memory_gib(device), compile_s)


def measure_with_loader(model_name: str, setup: Setup, device: torch.device, flops: FlopCounts) -> Row:
    """Our eager step fed by the training loop's loader, timed as the loop times it: the wait for each batch."""
    with tempfile.TemporaryDirectory() as tmp:
        pattern = write_jpeg_shards(Path(tmp), setup.loader_samples)
        captions = [f"a {c} blur number {i}" for c in COLOURS for i in range(200)]
        cfg = model_config(setup, model_name, 0.0, f"data.shards={pattern}", f"data.workers={setup.loader_workers}",
                           f"train.batch_size={setup.batch}")
        tokenizer = Tokenizer.from_file(train_bpe(captions, 512, Path(tmp) / "tokenizer.json"),
                                        context_length=cfg.model.text.context_length)
        torch.manual_seed(0)
        with torch.device(device):
            model = build_model(cfg.model, cfg.loss, vocab_size=max(VOCAB[model_name], tokenizer.vocab_size),
                                pad_id=tokenizer.pad_id)
        optimizer = build_optimizer(model, cfg.optim)
        autocast = autocast_for("bf16", device)
        batches = iter(train_loader(cfg, tokenizer, rank=0, world_size=1))

        def step() -> float:
            """One step; the seconds spent waiting for its batch."""
            asked = time.perf_counter()
            batch = next(batches)
            waited = time.perf_counter() - asked
            images = batch.images.to(device, non_blocking=True)
            tokens = batch.tokens.to(device, non_blocking=True)
            train_step(model, model, optimizer, images, tokens, cfg.optim.lr, autocast,
                       clip_grad=cfg.optim.clip_grad)
            return waited

        for _ in range(setup.loader_workers + 2):  # every worker's first batch, the shuffle buffers' filling
            step()
        synchronize(device)
        started = time.perf_counter()
        waited = sum(step() for _ in range(setup.loader_steps))
        synchronize(device)
        elapsed = time.perf_counter() - started
        batches.close()  # its workers stop before the shards go
    # The step is the synthetic row's; counted here only if that row did not run.
    flop = flops.get(("ours", model_name, 0.0, setup.batch), partial(_forward_backward_once, model, cfg, device,
                                                                    setup.batch, VOCAB[model_name]))
    return Row("ours", model_name, "eager", 0.0, setup.batch,
               f"StreamLoader, {setup.loader_workers} workers, {SOURCE_PX} px JPEG", elapsed / setup.loader_steps,
               flop / 1e12, peak_memory_gib(device), data_wait=waited / elapsed)


def largest_batch(measure: Callable[[int], Row], known_fit: Optional[Row], start: int, cap: int,
                  deadline: Deadline, on_free: Callable[[], None]) -> Optional[Row]:
    """Doubling the batch until one runs out of memory: the last that fit, measured, with how the search ended in
    `largest`. `known_fit` is the row already measured at `start`; the search goes on from twice it. None if not
    even `start` fits."""
    best, batch, probe_s = known_fit, start * 2 if known_fit else start, 0.0
    ended = f"stopped at the cap, {cap}"
    while batch <= cap:
        if best is not None and not deadline.allows(2.5 * probe_s):  # the next probe does twice the work
            ended = f"budget left no time to try {batch}"
            break
        started = time.monotonic()
        try:
            row: Optional[Row] = measure(batch)
        except torch.OutOfMemoryError:
            row = None
        on_free()  # after the except block: the error's traceback held the failed step's tensors
        if row is None:
            ended = f"{batch} ran out of memory"
            break
        best, probe_s, batch = row, time.monotonic() - started, batch * 2
    return dataclasses.replace(best, largest=ended) if best else None


@dataclass(frozen=True)
class Item:
    label: str
    kind: str  # which kind of measurement its cost is guessed from: eager, compiled, search, loader
    run: Callable[[], Optional[Row]]


def plan(setup: Setup, models: list[str], device: torch.device, flops: FlopCounts, rows: list[Row],
         deadline: Deadline, with_openclip: bool) -> list[Item]:
    """The measurements, most important first: what a short budget cuts is at the end."""
    measures = {"ours": measure_ours, "OpenCLIP": measure_openclip}
    sides = ["ours", "OpenCLIP"] if with_openclip else ["ours"]
    compiled_models = models[:setup.compiled_models]

    def fixed(side: str, model: str, compiled: bool, patch_drop: float) -> Item:
        case = Case(side, model, compiled, patch_drop, setup.batch)
        return Item(case.label, "compiled" if compiled else "eager",
                    partial(measures[side], case, setup, device, flops, setup.steps))

    def search(side: str, model: str, patch_drop: float) -> Item:
        case = Case(side, model, False, patch_drop, setup.batch)

        def measure(batch: int) -> Row:
            return measures[side](dataclasses.replace(case, batch=batch), setup, device, flops, setup.probe_steps)

        def run() -> Optional[Row]:
            known = next((r for r in rows if r.side == side and r.model == model and r.step == "eager"
                          and r.patch_drop == patch_drop and r.batch == setup.batch and r.data == "synthetic"), None)
            return largest_batch(measure, known, setup.batch, setup.max_batch, deadline,
                                 partial(free_device_memory, device))

        flip = f", FLIP {patch_drop}" if patch_drop else ""
        return Item(f"{side} {model} eager{flip}, largest batch", "search", run)

    items = [fixed(side, m, False, 0.0) for m in models for side in sides]
    items.append(Item(f"ours {models[0]} eager, batch {setup.batch}, StreamLoader", "loader",
                      partial(measure_with_loader, models[0], setup, device, flops)))
    items += [fixed("ours", m, True, 0.0) for m in compiled_models]
    items += [fixed(side, m, False, PATCH_DROP) for m in models for side in sides]
    items += [search(side, m, 0.0) for m in models for side in sides]
    items += [fixed("OpenCLIP", m, True, 0.0) for m in compiled_models if with_openclip]
    items += [fixed("ours", m, True, PATCH_DROP) for m in compiled_models]
    items += [search(side, m, PATCH_DROP) for m in models for side in sides]
    items += [fixed("OpenCLIP", m, True, PATCH_DROP) for m in compiled_models if with_openclip]
    return items


@dataclass
class Report:
    machine: dict[str, Any]
    budget_s: float
    peak_tflops: Optional[float] = None
    datasheet: Optional[tuple[str, float]] = None
    rows: list[Row] = field(default_factory=list)
    not_measured: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stopped: Optional[str] = None  # "budget", "SIGTERM", "SIGINT"; None when every measurement ran
    elapsed_s: float = 0.0

    def mfu(self, row: Row) -> tuple[Optional[float], Optional[float]]:
        """Against the measured matmul peak and against the datasheet's."""
        measured = row.tflops / self.peak_tflops if self.peak_tflops else None
        return measured, (row.tflops / self.datasheet[1] if self.datasheet else None)

    def counterpart(self, row: Row) -> Optional[Row]:
        if row.side != "ours":
            return None
        return next((r for r in self.rows if r.side == "OpenCLIP" and r.counterpart_key() == row.counterpart_key()),
                    None)

    def ratios(self, row: Row) -> tuple[Optional[float], Optional[float]]:
        """Ours over OpenCLIP: samples/s, and peak memory."""
        peer = self.counterpart(row)
        if peer is None:
            return None, None
        memory = row.peak_memory_gib / peer.peak_memory_gib if row.peak_memory_gib and peer.peak_memory_gib else None
        return row.samples_per_s / peer.samples_per_s, memory

    def to_json(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            mfu_measured, mfu_datasheet = self.mfu(row)
            speed, memory = self.ratios(row)
            rows.append({**dataclasses.asdict(row), "samples_per_s": row.samples_per_s, "tflops": row.tflops,
                         "mfu_measured_peak": mfu_measured, "mfu_datasheet_peak": mfu_datasheet,
                         "ours_over_openclip_samples_per_s": speed, "ours_over_openclip_peak_memory": memory})
        return {"machine": self.machine, "peak_bf16_tflops_measured": self.peak_tflops,
                "peak_bf16_tflops_datasheet": self.datasheet[1] if self.datasheet else None,
                "datasheet_entry": self.datasheet[0] if self.datasheet else "unknown", "budget_s": self.budget_s,
                "elapsed_s": self.elapsed_s, "complete": self.stopped is None and not self.failed,
                "stopped": self.stopped, "rows": rows, "not_measured": self.not_measured, "failed": self.failed}

    def markdown(self) -> str:
        m = self.machine
        peak = f"{self.peak_tflops:.3g} TFLOP/s measured ({m['matmul']})" if self.peak_tflops else "not measured"
        sheet = f"{self.datasheet[1]:.0f} TFLOP/s datasheet ({self.datasheet[0]})" if self.datasheet else \
            "datasheet: unknown for this device"
        status = ("every measurement ran" if self.stopped is None else
                  f"stopped ({self.stopped}) after {self.elapsed_s:.0f} s: the rows below are what was measured")
        lines = [f"# Training step on {m['device_name']}{' (dry run: tiny towers on CPU)' if m['dry_run'] else ''}",
                 "", f"torch {m['torch']}, {m['device']}, bf16 autocast, compiled rows: torch.compile backend "
                 f"{m['backend']}; {m['cpus']} CPUs. Dense bf16 peak: {peak}; {sheet}.",
                 f"Budget {self.budget_s:.0f} s, {self.elapsed_s:.0f} s used; {status}.", "",
                 "| side | model | step | FLIP | batch | data | step ms | samples/s | peak GiB | TFLOP/step | TFLOP/s "
                 "| MFU (measured peak) | MFU (datasheet) | compile s | data wait | ours/OpenCLIP samples/s "
                 "| ours/OpenCLIP memory |", "|" + "---|" * 6 + "---:|" * 11]
        for row in self.rows:
            mfu_measured, mfu_datasheet = self.mfu(row)
            speed, memory = self.ratios(row)
            batch = f"{row.batch} (largest; {row.largest})" if row.largest else str(row.batch)
            cells = [row.side, row.model, row.step, f"{row.patch_drop:g}" if row.patch_drop else "-", batch, row.data,
                     _fmt(1e3 * row.s_per_step, ".1f"), _fmt(row.samples_per_s, ",.0f"),
                     _fmt(row.peak_memory_gib, ".1f"), _fmt(row.tflop_per_step, ".3g"), _fmt(row.tflops, ".3g"),
                     _fmt(mfu_measured, ".0%"), _fmt(mfu_datasheet, ".0%"), _fmt(row.compile_s, ".1f"),
                     _fmt(row.data_wait, ".1%"), _fmt(speed, ".2f"), _fmt(memory, ".2f")]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""] + self._loader_reading()
        lines += [f"- not measured: {note}" for note in self.not_measured]
        lines += [f"- failed: {note}" for note in self.failed]
        return "\n".join(lines).rstrip() + "\n"

    def _loader_reading(self) -> list[str]:
        fed = next((r for r in self.rows if r.data != "synthetic"), None)
        synthetic = fed and next((r for r in self.rows if r.data == "synthetic" and r.side == "ours"
                                  and (r.model, r.step, r.patch_drop, r.batch, r.largest)
                                  == (fed.model, fed.step, fed.patch_drop, fed.batch, None)), None)
        if not fed or not synthetic:
            return []
        return [f"- real loader: {fed.samples_per_s:,.0f} samples/s, {fed.samples_per_s / synthetic.samples_per_s:.0%}"
                f" of the same step on synthetic batches; {fed.data_wait:.1%} of the time waiting for data"]

    def write(self, out: Path) -> None:
        """Both files, each replaced whole (a stop while writing leaves the previous version)."""
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (("gpu.json", json.dumps(self.to_json(), indent=1) + "\n"), ("gpu.md", self.markdown())):
            partial_file = out / f".{name}.partial"
            partial_file.write_text(text)
            os.replace(partial_file, out / name)


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def openclip_missing() -> Optional[str]:
    """Why OpenCLIP's rows cannot be measured, or None when open_clip and open_clip_train import."""
    try:
        import open_clip  # noqa: F401
        import open_clip_train.train  # noqa: F401
    except ImportError as e:
        return f"OpenCLIP's rows: open-clip-torch does not import here ({e})"
    return None


def run(items: list[Item], setup: Setup, report: Report, deadline: Deadline, device: torch.device,
        out: Path) -> None:
    """Each item in turn while the budget allows what its kind of measurement took so far (at first, a guess)."""
    expected, seen = dict(setup.first_guess_s), set()
    for index, item in enumerate(items):
        done = False
        try:
            if not deadline.allows(expected[item.kind]):
                raise Stopped("budget")
            started = time.monotonic()
            row = _measured(item, report, device)
            took = time.monotonic() - started
            expected[item.kind] = max(expected[item.kind], took) if item.kind in seen else took
            seen.add(item.kind)
            done = True
            if row is not None:
                report.rows.append(row)
                print(f"{item.label}: {row.samples_per_s:,.1f} samples/s, {1e3 * row.s_per_step:.1f} ms/step "
                      f"({took:.0f} s)", flush=True)
            report.elapsed_s = deadline.elapsed()
            report.write(out)
        except Stopped as stop:
            report.stopped = stop.reason
            report.not_measured += [f"{left.label} ({stop.reason})" for left in items[index + done:]]
            return


def _measured(item: Item, report: Report, device: torch.device) -> Optional[Row]:
    """The item's row; None, with the reason in the report, where it failed or found no batch that fits."""
    try:
        row = item.run()
    except Exception as e:  # noqa: BLE001 - one failed measurement must not lose the others
        traceback.print_exc()
        report.failed.append(f"{item.label}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return None
    finally:
        free_device_memory(device)
    if row is None:
        report.not_measured.append(f"{item.label}: not even the first batch fits")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu.json and gpu.md")
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="seconds from the start of main; what is measured by then is written (default 240)")
    parser.add_argument("--models", nargs="+", choices=list(OPENCLIP_MODELS), default=list(OPENCLIP_MODELS))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny towers, batch 4, backend aot_eager")
    parser.add_argument("--backend", help="torch.compile backend for the compiled rows (default: inductor; "
                        "aot_eager in a dry run)")
    args = parser.parse_args()
    deadline = Deadline(args.budget_s)
    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # tiny ops: a second thread only spins, 100x slower on a loaded 2-core machine
    elif torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        raise SystemExit(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: there is none, or its "
                         "driver is older than that CUDA needs (nvidia-smi shows the driver's). `python "
                         "benchmarks/gpu.py --dry-run --out DIR` runs the tiny CPU version")
    stop_on_signals(args.budget_s)
    setup = DRY_RUN if args.dry_run else GPU
    if args.backend:
        setup = dataclasses.replace(setup, backend=args.backend)
    report = Report(machine={"device_name": device_name(device), "device": str(device), "torch": torch.__version__,
                             "cuda": torch.version.cuda, "cpus": os.cpu_count(), "dry_run": args.dry_run,
                             "backend": setup.backend, "matmul": f"{setup.matmul_size}^3 bf16, mean of 10",
                             "python": sys.version.split()[0]},
                    budget_s=args.budget_s, datasheet=datasheet_peak(device_name(device)))
    with tempfile.TemporaryDirectory(prefix="bench-gpu-compile-cache-") as cache:
        for variable in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # cold compiles, as on a fresh machine
            os.environ[variable] = str(Path(cache) / variable.lower())
        items: list[Item] = []
        try:
            missing = openclip_missing()
            if missing:
                report.not_measured.append(missing)
            else:
                logging.disable(logging.INFO)  # OpenCLIP's create_model and train_one_epoch narrate each step
                logging.getLogger().addFilter(lambda record: "No pretrained weights loaded" not in record.getMessage())
            if setup.compiled_models is not None and len(args.models) > setup.compiled_models:
                report.not_measured.append(f"compiled rows of {', '.join(args.models[setup.compiled_models:])} "
                                           "(a dry run compiles the first model's only)")
            items = plan(setup, args.models, device, FlopCounts(), report.rows, deadline, missing is None)
            report.peak_tflops = matmul_tflops(device, setup.matmul_size)
            free_device_memory(device)
            run(items, setup, report, deadline, device, args.out)  # a stop from here on, run notes itself
        except Stopped as stop:
            report.stopped = stop.reason
            unmeasured = ([] if report.peak_tflops else ["the bf16 matmul peak"]) + [item.label for item in items]
            report.not_measured += [f"{label} ({stop.reason})" for label in unmeasured]
        stop_no_more()
    report.elapsed_s = deadline.elapsed()
    report.write(args.out)
    print("\n" + report.markdown(), flush=True)
    if report.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
