"""A tiny training setup the training tests share: shards, a tokenizer and a config that trains in seconds."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from contrastive.config import Config, load_config
from data.shards import ShardWriter
from data.tokenizer import train_bpe

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}

TINY_MODEL = [
    "model.embed_dim=16",
    "model.image.image_size=32", "model.image.kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}",
    "model.image.mixture_tokens=2",
    "model.text.context_length=12", "model.text.width=32", "model.text.depth=1", "model.text.heads=2",
]


def write_tiny_dataset(root: Path, shards: int = 2, per_shard: int = 32) -> tuple[str, Path]:
    """Solid-colour squares captioned with their colour; returns (shard pattern, tokenizer path)."""
    captions = []
    with ShardWriter(root / "shards", max_samples=per_shard) as writer:
        for i in range(shards * per_shard):
            name = list(COLOURS)[i % len(COLOURS)]
            buf = io.BytesIO()
            Image.new("RGB", (40, 40), COLOURS[name]).save(buf, format="PNG")
            caption = f"a {name} square number {i % 7}"
            captions.append(caption)
            writer.write(f"{i:09d}", {"png": buf.getvalue(), "txt": caption.encode()})
    tokenizer = train_bpe(captions, vocab_size=300, out_path=root / "tokenizer.json")
    return str(root / "shards" / f"shard-{{000000..{shards - 1:06d}}}.tar"), Path(tokenizer)


def tiny_config(root: Path, *overrides: str, preset: str | None = None) -> Config:
    """The tiny run on `root`'s shards (written on first use); a `preset`'s towers are shrunk to the tiny ones."""
    pattern, tokenizer = write_tiny_dataset(root) if not (root / "tokenizer.json").exists() else (
        str(root / "shards" / "shard-{000000..000001}.tar"), root / "tokenizer.json")
    return load_config(preset, [
        f"run_dir={root / 'run'}", f"data.shards={pattern}", f"data.tokenizer={tokenizer}", "data.workers=0",
        "data.shuffle_buffer=16", "train.batch_size=8", "train.steps=6", "train.precision=fp32",
        "train.log_every=2", "train.checkpoint_every=2", "optim.warmup_steps=2", "optim.lr=1e-3",
        *TINY_MODEL, *overrides,
    ])
