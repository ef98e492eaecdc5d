"""`contrastive report RUN_DIR|GLOB|SWEEP_DIR|MANIFEST ...`: the ablation table across runs.

One row per run: the config keys whose values differ between the runs (for a sweep, its axes), the last
step logged, the final training loss (train/loss in RUN_DIR/tb) and the latest evaluation metrics
(RUN_DIR/eval/step_XXXXXX.json; all but the counts `*/num_*`, or those matching --metrics), grouped by task type
(zeroshot, retrieval, then any other type: embedding_stats, ...). Markdown
(default) or CSV on stdout; --plot also draws the loss curves and those metrics against the step, one line
per run, into a PNG.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import glob
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from contrastive.config import from_yaml_text, to_flat_dict
from data.atomic import atomic_write_bytes
from eval.results import HEADLINE, is_count, read_json
from slurm.manifest import FILE_NAME as MANIFEST_NAME, Manifest

LOSS_TAG = "train/loss"
GLOB_CHARS = "*?["
MARKERS = "osD^vP*X"  # one per run in the plot, repeating after eight


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="ablation table across runs (markdown or CSV, optional PNG)",
                                   description="One row per run: the config keys that differ between the runs, "
                                               "steps, final training loss and the latest eval metrics.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR|GLOB|SWEEP_DIR|MANIFEST",
                        help="run dirs, quoted globs of them (runs/sweep-*/*), sweep dirs or manifest.json files")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--metrics", nargs="+", metavar="GLOB",
                        help="eval metrics to show, e.g. 'zeroshot/*/top1' 'retrieval/*/t2i_R@1' "
                             "(default: all but the counts */num_*)")
    parser.add_argument("--plot", metavar="PNG", help="also plot loss curves and eval metrics across runs")
    parser.set_defaults(run=run)


@dataclass
class RunSummary:
    run_dir: Path
    config: dict[str, Any]  # flat: {"loss.name": "clip", ...}
    loss: list[tuple[int, float]]  # train/loss by step
    evals: list[tuple[int, dict[str, float]]]  # eval results by step

    @property
    def steps(self) -> int:
        return max([s for s, _ in self.loss] + [s for s, _ in self.evals], default=0)

    @property
    def final_loss(self) -> Optional[float]:
        return self.loss[-1][1] if self.loss else None

    @property
    def latest_metrics(self) -> dict[str, float]:
        return self.evals[-1][1] if self.evals else {}


def run(args: argparse.Namespace) -> int:
    summaries = [summarize(run_dir) for run_dir in find_runs(args.runs)]
    names = {name for s in summaries for _, metrics in s.evals for name in metrics}
    metrics = grouped_by_task_type(n for n in names if (any(fnmatch.fnmatchcase(n, g) for g in args.metrics)
                                                        if args.metrics else not is_count(n)))
    header, rows = table(summaries, metrics)
    sys.stdout.write(to_csv(header, rows) if args.format == "csv" else to_markdown(header, rows))
    if args.plot:
        plot(summaries, metrics, Path(args.plot))
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def grouped_by_task_type(names: Iterable[str]) -> list[str]:
    """Metric names TYPE/NAME/METRIC in columns grouped by task type: the types a run is judged by first (those of
    eval.results.HEADLINE: zeroshot, retrieval), then the others by name; within a type by task name, then in the
    order the registered type declares its metrics (t2i_R@1, t2i_R@5, t2i_R@10), by name where it declares none
    (a type from a plugin this process has not imported)."""
    from eval.tasks import get_task, task_types  # loads torch: here, not when the command line is parsed

    judged_by = list(dict.fromkeys(pattern.split("/")[0] for pattern in HEADLINE))
    registered = set(task_types())

    def position(name: str) -> tuple[Any, ...]:
        task_type, _, rest = name.partition("/")
        task, _, metric = rest.partition("/")
        declared = get_task(task_type).metrics if task_type in registered else ()
        return (judged_by.index(task_type) if task_type in judged_by else len(judged_by), task_type, task,
                declared.index(metric) if metric in declared else len(declared), metric)

    return sorted(names, key=position)


def find_runs(specs: list[str]) -> list[Path]:
    """Run dirs in the order given; a sweep dir or manifest stands for its runs, a glob for what it matches
    (entries that are not runs are skipped there, but an explicit path must be one)."""
    found: list[Path] = []
    for spec in specs:
        if any(c in spec for c in GLOB_CHARS):
            matches = [runs for match in sorted(glob.glob(spec)) if (runs := _runs_at(Path(match)))]
            if not matches:
                raise FileNotFoundError(f"{spec} matches no run dir (a directory with config.yaml), sweep dir "
                                        "or manifest")
            found += [run_dir for runs in matches for run_dir in runs]
        else:
            runs = _runs_at(Path(spec))
            if not runs:
                raise FileNotFoundError(f"{spec} is not a run dir (no config.yaml), a sweep dir or a manifest")
            found += runs
    return list(dict.fromkeys(found))


def _runs_at(path: Path) -> list[Path]:
    if path.is_file() and path.suffix == ".json":
        return Manifest.read(path).run_dirs(path.parent)
    if (path / MANIFEST_NAME).is_file():
        return Manifest.read(path / MANIFEST_NAME).run_dirs(path)
    if (path / "config.yaml").is_file():
        return [path]
    return []


def summarize(run_dir: Path) -> RunSummary:
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.yaml (its job has not started, or it is not a run dir)")
    evals = sorted((step, metrics) for step, metrics in (read_json(p) for p in (run_dir / "eval").glob("step_*.json"))
                   if step is not None)
    return RunSummary(run_dir, to_flat_dict(from_yaml_text(config.read_text())), read_scalar(run_dir / "tb", LOSS_TAG),
                      evals)


def read_scalar(tb_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one tensorboard scalar over every event file; a step logged twice (logged again after a
    resume from an earlier checkpoint) keeps its latest value."""
    if not tb_dir.is_dir():
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return []
    latest: dict[int, tuple[float, float]] = {}
    for event in events.Scalars(tag):
        if event.step not in latest or event.wall_time >= latest[event.step][0]:
            latest[event.step] = (event.wall_time, event.value)
    return [(step, value) for step, (_, value) in sorted(latest.items())]


