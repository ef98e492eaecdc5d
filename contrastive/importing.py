"""`contrastive import SRC RUN_DIR`: a model the field trained, from files the user downloaded, as a run dir of ours
(config.yaml in our keys, tokenizer.json, checkpoints/step_000000.pt), so that eval and everything else take it.

    OpenCLIP   a folder with open_clip_config.json and open_clip_model.safetensors (or open_clip_pytorch_model.bin),
               such a weights file beside its open_clip_config.json, or a bare state dict with --arch NAME
    HF         a transformers folder of CLIPModel or SiglipModel: config.json, model.safetensors, tokenizer files

Nothing is fetched. Weights are read with safetensors or torch.load(weights_only=True): no pickled code runs, so
OpenAI's TorchScript .pt files are refused with the command that converts them. The source's config is translated
(contrastive/openclip_format.py, contrastive/hf_format.py), the model built from it, and every tensor checked
against it before anything is written; RUN_DIR appears complete or not at all.
"""
from __future__ import annotations

import json
import re
import shlex
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional

import tokenizers
import torch
import yaml

from contrastive import hf_format, openclip_format
from contrastive.checkpoint import Checkpointer
from contrastive.config import Config, from_yaml_text, load_config, to_yaml
from contrastive.errors import FormatError
from contrastive.model import build_model
from contrastive.state_mapping import check_shapes
from contrastive.text_tower import text_tokenizer
from data.atomic import atomic_directory, atomic_write_bytes, is_free_folder
from data.tokenizer import SIGLIP_SPIECE_CONVERSION, clip_bpe_tokenizer_json

OPENCLIP_CONFIG = "open_clip_config.json"
OPENCLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_MODEL_TYPES = ("clip", "siglip")
TORCHSCRIPT_CONVERSION = (
    "python -c \"import open_clip, torch; torch.save(open_clip.load_openai_model('{src}', device='cpu')"
    ".state_dict(), '{stem}.bin')\"  # then: contrastive import {stem}.bin RUN_DIR --arch ARCH --quick-gelu")


# The key of a peer config file (open_clip_config.json, config.json) under which `contrastive export` saves our model
# and loss sections, which the peers ignore: an import of an export reads them back, so that the round trip gives
# our config itself (the peer's config says the same architecture in its own terms).
SAVED_CONFIG = "contrastive"
KEY_BIAS = re.compile(r"text_tower\.blocks\.\d+\.k_bias")


@dataclass(frozen=True)
class Imported:
    """A source in our terms: config overrides (or our own saved sections), tensors under our names, the tokenizer
    file's text."""
    description: str  # what was read, for messages and the checkpoint
    overrides: list[str]
    state: dict[str, torch.Tensor]
    tokenizer_json: str
    saved: Optional[dict[str, Any]] = None  # an export's SAVED_CONFIG: our model and loss sections


def import_model(src: Path, run_dir: Path, arch: Optional[str] = None, quick_gelu: Optional[bool] = None,
                 tokenizer: Optional[Path] = None) -> Config:
    """Read, translate, check, then write RUN_DIR at once (data.atomic.atomic_directory)."""
    if not is_free_folder(run_dir):
        raise FormatError(f"{run_dir} exists and is not empty: import into a new run dir")
    imported = read_source(src, arch, quick_gelu, tokenizer)
    if imported.saved is None:
        cfg = load_config(None, [*imported.overrides, f"run_dir={run_dir}"])
    else:
        cfg = from_yaml_text(yaml.safe_dump(imported.saved), [f"run_dir={run_dir}"])
        if not cfg.model.text.key_bias:  # the export gave the peer a zero key bias, which ours does not carry
            imported = replace(imported, state={name: value for name, value in imported.state.items()
                                                if not (KEY_BIAS.fullmatch(name) and not value.any())})
    tok = text_tokenizer(imported.tokenizer_json, cfg.model.text, f"the tokenizer of {src}")
    with torch.device("meta"):
        model = build_model(cfg.model, cfg.loss, tok.vocab_size, tok.pad_id)
    check_shapes(imported.state, model.state_dict(), imported.description)
    _check_scale(imported.state["loss.logit_scale"], model.loss.objective.max_scale, imported.description)
    with atomic_directory(run_dir) as staging:
        atomic_write_bytes(staging / "config.yaml", to_yaml(cfg).encode())
        atomic_write_bytes(staging / "tokenizer.json", imported.tokenizer_json.encode())
        Checkpointer(staging).save(0, {"step": 0, "model": imported.state, "config": to_yaml(cfg),
                                       "tokenizer": imported.tokenizer_json, "imported_from": imported.description})
    return cfg


