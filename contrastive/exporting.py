"""`contrastive export RUN_DIR --format open_clip|hf OUT`: a checkpoint of ours in a peer's own format, loadable by
the peer's own loader with nothing of ours installed.

    open_clip  open_clip_config.json (model and preprocessing config), open_clip_model.safetensors, and the tokenizer
               files OpenCLIP reads for it (none where it is OpenCLIP's own CLIP tokenizer):
               open_clip.create_model_and_transforms("local-dir:OUT"), open_clip.get_tokenizer("local-dir:OUT")
    hf         config.json, model.safetensors, preprocessor_config.json and tokenizer files:
               CLIPModel / SiglipModel.from_pretrained(OUT), CLIPProcessor / SiglipProcessor.from_pretrained(OUT)

The checkpoint: the run dir's `latest`, `--step N`, or a checkpoint (a file, or a sharded checkpoint's directory,
read whole in this process). Everything the target cannot carry (Llip's mixture tokens, an image tower it has no
class for, a text pooling it lacks) is one error from the config alone, before anything is read or written; OUT
appears complete or not at all (data.atomic.atomic_directory).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
import yaml

from contrastive import hf_format, openclip_format
from contrastive.checkpoint import load_checkpoint_weights
from contrastive.config import Config, to_yaml
from contrastive.errors import FormatError
from contrastive.evaluate import LoadedRun, checkpoint_of, run_of
from contrastive.importing import SAVED_CONFIG
from contrastive.peer_models import exported_loss
from contrastive.peer_tokenizers import PeerTokenizer, peer_tokenizer_files
from data.atomic import atomic_directory, atomic_write_text, is_free_folder

Target = Literal["open_clip", "hf"]


def export_model(source: Path, target: Target, out: Path, step: Optional[int] = None) -> Path:
    """Writes OUT; returns the checkpoint exported."""
    if not is_free_folder(out):
        raise FormatError(f"{out} exists and is not empty: export into a new folder")
    run_dir, checkpoint = checkpoint_of(source, step)
    run = run_of(run_dir, checkpoint, [])
    family = exported_loss(run.cfg)  # refuses what no peer model scores (Llip's mixture tokens)
    tokenizer = peer_tokenizer_files(run.tokenizer, target, family)
    config_files, convert = EXPORTS[target](run, tokenizer)  # refuses what the target cannot carry
    state = convert(load_checkpoint_weights(checkpoint)["model"])
    from safetensors.torch import save_file

    with atomic_directory(out) as staging:
        for name, content in {**config_files, **tokenizer.files}.items():
            text = content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False) + "\n"
            atomic_write_text(staging / name, text)
        save_file({name: value.contiguous() for name, value in state.items()}, staging / WEIGHTS[target],
                  metadata={"format": "pt"})
    return checkpoint


Convert = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _open_clip(run: LoadedRun, tokenizer: PeerTokenizer) -> tuple[dict[str, Any], Convert]:
    config = openclip_format.export_config(run.cfg, run.tokenizer.vocab_size, tokenizer.end_id, tokenizer.text_cfg)
    return ({"open_clip_config.json": {**config, SAVED_CONFIG: saved_config(run.cfg)}},
            lambda state: openclip_format.export_state_dict(state, run.cfg))


def _hf(run: LoadedRun, tokenizer: PeerTokenizer) -> tuple[dict[str, Any], Convert]:
    ids = hf_format.TokenIds(tokenizer.start_id, tokenizer.end_id, tokenizer.pad_id)
    config, preprocessor = hf_format.export_config(run.cfg, run.tokenizer.vocab_size, ids)
    return ({"config.json": {**config, SAVED_CONFIG: saved_config(run.cfg)}, "preprocessor_config.json": preprocessor},
            lambda state: hf_format.export_state_dict(state, run.cfg))


def saved_config(cfg: Config) -> dict[str, Any]:
    """Our model and loss sections, which the peers ignore and `contrastive import` reads back: the peer's config
    says the architecture in its terms (timm kwargs written out, its tokenizer's cleaning), this says it in ours."""
    flat = yaml.safe_load(to_yaml(cfg))
    return {"model": flat["model"], "loss": flat["loss"]}


EXPORTS: dict[str, Callable[[LoadedRun, PeerTokenizer], tuple[dict[str, Any], Convert]]] = {
    "open_clip": _open_clip, "hf": _hf}
WEIGHTS = {"open_clip": "open_clip_model.safetensors", "hf": "model.safetensors"}
