"""Does CLIP-score filtering make a better model? On the embedded demo, with noise put in on purpose:

1. the demo's training set with 40% of its samples given another sample's captions (mismatched pairs, marked in
   KEY.json as "mismatched" for this measurement only);
2. a scoring model: the demo CLIP trained briefly on a small clean slice drawn with another seed (no image of
   the pool in it);
3. `contrastive data score` of the noisy pool, `contrastive data filter --keep-fraction 0.6`: the filter's
   precision and recall at removing the mismatched pairs;
4. the same tiny CLIP trained for the same steps on the noisy, the filtered and the clean set, for each seed,
   evaluated on the demo's zero-shot and retrieval sets.

    python benchmarks/curation_demo.py [--data demo_data] [--steps 300] [--score-steps 300] [--seeds 0 1]
                                       [--out F.json] [key=value ...]   # overrides for every training run

docs/curation.md records the figures.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from start_from_weights import trained

from data.shards import ShardWriter, read_shard
from data.synth import synthesize

MISMATCHED = 0.4
KEEP = "0.6"


def mismatched_copy(shards: list[Path], out: Path, seed: int = 0) -> set[str]:
    """The shards again, with MISMATCHED of the samples given the captions of another of them (a cycle over a
    seeded choice, so no sample keeps its own); each KEY.json says whether its pair was mismatched. The keys of
    the mismatched samples."""
    samples = [sample for shard in shards for sample in read_shard(str(shard))]
    chosen = random.Random(seed).sample(range(len(samples)), round(MISMATCHED * len(samples)))
    donor = {index: samples[chosen[(i + 1) % len(chosen)]] for i, index in enumerate(chosen)}
    per_shard = -(-len(samples) // len(shards))
    with ShardWriter(out, max_samples=per_shard) as writer:
        for index, sample in enumerate(samples):
            captions = donor.get(index, sample)
            metadata = {**json.loads(sample.members["json"]), "mismatched": index in donor}
            metadata.update({k: v for k, v in json.loads(captions.members["json"]).items() if k.startswith("caption")})
            writer.write(sample.key, {**sample.members, "txt": captions.members["txt"],
                                      "json": json.dumps(metadata, sort_keys=True).encode()})
    return {samples[index].key for index in chosen}


def contrastive(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "contrastive", *map(str, args)], check=True)


def filter_quality(filtered: Path, mismatched: set[str], pool: int) -> dict[str, float]:
    kept = {json.loads(sample.members["json"])["source_key"] for shard in sorted(filtered.glob("*.tar"))
            for sample in read_shard(str(shard))}
    removed = pool - len(kept)
    caught = len(mismatched) - len(mismatched & kept)
    return {"kept": len(kept), "pool": pool, "precision": caught / removed, "recall": caught / len(mismatched)}


def run(data: Path, root: Path, steps: int, score_steps: int, seeds: list[int], overrides: list[str]) -> dict:
    clean = sorted((data / "train").glob("shard-*.tar"))
    mismatched = mismatched_copy(clean, root / "noisy")
    noisy = sorted((root / "noisy").glob("*.tar"))
    pool = sum(1 for shard in noisy for _ in read_shard(str(shard)))

    slice_data = root / "slice"  # 4 shards of 250 clean samples, other images than the pool's
    synthesize(slice_data, seed=1, train_samples=1000, samples_per_shard=250, images_per_class=1, retrieval_images=5)
    scorer = root / "scorer"
    trained(scorer, data, sorted((slice_data / "train").glob("*.tar")), score_steps, overrides)
    contrastive("data", "score", *noisy, "--model", scorer, "--out", root / "scores")
    per_shard = -(-int(float(KEEP) * pool) // len(noisy))  # as many shards as the pool, for the loader's slots
    contrastive("data", "filter", *noisy, root / "filtered", "--scores", root / "scores", "--keep-fraction", KEEP,
                "--max-samples-per-shard", per_shard)
    quality = filter_quality(root / "filtered", mismatched, pool)
    filtered = sorted((root / "filtered").glob("*.tar"))
    rows = {f"{name} seed {seed}": trained(root / f"{name}-{seed}", data, shards, steps,
                                           [f"train.seed={seed}", *overrides])
            for seed in seeds for name, shards in (("noisy", noisy), ("filtered", filtered), ("clean", clean))}
    return {"filter": quality, "runs": rows}


def table(result: dict, seeds: list[int]) -> str:
    quality = result["filter"]
    lines = [f"filter --keep-fraction {KEEP}: kept {quality['kept']} of {quality['pool']}; at removing the "
             f"mismatched pairs precision {quality['precision']:.3f}, recall {quality['recall']:.3f}", "",
             f"{'':<18}{'zero-shot attr':>16}{'t2i R@1 attr':>14}{'zero-shot rel':>15}{'t2i R@1 rel':>13}"]
    columns = ("zero-shot attr", "t2i R@1 attr", "zero-shot rel", "t2i R@1 rel")
    runs = result["runs"]
    for name in runs:
        lines.append(f"{name:<18}" + "".join(f"{runs[name][c]:>{len(c) + 2}.3f}" for c in columns))
    for name in ("noisy", "filtered", "clean"):
        mean = {c: sum(runs[f"{name} seed {s}"][c] for s in seeds) / len(seeds) for c in columns}
        lines.append(f"{name + ' (mean)':<18}" + "".join(f"{mean[c]:>{len(c) + 2}.3f}" for c in columns))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("demo_data"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--score-steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.data, Path(tmp), args.steps, args.score_steps, args.seeds, args.overrides)
    print(table(result, args.seeds))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
