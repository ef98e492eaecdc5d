"""`contrastive export RUN_DIR_OR_CHECKPOINT --format open_clip|hf OUT [--step N]`."""
from __future__ import annotations

import argparse
from pathlib import Path

from contrastive.stopping import Stopped, raising_on_stop


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a checkpoint as an OpenCLIP or Hugging Face transformers model folder",
                       description="Write a run's checkpoint (its latest, --step N, or a checkpoint file) in a peer's "
                                   "own format, for its own loader: open_clip (open_clip_config.json, "
                                   "open_clip_model.safetensors, tokenizer files) or hf (config.json, "
                                   "model.safetensors, preprocessor_config.json, tokenizer files). What the target "
                                   "cannot carry is refused before anything is written. docs/interop.md lists it.")
    p.add_argument("path", type=Path, help="run directory, or a checkpoint file")
    p.add_argument("--format", required=True, choices=("open_clip", "hf"), dest="target")
    p.add_argument("out", type=Path, help="the folder to create (must not exist, or be empty)")
    p.add_argument("--step", type=int, help="the run dir's checkpoint of this step (default: its latest)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from contrastive.exporting import export_model

    try:
        with raising_on_stop():
            checkpoint = export_model(args.path, args.target, args.out, args.step)
    except Stopped as e:
        raise Stopped(e.signum, f"nothing was written to {args.out}") from None
    print(f"exported {checkpoint} as {args.target} into {args.out}")
    return 0
