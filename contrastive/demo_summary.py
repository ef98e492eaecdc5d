"""The results table `make demo` prints: the demo's evaluation sets against chance, attributes and relations apart.

    python -m contrastive.demo_summary demo_data [the overrides `contrastive train -c demo` was given]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from contrastive.config import load_config

ROWS = [("zero-shot top-1", "zeroshot", "top1"), ("retrieval text->image R@1", "retrieval", "t2i_R@1"),
        ("retrieval image->text R@1", "retrieval", "i2t_R@1")]
KINDS = ("attributes", "relations")
HARD_NEGATIVES = "hard_negatives/shapes"  # demo.yaml's eval.tasks.shapes
LINEAR_PROBE = "linear_probe/attributes"  # demo.yaml's eval.tasks.attributes


def latest_eval(run_dir: Path) -> dict:
    results = sorted((run_dir / "eval").glob("step_*.json"))
    if not results:
        raise SystemExit(f"error: {run_dir}/eval holds no results; was the run evaluated?")
    return json.loads(results[-1].read_text())


def chance(info: dict, task: str, kind: str) -> float:
    """1/classes for zero-shot; 1/images for R@1 both ways (image->text: captions per image / captions)."""
    entry = info["eval"][f"{task}_{kind}"]
    return 1 / entry["classes"] if task == "zeroshot" else 1 / entry["images"]


def linear_probe_line(metrics: dict, info: dict) -> str:
    """The probe's test images are zero-shot attributes' own, so its top-1 goes under that column."""
    if f"{LINEAR_PROBE}/top1" not in metrics:
        return f"linear probe: not in these results (a run evaluated before {LINEAR_PROBE} was configured)"
    entry = info["eval"]["linear_probe_attributes"]
    return (f"{'linear probe top-1':28}{metrics[f'{LINEAR_PROBE}/top1']:>12.3f}{entry['chance_top1']:>10.3f}"
            f"  (same images as zero-shot; fitted on {entry['train_images']} others)")


def hard_negative_lines(metrics: dict, entry: dict) -> list[str]:
    """Per category: the fraction of images whose caption scores strictly above its hard negative."""
    if f"{HARD_NEGATIVES}/accuracy" not in metrics:
        return [f"hard negatives: not in these results (a run evaluated before {HARD_NEGATIVES} was configured)"]
    lines = [f"{'hard negatives':28}{'accuracy':>12}{'(chance)':>10}"]
    for category in (*entry["categories"], "accuracy"):
        label = "all categories" if category == "accuracy" else category
        lines.append(f"  {label:26}{metrics[f'{HARD_NEGATIVES}/{category}']:>12.3f}{entry['chance_accuracy']:>10.3f}")
    return lines + ["a tie counts as wrong: a text encoder blind to word order scores 0 on the swaps"]


def summary(run_dir: Path, data_dir: Path) -> str:
    result = latest_eval(run_dir)
    info = json.loads((data_dir / "info.json").read_text())
    lines = [f"demo results at step {result['step']} ({run_dir})", "",
             f"{'':28}{'attributes':>12}{'(chance)':>10}{'relations':>12}{'(chance)':>10}"]
    for label, task, metric in ROWS:
        cells = "".join(f"{result['metrics'][f'{task}/{kind}/{metric}']:>12.3f}{chance(info, task, kind):>10.3f}"
                        for kind in KINDS)
        lines.append(f"{label:28}{cells}")
        if task == "zeroshot":
            lines.append(linear_probe_line(result["metrics"], info))
    lines += ["", *hard_negative_lines(result["metrics"], info["eval"]["hard_negatives"])]
    lines += ["", "relation captions are a harder probe (spatial relations between objects); attributes are what a",
              "tiny model learns in a few CPU minutes.", f"curves: tensorboard --logdir {run_dir / 'tb'}"]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m contrastive.demo_summary DEMO_DATA_DIR [key=value ...]")
    run_dir = Path(load_config("demo", sys.argv[2:]).run_dir)
    print(summary(run_dir, Path(sys.argv[1])))
