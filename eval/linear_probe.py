"""Linear probe: a multinomial logistic regression on the frozen image representations of a train split, scored on
a test split, by CLIP's protocol (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
Supervision", appendix A.3): L-BFGS on the L2-regularised cross-entropy (scikit-learn's LogisticRegression, here in
torch), at most 1000 iterations, the L2 strength lambda chosen on held-out data by a parametric binary search over
10^-6 .. 10^6: first 10^-6, 10^-4, ..., 10^6, then the interval around the best halved until 8 steps per decade.

    minimise over W [D, C], b [C]:  mean_i cross_entropy(W^T x_i + b, y_i) + lambda / (2 N) |W|^2

(scikit-learn's objective with C = 1 / lambda, divided by N; the bias is not penalised.) lambda is chosen on a
seeded, per-class `held_out` fraction of the train split (at least one image of every class with two or more),
fitted on the rest; the best held-out top-1 wins, the larger lambda on a tie. The probe is then fitted on the whole
train split with that lambda, from zero weights (each fit of the search starts from its nearest neighbour's); the
test split is used only to score it. Fits run in float64 on the evaluation device; a seed gives the same numbers.

Data: a dataset root with a train and a test split folder, each read as zero-shot classification reads a set
(eval/zeroshot.py): ImageFolder ROOT/SPLIT/CLASS/IMAGE (e.g. ImageNet's train/ and val/), or CLIP_benchmark shards
ROOT/SPLIT/*.tar with classnames.txt in ROOT or beside them. Classes are matched by name: every test class must
be a train class. Features are the model's image representation, flattened per image (a dot-product model's
embedding; Llip's mixture tokens concatenated; CLIP probes a ViT before its projection, which the model protocol
does not expose), kept through Runtime.cached per (model, split, its files, pixels, autocast dtype).
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

# The module, not its names: eval.zeroshot imports the registry, which imports this module before they exist.
from eval import zeroshot
from eval.errors import EvalError
from eval.loading import ImageFiles, Pixels, SampleParser, ShardSamples, find_shards
from eval.metrics import classification_metrics, target_ranks
from eval.runtime import EvaluableModel, Runtime, Tokenizer
from eval.tasks import Task, register_task

LOG10_LAMBDA_RANGE = (-6.0, 6.0)
LOG10_LAMBDA_START_STEP = 2.0  # the first sweep: 10^-6, 10^-4, ..., 10^6
LOG10_LAMBDA_FINEST_STEP = 1 / 8  # halve the step around the best until 8 steps per decade
MAX_ITERATIONS = 1000
# As scikit-learn's L-BFGS: stop once the objective's largest gradient entry is below its tol, 1e-4, and keep
# scipy's 10 correction pairs; also stop when an iteration changes the objective or the weights by less than 1e-9
# (torch's default).
GRADIENT_TOLERANCE = 1e-4
HISTORY_SIZE = 10
CHANGE_TOLERANCE = 1e-9
# A CPU fit with fewer multiply-adds per logits product (images x features x classes) runs on one thread: its ops
# are tiny, and a second thread only spins between them, up to 100x slower on a loaded 2-core machine.
ONE_THREAD_BELOW = 2 ** 26


@register_task("linear_probe")
class LinearProbe(Task):
    """Train and test splits under `path` (the layouts above), named `train_split` and `test_split`; `held_out`
    is the fraction of each train class that chooses lambda, drawn with `seed`."""

    metrics = ("top1", "top5", "mean_per_class_recall", "num_train", "num_test", "l2_lambda")

    def __init__(self, path: str, train_split: str = "train", test_split: str = "test", held_out: float = 0.2,
                 seed: int = 0):
        if not 0 < held_out < 1:
            raise EvalError(f"linear_probe: held_out={held_out} must be a fraction between 0 and 1 (exclusive)")
        self.path, self.train_split, self.test_split = path, train_split, test_split
        self.held_out, self.seed = held_out, seed

    def open(self, pixels: Pixels) -> ProbeSet:
        root = Path(self.path)
        if not root.is_dir():
            raise EvalError(f"linear-probe dataset {root} does not exist or is not a directory; expected "
                            f"{self.train_split}/ and {self.test_split}/ in it")
        train = Split(root / self.train_split, open_split(root, self.train_split, pixels))
        test = Split(root / self.test_split, open_split(root, self.test_split, pixels))
        return ProbeSet(train, test, _test_to_train_labels(train, test), pixels)

    def run(self, model: EvaluableModel, tokenizer: Tokenizer, data: ProbeSet, runtime: Runtime,
            desc: str) -> dict[str, float]:
        train_features, train_labels = split_features(model, data.train, data.pixels, runtime, f"{desc} train")
        test_features, test_labels = split_features(model, data.test, data.pixels, runtime, f"{desc} test")
        test_labels = data.test_to_train[test_labels]
        missing = sorted(set(test_labels.tolist()) - set(train_labels.tolist()))
        if missing:
            raise EvalError(f"class {data.train.data.classnames[missing[0]]!r} has test images in {data.test.path} "
                            f"but no image in {data.train.path}")
        return probe_metrics(train_features.to(runtime.device), train_labels.to(runtime.device),
                             test_features.to(runtime.device), test_labels.to(runtime.device),
                             len(data.train.data.classnames), self.held_out, self.seed)


@dataclass
class Split:
    path: Path  # ROOT/SPLIT
    data: zeroshot.ClassificationSet


@dataclass
class ProbeSet:
    train: Split
    test: Split
    test_to_train: torch.Tensor  # [test classes]: each test label's train label
    pixels: Pixels


def _test_to_train_labels(train: Split, test: Split) -> torch.Tensor:
    """[test classes]: each test class's train label, matched by name."""
    train_names, test_names = train.data.classnames, test.data.classnames
    if test_names == train_names:
        return torch.arange(len(train_names))
    train_label = {name: label for label, name in enumerate(train_names)}
    unknown = [name for name in test_names if name not in train_label]
    if unknown:
        more = f" ({len(unknown)} such classes)" if len(unknown) > 1 else ""
        raise EvalError(f"class {unknown[0]!r} of {test.path} is not a class of {train.path}{more}; the probe "
                        f"can only predict the train split's classes")
    if len(train_label) < len(train_names):
        raise EvalError(f"{train.path} names a class twice, so its classes cannot be matched to those of "
                        f"{test.path} by name")
    return torch.tensor([train_label[name] for name in test_names])


