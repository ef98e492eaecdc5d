"""Hugging Face CLIPModel and SiglipModel folders in our model (contrastive/hf_format.py), held to transformers
itself: small models with random weights (nothing downloaded), converted, give transformers' embeddings, logit
scale, bias and logits on the same uint8 pixels and token ids; full-size configs map every tensor to one of ours on
the meta device. transformers is a test-only dependency: the library never imports it."""
import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, SiglipConfig, SiglipImageProcessor,  # noqa: E402
                          SiglipModel)

from contrastive.config import load_config  # noqa: E402
from contrastive.errors import FormatError  # noqa: E402
from contrastive.hf_format import config_overrides, convert_state_dict  # noqa: E402
from contrastive.model import build_model  # noqa: E402
from tests.peers import perturbed  # noqa: E402

SOT, EOT, CLIP_VOCAB = 49406, 49407, 49408
SIGLIP_EOS, SIGLIP_VOCAB = 1, 500
CONTEXT, IMAGE_SIZE = 16, 32


def tiny_clip(hidden_act: str, eos_token_id: int = EOT) -> CLIPConfig:
    return CLIPConfig(
        text_config=dict(vocab_size=CLIP_VOCAB, hidden_size=48, intermediate_size=100, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=CONTEXT, hidden_act=hidden_act,
                         eos_token_id=eos_token_id),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                           image_size=IMAGE_SIZE, patch_size=8, hidden_act=hidden_act),
        projection_dim=32)


def tiny_siglip() -> SiglipConfig:
    return SiglipConfig(
        text_config=dict(vocab_size=SIGLIP_VOCAB, hidden_size=48, intermediate_size=100, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=CONTEXT, projection_size=64,
                         pad_token_id=SIGLIP_EOS, bos_token_id=None, eos_token_id=SIGLIP_EOS),
        vision_config=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                           image_size=IMAGE_SIZE, patch_size=8))


def as_saved(obj) -> dict:
    """config.json or preprocessor_config.json as save_pretrained writes it (only what differs from the defaults)."""
    return json.loads(obj.to_json_string())


def peer_and_ours(peer_cls, hf_config, preprocessor: dict | None, vocab_size: int, pad_id: int):
    torch.manual_seed(0)
    peer = perturbed(peer_cls(hf_config))
    config = as_saved(hf_config)
    cfg = load_config(None, config_overrides(config, preprocessor))
    ours = build_model(cfg.model, cfg.loss, vocab_size=vocab_size, pad_id=pad_id).eval()
    ours.load_state_dict(convert_state_dict(peer.state_dict(), config))
    return peer, ours, cfg


def rows(rows_: list[list[int]], pad_id: int) -> torch.Tensor:
    return torch.tensor([row + [pad_id] * (CONTEXT - len(row)) for row in rows_])


def clip_rows(pad_id: int) -> torch.Tensor:
    """As transformers' CLIP tokenizer makes them: <sot> ids <eot>, padded; 0 is "!", inside a caption too."""
    return rows([[SOT, 320, 1125, 0, 0, 539, EOT], [SOT, 1929, EOT], [SOT, *range(1000, 1000 + CONTEXT - 2), EOT]],
                pad_id)


def siglip_rows() -> torch.Tensor:
    """As SigLIP's tokenizer makes them: ids then the end token 1, padded with 1, no start token."""
    return rows([[5, 17, 200, SIGLIP_EOS], [33, SIGLIP_EOS], [*range(100, 100 + CONTEXT - 1), SIGLIP_EOS]],
                SIGLIP_EOS)


def assert_same_outputs(peer, ours, cfg, tokens: torch.Tensor) -> None:
    pixels = torch.randint(0, 256, (3, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (cfg.model.image.mean, cfg.model.image.std))
    pixel_values = (pixels / 255 - mean) / std
    with torch.no_grad():
        image, text = ours.encode_image(pixels), ours.encode_text(tokens)
        theirs = peer(input_ids=tokens, pixel_values=pixel_values)
        torch.testing.assert_close(image, F.normalize(peer.get_image_features(pixel_values).pooler_output, dim=-1),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(text, F.normalize(peer.get_text_features(tokens).pooler_output, dim=-1),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.logits(image, text), theirs.logits_per_image, atol=1e-5, rtol=0)
    assert ours.loss.logit_scale.item() == peer.logit_scale.item()
    if hasattr(peer, "logit_bias"):
        assert ours.loss.logit_bias.item() == peer.logit_bias.item()


@pytest.mark.parametrize("pad_id", [EOT, 0], ids=["pad=eos", "pad=0"])
@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_a_small_hf_clip_gives_the_same_embeddings_and_logits_in_ours(hidden_act, pad_id):
    peer, ours, cfg = peer_and_ours(CLIPModel, tiny_clip(hidden_act), None, CLIP_VOCAB, pad_id)
    assert (cfg.model.image.resize, cfg.model.text.pool, cfg.model.text.clean) == ("crop", "argmax", "none")
    assert_same_outputs(peer, ours, cfg, clip_rows(pad_id))


def test_a_clip_config_with_the_legacy_end_token_2_pools_at_the_highest_id_as_transformers_does():
    preprocessor = as_saved(CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=IMAGE_SIZE,
                                               image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25]))
    peer, ours, cfg = peer_and_ours(CLIPModel, tiny_clip("quick_gelu", eos_token_id=2), preprocessor, CLIP_VOCAB,
                                    pad_id=0)
    assert (cfg.model.image.mean, cfg.model.image.std) == ((0.4, 0.5, 0.6), (0.2, 0.3, 0.25))
    assert_same_outputs(peer, ours, cfg, clip_rows(pad_id=0))


