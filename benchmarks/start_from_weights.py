"""What starting from weights buys, on the embedded demo: a CLIP pretrained on half of the demo's training shards,
then, on the other half and for the same number of steps each,
  LiT        its image tower locked (model.image.init_from + model.image.frozen), a fresh text tower;
  fine-tune  both towers from it (model.init_from);
  scratch    both towers fresh;
each evaluated at the end on the demo's zero-shot and retrieval sets, with its training samples/s.

    python benchmarks/start_from_weights.py [--data demo_data] [--pretrain-steps 300] [--steps 150] [--out F.json]
                                            [key=value ...]   # overrides for every run, e.g. a smaller model

Every run is `contrastive train -c demo` with its schedule (warm-up, cosine) over its own steps.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from contrastive.config import load_config
from contrastive.train import train
from training_throughput import last_scalar

COLUMNS = {"zero-shot attr": "zeroshot/attributes/top1", "zero-shot rel": "zeroshot/relations/top1",
           "t2i R@1 attr": "retrieval/attributes/t2i_R@1", "i2t R@1 attr": "retrieval/attributes/i2t_R@1",
           "t2i R@1 rel": "retrieval/relations/t2i_R@1"}


def trained(run_dir: Path, data: Path, shards: list[Path], steps: int, overrides: list[str]) -> dict:
    """Train one demo run; its final evaluation's metrics and its samples/s."""
    cfg = load_config("demo", [f"run_dir={run_dir}", f"data.shards=[{','.join(map(str, shards))}]",
                               f"data.tokenizer={data / 'tokenizer.json'}", f"train.steps={steps}",
                               f"train.checkpoint_every={steps}", f"train.log_every={max(1, steps // 4)}",
                               f"optim.warmup_steps={max(1, steps // 6)}", "eval.tasks={}", *_eval_paths(data),
                               *overrides])
    assert train(cfg).finished
    (result,) = sorted((run_dir / "eval").glob("step_*.json"))
    metrics = json.loads(result.read_text())["metrics"]
    return {"steps": steps, "samples_per_s": last_scalar(run_dir, "train/samples_per_s"),
            **{column: metrics[key] for column, key in COLUMNS.items()}}


def _eval_paths(data: Path) -> list[str]:
    return [f"eval.{task}.{kind}={data / 'eval' / f'{task}_{kind}'}"
            for task in ("zeroshot", "retrieval") for kind in ("attributes", "relations")]


def compare(data: Path, root: Path, pretrain_steps: int, steps: int, overrides: list[str]) -> dict[str, dict]:
    shards = sorted((data / "train").glob("shard-*.tar"))
    if len(shards) < 2:
        raise SystemExit(f"error: {data / 'train'} holds {len(shards)} shards; two halves are needed")
    first, second = shards[: len(shards) // 2], shards[len(shards) // 2:]
    pretrained = root / "pretrained"
    variants = {"LiT": [f"model.image.init_from={pretrained}", "model.image.frozen=true"],
                "fine-tune": [f"model.init_from={pretrained}"], "scratch": []}
    rows = {"pretrained": trained(pretrained, data, first, pretrain_steps, overrides)}
    for name, init in variants.items():
        rows[name] = trained(root / name, data, second, steps, [*overrides, *init])
    return rows


def table(rows: dict[str, dict]) -> str:
    lines = [f"{'':<12}{'steps':>6}{'samples/s':>11}" + "".join(f"{column:>16}" for column in COLUMNS)]
    for name, row in rows.items():
        lines.append(f"{name:<12}{row['steps']:>6}{row['samples_per_s']:>11.0f}"
                     + "".join(f"{row[column]:>16.3f}" for column in COLUMNS))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("demo_data"))
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = compare(args.data, Path(tmp), args.pretrain_steps, args.steps, args.overrides)
    print(f"pretrained {args.pretrain_steps} steps on the first half of {args.data / 'train'}, then each variant "
          f"{args.steps} steps on the second half\n{table(rows)}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