def open_split(root: Path, split: str, pixels: Pixels) -> zeroshot.ClassificationSet:
    """ROOT/SPLIT as shards (classnames.txt in ROOT or beside them) or as an ImageFolder tree."""
    split_dir = root / split
    if not split_dir.is_dir():
        present = sorted(e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))
        raise EvalError(f"linear-probe dataset {root} has no {split} split: {split_dir} is not a directory "
                        f"(folders there: {', '.join(present) or 'none'})")
    shards = find_shards(root, split)
    if shards is not None and shards[0].parent == split_dir:
        return zeroshot.open_classification_set(root, pixels.size, split=split, resize=pixels.resize)
    return zeroshot.open_classification_set(split_dir, pixels.size, resize=pixels.resize)


def split_features(model: EvaluableModel, split: Split, pixels: Pixels, runtime: Runtime,
                   desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 features [N, F], labels [N]) on the CPU, in the split's order, kept by runtime.cached."""
    key = {"split": str(split.path.resolve()), "files": _files_digest(split.data.images),
           "pixels": [pixels.size, pixels.resize], "autocast": str(runtime.autocast_dtype)}
    found = runtime.cached("linear_probe_features", key, lambda: _encode(model, split.data, runtime, desc))
    return found["features"], found["labels"]


def _encode(model: EvaluableModel, data: zeroshot.ClassificationSet, runtime: Runtime,
            desc: str) -> dict[str, torch.Tensor]:
    images = _tagged_with_order(data.images)
    loader = runtime.loader(images)
    total = len(loader) if data.num_images is not None else None
    features, labels, orders = [], [], []
    for batch, payloads in runtime.bar(loader, f"{desc} images", total=total):
        features.append(runtime.encode_images(model, batch).flatten(1).float().cpu())
        for label, order in payloads:
            labels.append(label)
            orders.append(order)
    if not labels:
        raise EvalError(f"{data.source} yielded no images")
    features_all = torch.cat(features)
    if not torch.isfinite(features_all).all():
        raise EvalError(f"the model produced non-finite image representations on {data.source}")
    # Loader workers interleave shards; their (shard, position) order makes the held-out draw independent of them.
    order = torch.tensor(sorted(range(len(orders)), key=orders.__getitem__))
    return {"features": features_all[order], "labels": torch.tensor(labels)[order]}


def _tagged_with_order(images: Dataset) -> Dataset:
    """The same images, each with payload (label, its (shard, position) or (0, index))."""
    if isinstance(images, ShardSamples):
        return ShardSamples(images.shards, images.transform, partial(_with_order, parse=images.parse))
    if isinstance(images, ImageFiles):
        return ImageFiles([(path, (label, (0, i))) for i, (path, label) in enumerate(images.items)],
                          images.transform)
    raise TypeError(f"linear_probe reads ImageFiles or ShardSamples, not {type(images).__name__}")


def _with_order(fields: dict[str, bytes], name: str, order: tuple[int, int],
                parse: SampleParser) -> tuple[bytes, tuple[Any, tuple[int, int]]]:
    image, label = parse(fields, name, order)
    return image, (label, order)


