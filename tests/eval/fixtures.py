"""Tiny image datasets written by the tests themselves, in the layouts the evaluators read."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

RGB = tuple[int, int, int]
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
COLOUR_RGB = {"red": RED, "green": GREEN, "blue": BLUE, "yellow": (255, 255, 0), "cyan": (0, 255, 255),
              "magenta": (255, 0, 255)}
SIZE = 8


def solid(rgb: RGB) -> Image.Image:
    return Image.new("RGB", (SIZE, SIZE), rgb)


def top_and_rest(top: RGB, rest: RGB, top_rows: int) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), rest)
    image.paste(Image.new("RGB", (SIZE, top_rows), top), (0, 0))
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, fields in samples:
            for field, data in fields.items():
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def write_image_folder(root: Path, images: dict[str, list[Image.Image]], classnames: list[str] | None = None,
                       templates: list[str] | None = None) -> Path:
    for folder, folder_images in images.items():
        (root / folder).mkdir(parents=True)
        for i, image in enumerate(folder_images):
            image.save(root / folder / f"{i:03d}.png")
    if classnames is not None:
        (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    if templates is not None:
        (root / "templates.txt").write_text("\n".join(templates) + "\n")
    return root


def write_karpathy(root: Path, images: list[tuple[Image.Image, list[str]]], json_name: str = "dataset.json",
                   extra_entries: list[dict] = ()) -> Path:
    """The demo layout: ROOT/images/*.png and ROOT/dataset.json, every listed image in split "test"."""
    (root / "images").mkdir(parents=True)
    entries = []
    for i, (image, captions) in enumerate(images):
        image.save(root / "images" / f"{i:04d}.png")
        entries.append({"filename": f"{i:04d}.png", "filepath": "images", "split": "test", "imgid": i,
                        "sentences": [{"raw": c, "tokens": c.split(), "imgid": i} for c in captions]})
    (root / json_name).write_text(json.dumps({"images": entries + list(extra_entries), "dataset": "test"}))
    return root