def _check_scale(logit_scale: torch.Tensor, max_scale: float, source: str) -> None:
    """Our loss clamps the scale where the objective says (CLIP's softmax at 100); a source above it would give other
    logits. The tolerance lets through OpenAI CLIP's log 100 rounded to float32."""
    scale = logit_scale.float().exp().item()
    if scale > max_scale * (1 + 1e-6):
        raise FormatError(f"{source}: logit_scale is {logit_scale.item():.4f} (scale {scale:.2f}), above the "
                          f"{max_scale:g} this loss clamps the scale at (losses/objectives.py), so its logits would "
                          "differ")


def read_source(src: Path, arch: Optional[str], quick_gelu: Optional[bool], tokenizer: Optional[Path]) -> Imported:
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    folder = src if src.is_dir() else src.parent
    if src.is_dir() and (src / "config.json").is_file() and not (src / OPENCLIP_CONFIG).is_file():
        if arch is not None or quick_gelu is not None:
            raise FormatError(f"{src} is a Hugging Face folder, whose config.json says the architecture: "
                              "--arch and --quick-gelu are for OpenCLIP state dicts")
        return _hugging_face(src, tokenizer)
    if src.is_dir() and not (src / OPENCLIP_CONFIG).is_file():
        raise FormatError(f"{src} is neither an OpenCLIP folder ({OPENCLIP_CONFIG} with "
                          f"{' or '.join(OPENCLIP_WEIGHTS)}) nor a Hugging Face one (config.json with "
                          f"{' or '.join(HF_WEIGHTS)}); for a bare state dict pass its file with --arch")
    weights = _one_of(src, OPENCLIP_WEIGHTS) if src.is_dir() else src
    if arch is None:
        if not (folder / OPENCLIP_CONFIG).is_file():
            raise FormatError(f"{src}: no {OPENCLIP_CONFIG} beside it and no Hugging Face config.json; for a bare "
                              f"OpenCLIP state dict say its architecture with --arch (one of "
                              f"{', '.join(openclip_format.ARCHITECTURES)})")
        config_json = _read_json(folder / OPENCLIP_CONFIG)
        saved = config_json.pop(SAVED_CONFIG, None)
        if saved is not None:  # written by `contrastive export`: our own config
            return _read_weights_and_tokenizer(f"OpenCLIP {weights} exported by contrastive", [], weights, folder,
                                               tokenizer, saved)
        model_cfg, preprocess_cfg = openclip_format.read_model_config(config_json)
        said = model_cfg.get("quick_gelu")
        if quick_gelu is not None and said is not None and said != quick_gelu:
            raise FormatError(f"{folder / OPENCLIP_CONFIG} says quick_gelu={str(said).lower()}; "
                              f"--{'' if quick_gelu else 'no-'}quick-gelu contradicts it")
        described = f"OpenCLIP {weights} with {folder / OPENCLIP_CONFIG}"
    else:
        model_cfg, implied = openclip_format.architecture(arch)
        preprocess_cfg = None
        if implied is not None and quick_gelu is not None and implied != quick_gelu:
            raise FormatError(f"--arch {arch} implies quick_gelu={str(implied).lower()}; "
                              f"--{'' if quick_gelu else 'no-'}quick-gelu contradicts it")
        quick_gelu = implied if implied is not None else quick_gelu
        if quick_gelu is None and "timm_model_name" not in model_cfg["vision_cfg"]:  # OpenAI-style CLIP
            raise FormatError(f"--arch {arch}: say --quick-gelu or --no-quick-gelu. The architecture does not record "
                              "the activation its weights were trained with: OpenAI's weights (OpenCLIP's `openai`) "
                              "use QuickGELU, OpenCLIP's LAION and DataComp weights GELU; a wrong guess gives a "
                              "model that runs but scores worse")
        described = f"OpenCLIP {weights} as {arch}"
    overrides = openclip_format.config_overrides(model_cfg, quick_gelu, preprocess_cfg)
    return _read_weights_and_tokenizer(described, overrides, weights, folder, tokenizer)


def _read_weights_and_tokenizer(described: str, overrides: list[str], weights: Path, folder: Path,
                                tokenizer: Optional[Path], saved: Optional[dict[str, Any]] = None) -> Imported:
    """An OpenCLIP source's tensors under our names and its tokenizer, once its config is read."""
    state = openclip_format.convert_state_dict(_openclip_state(read_weights(weights)))
    return Imported(described, overrides, state, _tokenizer_json(folder, tokenizer, openclip=True), saved)


