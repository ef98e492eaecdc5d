"""OpenCLIP's side of benchmarks/versus_openclip.py: run as a script by the peer venv's Python (it imports
open_clip, which the project never does, and nothing of the project). It reads one JSON request per line on
stdin and answers one JSON line on stdout, so the two sides alternate in one run without restarting.

Every figure goes through OpenCLIP's own code path: `open_clip.model.CLIP` built from a model config dict,
its ClipLoss / SigLipLoss, the AdamW parameter groups and cosine schedule of open_clip_train/main.py, and
`open_clip_train.train.train_one_epoch` over in-memory batches; zero-shot is `build_zero_shot_classifier` with
OpenCLIP's tokenizer plus `open_clip_train.zero_shot.run`; retrieval metrics are `get_clip_metrics`.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from argparse import Namespace
from typing import Any

import torch
from open_clip.loss import ClipLoss, SigLipLoss
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transform import image_transform
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from open_clip_train.data import get_wds_dataset
from open_clip_train.scheduler import cosine_lr
from open_clip_train.train import get_clip_metrics, train_one_epoch
import open_clip_train.zero_shot
from open_clip_train.zero_shot import run as zero_shot_run
from versus_openclip_inputs import retrieval_embeddings, synthetic_batch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISION = {"fp32": "fp32", "bf16": "amp_bf16"}  # OpenCLIP's --precision for our fp32 / bf16 autocast


def build(spec: dict[str, Any], loss: str) -> CLIP:
    image, text = spec["image"], spec["text"]
    vision = CLIPVisionCfg(layers=image["depth"], width=image["width"], head_width=image["width"] // image["heads"],
                           mlp_ratio=image["mlp_ratio"], patch_size=image["patch_size"], image_size=image["image_size"])
    text_cfg = CLIPTextCfg(context_length=text["context_length"], vocab_size=text["vocab"], width=text["width"],
                           heads=text["heads"], layers=text["depth"], mlp_ratio=text["mlp_ratio"])
    siglip = loss == "siglip"
    return CLIP(embed_dim=spec["embed_dim"], vision_cfg=vision, text_cfg=text_cfg, output_dict=True,
                init_logit_scale=math.log(10) if siglip else math.log(1 / 0.07),
                init_logit_bias=-10.0 if siglip else None)


def normalised(images: torch.Tensor) -> torch.Tensor:
    """What OpenCLIP's data pipeline hands the model (ToTensor + Normalize happen in the loader workers)."""
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def optimizer_for(model: CLIP, optim: dict[str, Any]) -> torch.optim.AdamW:
    """open_clip_train/main.py's parameter groups: no decay on gains, biases and logit_scale."""
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = list(model.named_parameters())
    no_decay = [p for n, p in named if exclude(n, p) and p.requires_grad]
    decay = [p for n, p in named if not exclude(n, p) and p.requires_grad]
    return torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                              {"params": decay, "weight_decay": optim["weight_decay"]}],
                             lr=optim["lr"], betas=tuple(optim["betas"]), eps=optim["eps"])


class InMemory:
    """The `data["train"]` object train_one_epoch expects, yielding the same batch `steps` times."""

    def __init__(self, images: torch.Tensor, tokens: torch.Tensor, steps: int):
        self.batch, self.num_batches, self.num_samples = (images, tokens), steps, steps * images.shape[0]
        self.dataloader = self

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        return iter([self.batch] * self.num_batches)


def trainer(req: dict[str, Any]) -> tuple[CLIP, torch.optim.AdamW, torch.nn.Module, Namespace, Any]:
    """Model, optimizer, loss, args and schedule as open_clip_train/main.py sets them up for train_one_epoch."""
    torch.manual_seed(0)
    model = build(req["spec"], req["loss"])
    optimizer = optimizer_for(model, req["optim"])
    loss = SigLipLoss(rank=0, world_size=1) if req["loss"] == "siglip" else ClipLoss(rank=0, world_size=1)
    args = Namespace(device="cpu", precision=PRECISION[req["precision"]], accum_freq=1, distill=False,
                     skip_scheduler=False, grad_clip_norm=req["optim"]["clip_grad"], horovod=False,
                     log_every_n_steps=10**9, world_size=1, rank=0, local_rank=0, wandb=False,
                     batch_size=req["batch"], save_logs=False)
    scheduler = cosine_lr(optimizer, req["optim"]["lr"], req["optim"]["warmup_steps"], 10**6)
    return model, optimizer, loss, args, scheduler


