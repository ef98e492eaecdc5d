"""One raw sample to a uint8 image [3, S, S] and one of its captions, or BadSample naming why not.

Images: data.validate.decode_image, with JPEG draft mode (DCT scaling) when the source is at least twice the
size the crop needs; RandomResizedCrop for training, through torchvision's v2 functionals with crop parameters
drawn from the caller's generator (never a global RNG); without augmentation, `square_pixels` (evaluation's too,
which chooses the model's resize mode).
Which samples are usable and what their captions are is data/validate.py's; one caption is drawn per visit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from data.validate import decode_image, image_and_captions

CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range
# How an image becomes a square without augmentation: "crop", the shorter side to the size then a centre crop
# (CLIP's, OpenCLIP's); "squash", the whole image resized to size x size, aspect ratio not kept (SigLIP's, DFN's).
RESIZE_MODES = ("crop", "squash")


def square_pixels(image: Image.Image, size: int, resize: str = "crop") -> torch.Tensor:
    """uint8 [3, size, size], resized bicubic with antialiasing by `resize` (RESIZE_MODES)."""
    if resize == "squash":
        image = F.resize(image, [size, size], InterpolationMode.BICUBIC, antialias=True)
    elif resize == "crop":
        image = F.center_crop(F.resize(image, size, InterpolationMode.BICUBIC, antialias=True), [size, size])
    else:
        raise ValueError(f"resize mode {resize!r} is not one of {', '.join(RESIZE_MODES)}")
    return F.pil_to_tensor(image)


@dataclass(frozen=True)
class ImageTransform:
    image_size: int
    train: bool
    crop_scale: tuple[float, float]

    def needed_short_side(self) -> int:
        """The short side a decoded image needs so that the smallest possible crop still has image_size pixels."""
        if not self.train:
            return self.image_size
        return math.ceil(self.image_size / math.sqrt(self.crop_scale[0] * CROP_RATIO[0]))

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        if not self.train:
            return square_pixels(image, self.image_size)
        top, left, height, width = random_resized_crop_box(image.height, image.width, self.crop_scale, generator)
        size = [self.image_size, self.image_size]
        image = F.resized_crop(image, top, left, height, width, size, InterpolationMode.BICUBIC, antialias=True)
        return F.pil_to_tensor(image)


def random_resized_crop_box(height: int, width: int, scale: tuple[float, float],
                            generator: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params (top, left, height, width), drawing from `generator`."""
    area = height * width
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        u_area, u_ratio, u_top, u_left = torch.rand(4, generator=generator).tolist()
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u_area)
        aspect = math.exp(log_low + (log_high - log_low) * u_ratio)
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return min(int(u_top * (height - h + 1)), height - h), min(int(u_left * (width - w + 1)), width - w), h, w
    aspect = width / height
    if aspect < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif aspect > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def decode(members: dict[str, bytes], transform: ImageTransform,
           generator: torch.Generator) -> tuple[torch.Tensor, str]:
    """Raises data.validate.BadSample for a sample that breaks its rules."""
    image, choices = image_and_captions(members)
    caption = choices[int(torch.randint(len(choices), (1,), generator=generator))]
    rgb = decode_image(image, "the image member", draft_short_side=transform.needed_short_side())
    return transform(rgb, generator), caption
