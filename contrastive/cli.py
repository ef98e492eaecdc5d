"""`contrastive COMMAND ...`: one entry point; each command lives in contrastive/commands/."""
from __future__ import annotations

import argparse
import sys
from types import ModuleType

from contrastive.commands import data as data_command
from contrastive.commands import eval as eval_command
from contrastive.commands import report as report_command
from contrastive.commands import submit as submit_command
from contrastive.commands import train as train_command
from contrastive.errors import USER_ERRORS
from contrastive.stopping import Stopped

COMMANDS: list[ModuleType] = [train_command, eval_command, submit_command, report_command, data_command]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrastive",
        description="Contrastive image-text pretraining (CLIP, SigLIP, Llip): data, training, evaluation, Slurm.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Stopped as e:  # a command without step boundaries, stopped from outside; the command said what it kept
        print(f"{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C: at once
        return 130


if __name__ == "__main__":
    sys.exit(main())
