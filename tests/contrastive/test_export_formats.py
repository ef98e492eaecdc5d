"""Our models as OpenCLIP's and transformers' models (export_config, export_state_dict in contrastive/openclip_format.py
and contrastive/hf_format.py), held to the peers themselves: each peer builds its model with its own code from the
exported config and tensors, and gives our embeddings and logits on the same uint8 pixels and token rows, or the
export is one FormatError naming what the peer cannot carry, raised from the config alone. Imported peer models
export back to their own tensors bit for bit; ours go there and back to the same model. Small random models only,
nothing downloaded."""
import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("transformers")
from safetensors.torch import save_file  # noqa: E402
from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, SiglipConfig, SiglipImageProcessor,  # noqa: E402
                          SiglipModel)

from contrastive import hf_format, openclip_format  # noqa: E402
from contrastive.config import Config, load_config, to_flat_dict  # noqa: E402
from contrastive.errors import FormatError  # noqa: E402
from contrastive.hf_format import TokenIds  # noqa: E402
from contrastive.model import ContrastiveModel, build_model  # noqa: E402
from tests.contrastive import test_hf_format as hf, test_openclip_format as oc  # noqa: E402
from tests.peers import TINY_CLIP, perturbed  # noqa: E402

# Our demo models' rows, as train_bpe's tokenizer makes them: start 0, end 1, a pad token of its own, 2.
DEMO_VOCAB, DEMO_IDS, DEMO_CONTEXT = 300, TokenIds(start=0, end=1, pad=2), 32
SIGLIP_TOKENIZER = {"hf_tokenizer_name": "timm/ViT-B-16-SigLIP", "tokenizer_kwargs": {"clean": "canonicalize"}}


@dataclass
class Source:
    """A model of ours, its rows' token ids and some rows; for an imported one, the peer's model it came from."""
    cfg: Config
    model: ContrastiveModel
    vocab_size: int
    ids: TokenIds
    rows: torch.Tensor
    peer: Optional[torch.nn.Module] = None
    tokenizer_cfg: Optional[dict] = None  # what the tokenizer export adds to OpenCLIP's text_cfg


def ours(loss: str) -> Source:
    torch.manual_seed(0)
    cfg = load_config("demo", [f"loss.name={loss}"])
    model = perturbed(build_model(cfg.model, cfg.loss, DEMO_VOCAB, DEMO_IDS.pad))
    rows = [[0, 40, 41, 42, 1], [0, 299, 1], [0, *range(3, 3 + DEMO_CONTEXT - 2), 1]]
    return Source(cfg, model, DEMO_VOCAB, DEMO_IDS, torch.tensor([r + [2] * (DEMO_CONTEXT - len(r)) for r in rows]))


def imported(peer_and_ours: tuple, vocab_size: int, ids: TokenIds, rows: torch.Tensor, **extra: Any) -> Source:
    peer, model, cfg = peer_and_ours
    return Source(cfg, model, vocab_size, ids, rows, peer, **extra)


