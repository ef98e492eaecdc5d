"""`contrastive checkpoint consolidate RUN_DIR_OR_CHECKPOINT [--step N]`."""
from __future__ import annotations

import argparse
from pathlib import Path

from contrastive.stopping import Stopped, raising_on_stop


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("checkpoint", help="work on a run's checkpoints (consolidate a sharded one)",
                            description="Work on a run's checkpoints.")
    actions = parser.add_subparsers(dest="checkpoint_command", required=True, metavar="SUBCOMMAND")
    consolidate = actions.add_parser(
        "consolidate", help="a sharded checkpoint (step_N.dcp/) as one file beside it (step_N.pt)",
        description="Read an FSDP run's sharded checkpoint in this process (no GPU, no process group) and write it "
                    "as the usual single file beside it, atomically: step_N.dcp/ -> step_N.pt, with the model, "
                    "the optimizer (keyed by parameter name), the data-stream and RNG states, config and tokenizer. "
                    "`latest` is left naming the sharded one. eval, export and model.init_from read sharded "
                    "checkpoints directly; the single file is for tools that read one file.")
    consolidate.add_argument("path", type=Path, help="run directory (its latest checkpoint, or --step N) or a sharded "
                                                     "checkpoint directory")
    consolidate.add_argument("--step", type=int, help="the run dir's checkpoint of this step (default: its latest)")
    consolidate.set_defaults(run=run_consolidate)


def run_consolidate(args: argparse.Namespace) -> int:
    from contrastive.checkpoint import consolidate
    from contrastive.evaluate import checkpoint_of

    _, checkpoint = checkpoint_of(args.path, args.step)
    try:
        with raising_on_stop():
            single = consolidate(checkpoint)
    except Stopped as e:
        raise Stopped(e.signum, f"nothing was written beside {checkpoint}") from None
    print(f"consolidated {checkpoint} into {single}")
    return 0
