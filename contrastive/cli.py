"""`contrastive COMMAND ...`: one entry point; each command lives in contrastive/commands/.

The command modules import only what parsing needs (each command imports torch, timm, the evaluators when it
runs), so help and usage errors print at once. Flags go before, between or after positional arguments at every
level (`contrastive eval RUN_DIR --all key=value`).
"""
from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Sequence

from contrastive.commands import checkpoint as checkpoint_command
from contrastive.commands import data as data_command
from contrastive.commands import eval as eval_command
from contrastive.commands import export_model as export_command
from contrastive.commands import import_model as import_command
from contrastive.commands import report as report_command
from contrastive.commands import submit as submit_command
from contrastive.commands import train as train_command
from contrastive.errors import USER_ERRORS
from contrastive.stopping import Stopped

COMMANDS: list[ModuleType] = [train_command, eval_command, import_command, export_command, submit_command,
                              report_command, data_command, checkpoint_command]


class IntermixedParser(argparse.ArgumentParser):
    """A parser with subcommands finds its subcommand as argparse does; one without them (a command's own
    arguments) parses them intermixed, which argparse refuses on a parser with subcommands. Subcommand parsers
    are made of their parent's class, so this holds at every level."""

    _intermixing = False

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        # `_subparsers` is set by add_subparsers. parse_known_intermixed_args parses in two passes, each through
        # parse_known_args: those take argparse's plain path.
        if self._subparsers is not None or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = IntermixedParser(
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
