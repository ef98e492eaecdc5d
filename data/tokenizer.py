"""Text to fixed-length token ids, on the `tokenizers` library (Rust, batched).

    tok = Tokenizer.from_file("demo_data/tokenizer.json", context_length=32)
    ids = tok(["a red circle", "a blue square"])   # LongTensor [2, 32]
    pooled = hidden[torch.arange(2), tok.eot_positions(ids)]

By default every row is `<start> tokens... <end> <pad>...`: text is cleaned like CLIP's (HTML
entities unescaped, whitespace collapsed, lower-cased), long texts are truncated so the end token
stays, and padding uses a dedicated pad token that text can never produce (special-token strings
in text are tokenized as plain text). Loads our own byte-level BPE files (`train_bpe`) and Hugging
Face tokenizer.json files such as CLIP's; a file without a pad token gets one appended (the
vocabulary grows by one).

The options give the ids of the tokenizers published models were trained with:
    OpenCLIP's CLIP    clip_bpe_tokenizer_json(bpe_simple_vocab_16e6.txt.gz), clean="openclip", pad_id=0
    OpenCLIP's SigLIP  its tokenizer.json, clean="canonicalize", start_token=False, pad_id=1 (the end token)
    Hugging Face's     its tokenizer.json, clean="none", pad_id=its pad token (CLIP: the end token);
                       SigLIP folders ship spiece.model: see SIGLIP_SPIECE_CONVERSION
"""
from __future__ import annotations

import gzip
import html
import json
import os
import re
import string
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

# What a user runs once in a Hugging Face SigLIP folder (spiece.model, no tokenizer.json); `{folder}` is the folder.
# transformers' SiglipTokenizer is SentencePiece-only and has no converter; its T5Tokenizer reads the same
# spiece.model into a tokenizers file (extra_ids=0: T5's 100 sentinel tokens are no part of SigLIP's vocabulary).
# Saving the backend file alone leaves tokenizer_config.json, so transformers still loads SiglipTokenizer there.
SIGLIP_SPIECE_CONVERSION = (
    "python -c \"import sys; from transformers import T5Tokenizer; T5Tokenizer.from_pretrained(sys.argv[1], "
    "extra_ids=0).backend_tokenizer.save(sys.argv[1] + '/tokenizer.json')\" {folder}")


def clean_text(text: str) -> str:
    return " ".join(html.unescape(html.unescape(text)).split()).lower()


def openclip_clean(text: str) -> str:
    """OpenCLIP's SimpleTokenizer cleaning (its default, "lower"): ftfy's fixes, then clean_text."""
    import ftfy  # only these rows need it; importing it takes a while

    return clean_text(ftfy.fix_text(text))


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def canonicalize(text: str) -> str:
    """OpenCLIP's clean="canonicalize" (SigLIP's, after big_vision): ftfy and HTML entities as openclip_clean,
    underscores as spaces, ASCII punctuation removed, lower-cased, whitespace collapsed."""
    return " ".join(openclip_clean(text).replace("_", " ").translate(_PUNCTUATION).split())


def canonicalize_hf(text: str) -> str:
    """transformers' SiglipTokenizer cleaning: lower-cased, ASCII punctuation (underscores too) removed, whitespace
    collapsed; no ftfy, HTML entities kept."""
    return re.sub(r"\s+", " ", text.lower().translate(_PUNCTUATION)).strip()


CLEANERS: dict[str, Callable[[str], str]] = {
    "clip": clean_text, "openclip": openclip_clean, "canonicalize": canonicalize, "canonicalize_hf": canonicalize_hf,
    "none": lambda text: text}


