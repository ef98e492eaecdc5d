"""Tiny img2dataset-style shards for the loader tests, written with tarfile in a tmp dir."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import torch
from PIL import Image


class ByteTokenizer:
    """A picklable stand-in for data.tokenizer.Tokenizer: the caption's UTF-8 bytes, zero-padded to 32."""

    context_length = 32

    def __call__(self, texts: list[str]) -> torch.Tensor:
        tokens = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            data = list(text.encode())[: self.context_length]
            tokens[row, : len(data)] = torch.tensor(data, dtype=torch.long)
        return tokens


def decode_tokens(row: torch.Tensor) -> str:
    return bytes(int(t) for t in row if t != 0).decode()


def image_bytes(color: tuple[int, int, int], size: tuple[int, int] = (20, 16), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def write_shard(path: Path, samples: list[dict[str, bytes | str]]) -> Path:
    """Each sample: {"__key__": key, "png": bytes, "txt": str or bytes, ...}; members in the given order."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for extension, value in sample.items():
                if extension == "__key__":
                    continue
                data = value.encode() if isinstance(value, str) else value
                info = tarfile.TarInfo(f"{sample['__key__']}.{extension}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    return path


def good_sample(key: str, color: tuple[int, int, int] = (200, 30, 30)) -> dict[str, bytes | str]:
    return {"__key__": key, "png": image_bytes(color), "txt": f"caption of {key}"}


def write_dataset(directory: Path, num_shards: int, per_shard: int, prefix: str = "") -> list[str]:
    """num_shards shards of per_shard good samples, keys f"{prefix}{shard:02d}{index:03d}"; returns all keys."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = []
    for shard in range(num_shards):
        samples = [good_sample(f"{prefix}{shard:02d}{i:03d}", (shard * 20 % 256, i * 30 % 256, 90))
                   for i in range(per_shard)]
        write_shard(directory / f"{prefix}shard-{shard:06d}.tar", samples)
        keys += [s["__key__"] for s in samples]  # type: ignore[misc]
    return keys


def truncate_inside(path: Path, member: str) -> None:
    """Cut the tar file 10 bytes into the data of `member`, as an interrupted download would."""
    with tarfile.open(path) as tar:
        cut = tar.getmember(member).offset_data + 10
    path.write_bytes(path.read_bytes()[:cut])
