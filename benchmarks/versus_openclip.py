"""Side by side with OpenCLIP (open-clip-torch 3.3.0): `make bench-peers`, or

    .venv/bin/python benchmarks/versus_openclip.py --peer-python .venv-peers/bin/python [--quick]

Two long-lived processes, this project's (`--serve`) and OpenCLIP's (benchmarks/openclip_side.py, run by the
peer venv's Python), answer the same JSON requests in turn, so every pair of figures is measured in one run
under the same machine load, alternating, best of `--rounds`. Identical work on both sides:
- training step on synthetic in-memory batches (same tensors: same seed, same torch): model + loss + AdamW
  (same hyper-parameters, gradient clipping at optim.clip_grad) + each codebase's per-step loop overhead; the
  model shapes of our config, built for OpenCLIP as a model config dict; fp32 and bf16 autocast
  (OpenCLIP's --precision amp_bf16); CLIP and SigLIP losses. Ours is the loop's own contrastive.step.train_step,
  OpenCLIP's is its own open_clip_train.train.train_one_epoch;
- zero-shot classification end to end on in-memory images (classifier from class prompts with each codebase's
  tokenizer, image encoding, logits, metrics) with the tiny model;
- retrieval metrics (logits, ranks, R@k both ways) on the same unit-norm embeddings.
Our step's FLOPs are counted (torch.utils.flop_counter) and set against the measured matmul peak per dtype.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from contrastive.config import Config, load_config
from contrastive.image_tower import ImageTower
from contrastive.logger import TrainLogger
from contrastive.model import build_model
from contrastive.optim import build_optimizer
from contrastive.schedule import lr_at
from contrastive.step import autocast_dtype, autocast_for, forward_backward, train_step
from data.loader import StreamLoader
from data.tokenizer import Tokenizer, train_bpe
from eval.metrics import retrieval_metrics
from eval.prompts import fill, imagenet_classnames, template_set
from eval.runtime import Runtime
from eval.zeroshot import ClassificationSet, evaluate_zeroshot
from loader_throughput import OUTPUT_PX, SOURCE_PX, write_jpeg_shards
from training_throughput import matmul_peak_gflops
from versus_openclip_inputs import retrieval_embeddings, synthetic_batch

CLIP_VOCAB = 49408  # OpenCLIP's tokenizer emits CLIP's ids, so where it tokenizes both models get CLIP's vocabulary
# (config, global batch, vocabulary): the demo's tiny towers and ViT-B/32 with CLIP's vocabulary.
MODELS = (("demo", 128, 4096), ("clip_b32", 16, CLIP_VOCAB))
PRECISIONS = ("fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LOSSES = ("clip", "siglip")
ZEROSHOT_CLASSES, ZEROSHOT_IMAGES, EVAL_BATCH = 100, 1024, 256
RETRIEVAL_N, RETRIEVAL_DIM = 5000, 512
DATA_WARMUP_STEPS, DATA_STEPS = 4, 20
OPENCLIP_SHUFFLE_INITIAL = 1000  # open_clip_train.data's sample shuffle buffer starts at 1000 (grows to 5000)


def spec(cfg: Config, vocab: int) -> dict[str, Any]:
    """Our model's shapes as plain data, for OpenCLIP's side to build the same model (a ViT: OpenCLIP's own)."""
    with torch.device("meta"):
        vit = ImageTower(cfg.model.image, cfg.model.embed_dim).trunk
    text = cfg.model.text
    return {"embed_dim": cfg.model.embed_dim,
            "image": {"image_size": cfg.model.image.image_size, "patch_size": vit.patch_embed.patch_size[0],
                      "width": vit.embed_dim, "depth": len(vit.blocks), "heads": vit.blocks[0].attn.num_heads,
                      "mlp_ratio": vit.blocks[0].mlp.fc1.out_features / vit.embed_dim},
            "text": {**{k: getattr(text, k) for k in ("context_length", "width", "depth", "heads", "mlp_ratio")},
                     "vocab": vocab}}


class OurStep:
    """The per-step work of contrastive.train._loop on one process, minus data loading and checkpoints."""

    def __init__(self, req: dict[str, Any], log_dir: Path, pad_id: int = 0):
        self.cfg = cfg = load_config(req["config"], [f"loss.name={req['loss']}"])
        torch.manual_seed(0)
        self.model = build_model(cfg.model, cfg.loss, vocab_size=req["spec"]["text"]["vocab"], pad_id=pad_id)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.autocast = autocast_for(req["precision"], torch.device("cpu"))
        self.logger = TrainLogger(log_dir, enabled=False, total_steps=10**6, global_batch=req["batch"])

    def __call__(self, index: int, images: torch.Tensor, tokens: torch.Tensor) -> None:
        optim = self.cfg.optim
        lr = lr_at(index, optim.lr, optim.warmup_steps, 10**6, optim.min_lr_ratio)
        result = train_step(self.model, self.model, self.optimizer, images, tokens, lr, self.autocast,
                            clip_grad=optim.clip_grad)
        self.logger.update(result.metrics, 0.0, result.skipped)

    def gflop(self, images: torch.Tensor, tokens: torch.Tensor) -> float:
        with FlopCounterMode(display=False) as counter:
            forward_backward(self.model, self.model, images, tokens, self.autocast)
        return counter.get_total_flops() / 1e9


def synthetic_train_step(req: dict[str, Any]) -> dict[str, float]:
    images, tokens = synthetic_batch(req["spec"], req["batch"])
    with tempfile.TemporaryDirectory() as tmp:
        step = OurStep(req, Path(tmp))
        step(0, images, tokens)
        start = time.perf_counter()
        for index in range(1, req["steps"] + 1):
            step(index, images, tokens)
        seconds = (time.perf_counter() - start) / req["steps"]
    return {"s_per_step": seconds, "gflop_per_step": step.gflop(images, tokens)}


def train_with_data(req: dict[str, Any]) -> dict[str, float]:
    """Our StreamLoader feeding our step (or alone when req["train"] is false), timed as the OpenCLIP side times
    its webdataset pipeline: when each batch was asked for and when it came; the first `warmup` batches (worker
    start-up, shuffle buffer fill) are not timed."""
    cfg = load_config(req["config"], [])
    tokenizer = Tokenizer.from_file(req["tokenizer"], context_length=cfg.model.text.context_length)
    loader = StreamLoader([req["shards"]], tokenizer, batch_size=req["batch"], image_size=req["image_size"],
                          crop_scale=tuple(cfg.data.crop_scale), shuffle_buffer=OPENCLIP_SHUFFLE_INITIAL,
                          workers=req["workers"])
    asked, arrived = [], []
    with tempfile.TemporaryDirectory() as tmp:
        step = OurStep(req, Path(tmp), pad_id=tokenizer.pad_id) if req["train"] else None
        batches = iter(loader)
        for index in range(req["warmup"] + req["steps"]):
            asked.append(time.perf_counter())
            batch = next(batches)
            arrived.append(time.perf_counter())
            if step is not None:
                step(index, batch.images, batch.tokens)
        asked.append(time.perf_counter())
    elapsed = asked[-1] - asked[req["warmup"]]
    waited = sum(got - ask for ask, got in zip(asked[req["warmup"]:], arrived[req["warmup"]:]))
    return {"s_per_step": elapsed / req["steps"], "data_wait": waited / elapsed}


def zeroshot(req: dict[str, Any]) -> dict[str, float]:
    cfg = load_config(req["config"], [])
    with tempfile.TemporaryDirectory() as tmp:
        prompts = [fill(t, c) for c in req["classnames"] for t in req["templates"]]
        path = train_bpe(prompts, vocab_size=req["spec"]["text"]["vocab"], out_path=Path(tmp) / "tokenizer.json")
        tokenizer = Tokenizer.from_file(str(path), context_length=cfg.model.text.context_length)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss, vocab_size=req["spec"]["text"]["vocab"], pad_id=tokenizer.pad_id).eval()
    images, _ = synthetic_batch(req["spec"], req["images"])
    labels = [i % len(req["classnames"]) for i in range(req["images"])]
    data = ClassificationSet(Path("in-memory"), req["classnames"], req["templates"], list(zip(images, labels)),
                             req["images"])
    runtime = Runtime(torch.device("cpu"), batch_size=req["batch"], workers=0,
                      autocast_dtype=autocast_dtype(req["precision"]))
    start = time.perf_counter()
    evaluate_zeroshot(model, tokenizer, data, runtime)
    return {"s": time.perf_counter() - start}


