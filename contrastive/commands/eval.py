"""`contrastive eval RUN_DIR_OR_CHECKPOINT [key=value ...] [--all]`."""
from __future__ import annotations

import argparse

from contrastive.stopping import Stopped, raising_on_stop
from eval.results import metric_lines


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluation tasks (zero-shot, retrieval, hard negatives, linear probe, "
                                    "embedding geometry) on a run or checkpoint",
                       description="Rebuild the model from the run's config.yaml (or the config and tokenizer a "
                                   "checkpoint carries), load the weights and run the evaluation tasks: "
                                   "eval.tasks.NAME={type: TYPE, path: PATH, ...}, or the short forms "
                                   "eval.zeroshot.NAME=PATH / eval.retrieval.NAME=PATH.")
    p.add_argument("path", help="run directory (evaluates `latest`, or every checkpoint with --all) or one checkpoint "
                                "(RUN/checkpoints/step_N.pt, or a sharded checkpoint's step_N.dcp directory)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--all", action="store_true", help="evaluate every checkpoint of the run dir")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from contrastive.evaluate import evaluate_checkpoint, results_path

    try:
        with raising_on_stop():
            run_dir, results = evaluate_checkpoint(args.path, args.overrides, all_checkpoints=args.all)
    except Stopped as e:
        kept = ("the checkpoints evaluated before the stop have their results in RUN_DIR/eval/, no half-written file "
                f"is left; rerun `contrastive eval {args.path}` to finish")
        raise Stopped(e.signum, kept) from None
    for result in results:
        step = result.pop("step")
        print("\n".join([f"step {step}: {results_path(run_dir, step)}", *metric_lines(dict(sorted(result.items())))]))
    return 0
