"""The demo's linear-probe set (data/synth.py): a train split of its own beside a test split that is zero-shot
attributes' images, so the probe and zero-shot are scored on the same images."""
import filecmp

from data.synth import synthesize


def test_linear_probe_attributes_has_its_own_train_split_and_zero_shots_images_as_test(tmp_path):
    info = synthesize(tmp_path / "demo", seed=3, train_samples=8, samples_per_shard=8, image_size=32,
                      images_per_class=2, retrieval_images=2, progress=False)
    evals = tmp_path / "demo" / "eval"
    probe, zeroshot = evals / "linear_probe_attributes", evals / "zeroshot_attributes"
    assert sorted(p.name for p in probe.iterdir()) == ["test", "train"]
    comparison = filecmp.dircmp(probe / "test", zeroshot)
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files
    assert all(not filecmp.dircmp(probe / "test" / c, zeroshot / c).diff_files for c in comparison.common_dirs)
    classes = sorted(p.name for p in (probe / "train").iterdir() if p.is_dir())
    assert classes == sorted(p.name for p in zeroshot.iterdir() if p.is_dir()) and len(classes) == 48
    assert all(len(list((probe / "train" / c).glob("*.png"))) == 4 for c in classes)
    assert (probe / "train" / "classnames.txt").read_text() == (zeroshot / "classnames.txt").read_text()
    train_bytes = {p.read_bytes() for p in (probe / "train").rglob("*.png")}
    assert not train_bytes & {p.read_bytes() for p in zeroshot.rglob("*.png")}  # drawn apart from the test images
    entry = info["eval"]["linear_probe_attributes"]
    assert (entry["task"], entry["train_images"], entry["test_images"], entry["images"]) == ("linear_probe", 192,
                                                                                              96, 288)
    assert "eval/linear_probe_attributes/" in (tmp_path / "demo" / "README.md").read_text()