def retrieval(req: dict[str, Any]) -> dict[str, float]:
    image, text = retrieval_embeddings(req["n"], req["dim"])
    start = time.perf_counter()
    retrieval_metrics(100.0 * image @ text.T, torch.arange(req["n"]))
    return {"s": time.perf_counter() - start}


TASKS = {"train_step": synthetic_train_step, "train_with_data": train_with_data, "zeroshot": zeroshot,
         "retrieval": retrieval}


def serve() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        print(json.dumps(TASKS[req["task"]](req)), flush=True)


class Side:
    def __init__(self, name: str, command: list[str]):
        self.name = name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, req: dict[str, Any]) -> dict[str, float]:
        self.process.stdin.write(json.dumps(req) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} side exited (code {self.process.wait()}) on request {req['task']}")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def best_of(sides: tuple[Side, Side], req: dict[str, Any], rounds: int, key: str) -> list[dict[str, float]]:
    """Each side's fastest answer over `rounds` alternating rounds (the order flips every round)."""
    best: list[dict[str, float] | None] = [None, None]
    for r in range(rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            answer = sides[i].ask(req)
            if best[i] is None or answer[key] < best[i][key]:
                best[i] = answer
    return best  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default=".venv-peers/bin/python")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the tiny model only (no ViT-B/32 rows)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    models = MODELS[:1] if args.quick else MODELS
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MFU against the matmul peak (2048^2) "
          "measured right after each row's timings", flush=True)
    here = Path(__file__).resolve()
    sides = (Side("ours", [sys.executable, str(here), "--serve"]),
             Side("OpenCLIP", [args.peer_python, str(here.with_name("openclip_side.py"))]))
    try:
        print(f"{'training step':<30}{'ours/OpenCLIP':>14}{'ours samples/s':>16}{'OpenCLIP samples/s':>20}"
              f"{'our GFLOP/s':>13}{'our MFU':>9}{'peak':>7}", flush=True)
        for name, batch, vocab in models:
            model_spec = spec(load_config(name, []), vocab)
            for precision in PRECISIONS:
                for loss in LOSSES:
                    req = {"task": "train_step", "config": name, "spec": model_spec, "batch": batch, "loss": loss,
                           "precision": precision, "steps": args.steps, "optim": _optim(name)}
                    ours, peer = best_of(sides, req, args.rounds, "s_per_step")
                    gflops = ours["gflop_per_step"] / ours["s_per_step"]
                    peak = matmul_peak_gflops(DTYPES[precision])  # the machine's load drifts: measure it here
                    print(f"{f'{name} b{batch} {precision} {loss}':<30}{peer['s_per_step'] / ours['s_per_step']:>14.2f}"
                          f"{batch / ours['s_per_step']:>16.1f}{batch / peer['s_per_step']:>20.1f}"
                          f"{gflops:>13.1f}{gflops / peak:>9.0%}{peak:>7.0f}", flush=True)
        _data_rows(sides, args.rounds)
        _eval_rows(sides, args.rounds)
    finally:
        for side in sides:
            side.close()


