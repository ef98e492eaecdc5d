"""Run one command module (`contrastive.commands.X`) the way the CLI does, with its exceptions propagating."""
from __future__ import annotations

from types import ModuleType

from contrastive.cli import IntermixedParser


def run_command(module: ModuleType, *argv: str) -> int:
    parser = IntermixedParser(prog="contrastive")
    module.add_parser(parser.add_subparsers(required=True))
    args = parser.parse_args(list(argv))
    return args.run(args)