def test_a_small_hf_siglip_gives_the_same_embeddings_logit_bias_and_logits_in_ours():
    preprocessor = as_saved(SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}))
    peer, ours, cfg = peer_and_ours(SiglipModel, tiny_siglip(), preprocessor, SIGLIP_VOCAB, pad_id=SIGLIP_EOS)
    text = cfg.model.text
    assert (cfg.model.image.resize, cfg.model.image.mean, cfg.model.image.std) == ("squash", (0.5,) * 3, (0.5,) * 3)
    assert (text.pool, text.clean, text.start_token, text.causal, text.mask_pad_keys) == (
        "last", "canonicalize_hf", False, False, False)
    assert_same_outputs(peer, ours, cfg, siglip_rows())


FULL_SIZE = {  # the released models' sizes (their config.json files)
    "clip-vit-base-patch32": (CLIPConfig, CLIPModel, dict(projection_dim=512, vision_config=dict(patch_size=32))),
    "clip-vit-base-patch16": (CLIPConfig, CLIPModel, dict(projection_dim=512, vision_config=dict(patch_size=16))),
    "clip-vit-large-patch14": (CLIPConfig, CLIPModel, dict(
        projection_dim=768, text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           patch_size=14))),
    "siglip-base-patch16-224": (SiglipConfig, SiglipModel, dict(vision_config=dict(patch_size=16))),
    "siglip-so400m-patch14-384": (SiglipConfig, SiglipModel, dict(
        text_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16),
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                           image_size=384, patch_size=14))),
}


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_models_map_every_tensor_to_one_of_ours_of_the_same_shape_on_the_meta_device(name):
    config_cls, model_cls, sizes = FULL_SIZE[name]
    hf_config = config_cls(**sizes)
    config = hf_config.to_dict()  # every key written out, as transformers 4 saved sub-configs
    cfg = load_config(None, config_overrides(config, None))
    with torch.device("meta"):
        peer = model_cls(hf_config)
        ours = build_model(cfg.model, cfg.loss, vocab_size=hf_config.text_config.vocab_size, pad_id=1)
    converted, expected = convert_state_dict(peer.state_dict(), config), ours.state_dict()
    assert converted.keys() == expected.keys()
    assert all(converted[k].shape == expected[k].shape for k in expected)


def test_what_the_mapping_cannot_express_is_named():
    clip, siglip = as_saved(tiny_clip("gelu")), as_saved(tiny_siglip())
    with pytest.raises(FormatError, match=r"Hugging Face CLIPModel tensor vision_model\.head\.probe \[1, 1, 4\] has "
                                          r"no counterpart here"):
        convert_state_dict({"vision_model.head.probe": torch.zeros(1, 1, 4)}, clip)
    with pytest.raises(FormatError, match=r"has no k_proj or v_proj for our image_tower\.trunk\.blocks\.0\.attn\.qkv"):
        convert_state_dict({"vision_model.encoder.layers.0.self_attn.q_proj.bias": torch.zeros(4)}, clip)
    with pytest.raises(FormatError, match=r"config.json's vision_config sets num_patches, which this import cannot "
                                          r"express"):
        config_overrides({**siglip, "vision_config": {**siglip["vision_config"], "num_patches": 16}}, None)
    with pytest.raises(FormatError, match=r"config.json's text_config\.hidden_act is 'relu'"):
        config_overrides({**clip, "text_config": {**clip["text_config"], "hidden_act": "relu"}}, None)
    with pytest.raises(FormatError, match=r"text_config\.eos_token_id is 7"):
        config_overrides({**clip, "text_config": {**clip["text_config"], "eos_token_id": 7}}, None)
    bilinear = as_saved(SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=2))
    with pytest.raises(FormatError, match=r"preprocessor_config\.json sets resample=2"):
        config_overrides(siglip, bilinear)
