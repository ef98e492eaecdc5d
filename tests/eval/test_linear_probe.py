"""The linear probe (eval/linear_probe.py): the L-BFGS logistic regression on features, its lambda chosen on the
train split alone and deterministically, the features cached per model key, dataset files and pixels, both layouts,
and the errors for a missing split or a class the train split lacks."""
import pytest
import torch
import torch.nn.functional as F

from eval import EvalError, evaluate, get_task
from eval.linear_probe import choose_l2_lambda, fit_probe, held_out_split, probe_metrics
from tests.eval.fixtures import SIZE, png_bytes, solid, write_image_folder, write_tar
from tests.eval.toy import ToyColourModel, ToyLlipModel, ToyTokenizer

# Each class a base colour; its images vary it a little, so train and test images differ.
CLASS_RGB = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200), "yellow": (200, 200, 30)}


def clusters(per_class: int, num_classes: int = 10, dim: int = 128, noise: float = 0.1, seed: int = 0):
    """Well-separated Gaussian clusters: unit-norm centres, isotropic noise of `noise` per coordinate / sqrt(dim)."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234)), dim=-1)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = centres[labels] + noise * torch.randn(len(labels), dim, generator=generator) / dim ** 0.5
    return features, labels


def shade(rgb, i):
    return tuple(min(255, c + 9 * (i % 4)) for c in rgb)


def probe_folder(root, train_per_class=5, test_per_class=3, test_classes=None):
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        classes = test_classes if split == "test" and test_classes is not None else CLASS_RGB
        write_image_folder(root / split, {name: [solid(shade(CLASS_RGB.get(name, (90, 90, 90)), i))
                                                 for i in range(count)] for name in classes})
    return root


class CountingModel(ToyColourModel):
    def __init__(self):
        super().__init__()
        self.images_encoded = 0

    def encode_image(self, images):
        self.images_encoded += len(images)
        return super().encode_image(images)


def run_probe(root, model=None, image_size=SIZE, **runtime):
    task = get_task("linear_probe")(str(root))
    return evaluate(model or ToyColourModel(), ToyTokenizer(), {"p": task}, image_size=image_size, workers=0,
                    progress=False, **runtime)


def test_fitting_separates_well_separated_features():
    train_x, train_y = clusters(per_class=100, seed=0)
    test_x, test_y = clusters(per_class=50, seed=1)
    probe = fit_probe(train_x, train_y, 10, l2_lambda=1.0)
    assert (probe.logits(test_x).argmax(1) == test_y).double().mean() >= 0.99
    metrics = probe_metrics(train_x, train_y, test_x, test_y, num_classes=10)
    assert metrics["top1"] >= 0.99 and metrics["mean_per_class_recall"] >= 0.99
    assert (metrics["num_train"], metrics["num_test"]) == (1000, 500)
    assert 1e-6 <= metrics["l2_lambda"] <= 1e6


def test_the_l2_strength_is_chosen_on_the_train_split_alone():
    train_x, train_y = clusters(per_class=40, dim=32, noise=2.0, seed=0)  # overlapping: lambda matters
    test_x, test_y = clusters(per_class=40, dim=32, noise=2.0, seed=1)
    scrambled = probe_metrics(train_x, train_y, -test_x, test_y.roll(7), num_classes=10)
    plain = probe_metrics(train_x, train_y, test_x, test_y, num_classes=10)
    assert scrambled["l2_lambda"] == plain["l2_lambda"] == choose_l2_lambda(train_x, train_y, 10)
    assert scrambled["top1"] < plain["top1"]
    kept, held = held_out_split(train_y, held_out=0.2, seed=0)
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(train_y)))
    assert torch.bincount(train_y[held], minlength=10).tolist() == [8] * 10  # 20% of each class


def test_the_same_seed_gives_the_same_numbers():
    train_x, train_y = clusters(per_class=30, dim=32, noise=2.0, seed=0)
    test_x, test_y = clusters(per_class=10, dim=32, noise=2.0, seed=1)
    assert probe_metrics(train_x, train_y, test_x, test_y, 10, seed=5) == probe_metrics(train_x, train_y, test_x,
                                                                                          test_y, 10, seed=5)
    assert not torch.equal(held_out_split(train_y, 0.2, 0)[1], held_out_split(train_y, 0.2, 1)[1])


def test_every_class_with_two_images_gives_one_to_the_held_out_part():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    kept, held = held_out_split(labels, held_out=0.01, seed=0)
    assert sorted(labels[held].tolist()) == [0, 2] and sorted(labels[kept].tolist()) == [0, 1, 2, 2]
    with pytest.raises(EvalError, match="no class with two or more images"):
        held_out_split(torch.tensor([0, 1, 2]), 0.2, 0)


def test_an_image_folder_probe_through_evaluate(tmp_path):
    metrics = run_probe(probe_folder(tmp_path / "set"))
    assert metrics["linear_probe/p/top1"] == 1.0 and metrics["linear_probe/p/mean_per_class_recall"] == 1.0
    assert (metrics["linear_probe/p/num_train"], metrics["linear_probe/p/num_test"]) == (20, 12)
    assert "linear_probe/p/top5" not in metrics  # 4 classes


def test_a_llip_like_representation_is_flattened(tmp_path):
    assert run_probe(probe_folder(tmp_path / "set"), ToyLlipModel())["linear_probe/p/top1"] == 1.0


def test_test_classes_are_matched_to_train_classes_by_name(tmp_path):
    root = probe_folder(tmp_path / "set", test_classes=["green", "yellow"])  # test labels 0, 1; train labels 1, 3
    metrics = run_probe(root)
    assert metrics["linear_probe/p/top1"] == 1.0 and metrics["linear_probe/p/num_test"] == 6


def test_clip_benchmark_shards_and_their_order_does_not_depend_on_loader_workers(tmp_path):
    root = tmp_path / "wds"
    for split, count in (("train", 6), ("test", 3)):
        samples = [(f"s{i:04d}", {"png": png_bytes(solid(shade(rgb, i))), "cls": str(label).encode()})
                   for label, rgb in enumerate(CLASS_RGB.values()) for i in range(count)]
        write_tar(root / split / "0.tar", samples[::2])
        write_tar(root / split / "1.tar", samples[1::2])
    (root / "classnames.txt").write_text("".join(f"{name}\n" for name in CLASS_RGB))
    task = get_task("linear_probe")(str(root))
    results = [evaluate(ToyColourModel(), ToyTokenizer(), {"p": task}, image_size=SIZE, workers=workers,
                        batch_size=5, progress=False) for workers in (0, 2)]
    assert results[0] == results[1]
    assert results[0]["linear_probe/p/top1"] == 1.0 and results[0]["linear_probe/p/num_train"] == 24


def test_features_are_cached_per_model_key_and_pixels_and_reused(tmp_path):
    root, cache = probe_folder(tmp_path / "set"), tmp_path / "cache"
    model = CountingModel()
    first = run_probe(root, model, cache_dir=cache, model_key="weights-a")
    assert model.images_encoded == 32 and len(list((cache / "linear_probe_features").glob("*.pt"))) == 2
    assert run_probe(root, model, cache_dir=cache, model_key="weights-a") == first
    assert model.images_encoded == 32  # both splits read from the cache
    run_probe(root, model, cache_dir=cache, model_key="weights-b")
    assert model.images_encoded == 64
    run_probe(root, model, image_size=2 * SIZE, cache_dir=cache, model_key="weights-a")
    assert model.images_encoded == 96
    assert len(list((cache / "linear_probe_features").iterdir())) == 6  # no temp file left behind


def test_without_a_cache_dir_or_model_key_features_are_computed_each_time(tmp_path):
    root = probe_folder(tmp_path / "set")
    model = CountingModel()
    run_probe(root, model)
    run_probe(root, model, cache_dir=tmp_path / "cache")  # no model key: nothing names the weights
    assert model.images_encoded == 64 and not (tmp_path / "cache").exists()


def test_a_rewritten_image_invalidates_the_cache(tmp_path):
    root, cache = probe_folder(tmp_path / "set"), tmp_path / "cache"
    model = CountingModel()
    run_probe(root, model, cache_dir=cache, model_key="a")
    solid((1, 2, 3)).save(root / "test" / "red" / "000.png")  # same name, other bytes
    run_probe(root, model, cache_dir=cache, model_key="a")
    assert model.images_encoded == 32 + 12  # only the test split again


def test_a_missing_split_folder_is_named(tmp_path):
    root = probe_folder(tmp_path / "set")
    (root / "test").rename(root / "val")
    with pytest.raises(EvalError, match=rf"has no test split: {root / 'test'} is not a directory "
                                        r"\(folders there: train, val\)"):
        run_probe(root)


def test_a_class_present_in_test_but_not_in_train_is_named(tmp_path):
    root = probe_folder(tmp_path / "set", test_classes=["red", "purple"])
    with pytest.raises(EvalError, match=rf"class 'purple' of {root / 'test'} is not a class of {root / 'train'}"):
        run_probe(root)


def test_a_class_without_train_shards_is_named(tmp_path):
    root = tmp_path / "wds"
    write_tar(root / "train" / "0.tar", [(f"t{i}", {"png": png_bytes(solid((9 * i, 0, 0))), "cls": b"0"})
                                         for i in range(4)])
    write_tar(root / "test" / "0.tar", [("u0", {"png": png_bytes(solid((0, 0, 0))), "cls": b"1"})])
    (root / "classnames.txt").write_text("cat\ndog\n")
    with pytest.raises(EvalError, match=rf"class 'dog' has test images in {root / 'test'} but no image in "
                                        rf"{root / 'train'}"):
        run_probe(root)


def test_held_out_must_be_a_fraction():
    with pytest.raises(EvalError, match=r"held_out=1.5 must be a fraction between 0 and 1"):
        get_task("linear_probe")("x", held_out=1.5)
