"""`contrastive train [-c CONFIG | RUN_DIR] [key=value ...]`: train, or resume a run dir from its latest checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from contrastive.config import load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (resumes when run_dir holds a checkpoint)",
                       description="Train on WebDataset shards. Multi-process aware: launch with torchrun or "
                                   "`contrastive submit train`. A run_dir with checkpoints is resumed exactly.")
    p.add_argument("-c", "--config", help="named config (e.g. demo, clip_b16) or a YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. optim.lr=1e-3 loss.name=siglip; a first argument that is a run "
                        "directory resumes that run with its saved config")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even if the config differs from the one saved in run_dir")
    p.set_defaults(run=run)


def config_from_args(config: str | None, overrides: list[str]):
    """`-c NAME k=v ...`, or `RUN_DIR k=v ...` (the run's saved config.yaml as the base)."""
    if overrides and "=" not in overrides[0] and Path(overrides[0], "config.yaml").is_file():
        run_dir, *rest = overrides
        return load_config(str(Path(run_dir, "config.yaml")), [f"run_dir={run_dir}", *rest])
    return load_config(config, overrides)


def run(args: argparse.Namespace) -> int:
    from contrastive.train import train

    result = train(config_from_args(args.config, args.overrides), allow_config_change=args.allow_config_change)
    return 0 if result.finished or result.stopped_by_signal else 1