SOURCES: dict[str, Callable[[], Source]] = {
    "our_clip": lambda: ours("clip"),
    "our_siglip": lambda: ours("siglip"),
    "our_llip": lambda: ours("llip"),
    "openclip_clip": lambda: imported(oc.peer_and_ours(TINY_CLIP, quick_gelu=True), oc.VOCAB,
                                      TokenIds(oc.SOT, oc.EOT, 0), oc.captions(16)),
    "openclip_siglip": lambda: imported(oc.peer_and_ours(oc.TINY_SIGLIP, False, oc.SIGLIP_VOCAB, oc.SIGLIP_EOS),
                                        oc.SIGLIP_VOCAB, TokenIds(None, oc.SIGLIP_EOS, oc.SIGLIP_EOS),
                                        oc.siglip_captions(16), tokenizer_cfg=SIGLIP_TOKENIZER),
    "hf_clip": lambda: imported(hf.peer_and_ours(CLIPModel, hf.tiny_clip("quick_gelu"), None, hf.CLIP_VOCAB, hf.EOT),
                                hf.CLIP_VOCAB, TokenIds(hf.SOT, hf.EOT, hf.EOT), hf.clip_rows(hf.EOT)),
    "hf_siglip": lambda: imported(hf.peer_and_ours(SiglipModel, hf.tiny_siglip(), None, hf.SIGLIP_VOCAB, hf.SIGLIP_EOS),
                                  hf.SIGLIP_VOCAB, TokenIds(None, hf.SIGLIP_EOS, hf.SIGLIP_EOS), hf.siglip_rows()),
}
# What each peer cannot carry, as its one error says it; every other pair exports as the same model.
LLIP = r"^loss llip scores the image tower's mixture tokens \(Llip's\): neither OpenCLIP nor transformers has a model"
REFUSED = {
    ("our_siglip", "hf"): r"^transformers' SiglipModel's image tower is timm's vit_base_patch16_siglip_224 in some "
                          r"shape \(no class token, pooled with a MAP head\); this model's \(model\.image\.timm_name="
                          r"vit_base_patch16_clip_224\) is not: it has global_pool='token' where timm's "
                          r"vit_base_patch16_siglip_224 has global_pool='map'$",
    ("our_llip", "open_clip"): LLIP,
    ("our_llip", "hf"): LLIP,
    ("openclip_siglip", "hf"): r"^transformers' SiglipModel's image tower is timm's vit_base_patch16_siglip_224 .*"
                               r"timm_name=test_vit2\) is not: it has num_prefix_tokens=1 where",
    ("hf_siglip", "open_clip"): r"^model\.image\.timm_name=vit_base_patch16_siglip_224 with model\.image\.projection="
                                r"false: OpenCLIP builds that timm trunk from its name and timm_pool='map' alone, at "
                                r"timm's image size, not as this model's \(kwargs \{'patch_size': 8, 'embed_dim': 64",
}


def openclip_config(src: Source) -> dict:
    return openclip_format.export_config(src.cfg, src.vocab_size, src.ids.end, src.tokenizer_cfg)


def to_openclip(src: Source, folder) -> tuple[torch.nn.Module, list, list]:
    """What open_clip.create_model_and_transforms builds from the exported open_clip_config.json and weights."""
    config = openclip_config(src)
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    state = openclip_format.export_state_dict(src.model.state_dict(), src.cfg)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "open_clip_model.safetensors")
    peer, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return peer.eval(), config["preprocess_cfg"]["mean"], config["preprocess_cfg"]["std"]


HF_CLASSES = {"clip": (CLIPConfig, CLIPModel, CLIPImageProcessor),
              "siglip": (SiglipConfig, SiglipModel, SiglipImageProcessor)}


def to_hf(src: Source, folder) -> tuple[torch.nn.Module, list, list]:
    """transformers' model built from the exported config.json, the exported tensors loaded strictly."""
    config, preprocessor = hf_format.export_config(src.cfg, src.vocab_size, src.ids)
    config_cls, model_cls, processor_cls = HF_CLASSES[config["model_type"]]
    saved = json.loads(processor_cls(**{k: v for k, v in preprocessor.items() if k != "image_processor_type"})
                       .to_json_string())
    assert saved == preprocessor  # as the processor saves it
    peer = model_cls(config_cls(**config))
    peer.load_state_dict(hf_format.export_state_dict(src.model.state_dict(), src.cfg), strict=True)
    return peer.eval(), preprocessor["image_mean"], preprocessor["image_std"]


TARGETS = {"open_clip": to_openclip, "hf": to_hf}
CONFIGS = {"open_clip": openclip_config, "hf": lambda src: hf_format.export_config(src.cfg, src.vocab_size, src.ids)}


