"""benchmarks/curation_demo.py (docs/curation.md) at a tiny size: it mismatches 40% of the pool's captions, scores
the pool with a model trained on a clean slice, filters it, measures the filter and trains on each set."""
import json
import subprocess
import sys

from data.shards import read_shard
from data.synth import synthesize
from tests.contrastive.test_start_from_weights import REPO, TINY

sys.path.insert(0, str(REPO / "benchmarks"))
from curation_demo import mismatched_copy  # noqa: E402


def test_a_mismatched_copy_gives_40_percent_of_the_samples_another_samples_captions_and_marks_them(tmp_path):
    synthesize(tmp_path / "data", seed=0, train_samples=100, samples_per_shard=50, images_per_class=1,
               retrieval_images=5)
    shards = sorted((tmp_path / "data" / "train").glob("*.tar"))
    mismatched = mismatched_copy(shards, tmp_path / "noisy")
    original = {s.key: s for shard in shards for s in read_shard(str(shard))}
    noisy = {s.key: s for shard in sorted((tmp_path / "noisy").glob("*.tar")) for s in read_shard(str(shard))}
    assert noisy.keys() == original.keys() and len(mismatched) == 40
    for key, sample in noisy.items():
        marked = json.loads(sample.members["json"])["mismatched"]
        assert marked == (key in mismatched) == (sample.members["txt"] != original[key].members["txt"])
        assert sample.members["png"] == original[key].members["png"]


def test_the_demonstration_scores_filters_and_trains_on_each_set(tmp_path):
    data = tmp_path / "data"
    synthesize(data, seed=0, train_samples=200, samples_per_shard=50, images_per_class=1, retrieval_images=5)
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, REPO / "benchmarks" / "curation_demo.py", "--data", data, "--steps", "2",
                    "--score-steps", "2", "--seeds", "0", "--out", out, *TINY], check=True, cwd=tmp_path)
    result = json.loads(out.read_text())
    assert result["filter"]["pool"] == 200 and result["filter"]["kept"] == 120
    assert 0 <= result["filter"]["precision"] <= 1 and 0 <= result["filter"]["recall"] <= 1
    assert list(result["runs"]) == ["noisy seed 0", "filtered seed 0", "clean seed 0"]
