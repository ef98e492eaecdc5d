"""Image decoding and the evaluation transform: shorter side to `image_size` (bicubic, antialiased), centre crop,
uint8 CHW. Normalisation is the model's job, on its device."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from data.validate import image_error
from eval.errors import EvalError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ImageTransform = Callable[[Image.Image], torch.Tensor]


def eval_transform(image_size: int) -> ImageTransform:
    return v2.Compose([
        v2.Resize(image_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(image_size),
        v2.PILToTensor(),
    ])


def decode(source: Path | bytes, name: str) -> Image.Image:
    """An RGB image from a file or from bytes; `name` (a path, or shard:key) goes into the error."""
    try:
        with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # PIL raises all of these
        raise EvalError(f"cannot decode image {name}: {image_error(e)}") from None


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)