def _hugging_face(folder: Path, tokenizer: Optional[Path]) -> Imported:
    config = _read_json(folder / "config.json")
    if config.get("model_type") not in HF_MODEL_TYPES:
        raise FormatError(f"{folder / 'config.json'} is a {config.get('model_type')!r} model; this import reads "
                          f"Hugging Face {' and '.join(HF_MODEL_TYPES)} models")
    saved = config.pop(SAVED_CONFIG, None)  # written by `contrastive export` (and kept by save_pretrained)
    state = hf_format.convert_state_dict(read_weights(_one_of(folder, HF_WEIGHTS)), config)
    tokenizer_json = _tokenizer_json(folder, tokenizer, openclip=False)
    if saved is not None:
        return Imported(f"Hugging Face {config['model_type']} {folder} exported by contrastive", [], state,
                        tokenizer_json, saved)
    preprocessor = folder / "preprocessor_config.json"
    overrides = hf_format.config_overrides(config, _read_json(preprocessor) if preprocessor.is_file() else None)
    pad_id = _hf_pad_id(folder, tokenizer_json)
    return Imported(f"Hugging Face {config['model_type']} {folder}", [*overrides, f"model.text.pad_id={pad_id}"],
                    state, tokenizer_json)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch.save file, read without running pickled code."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise FormatError(f"{path} is not a readable safetensors file: {e}") from None
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        raise FormatError(f"{path} is a TorchScript archive (OpenAI's original CLIP release), which is not read here "
                          "since loading it runs its code; convert it once with OpenCLIP: "
                          + TORCHSCRIPT_CONVERSION.format(src=path, stem=path.stem))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated files and refused pickles
        raise FormatError(f"{path} cannot be read as a state dict: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            return dict(state["state_dict"])  # an OpenCLIP training checkpoint (epoch_N.pt)
        raise FormatError(f"{path} holds no state dict (a mapping of names to tensors)")
    return dict(state)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive holds its code (ARCHIVE/code/...) and constants beside the pickled data."""
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _openclip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP's training checkpoints name parameters under DDP's `module.`."""
    if state and all(name.startswith("module.") for name in state):
        return {name[len("module."):]: value for name, value in state.items()}
    return state


def _tokenizer_json(folder: Path, given: Optional[Path], openclip: bool) -> str:
    """The tokenizer file: --tokenizer, else the source folder's tokenizer.json. OpenCLIP's CLIP vocabulary file
    (bpe_simple_vocab_16e6.txt.gz) is converted; SentencePiece's spiece.model is refused with how to convert it."""
    path = given if given is not None else folder / "tokenizer.json"
    if given is None and not path.is_file():
        if (folder / "spiece.model").is_file():
            raise FormatError(f"{folder} has spiece.model but no tokenizer.json; convert it once with: "
                              + SIGLIP_SPIECE_CONVERSION.format(folder=shlex.quote(str(folder))))
        clip_hint = (" or OpenCLIP's CLIP vocabulary, bpe_simple_vocab_16e6.txt.gz (in the open_clip package, or its "
                     "repository's src/open_clip/)") if openclip else ""
        raise FormatError(f"{folder} has no tokenizer.json: pass --tokenizer with the model's tokenizer.json"
                          + clip_hint)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    if path.name.endswith(".txt.gz"):
        return clip_bpe_tokenizer_json(path)
    return path.read_text(encoding="utf-8")


def _hf_pad_id(folder: Path, tokenizer_json: str) -> int:
    """The pad token Hugging Face's tokenizer files name (tokenizer_config.json, else special_tokens_map.json)."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        pad = _read_json(folder / name).get("pad_token") if (folder / name).is_file() else None
        pad = pad.get("content") if isinstance(pad, dict) else pad
        if isinstance(pad, str):
            pad_id = tokenizers.Tokenizer.from_str(tokenizer_json).token_to_id(pad)
            if pad_id is None:
                raise FormatError(f"{folder / name} names pad token {pad!r}, which the tokenizer does not have")
            return pad_id
    raise FormatError(f"{folder} names no pad token (tokenizer_config.json or special_tokens_map.json pad_token)")


def _one_of(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FormatError(f"{folder} has none of {', '.join(names)}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path} is not a readable JSON file: {e}") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data
