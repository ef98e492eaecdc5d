"""Reading evaluation data: image files and folders, CLIP_benchmark's WebDataset shards, and the images they hold,
as torch datasets that yield (uint8 image [3, S, S], payload); the payload is whatever the task attaches (a label,
captions).

Images are decoded in full by data's one decoder (data.validate.decode_image; no JPEG draft mode: published
numbers and the CLIP_benchmark equivalence depend on it), then made square by the model's resize mode
(data.decode.square_pixels: "crop", the shorter side to the size then a centre crop, CLIP's; "squash", SigLIP's),
bicubic and antialiased, uint8 CHW. Normalisation is the model's job, on its device.

Shards are read by training's reader (data.shards.read_shard), laid out as CLIP_benchmark lays them out:

    DIR/test/nshards.txt, DIR/test/0.tar ... DIR/test/{n-1}.tar     (or any DIR/test/*.tar, or DIR/*.tar)
    DIR/classnames.txt, DIR/zeroshot_classification_templates.txt   (classification; also accepted in DIR/test/)
    DIR/dataset_type.txt                                            ("retrieval" for retrieval sets)

A sample is the run of consecutive tar members sharing a key (the member name up to the first dot of its base
name, as webdataset groups them); its fields are keyed by the lower-cased rest of the name.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from data.errors import ShardReadError
from data.plural import count
from data.shards import IMAGE_EXTENSIONS, find_image, read_shard
from data.validate import BadSample, decode_image
from eval.errors import EvalError

IMAGE_FILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")  # ImageFolder's images
ImageTransform = Callable[[Image.Image], torch.Tensor]
# (fields of one sample, "shard:key" for errors, (shard index, position in shard)) -> (image bytes, payload)
SampleParser = Callable[[dict[str, bytes], str, tuple[int, int]], tuple[bytes, Any]]


@dataclass(frozen=True)
class Pixels:
    """What the model takes: square images of `size`, made square by `resize` (data.decode.RESIZE_MODES)."""

    size: int
    resize: str = "crop"


def eval_transform(image_size: int, resize: str = "crop") -> ImageTransform:
    from data.decode import square_pixels  # torchvision: when a task opens its data, not with the registry

    return functools.partial(square_pixels, size=image_size, resize=resize)


def decode(source: Path | bytes, name: str) -> Image.Image:
    """An RGB image from a file or from bytes; `name` (a path, or shard:key) goes into the error."""
    try:
        return decode_image(source, f"image {name}")
    except BadSample as e:
        raise EvalError(e.detail) from None


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_FILE_SUFFIXES)


class ImageFiles(Dataset):
    def __init__(self, items: list[tuple[Path, Any]], transform: ImageTransform):
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        path, payload = self.items[index]
        return self.transform(decode(path, str(path))), payload


class ShardSamples(IterableDataset):
    """Every sample of every shard once, in tar order; DataLoader worker w of W reads shards w, w+W, ..."""

    def __init__(self, shards: list[Path], transform: ImageTransform, parse: SampleParser):
        self.shards = shards
        self.transform = transform
        self.parse = parse

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Any]]:
        worker = get_worker_info()
        first, step = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for shard_index in range(first, len(self.shards), step):
            try:
                for position, sample in enumerate(read_shard(self.shards[shard_index])):
                    name = f"{sample.shard}:{sample.key}"
                    image_bytes, payload = self.parse(sample.members, name, (shard_index, position))
                    yield self.transform(decode(image_bytes, name)), payload
            except ShardReadError as e:
                raise EvalError(str(e)) from None


def image_field(fields: dict[str, bytes], name: str) -> bytes:
    found = find_image(fields)
    if found is None:
        raise EvalError(f"sample {name} has no image (expected one of .{', .'.join(IMAGE_EXTENSIONS)}; "
                        f"found .{', .'.join(sorted(fields))})")
    return found[1]


def text_field(fields: dict[str, bytes], field: str, name: str) -> str:
    if field not in fields:
        raise EvalError(f"sample {name} has no .{field} member (found .{', .'.join(sorted(fields))})")
    try:
        return fields[field].decode("utf-8")
    except UnicodeDecodeError:
        raise EvalError(f"sample {name}: .{field} is not UTF-8 text") from None


def find_shards(root: Path, split: str) -> Optional[list[Path]]:
    """The shard list of a CLIP_benchmark-style directory, or None when `root` holds no shards."""
    split_dir = root / split
    count_file = split_dir / "nshards.txt"
    if count_file.is_file():
        text = count_file.read_text().strip()
        if not text.isdigit() or int(text) == 0:
            raise EvalError(f"{count_file} should hold a positive shard count, found {text!r}")
        shards = [split_dir / f"{i}.tar" for i in range(int(text))]
        missing = [s for s in shards if not s.is_file()]
        if missing:
            raise EvalError(f"{count_file} says {count(len(shards), 'shard')} but {len(missing)} missing, e.g. "
                            f"{missing[0]}")
        return shards
    for folder in (split_dir, root):
        shards = sorted(folder.glob("*.tar")) if folder.is_dir() else []
        if shards:
            return shards
    return None


def sidecar(shards: list[Path], root: Path, name: str) -> Optional[Path]:
    """A metadata file beside the shards or in the dataset root (CLIP_benchmark puts it in the root)."""
    for folder in (shards[0].parent, root):
        if (folder / name).is_file():
            return folder / name
    return None


def dataset_type(root: Path) -> str:
    path = root / "dataset_type.txt"
    return path.read_text().strip().lower() if path.is_file() else "classification"
