"""benchmarks/start_from_weights.py (docs/training.md's LiT / fine-tune / scratch comparison) at a tiny size: it
pretrains, starts the three variants from the pretrained run's weights, evaluates each and writes its table."""
import json
import subprocess
import sys
from pathlib import Path

from data.synth import synthesize

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.embed_dim=16", "model.image.image_size=32",
        "model.image.kwargs={embed_dim: 32, depth: 1, num_heads: 2, patch_size: 8}", "model.text.width=32",
        "model.text.depth=1", "model.text.heads=2", "train.batch_size=16", "data.workers=0", "eval.workers=0"]


def test_the_comparison_runs_every_variant_from_the_pretrained_weights_and_reports_them(tmp_path):
    data = tmp_path / "data"
    synthesize(data, seed=0, train_samples=128, samples_per_shard=32, images_per_class=1, retrieval_images=5)
    out = tmp_path / "rows.json"
    subprocess.run([sys.executable, REPO / "benchmarks" / "start_from_weights.py", "--data", data,
                    "--pretrain-steps", "4", "--steps", "2", "--out", out, *TINY], check=True, cwd=tmp_path)
    rows = json.loads(out.read_text())
    assert list(rows) == ["pretrained", "LiT", "fine-tune", "scratch"]
    assert [row["steps"] for row in rows.values()] == [4, 2, 2, 2]
    for row in rows.values():
        assert row["samples_per_s"] > 0
        assert all(0 <= value <= 1 for key, value in row.items() if key not in ("steps", "samples_per_s"))