def table(summaries: list[RunSummary], metrics: list[str]) -> tuple[list[str], list[list[Any]]]:
    keys = dict.fromkeys(k for s in summaries for k in s.config if k != "run_dir")
    varying = [k for k in keys if _varies(k, summaries)]
    labels = _labels([s.run_dir for s in summaries])
    header = ["run", *varying, "steps", "final loss", *metrics]
    rows = [[label, *(s.config.get(k) for k in varying), s.steps, s.final_loss,
             *(_metric(s.latest_metrics, m) for m in metrics)] for label, s in zip(labels, summaries)]
    return header, rows


def _varies(key: str, summaries: list[RunSummary]) -> bool:
    """A loss's argument varies only between runs of that loss: the arguments of clip and llip differ because
    the loss does, and loss.name says so."""
    groups: dict[Any, list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault(s.config.get("loss.name") if key.startswith("loss.") and key != "loss.name" else None,
                          []).append(s)
    return any(len({repr(s.config.get(key)) for s in group}) > 1 for group in groups.values())


def _metric(metrics: dict[str, float], name: str) -> Optional[float]:
    """Counts as integers: a set of 50000 images reads 50000, not 5e+04."""
    value = metrics.get(name)
    return round(value) if value is not None and is_count(name) else value


def _labels(run_dirs: list[Path]) -> list[str]:
    """The run dir names, or the full paths when names repeat (runs of two sweeps)."""
    names = [p.name for p in run_dirs]
    return names if len(set(names)) == len(names) else [str(p) for p in run_dirs]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):  # data.shards, optim.betas: the values, not Python's repr
        return ", ".join(map(_cell, value)) or "none"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def to_markdown(header: list[str], rows: list[list[Any]]) -> str:
    lines = [header, ["---"] * len(header), *([_cell(v) for v in row] for row in rows)]
    return "".join("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |\n" for line in lines)


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
                       for v in row] for row in rows])
    return out.getvalue()


def plot(summaries: list[RunSummary], metrics: list[str], path: Path) -> None:
    """The loss curves, then one panel per eval metric, in one PNG."""
    fig = figure(summaries, metrics)
    import matplotlib.pyplot as plt  # after figure() has chosen the backend

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


def figure(summaries: list[RunSummary], metrics: list[str]) -> Any:
    """Every panel spans steps 0 to the last one, with integer ticks, so a metric evaluated at one step is a point
    on a readable axis; a run's marker is hollow, of its own shape and smaller than the previous run's, so runs
    with equal values show as rings around each other; each panel has its legend, in the corner its curves leave
    free."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [LOSS_TAG, *metrics]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.5 * rows), squeeze=False)
    labels = _labels([s.run_dir for s in summaries])
    last_step = max([s.steps for s in summaries] + [1])
    for ax, panel in zip(axes.flat, panels):
        values = []
        for i, (label, s) in enumerate(zip(labels, summaries)):
            points = s.loss if panel == LOSS_TAG else [(step, m[panel]) for step, m in s.evals if panel in m]
            if points:  # a curve is a line; eval scores, and a curve of one point, are markers too
                ax.plot(*zip(*points), label=label, **({} if panel == LOSS_TAG and len(points) > 1 else _marker(i)))
                values += [v for _, v in points]
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.set_xlim(0, last_step * 1.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)
        if panel != LOSS_TAG and values and min(values) >= 0:
            ax.set_ylim(0, max(values) * 1.15 or 1)  # scores from 0: equal values are not blown up into a range
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # where the curves are not: a loss falls, a score rises
            ax.legend(fontsize="small", loc="upper right" if panel == LOSS_TAG else "upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _marker(run: int) -> dict[str, Any]:
    return {"marker": MARKERS[run % len(MARKERS)], "markersize": max(4, 12 - 2 * run), "markerfacecolor": "none",
            "markeredgewidth": 1.5}
