"""`contrastive train [-c CONFIG | RUN_DIR] [key=value ...]`: train, or resume a run dir from its latest checkpoint."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from contrastive.config import load_config
from contrastive.flags import PATH_CHECK_OPT_OUT


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
    add_check_flags(p, "train")
    p.set_defaults(run=run)


def add_check_flags(p: argparse.ArgumentParser, what: str) -> None:
    """The pre-flight's flags (contrastive/preflight.py), for `train` and `submit`."""
    p.add_argument("--check", action="store_true",
                   help=f"run the whole pre-flight (config, model, shards, eval datasets) and exit 0 or 2 without "
                        f"running anything: what {what} would refuse, found at once")
    p.add_argument(PATH_CHECK_OPT_OUT, dest="check_paths", action="store_false",
                   help="do not open data and eval paths (they exist only on the compute nodes)")


def config_from_args(config: str | None, overrides: list[str]):
    """`-c NAME k=v ...`, or `RUN_DIR k=v ...` (the run's saved config.yaml as the base)."""
    if overrides and "=" not in overrides[0] and Path(overrides[0], "config.yaml").is_file():
        run_dir, *rest = overrides
        return load_config(str(Path(run_dir, "config.yaml")), [f"run_dir={run_dir}", *rest])
    return load_config(config, overrides)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args.config, args.overrides)
    # Imported once the config loads: a config error is reported without the model's modules (timm, torchvision).
    from contrastive import stopping
    from contrastive.train import check_resume_config, train

    if args.check:
        from contrastive.preflight import preflight

        check_resume_config(Path(cfg.run_dir), cfg, args.allow_config_change)
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        for warning in preflight(cfg, world_size, args.check_paths):
            print(warning)
        print(f"check passed: {cfg.run_dir} at world size {world_size}"
              f"{'' if args.check_paths else f' (paths not opened: {PATH_CHECK_OPT_OUT})'}")
        return 0
    result = train(cfg, allow_config_change=args.allow_config_change, check_paths=args.check_paths)
    if result.stopped_by_signal:
        return stopping.exit_code_for(stopping.stop_signal())
    return 0 if result.finished else 1