class Tokenizer:
    """Picklable (DataLoader workers receive it): it pickles as its JSON and options.

    clean: CLEANERS' name. start_token=False: rows are `tokens... <end> <pad>...` (SigLIP's). pad_id: None, a
    dedicated pad token (found by name, else appended); an id of the file, that token pads, even the end token or
    one text produces (OpenCLIP pads CLIP with 0, which is "!").
    """

    def __init__(self, tokenizer_json: str, context_length: int, source: str = "<tokenizer json>",
                 clean: str = "clip", start_token: bool = True, pad_id: Optional[int] = None):
        if context_length < 2:
            raise DataError(f"context_length must be at least 2, got {context_length}")
        if clean not in CLEANERS:
            raise DataError(f"clean={clean!r} is not a text cleaning; known: {', '.join(CLEANERS)}")
        try:
            tok = tokenizers.Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # the Rust side raises a plain Exception for malformed files
            raise DataError(f"{source} is not a tokenizers JSON file: {e}") from None
        self.source = source
        self.context_length = context_length
        self.clean = clean
        self._clean = CLEANERS[clean]
        self.start_token = start_token
        self.sot_id: Optional[int] = _find_token(tok, START_NAMES, "start", source) if start_token else None
        self.eot_id = _find_token(tok, END_NAMES, "end", source)
        if pad_id is None:
            pad_id = _find_token(tok, PAD_NAMES, "pad", source, required=False)
            if pad_id is None or pad_id in (self.sot_id, self.eot_id):
                tok.add_special_tokens([tokenizers.AddedToken(PAD_TOKEN, special=True, normalized=False)])
                pad_id = tok.token_to_id(PAD_TOKEN)
        elif not 0 <= pad_id < tok.get_vocab_size(with_added_tokens=True):
            raise DataError(f"pad_id={pad_id} is not a token id of {source}, whose ids are 0 to "
                            f"{tok.get_vocab_size(with_added_tokens=True) - 1}")
        self.pad_id: int = pad_id
        tok.no_padding()
        tok.enable_truncation(context_length - (2 if start_token else 1))
        self._json = tok.to_str()
        tok.encode_special_tokens = True  # "<|endoftext|>" typed in a caption is text, not the end token
        self._tok = tok
        self.vocab_size: int = tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_file(cls, path: str | os.PathLike, context_length: int, **options) -> "Tokenizer":
        """options: clean, start_token, pad_id, as the constructor's."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        return cls(path.read_text(encoding="utf-8"), context_length, source=str(path), **options)

    @property
    def json(self) -> str:
        """The tokenizers file as the rows use it (with the pad token, where one was appended)."""
        return self._json

    def __reduce__(self):
        return Tokenizer, (self._json, self.context_length, self.source, self.clean, self.start_token, self.pad_id)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """LongTensor [len(texts), context_length]."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer takes a list of texts, not one string")
        encodings = self._tok.encode_batch([self._clean(t) for t in texts], add_special_tokens=False)
        ids = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int64)
        first = int(self.start_token)
        if self.start_token:
            ids[:, 0] = self.sot_id
        for row, encoding in zip(ids, encodings):
            n = len(encoding.ids)
            row[first:first + n] = encoding.ids
            row[first + n] = self.eot_id
        return torch.from_numpy(ids)

    def eot_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """Index of each row's end token (its first: the pad id may be the end token's): [N] long."""
        return (ids == self.eot_id).int().argmax(1)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """One row back to (cleaned) text: the tokens after the start token and before the first end token (a pad
        id before it is text, as OpenCLIP's 0 is "!")."""
        ids = [int(i) for i in ids]
        if self.sot_id is not None and ids[:1] == [self.sot_id]:
            ids = ids[1:]
        if self.eot_id in ids:
            ids = ids[:ids.index(self.eot_id)]
        return self._tok.decode(ids)

    def __repr__(self) -> str:
        return (f"Tokenizer({self.source}, vocab_size={self.vocab_size}, context_length={self.context_length}, "
                f"clean={self.clean}, sot_id={self.sot_id}, eot_id={self.eot_id}, pad_id={self.pad_id})")


def _find_token(tok: tokenizers.Tokenizer, names: Sequence[str], role: str, source: str,
                required: bool = True) -> Optional[int]:
    for name in names:
        token_id = tok.token_to_id(name)
        if token_id is not None:
            return token_id
    if required:
        raise DataError(f"{source} has no {role} token; looked for {', '.join(names)}")
    return None


# OpenAI's CLIP vocabulary, as SimpleTokenizer reads bpe_simple_vocab_16e6.txt.gz: 256 byte tokens, the same with
# the end-of-word suffix, the file's first 48,894 merges (after its header line), then the start and end tokens.
CLIP_MERGES = 49152 - 256 - 2
# SimpleTokenizer's split (after cleaning, which leaves single spaces), compiled IGNORECASE there: "'s" then also
# matches "'ſ" (a long s, already lower case), and U+0345, which case-folds to a letter, matches no alternative and
# is dropped. Its `regex` module may know a newer Unicode than this library's engine (17 against 15.1 when this
# was written): characters assigned in between are split as punctuation here, as letters there.
CLIP_SPLIT = r"'s|'ſ|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}\x{345}]+"


def clip_bpe_tokenizer_json(path: str | os.PathLike) -> str:
    """OpenCLIP's (and OpenAI's) CLIP vocabulary file as a tokenizers JSON string: 49,408 tokens, ids equal to
    OpenCLIP's SimpleTokenizer's with clean="openclip" (start 49406, end 49407; pad_id=0 for its rows). Built as
    Hugging Face builds CLIP's tokenizer.json: BPE with a `</w>` end-of-word suffix over GPT-2's byte alphabet."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP vocabulary file {path} does not exist")
    try:
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a gzipped CLIP BPE merges file: {e}") from None
    merges = [tuple(line.split()) for line in lines[1:1 + CLIP_MERGES]]
    if len(merges) < CLIP_MERGES or any(len(merge) != 2 for merge in merges):
        raise DataError(f"{path} is not CLIP's BPE merges file: CLIP needs {CLIP_MERGES} merges of two pieces "
                        "after a header line")
    byte_chars = _byte_chars()
    pieces = [*byte_chars, *(c + "</w>" for c in byte_chars), *(a + b for a, b in merges), START_TOKEN, END_TOKEN]
    tok = tokenizers.Tokenizer(models.BPE(vocab={piece: i for i, piece in enumerate(pieces)}, merges=merges,
                                          end_of_word_suffix="</w>", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    # The suffix back to the byte character of a space, so the byte-level decoder keeps multi-byte characters whole.
    tok.decoder = decoders.Sequence([decoders.Replace("</w>", "Ġ"), decoders.ByteLevel(),
                                     decoders.Strip(content=" ", left=0, right=1)])
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in (START_TOKEN, END_TOKEN)])
    return tok.to_str()


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-character map in CLIP's vocabulary order: the printable Latin-1 bytes as themselves, then the
    other bytes, in byte order, as chr(256), chr(257), ..."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]


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
