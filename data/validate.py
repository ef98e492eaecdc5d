"""What makes a sample usable: an image that decodes and at least one non-empty UTF-8 caption line.

One set of rules and reason names for every reader: conversion (source records), inspection,
tokenizer training (shard members) and the training loader. A bad sample raises BadSample with a
reason id; the loader counts ids (`corrupt_image`), inspect and convert report their labels
(`corrupt image`). decode_image is the one image decoder, of training and of evaluation.

Captions are the lines of KEY.txt, else of the json's "captions" (a list) or "caption"; each line
has its whitespace collapsed, and blank lines are dropped.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

from PIL import Image, UnidentifiedImageError

from data.shards import IMAGE_EXTENSIONS, find_image

NO_IMAGE = "no_image"
CORRUPT_IMAGE = "corrupt_image"
MISSING_CAPTION = "missing_caption"
EMPTY_CAPTION = "empty_caption"
NON_UTF8_CAPTION = "non_utf8_caption"
CORRUPT_JSON = "corrupt_json"
MISSING_FILE = "missing_file"  # convert: a record's image file cannot be read
MALFORMED_RECORD = "malformed_record"  # convert: a table row that is not a record
DUPLICATE_KEY = "duplicate_key"  # inspect: a key seen before in the given shards
TRUNCATED_TAR = "truncated_tar"  # inspect: a shard that cannot be read to its end
LABELS = {
    NO_IMAGE: "no image", CORRUPT_IMAGE: "corrupt image", MISSING_CAPTION: "missing caption",
    EMPTY_CAPTION: "empty caption", NON_UTF8_CAPTION: "non-UTF-8 caption", CORRUPT_JSON: "corrupt json",
    MISSING_FILE: "missing file", MALFORMED_RECORD: "malformed record", DUPLICATE_KEY: "duplicate key",
    TRUNCATED_TAR: "truncated tar",
}


def label(reason: str) -> str:
    """How reports spell a reason id; ids outside LABELS (the loader's `unreadable_shard`) lose their underscores."""
    return LABELS.get(reason, reason.replace("_", " "))


class BadSample(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{label(reason)}: {detail}" if detail else label(reason))
        self.reason = reason
        self.label = label(reason)
        self.detail = detail


def load_image(data: bytes, draft_short_side: Optional[int] = None) -> Image.Image:
    """The fully decoded image (a truncated file fails here, not later), in its own mode and format (which
    convert keeps; decode_image makes it RGB).

    With `draft_short_side`, a JPEG decodes at 1/2, 1/4 or 1/8 scale (draft mode) when its short
    side still covers that many pixels.
    """
    try:
        image = Image.open(io.BytesIO(data))
        if draft_short_side is not None:
            image.draft("RGB", (draft_short_side, draft_short_side))
        image.load()
        return image
    except Exception as e:  # PIL raises many types on corrupt data (OSError, SyntaxError, struct.error, ...)
        raise BadSample(CORRUPT_IMAGE, image_error(e)) from None


def decode_image(source: bytes | Path, name: str, draft_short_side: Optional[int] = None) -> Image.Image:
    """Encoded bytes or an image file as an RGB image, decoded in full (see load_image; evaluation never sets
    `draft_short_side`: CLIP_benchmark's numbers are of fully decoded images). Raises BadSample (missing_file
    for a file that cannot be read, else corrupt_image) whose detail names the image as `name`."""
    if isinstance(source, Path):
        try:
            source = source.read_bytes()
        except OSError as e:
            raise BadSample(MISSING_FILE, f"cannot read {name}: {e.strerror or e}") from None
    try:
        image = load_image(source, draft_short_side)
    except BadSample as e:
        raise BadSample(e.reason, f"cannot decode {name}: {e.detail}") from None
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # the pixels of a straight RGB conversion, minus the warning PIL gives for some
    return image.convert("RGB")


def image_error(e: Exception) -> str:
    """What PIL says about undecodable bytes, without the `<_io.BytesIO object at 0x...>` it names them by (the
    message that carries this names the image instead)."""
    if isinstance(e, UnidentifiedImageError):
        return "not in an image format PIL can read"
    return f"{type(e).__name__}: {e}"


def caption_lines(text: Optional[str], where: str = "caption") -> list[str]:
    """Non-empty, whitespace-collapsed lines of `text`. `text` may carry lone surrogates (bytes that
    were not UTF-8, decoded with surrogateescape), which make it a NON_UTF8_CAPTION."""
    if text is None:
        raise BadSample(MISSING_CAPTION, f"no {where}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadSample(NON_UTF8_CAPTION, f"the {where} holds bytes that are not UTF-8") from None
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise BadSample(EMPTY_CAPTION, f"the {where} is empty")
    return lines


def _utf8(data: bytes, member: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadSample(NON_UTF8_CAPTION, f"{member} is not UTF-8 ({e.reason} at byte {e.start})") from None


def sample_captions(members: dict[str, bytes]) -> list[str]:
    """The caption lines of a shard sample's members."""
    if "txt" in members:
        return caption_lines(_utf8(members["txt"], "txt"), "txt caption")
    if "json" not in members:
        raise BadSample(MISSING_CAPTION, "no txt or json member")
    try:
        meta = json.loads(_utf8(members["json"], "json"))
    except json.JSONDecodeError as e:
        raise BadSample(CORRUPT_JSON, f"json does not parse ({e.msg} at char {e.pos})") from None
    value = meta.get("captions", meta.get("caption")) if isinstance(meta, dict) else None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise BadSample(MISSING_CAPTION, "no txt member and the json has no 'caption' text or 'captions' list")
    return caption_lines("\n".join(c for c in value if isinstance(c, str)), "json caption")


def image_and_captions(members: dict[str, bytes]) -> tuple[bytes, list[str]]:
    """A shard sample's image bytes (still to be decoded, with decode_image or load_image) and caption lines.
    The cheap checks come first: a missing image member, then the captions."""
    image = find_image(members)
    if image is None:
        raise BadSample(NO_IMAGE, f"no {'/'.join(IMAGE_EXTENSIONS)} member (has: {', '.join(sorted(members))})")
    return image[1], sample_captions(members)