def pixels(size: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def peer_outputs(peer: torch.nn.Module, pixel_values: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Normalised image and text embeddings and the image-by-text logits, as the peer computes them."""
    with torch.no_grad():
        if hasattr(peer, "get_image_features"):  # transformers'
            out = peer(input_ids=rows, pixel_values=pixel_values)
            return out.image_embeds, out.text_embeds, out.logits_per_image
        image, text = peer.encode_image(pixel_values, normalize=True), peer.encode_text(rows, normalize=True)
        logits = peer.logit_scale.exp() * image @ text.T
        return image, text, logits if peer.logit_bias is None else logits + peer.logit_bias


def normalised(images: torch.Tensor, mean: list, std: list) -> torch.Tensor:
    return (images / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source", SOURCES)
def test_a_model_exports_as_one_the_peer_builds_to_the_same_outputs_or_as_one_error_naming_what_it_cannot_carry(
        source, target, tmp_path):
    src = SOURCES[source]()
    if (source, target) in REFUSED:
        with pytest.raises(FormatError, match=REFUSED[source, target]):
            CONFIGS[target](src)
        return
    peer, mean, std = TARGETS[target](src, tmp_path / "export")
    images = pixels(src.cfg.model.image.image_size)
    with torch.no_grad():
        image, text = src.model.encode_image(images), src.model.encode_text(src.rows)
        mine = (image, text, src.model.logits(image, text))
    for ours_, theirs in zip(mine, peer_outputs(peer, normalised(images, mean, std), src.rows)):
        torch.testing.assert_close(ours_, theirs, atol=1e-5, rtol=0)


PEER_TARGETS = {"openclip_clip": "open_clip", "openclip_siglip": "open_clip", "hf_clip": "hf", "hf_siglip": "hf"}


def imported_overrides(target: str, src: Source) -> list[str]:
    """The import's config keys for the exported config."""
    if target == "open_clip":
        model_cfg, preprocess_cfg = openclip_format.read_model_config(openclip_config(src))
        return openclip_format.config_overrides(model_cfg, None, preprocess_cfg)
    return hf_format.config_overrides(*hf_format.export_config(src.cfg, src.vocab_size, src.ids))


def model_and_loss(cfg: Config) -> dict:
    return {k: v for k, v in to_flat_dict(cfg).items() if k.startswith(("model.", "loss."))}


@pytest.mark.parametrize("source", PEER_TARGETS)
def test_a_peers_model_imported_then_exported_is_its_tensors_bit_for_bit_and_a_config_of_the_same_model(
        source, tmp_path):
    src, target = SOURCES[source](), PEER_TARGETS[source]
    export_state_dict = {"open_clip": openclip_format, "hf": hf_format}[target].export_state_dict
    exported, theirs = export_state_dict(src.model.state_dict(), src.cfg), src.peer.state_dict()
    assert exported.keys() == theirs.keys()
    assert all(torch.equal(exported[k], theirs[k]) and exported[k].dtype == theirs[k].dtype for k in theirs)
    assert model_and_loss(load_config(None, imported_overrides(target, src))) == model_and_loss(src.cfg)
    rebuilt, mean, std = TARGETS[target](src, tmp_path / "export")
    pixel_values = normalised(pixels(src.cfg.model.image.image_size), mean, std)
    for again, original in zip(peer_outputs(rebuilt, pixel_values, src.rows),
                               peer_outputs(src.peer, pixel_values, src.rows)):
        torch.testing.assert_close(again, original, atol=1e-6, rtol=0)


def key_biases(src: Source) -> set[str]:
    return {f"text_tower.blocks.{block}.k_bias" for block in range(src.cfg.model.text.depth)}


def assert_ours_and_zero_key_biases(back: dict, src: Source) -> None:
    """Our tensors bit for bit, and the key bias the peers' text attention has, zero where ours has none."""
    mine = src.model.state_dict()
    assert back.keys() == mine.keys() | key_biases(src)
    assert all(torch.equal(back[k], mine[k]) for k in mine)
    assert all(not back[k].any() for k in key_biases(src))


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_our_model_exported_to_openclip_and_imported_back_is_the_same_model(loss):
    """The same config but for what the import cannot learn from open_clip_config.json: the ViT's kwargs come back
    with timm's defaults spelled out (the same trunk), the text attention with a key bias (zero), and the token rows
    (clean, pad_id) as OpenCLIP's CLIP BPE makes them, until the tokenizer export names its own tokenizer."""
    src = ours(loss)
    back_cfg = load_config(None, imported_overrides("open_clip", src))
    before, after = model_and_loss(src.cfg), model_and_loss(back_cfg)
    assert {k: (before.get(k), after[k]) for k in after if before.get(k) != after[k]} == {
        "model.image.kwargs.patch_size": (None, 16), "model.image.kwargs.mlp_ratio": (None, 4.0),
        "model.image.kwargs.act_layer": (None, "gelu"), "model.text.key_bias": (False, True),
        "model.text.clean": ("clip", "openclip"), "model.text.pad_id": (None, 0)}
    assert before.keys() <= after.keys()
    back = openclip_format.convert_state_dict(openclip_format.export_state_dict(src.model.state_dict(), src.cfg))
    assert_ours_and_zero_key_biases(back, src)
    again = build_model(back_cfg.model, back_cfg.loss, DEMO_VOCAB, DEMO_IDS.pad).eval()
    again.load_state_dict(back)
    images = pixels(64)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_image(images), src.model.encode_image(images), atol=0, rtol=0)
        torch.testing.assert_close(again.encode_text(src.rows), src.model.encode_text(src.rows), atol=1e-6, rtol=0)


def test_our_clip_exported_to_transformers_gives_its_tensors_back_to_the_import():
    src = ours("clip")
    config, _ = hf_format.export_config(src.cfg, DEMO_VOCAB, DEMO_IDS)
    back = hf_format.convert_state_dict(hf_format.export_state_dict(src.model.state_dict(), src.cfg), config)
    assert_ours_and_zero_key_biases(back, src)


@pytest.mark.parametrize("overrides, target, message", [
    (["model.text.pool=mean"], "open_clip", r"^model\.text\.pool=mean: OpenCLIP's text pooling is first, last, "
                                            r"argmax or eos"),
    (["model.text.pool=mean"], "hf", r"^model\.text\.pool=mean with end token 1 of 300: transformers' CLIPModel pools "
                                     r"its text at the first end token"),
    (["model.image.timm_name=convnext_tiny", "model.image.kwargs={}"], "hf",
     r"^model\.image\.timm_name=convnext_tiny: transformers' CLIPModel's image tower is a ViT"),
    (["model.text.causal=false"], "open_clip", r"^model\.text\.mask_pad_keys=true with model\.text\.causal=false: "
                                               r"OpenCLIP's bidirectional text tower attends to the pads"),
    (["model.text.causal=false"], "hf", r"^model\.text\.causal=false: transformers' CLIPModel's text tower is causal"),
    (["model.text.activation=quick_gelu"], "open_clip", r"^the image tower's activation is gelu and "
                                                        r"model\.text\.activation=quick_gelu: OpenCLIP's quick_gelu"),
    (["model.text.activation=gelu_tanh", "model.image.kwargs.act_layer=gelu_tanh"], "open_clip",
     r"^model\.text\.activation=gelu_tanh: OpenCLIP's text tower has GELU or QuickGELU"),
    (["model.text.projection_bias=true"], "hf", r"^model\.text\.projection_bias=true: transformers' CLIPModel's"),
    (["model.image.kwargs.qk_norm=true"], "open_clip", r"^OpenCLIP's projected image tower is timm's "
                                                       r"vit_base_patch16_clip_224 .* it has blocks\.0\.attn\.q_norm"
                                                       r"\.weight \[32\] where timm's vit_base_patch16_clip_224 has "
                                                       r"nothing$"),
], ids=["mean_pool", "mean_pool", "convnext", "bidirectional_masked", "bidirectional", "quick_gelu_text_only",
        "tanh_gelu", "text_projection_bias", "qk_norm"])
def test_what_a_peer_cannot_carry_is_one_error_from_the_config_alone(overrides, target, message):
    cfg = load_config("demo", overrides)
    with pytest.raises(FormatError, match=message):
        CONFIGS[target](Source(cfg, None, DEMO_VOCAB, DEMO_IDS, None))
