"""Text to fixed-length token ids, on the `tokenizers` library (Rust, batched).

    tok = Tokenizer.from_file("demo_data/tokenizer.json", context_length=32)
    ids = tok(["a red circle", "a blue square"])   # LongTensor [2, 32]
    pooled = hidden[torch.arange(2), tok.eot_positions(ids)]

Every row is `<start> tokens... <end> <pad>...`: text is cleaned like CLIP's (HTML entities
unescaped, whitespace collapsed, lower-cased), long texts are truncated so the end token stays,
and padding uses a dedicated pad token that text can never produce (special-token strings in
text are tokenized as plain text), so a row's end token sits at `(ids != pad_id).sum(1) - 1`.
Loads our own byte-level BPE files (`train_bpe`) and Hugging Face tokenizer.json files such as
CLIP's; a file without a pad token gets one appended (the vocabulary grows by one).
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import numpy as np
import torch
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from data.atomic import atomic_write_text
from data.errors import DataError
from data.patterns import expand_patterns
from data.progress import ShardProgress
from data.shards import read_shard
from data.validate import BadSample, caption_lines, sample_captions

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# Names other tokenizer files use for the same roles, tried in order after ours.
START_NAMES = (START_TOKEN, "<start>", "<s>", "<bos>", "[CLS]")
END_NAMES = (END_TOKEN, "<end>", "</s>", "<eos>", "[SEP]")
PAD_NAMES = (PAD_TOKEN, "<pad>", "[PAD]")
T = TypeVar("T")


def clean_text(text: str) -> str:
    return " ".join(html.unescape(html.unescape(text)).split()).lower()


class Tokenizer:
    """Picklable (DataLoader workers receive it): it pickles as its JSON and context length."""

    def __init__(self, tokenizer_json: str, context_length: int, source: str = "<tokenizer json>"):
        if context_length < 2:
            raise DataError(f"context_length must be at least 2 (start and end token), got {context_length}")
        try:
            tok = tokenizers.Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # the Rust side raises a plain Exception for malformed files
            raise DataError(f"{source} is not a tokenizers JSON file: {e}") from None
        self.source = source
        self.context_length = context_length
        self.sot_id = _find_token(tok, START_NAMES, "start", source)
        self.eot_id = _find_token(tok, END_NAMES, "end", source)
        pad_id = _find_token(tok, PAD_NAMES, "pad", source, required=False)
        if pad_id is None or pad_id in (self.sot_id, self.eot_id):
            tok.add_special_tokens([tokenizers.AddedToken(PAD_TOKEN, special=True, normalized=False)])
            pad_id = tok.token_to_id(PAD_TOKEN)
        self.pad_id: int = pad_id
        tok.no_padding()
        tok.enable_truncation(context_length - 2)
        self._json = tok.to_str()
        tok.encode_special_tokens = True  # "<|endoftext|>" typed in a caption is text, not the end token
        self._tok = tok
        self.vocab_size: int = tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_file(cls, path: str | os.PathLike, context_length: int) -> "Tokenizer":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        return cls(path.read_text(encoding="utf-8"), context_length, source=str(path))

    def __reduce__(self):
        return Tokenizer, (self._json, self.context_length, self.source)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """LongTensor [len(texts), context_length]."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer takes a list of texts, not one string")
        encodings = self._tok.encode_batch([clean_text(t) for t in texts], add_special_tokens=False)
        ids = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int64)
        ids[:, 0] = self.sot_id
        for row, encoding in zip(ids, encodings):
            n = len(encoding.ids)
            row[1:1 + n] = encoding.ids
            row[1 + n] = self.eot_id
        return torch.from_numpy(ids)

    def eot_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """Index of each row's end token: [N] long."""
        return (ids != self.pad_id).sum(1) - 1

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """One row back to (cleaned) text, without start, end and pad tokens."""
        special = (self.sot_id, self.eot_id, self.pad_id)
        return self._tok.decode([int(i) for i in ids if int(i) not in special])

    def __repr__(self) -> str:
        return (f"Tokenizer({self.source}, vocab_size={self.vocab_size}, context_length={self.context_length}, "
                f"sot_id={self.sot_id}, eot_id={self.eot_id}, pad_id={self.pad_id})")


def _find_token(tok: tokenizers.Tokenizer, names: Sequence[str], role: str, source: str,
                required: bool = True) -> Optional[int]:
    for name in names:
        token_id = tok.token_to_id(name)
        if token_id is not None:
            return token_id
    if required:
        raise DataError(f"{source} has no {role} token; looked for {', '.join(names)}")
    return None


def train_bpe(texts: Iterable[str], vocab_size: int, out_path: str | os.PathLike) -> Path:
    """Train a byte-level BPE (GPT-2 style, with CLIP's text cleaning) and save it as tokenizer.json.

    `vocab_size` is an upper bound: it includes the 256 byte tokens and the start, end and pad
    tokens; a small corpus runs out of merges earlier. Deterministic for the same texts.
    """
    if vocab_size < 256 + 3:
        raise DataError(f"vocab_size must be at least 259 (256 bytes + start, end, pad), got {vocab_size}")
    tok = tokenizers.Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(tokenizers.Regex(r"\s+"), " "), normalizers.Strip(),
        normalizers.Lowercase(),
    ])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[START_TOKEN, END_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator((clean_text(t) for t in texts), trainer)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Re-serialised with indentation for readable diffs.
    atomic_write_text(out_path, json.dumps(json.loads(tok.to_str()), indent=1, ensure_ascii=False) + "\n")
    return out_path


def captions_from_files(patterns: Sequence[str], progress: Optional[bool] = None) -> Iterator[str]:
    """Caption lines of shards (`*.tar`: every sample's captions, as the loader reads them) and text files
    (one per line, each a sample on the progress bar). Unusable captions (empty, not UTF-8) are left out:
    training text, not a validation pass."""
    paths = list(map(Path, expand_patterns(patterns, allow_pipe=False)))
    with ShardProgress(len(paths), "tokenizer: reading", progress, noun="file") as bar:
        for path in paths:
            if path.suffix == ".tar":
                for sample in read_shard(path):
                    bar.sample()
                    yield from _usable(sample_captions, sample.members)
            else:
                for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
                    bar.sample()
                    yield from _usable(caption_lines, line)
            bar.shard_done()


def _usable(captions_of: Callable[[T], list[str]], source: T) -> list[str]:
    try:
        return captions_of(source)
    except BadSample:
        return []