def train_step(req: dict[str, Any]) -> dict[str, float]:
    model, optimizer, loss, args, scheduler = trainer(req)
    images, tokens = synthetic_batch(req["spec"], req["batch"])
    steps = req["steps"]
    images = normalised(images)
    train_one_epoch(model, {"train": InMemory(images, tokens, 1)}, loss, 0, optimizer, None, scheduler, None, args)
    start = time.perf_counter()
    train_one_epoch(model, {"train": InMemory(images, tokens, steps)}, loss, 1, optimizer, None, scheduler, None, args)
    return {"s_per_step": (time.perf_counter() - start) / steps}


def train_with_data(req: dict[str, Any]) -> dict[str, float]:
    """OpenCLIP's own webdataset pipeline (get_wds_dataset, as --dataset-type webdataset builds it) feeding
    train_one_epoch, or alone when req["train"] is false; the first `warmup` batches (worker start-up, shuffle
    buffer fill) are not timed."""
    data_args = Namespace(train_data=req["shards"], train_num_samples=(req["warmup"] + req["steps"]) * req["batch"],
                          dataset_resampled=False, train_data_upsampling_factors=None, seed=0,
                          workers=req["workers"], batch_size=req["batch"], world_size=1)
    preprocess = image_transform(req["image_size"], is_train=True, mean=OPENAI_MEAN, std=OPENAI_STD)
    tokenizer = SimpleTokenizer(context_length=req["spec"]["text"]["context_length"])
    data = get_wds_dataset(data_args, preprocess, is_train=True, tokenizer=tokenizer)
    timed = TimedBatches(data.dataloader, data.dataloader.num_batches, data.dataloader.num_samples)
    if req["train"]:
        model, optimizer, loss, args, scheduler = trainer(req)
        train_one_epoch(model, {"train": timed}, loss, 0, optimizer, None, scheduler, None, args)
    else:
        for _ in timed:
            pass
    return timed.figures(req["warmup"])


class TimedBatches:
    """A loader for train_one_epoch that notes when each batch was asked for and when it came
    (the project's side times its loader the same way, in versus_openclip.train_with_data)."""

    def __init__(self, loader: Any, num_batches: int, num_samples: int):
        self.loader, self.num_batches, self.num_samples, self.dataloader = loader, num_batches, num_samples, self
        self.asked: list[float] = []
        self.arrived: list[float] = []

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        batches = iter(self.loader)
        for _ in range(self.num_batches):
            self.asked.append(time.perf_counter())
            batch = next(batches)
            self.arrived.append(time.perf_counter())
            yield batch
        self.asked.append(time.perf_counter())

    def figures(self, warmup: int) -> dict[str, float]:
        elapsed = self.asked[-1] - self.asked[warmup]
        waited = sum(got - asked for asked, got in zip(self.asked[warmup:], self.arrived[warmup:]))
        return {"s_per_step": elapsed / (self.num_batches - warmup), "data_wait": waited / elapsed}


def zeroshot(req: dict[str, Any]) -> dict[str, float]:
    torch.manual_seed(0)
    model = build(req["spec"], "clip").eval()
    images, _ = synthetic_batch(req["spec"], req["images"])
    labels = torch.arange(req["images"]) % len(req["classnames"])
    batches = list(zip(normalised(images).split(req["batch"]), labels.split(req["batch"])))
    tokenizer = SimpleTokenizer(context_length=req["spec"]["text"]["context_length"])
    args = Namespace(device="cpu", precision=PRECISION[req["precision"]], batch_size=req["batch"])
    logging.disable(logging.INFO)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=req["precision"] == "bf16"):
        templates = [t.replace("{c}", "{}") for t in req["templates"]]  # our class slot -> str.format's
        classifier = build_zero_shot_classifier(model, tokenizer, req["classnames"], templates)
    zero_shot_run(model, classifier, batches, args)
    return {"s": time.perf_counter() - start}


def _accuracy(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1,)) -> list[float]:
    """open_clip_train.zero_shot.accuracy's computation; its `float(numpy array of shape [1])` fails on NumPy 2."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() for k in topk]


open_clip_train.zero_shot.accuracy = _accuracy


def retrieval(req: dict[str, Any]) -> dict[str, float]:
    image, text = retrieval_embeddings(req["n"], req["dim"])
    start = time.perf_counter()
    get_clip_metrics(image, text, torch.tensor(100.0))
    return {"s": time.perf_counter() - start}


TASKS = {"train_step": train_step, "train_with_data": train_with_data, "zeroshot": zeroshot, "retrieval": retrieval}


def main() -> None:
    logging.disable(logging.INFO)
    for line in sys.stdin:
        req = json.loads(line)
        print(json.dumps(TASKS[req["task"]](req)), flush=True)


if __name__ == "__main__":
    main()
