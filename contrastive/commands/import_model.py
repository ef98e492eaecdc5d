"""`contrastive import SRC RUN_DIR [--arch NAME] [--quick-gelu | --no-quick-gelu] [--tokenizer FILE]`."""
from __future__ import annotations

import argparse
from pathlib import Path

from contrastive.stopping import Stopped, raising_on_stop


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="a published OpenCLIP or Hugging Face CLIP/SigLIP model as a run dir",
                       description="Read a model the user downloaded (OpenCLIP: open_clip_config.json with "
                                   "open_clip_model.safetensors or open_clip_pytorch_model.bin, or a bare state dict "
                                   "with --arch; Hugging Face: a CLIPModel or SiglipModel folder) and write it as a "
                                   "run dir of ours: config.yaml, tokenizer.json, checkpoints/step_000000.pt. Nothing "
                                   "is downloaded; no pickled code is run. docs/interop.md lists what is supported.")
    p.add_argument("src", type=Path, help="the downloaded folder, or weights file")
    p.add_argument("run_dir", type=Path, help="the run dir to create (must not exist, or be empty)")
    p.add_argument("--arch", help="OpenCLIP architecture of a bare state dict (ViT-B-32, ViT-B-16, ViT-L-14, "
                                  "ViT-L-14-336, ViT-H-14, ViT-B-16-SigLIP; NAME-quickgelu for QuickGELU)")
    p.add_argument("--quick-gelu", action=argparse.BooleanOptionalAction, default=None,
                   help="the activation an OpenAI-style CLIP's weights were trained with (OpenAI's: QuickGELU; "
                        "OpenCLIP's LAION and DataComp: GELU); required with --arch where the name does not say")
    p.add_argument("--tokenizer", type=Path, help="tokenizer.json, or OpenCLIP's bpe_simple_vocab_16e6.txt.gz "
                                                   "(default: SRC's folder's tokenizer.json)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from contrastive.importing import import_model

    try:
        with raising_on_stop():
            cfg = import_model(args.src, args.run_dir, args.arch, args.quick_gelu, args.tokenizer)
    except Stopped as e:
        raise Stopped(e.signum, f"nothing was written to {args.run_dir}") from None
    image, text = cfg.model.image, cfg.model.text
    print(f"imported {args.src} into {args.run_dir}: loss {cfg.loss['name']}, image {image.timm_name} at "
          f"{image.image_size} px, text {text.depth} x {text.width}, context {text.context_length}\n"
          f"evaluate it: contrastive eval {args.run_dir} eval.zeroshot.NAME=IMAGE_FOLDER")
    return 0
