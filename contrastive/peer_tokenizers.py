"""Tokenizer files for an export, with which the peers' tokenizers make our rows of ids.

    peer = peer_tokenizer_files(tok, "open_clip", "siglip")
    for name, text in peer.files.items():
        (out / name).write_text(text, encoding="utf-8")
    model_cfg["text_cfg"].update(peer.text_cfg)         # open_clip_config.json's

open_clip: OpenCLIP's get_tokenizer("local-dir:OUT") reads model_cfg.text_cfg; with an hf_tokenizer_name it loads
HFTokenizer from OUT itself (the name is not read then), which runs one of its clean options in Python and then the
file. OpenCLIP's own CLIP tokenizer ships no file: its SimpleTokenizer, without hf_tokenizer_name, is it.
hf: AutoTokenizer, CLIPProcessor and SiglipProcessor load OUT's files as written (PreTrainedTokenizerFast: a
SigLIP export ships that class too, as SiglipTokenizer is SentencePiece-only and SiglipProcessor takes any
tokenizer); a fast tokenizer cleans only in its file's normalizer, so there our cleaning less what a normalizer
cannot do runs before the file's own normalizer.
Both get our start and end tokens from the file's post-processor, our pad token, and "<|endoftext|>" typed in a
caption as text (split_special_tokens). Where a peer cannot clean as we do, the texts whose ids differ are
OPENCLIP_DIFFERS' and HF_DIFFERS' (by our clean).
"""
from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from typing import Any, Literal

import tokenizers
from tokenizers import normalizers, processors

from data.tokenizer import Tokenizer

# OpenCLIP reads a local-dir: folder's tokenizer from the folder, whatever this says; on the hub (hf-hub:) it is
# the repo that holds the files, which a push of the folder fills in.
HF_TOKENIZER_NAME = "this-folder"
# sha256 of the normalizer, pre-tokenizer and model of clip_bpe_tokenizer_json(bpe_simple_vocab_16e6.txt.gz), as
# this tokenizers library writes them: a file that is OpenCLIP's CLIP BPE, split as its SimpleTokenizer splits.
OPENCLIP_CLIP_SHA256 = "3ce959213a9543ea678db4d38d0b41848704dcecda3cc0cbc0b2dce3d435076a"
PROCESSORS = {"clip": "CLIPProcessor", "siglip": "SiglipProcessor"}

PUNCTUATION = "[" + "".join("\\" + c for c in string.punctuation) + "]"  # Python's string.punctuation (ASCII)
WHITESPACE = r"[\s\x{1c}-\x{1f}]+"  # str.split()'s: Unicode's White_Space and the ASCII separators \x1c-\x1f

_FTFY = ("texts whose cleaning ftfy.fix_text changes (mojibake, ligatures, full-width letters, curly quotes, "
         "control characters, HTML entities escaped three times)")
_ENTITIES = "texts with HTML entities (html.unescape)"
_LOWER = ("texts with a capital sigma ending a word (Python lower-cases it to ς, the Lowercase normalizer to σ) and, "
          "where the file's own normalizer does not lower-case, letters whose lower case Unicode added after "
          "Python's version (14.0 in Python 3.11)")
# Our clean -> the texts whose ids differ. OpenCLIP's clean options all run ftfy and html.unescape (twice) first;
# "whitespace" then collapses whitespace, "lower" lower-cases too, "canonicalize" is data.tokenizer.canonicalize.
OPENCLIP_DIFFERS = {
    "clip": _FTFY,
    "openclip": "none (SimpleTokenizer for OpenCLIP's CLIP BPE: texts with its '<start_of_text>', '<end_of_text>')",
    "canonicalize": "none",
    "canonicalize_hf": f"{_FTFY}; {_ENTITIES}",
    "none": f"{_FTFY}; {_ENTITIES}; texts with runs of, leading or trailing whitespace, unless the file's "
            "normalizer or pre-tokenizer makes them the same",
}
HF_DIFFERS = {
    "clip": f"{_ENTITIES}; {_LOWER}",
    "openclip": f"{_FTFY} other than to NFC; {_ENTITIES}; {_LOWER}",
    "canonicalize": f"{_FTFY} other than to NFC; {_ENTITIES}; {_LOWER}",
    "canonicalize_hf": _LOWER,
    "none": "none",
}


@dataclass(frozen=True)
class PeerTokenizer:
    """files: name -> text, to write into the export's folder. text_cfg: OpenCLIP's model_cfg.text_cfg keys (for
    hf, none). The ids are the rows' (start_id None: rows without a start token)."""
    files: dict[str, str]
    text_cfg: dict[str, Any]
    start_id: int | None
    end_id: int
    pad_id: int