def _files_digest(images: Dataset) -> str:
    """The set's files with their sizes and modification times: a rewritten dataset is read again."""
    files = images.shards if isinstance(images, ShardSamples) else [path for path, _ in images.items]
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def probe_metrics(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                  test_labels: torch.Tensor, num_classes: int, held_out: float = 0.2,
                  seed: int = 0) -> dict[str, float]:
    """lambda chosen on the train split alone, the probe fitted on all of it, scored on the test split: top1, top5
    (with 5 classes or more), mean_per_class_recall (see eval.metrics), num_train, num_test and l2_lambda."""
    with _threads_for(train_features, num_classes):
        l2_lambda = choose_l2_lambda(train_features, train_labels, num_classes, held_out, seed)
        probe = fit_probe(train_features, train_labels, num_classes, l2_lambda)
        logits = probe.logits(test_features).cpu()
    targets = test_labels.cpu()
    metrics = classification_metrics(logits.argmax(1), target_ranks(logits, targets), targets, num_classes)
    return {**metrics, "num_train": float(len(train_labels)), "num_test": float(len(test_labels)),
            "l2_lambda": l2_lambda}


@contextmanager
def _threads_for(features: torch.Tensor, num_classes: int) -> Iterator[None]:
    if features.device.type != "cpu" or features.numel() * num_classes >= ONE_THREAD_BELOW:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class Probe:
    weight: torch.Tensor  # [F, C]
    bias: torch.Tensor  # [C]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(self.weight.dtype) @ self.weight + self.bias


def fit_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2_lambda: float,
              start: Optional[Probe] = None) -> Probe:
    """The minimiser of the objective above by L-BFGS (strong-Wolfe line search), on the features' device, from
    zero weights or from `start` (a fit at a neighbouring lambda: the sweep's warm start)."""
    x = features.to(torch.float64)
    if start is None:
        start = Probe(torch.zeros(x.shape[1], num_classes, dtype=x.dtype, device=x.device),
                      torch.zeros(num_classes, dtype=x.dtype, device=x.device))
    weight = start.weight.clone().requires_grad_()
    bias = start.bias.clone().requires_grad_()
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=MAX_ITERATIONS, tolerance_grad=GRADIENT_TOLERANCE,
                                  tolerance_change=CHANGE_TOLERANCE, history_size=HISTORY_SIZE,
                                  line_search_fn="strong_wolfe")
    penalty = l2_lambda / (2 * len(x))

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, labels) + penalty * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    return Probe(weight.detach(), bias.detach())


def choose_l2_lambda(features: torch.Tensor, labels: torch.Tensor, num_classes: int, held_out: float = 0.2,
                     seed: int = 0) -> float:
    """CLIP's parametric binary search for lambda, each value fitted on the kept part of these (train) images and
    scored by top-1 on the held-out part. Each fit starts from that of the nearest lambda fitted before it (the
    first sweep runs from the strongest down), which saves most iterations of the weakly regularised ones: a weaker
    lambda whose objective is already stationary there (to the tolerance) keeps that fit, ties, and loses."""
    kept, held = held_out_split(labels, held_out, seed)
    fit_x, fit_y, held_x, held_y = features[kept], labels[kept], features[held], labels[held]
    fits: dict[float, Probe] = {}
    scores: dict[float, float] = {}

    def score(log10_lambda: float) -> None:
        if log10_lambda not in scores and LOG10_LAMBDA_RANGE[0] <= log10_lambda <= LOG10_LAMBDA_RANGE[1]:
            nearest = min(fits, key=lambda value: (abs(value - log10_lambda), -value), default=None)
            probe = fit_probe(fit_x, fit_y, num_classes, 10.0 ** log10_lambda, fits.get(nearest))
            fits[log10_lambda] = probe
            scores[log10_lambda] = (probe.logits(held_x).argmax(1) == held_y).double().mean().item()

    low, high = LOG10_LAMBDA_RANGE
    for index in range(round((high - low) / LOG10_LAMBDA_START_STEP) + 1):
        score(high - index * LOG10_LAMBDA_START_STEP)
    step = LOG10_LAMBDA_START_STEP
    while step > LOG10_LAMBDA_FINEST_STEP:
        step /= 2
        best = max(scores, key=lambda value: (scores[value], value))
        score(best - step)
        score(best + step)
    return 10.0 ** max(scores, key=lambda value: (scores[value], value))


def held_out_split(labels: torch.Tensor, held_out: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) indices: of each class with n >= 2 images, round(held_out * n) but at least 1 and at most
    n - 1, drawn by a generator seeded with `seed` (on the CPU, so the draw is the same on any device)."""
    generator = torch.Generator().manual_seed(seed)
    cpu_labels = labels.cpu()
    kept, held = [], []
    for label in torch.unique(cpu_labels).tolist():
        members = (cpu_labels == label).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        count = min(len(members) - 1, max(1, round(held_out * len(members)))) if len(members) >= 2 else 0
        held.append(members[:count])
        kept.append(members[count:])
    held_indices = torch.cat(held)
    if len(held_indices) == 0:
        raise EvalError(f"the train split has no class with two or more images ({len(labels)} images), so none can "
                        f"be held out to choose the L2 strength")
    return torch.cat(kept).sort().values.to(labels.device), held_indices.sort().values.to(labels.device)