def _optim(name: str) -> dict[str, Any]:
    o = load_config(name, []).optim
    return {"lr": o.lr, "weight_decay": o.weight_decay, "betas": list(o.betas), "eps": o.eps,
            "warmup_steps": o.warmup_steps, "clip_grad": o.clip_grad}


def _data_rows(sides: tuple[Side, Side], rounds: int) -> None:
    """Each side's own loader, same shards and worker count: alone (the data pipeline) on the demo shards and on
    256 px JPEGs cropped to 224 px, then feeding the demo model's training step on the demo shards."""
    name, batch, _ = MODELS[0]
    cfg = load_config(name, [])
    if not Path(cfg.data.tokenizer).exists():
        raise SystemExit(f"{cfg.data.tokenizer} not found: build the demo shards first (make demo-data)")
    (demo_shards,) = cfg.data.shards
    base = {"task": "train_with_data", "config": name, "spec": spec(cfg, CLIP_VOCAB), "batch": batch,
            "optim": _optim(name), "workers": cfg.data.workers, "tokenizer": cfg.data.tokenizer,
            "precision": cfg.train.precision, "loss": "clip", "warmup": DATA_WARMUP_STEPS, "steps": DATA_STEPS}
    print(f"{f'data ({cfg.data.workers} workers, batch {batch})':<42}{'ours/OpenCLIP':>14}{'ours samples/s':>16}"
          f"{'OpenCLIP samples/s':>20}{'our data wait':>15}{'OpenCLIP data wait':>20}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        jpeg_shards = write_jpeg_shards(Path(tmp), (DATA_WARMUP_STEPS + DATA_STEPS + 8) * batch)
        rows = [("loader alone, demo shards (64 px PNG)", {"shards": demo_shards, "train": False}),
                (f"loader alone, {SOURCE_PX} px JPEG -> {OUTPUT_PX} px", {"shards": jpeg_shards, "train": False,
                                                                  "image_size": OUTPUT_PX}),
                *((f"{name} training, demo shards, {cfg.train.precision} {loss}", {"shards": demo_shards, "train": True,
                                                                                 "loss": loss}) for loss in LOSSES)]
        for label, fields in rows:
            req = {"image_size": cfg.model.image.image_size, **base, **fields}
            ours, peer = best_of(sides, req, rounds, "s_per_step")
            waits = f"{ours['data_wait']:>15.1%}{peer['data_wait']:>20.1%}" if req["train"] else ""
            print(f"{label:<42}{peer['s_per_step'] / ours['s_per_step']:>14.2f}{batch / ours['s_per_step']:>16.1f}"
                  f"{batch / peer['s_per_step']:>20.1f}{waits}", flush=True)


def _eval_rows(sides: tuple[Side, Side], rounds: int) -> None:
    name, _, _ = MODELS[0]
    vocab = CLIP_VOCAB
    print(f"{'evaluation':<44}{'ours/OpenCLIP':>14}{'ours s':>16}{'OpenCLIP s':>20}", flush=True)
    for precision in PRECISIONS:
        req = {"task": "zeroshot", "config": name, "spec": spec(load_config(name, []), vocab), "precision": precision,
               "classnames": imagenet_classnames()[:ZEROSHOT_CLASSES], "templates": template_set("openai"),
               "images": ZEROSHOT_IMAGES, "batch": EVAL_BATCH}
        ours, peer = best_of(sides, req, rounds, "s")
        label = f"zero-shot {ZEROSHOT_CLASSES}x80 prompts, {ZEROSHOT_IMAGES} img, {precision}"
        print(f"{label:<44}{peer['s'] / ours['s']:>14.2f}{ours['s']:>16.2f}{peer['s']:>20.2f}", flush=True)
    ours, peer = best_of(sides, {"task": "retrieval", "n": RETRIEVAL_N, "dim": RETRIEVAL_DIM}, rounds, "s")
    label = f"retrieval metrics {RETRIEVAL_N}x{RETRIEVAL_N}"
    print(f"{label:<44}{peer['s'] / ours['s']:>14.2f}{ours['s']:>16.2f}{peer['s']:>20.2f}", flush=True)


if __name__ == "__main__":
    main()