def peer_tokenizer_files(tok: Tokenizer, target: Literal["open_clip", "hf"],
                         family: Literal["clip", "siglip"]) -> PeerTokenizer:
    """The files and text_cfg with which `target`'s tokenizer gives `tok`'s ids. family: the processor an hf
    export names (CLIPProcessor, SiglipProcessor); OpenCLIP's tokenizer does not depend on it."""
    ids = {"start_id": tok.sot_id, "end_id": tok.eot_id, "pad_id": tok.pad_id}
    if target == "hf":
        return PeerTokenizer(_files(tok, _hf_steps(tok.clean), PROCESSORS[family]), {}, **ids)
    if _is_openclip_clip(tok):
        return PeerTokenizer({}, {"tokenizer_kwargs": {"clean": "lower"}}, **ids)
    clean, steps = _openclip_clean(tok.clean)
    text_cfg = {"hf_tokenizer_name": HF_TOKENIZER_NAME, "tokenizer_kwargs": {"clean": clean}}
    return PeerTokenizer(_files(tok, steps, processor=None), text_cfg, **ids)


def _is_openclip_clip(tok: Tokenizer) -> bool:
    """Whether OpenCLIP's SimpleTokenizer makes tok's rows: its BPE and split, its cleaning, start token and pad."""
    if not (tok.clean == "openclip" and tok.start_token and tok.pad_id == 0):
        return False
    parsed = json.loads(tok.json)
    fingerprint = json.dumps([parsed[k] for k in ("normalizer", "pre_tokenizer", "model")], sort_keys=True)
    return hashlib.sha256(fingerprint.encode()).hexdigest() == OPENCLIP_CLIP_SHA256


def _collapse_whitespace() -> list[normalizers.Normalizer]:
    return [normalizers.Replace(tokenizers.Regex(WHITESPACE), " "), normalizers.Strip()]


def _openclip_clean(clean: str) -> tuple[str, list[normalizers.Normalizer]]:
    """Our clean -> OpenCLIP's clean option and the normalizers after it that make up the rest."""
    if clean in ("clip", "openclip"):
        return "lower", []
    if clean == "canonicalize":
        return "canonicalize", []
    if clean == "canonicalize_hf":  # Python's lower-casing first, as canonicalize_hf's, then the rest
        return "lower", [normalizers.Replace(tokenizers.Regex(PUNCTUATION), ""), *_collapse_whitespace()]
    return "whitespace", []


def _hf_steps(clean: str) -> list[normalizers.Normalizer]:
    """data.tokenizer.CLEANERS[clean] less ftfy's fixes (but NFC) and html.unescape, as normalizers."""
    lower, punctuation = normalizers.Lowercase(), normalizers.Replace(tokenizers.Regex(PUNCTUATION), "")
    if clean == "clip":
        return [*_collapse_whitespace(), lower]
    if clean == "openclip":
        return [normalizers.NFC(), *_collapse_whitespace(), lower]
    if clean == "canonicalize":
        return [normalizers.NFC(), normalizers.Replace("_", " "), punctuation, lower, *_collapse_whitespace()]
    if clean == "canonicalize_hf":
        return [lower, punctuation, *_collapse_whitespace()]
    return []


def _files(tok: Tokenizer, steps: list[normalizers.Normalizer], processor: str | None) -> dict[str, str]:
    """tokenizer.json (tok's file with `steps` before its normalizer, our start and end tokens added, no truncation:
    transformers truncates to the context less them), tokenizer_config.json, and for a processor (transformers'
    folders) special_tokens_map.json."""
    parsed = json.loads(tok.json)
    backend = tokenizers.Tokenizer.from_str(tok.json)
    backend.no_truncation()
    if steps:
        own = [backend.normalizer] if backend.normalizer is not None else []
        backend.normalizer = normalizers.Sequence([*steps, *own])
    end = backend.id_to_token(tok.eot_id)
    start = None if tok.sot_id is None else backend.id_to_token(tok.sot_id)
    specials = [(end, tok.eot_id)] + ([] if start is None else [(start, tok.sot_id)])
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {end}" if start is None else f"{start} $A {end}", special_tokens=specials)
    names = {"bos_token": start, "eos_token": end, "pad_token": backend.id_to_token(tok.pad_id),
             "unk_token": _unk_token(parsed["model"])}
    names = {role: name for role, name in names.items() if name is not None}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": tok.context_length,
              "split_special_tokens": True, **names}
    files = {"tokenizer.json": backend.to_str(pretty=True)}
    if processor is None:
        return {**files, "tokenizer_config.json": _dumps(config)}
    return {**files, "tokenizer_config.json": _dumps({**config, "processor_class": processor}),
            "special_tokens_map.json": _dumps(names)}


def _unk_token(model: dict[str, Any]) -> str | None:
    if model["type"] == "Unigram":
        return None if model.get("unk_id") is None else model["vocab"][model["unk_id"]][0]
    return model.get("unk_token")


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
