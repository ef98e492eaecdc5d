"""OpenCLIP's OpenAI-style CLIP ViTs and timm-trunk SigLIP models in our model (contrastive/openclip_format.py), held
to the peer itself: models built by open_clip with random weights (nothing downloaded), converted, give OpenCLIP's
embeddings on the same uint8 pixels and token ids; OpenCLIP's eval transforms equal ours pixel for pixel; the full
sizes map on the meta device; the --arch table is OpenCLIP's own configs. open-clip-torch is a test-only dependency
(setup.cfg's dev extra): the library never imports it."""
import pytest
import torch
from PIL import Image

open_clip = pytest.importorskip("open_clip")
from open_clip.model import CLIP, CustomTextCLIP  # noqa: E402

from contrastive.config import load_config  # noqa: E402
from contrastive.model import build_model  # noqa: E402
from contrastive.errors import FormatError  # noqa: E402
from contrastive.openclip_format import (  # noqa: E402
    ARCHITECTURES, architecture, config_overrides, convert_state_dict, read_model_config)
from data.decode import square_pixels  # noqa: E402
from tests.peers import TINY_CLIP, perturbed  # noqa: E402

SOT, EOT, VOCAB = 49406, 49407, 49408
# ViT-B-16-SigLIP's config with a small trunk: timm's test_vit2 (64 wide, no class token) pooled by a MAP head, as
# vit_base_patch16_siglip_224 is (OpenCLIP passes a timm trunk no shape arguments, so a small one is a small name).
SIGLIP_VOCAB, SIGLIP_EOS = 32000, 1
TINY_SIGLIP = {**ARCHITECTURES["ViT-B-16-SigLIP"], "embed_dim": 64,
               "vision_cfg": {**ARCHITECTURES["ViT-B-16-SigLIP"]["vision_cfg"], "image_size": 160,
                              "timm_model_name": "test_vit2"},
               "text_cfg": {**ARCHITECTURES["ViT-B-16-SigLIP"]["text_cfg"], "context_length": 16, "width": 48,
                            "heads": 4, "layers": 2}}
SIGLIP_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                     "resize_mode": "squash"}  # timm/ViT-B-16-SigLIP's open_clip_config.json


def openclip_model(model_cfg: dict, quick_gelu: bool) -> torch.nn.Module:
    """What open_clip.create_model builds for model_cfg (custom_text picks the class)."""
    kind = CustomTextCLIP if model_cfg.get("custom_text") else CLIP
    return kind(**{k: v for k, v in model_cfg.items() if k != "custom_text"}, quick_gelu=quick_gelu)


def peer_and_ours(model_cfg: dict, quick_gelu: bool, vocab: int = VOCAB,
                  pad_id: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    torch.manual_seed(0)
    peer = perturbed(openclip_model(model_cfg, quick_gelu))
    cfg = load_config(None, config_overrides(model_cfg, quick_gelu=quick_gelu))
    ours = build_model(cfg.model, cfg.loss, vocab_size=vocab, pad_id=pad_id).eval()
    ours.load_state_dict(convert_state_dict(peer.state_dict()))
    return peer, ours, cfg


def captions(length: int) -> torch.Tensor:
    """OpenCLIP-style rows: <sot> ids <eot>, padded with 0, which is also "!"; one row fills the context."""
    rows = [[SOT, 320, 1125, 0, 0, 539, EOT], [SOT, 1929, EOT], [SOT, *range(1000, 1000 + length - 2), EOT]]
    return torch.tensor([row + [0] * (length - len(row)) for row in rows])


def siglip_captions(length: int) -> torch.Tensor:
    """SigLIP's SentencePiece rows: ids <eos=1>, padded with 1, no start token; one row fills the context."""
    rows = [[262, 266, 0, 7, SIGLIP_EOS], [4, SIGLIP_EOS], [*range(1000, 1000 + length - 1), SIGLIP_EOS]]
    return torch.tensor([row + [SIGLIP_EOS] * (length - len(row)) for row in rows])


def assert_same_embeddings(peer, ours, cfg, image_size: int, tokens: torch.Tensor) -> None:
    pixels = torch.randint(0, 256, (3, 3, image_size, image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    mean = torch.tensor(cfg.model.image.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.model.image.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(pixels), peer.encode_image((pixels / 255 - mean) / std,
                                                                                normalize=True), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.encode_text(tokens), peer.encode_text(tokens, normalize=True),
                                   atol=1e-5, rtol=0)
    assert ours.loss.logit_scale.item() == peer.logit_scale.item()


@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quick_gelu"])
def test_a_small_openclip_model_gives_the_same_embeddings_in_ours(quick_gelu):
    peer, ours, cfg = peer_and_ours(TINY_CLIP, quick_gelu)
    assert_same_embeddings(peer, ours, cfg, image_size=32, tokens=captions(16))


def test_a_full_size_random_vit_b_32_gives_the_same_embeddings_in_ours():
    peer, ours, cfg = peer_and_ours(open_clip.get_model_config("ViT-B-32"), quick_gelu=True)
    assert_same_embeddings(peer, ours, cfg, image_size=224, tokens=captions(77))


@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quick_gelu_in_the_text_tower"])
def test_a_small_openclip_siglip_gives_the_same_embeddings_logit_scale_and_bias_in_ours(quick_gelu):
    peer, ours, cfg = peer_and_ours(TINY_SIGLIP, quick_gelu, vocab=SIGLIP_VOCAB, pad_id=SIGLIP_EOS)
    assert_same_embeddings(peer, ours, cfg, image_size=160, tokens=siglip_captions(16))
    assert ours.loss.logit_bias.item() == peer.logit_bias.item()
    text = cfg.model.text
    assert (text.clean, text.start_token, text.pad_id) == ("canonicalize", False, SIGLIP_EOS)


@pytest.mark.parametrize("arch", ["ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-B-16-SigLIP"])
def test_full_sizes_map_every_tensor_to_one_of_ours_of_the_same_shape_on_the_meta_device(arch):
    model_cfg = open_clip.get_model_config(arch)
    cfg = load_config(None, config_overrides(model_cfg, quick_gelu=None))
    with torch.device("meta"):
        peer = openclip_model(model_cfg, quick_gelu=False)
        ours = build_model(cfg.model, cfg.loss, vocab_size=model_cfg["text_cfg"]["vocab_size"],
                            pad_id=cfg.model.text.pad_id)
    converted, expected = convert_state_dict(peer.state_dict()), ours.state_dict()
    assert converted.keys() == expected.keys()
    assert all(converted[k].shape == expected[k].shape for k in expected)


def a_non_square_image() -> Image.Image:
    return Image.frombytes("RGB", (300, 200), torch.randint(0, 256, (200, 300, 3), dtype=torch.uint8,
                                                            generator=torch.Generator().manual_seed(2)).numpy())


def test_openclips_eval_transform_equals_ours_pixel_for_pixel():
    theirs = open_clip.image_transform(224, is_train=False)(a_non_square_image())
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD))
    ours = square_pixels(a_non_square_image(), 224, "crop")
    torch.testing.assert_close((ours / 255 - mean) / std, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("preprocess_cfg", [SIGLIP_PREPROCESS, None], ids=["siglip_preprocess_cfg", "siglip_default"])
def test_openclips_siglip_eval_transform_equals_ours_pixel_for_pixel(preprocess_cfg):
    image = a_non_square_image()
    theirs = open_clip.image_transform(224, is_train=False, **SIGLIP_PREPROCESS)(image)
    pixels = load_config(None, config_overrides(ARCHITECTURES["ViT-B-16-SigLIP"], None, preprocess_cfg)).model.image
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (pixels.mean, pixels.std))
    assert pixels.resize == "squash"
    torch.testing.assert_close((square_pixels(image, 224, pixels.resize) / 255 - mean) / std, theirs, atol=1e-6, rtol=0)


def test_a_preprocess_cfg_without_resize_mode_is_openclips_default_shortest_side_crop():
    image = load_config(None, config_overrides(TINY_CLIP, False, {"mean": [0.4] * 3, "std": [0.2] * 3})).model.image
    assert (image.mean, image.std, image.resize) == ((0.4,) * 3, (0.2,) * 3, "crop")


def test_the_architecture_table_is_openclips_own_configs():
    for name in ARCHITECTURES:
        assert architecture(name) == (open_clip.get_model_config(name), None)
    model_cfg, quick_gelu = architecture("ViT-B-32-quickgelu")
    assert quick_gelu is True
    assert (config_overrides(model_cfg, quick_gelu)
            == config_overrides(open_clip.get_model_config("ViT-B-32-quickgelu"), None))
    assert "model.text.activation=gelu" in config_overrides(*architecture("ViT-B-32"))  # not said: GELU
    with pytest.raises(FormatError, match=r"unknown OpenCLIP architecture 'ViT-B-99'; known: ViT-B-32, ViT-B-16, "
                                          r"ViT-L-14, ViT-L-14-336, ViT-H-14, ViT-B-16-SigLIP"):
        architecture("ViT-B-99")


def test_clip_rows_are_openclips_bpe_rows():
    text = load_config(None, config_overrides(TINY_CLIP, False)).model.text
    assert (text.clean, text.start_token, text.pad_id, text.pool) == ("openclip", True, 0, "argmax")


def test_read_model_config_takes_open_clip_config_json_and_nothing_else():
    model_cfg = ARCHITECTURES["ViT-B-16-SigLIP"]
    assert read_model_config({"model_cfg": model_cfg, "preprocess_cfg": SIGLIP_PREPROCESS}) == (model_cfg,
                                                                                                SIGLIP_PREPROCESS)
    assert read_model_config({"model_cfg": model_cfg}) == (model_cfg, None)
    with pytest.raises(FormatError, match="not open_clip_config.json's layout"):
        read_model_config(model_cfg)  # a bare model config (OpenCLIP's model_configs/NAME.json)
    with pytest.raises(FormatError, match="open_clip_config.json sets epoch, which this import cannot express"):
        read_model_config({"model_cfg": model_cfg, "epoch": 3})


def _siglip(vision=None, text=None, **top):
    base = ARCHITECTURES["ViT-B-16-SigLIP"]
    return {**base, **top, "vision_cfg": {**base["vision_cfg"], **(vision or {})},
            "text_cfg": {**base["text_cfg"], **(text or {})}}


@pytest.mark.parametrize("model_cfg, preprocess_cfg, quick_gelu, message", [
    ({**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "timm_model_name": "x"}}, None, False,
     r"model_cfg\.vision_cfg sets head_width, layers, patch_size, width, which this import cannot express"),
    (_siglip(vision={"timm_drop_path": 0.1}), None, None, r"model_cfg\.vision_cfg sets timm_drop_path"),
    (_siglip(vision={"timm_proj": "linear"}), None, None, r"timm_proj='linear'"),
    (_siglip(vision={"timm_pool": "abs_attn"}), None, None, r"timm_pool='abs_attn'"),
    (_siglip(text={"act_kwargs": {"approximate": "tanh"}}), None, None, r"model_cfg\.text_cfg sets act_kwargs"),
    (_siglip(text={"pool_type": "eos"}), None, None, r"pool_type='eos'"),
    (_siglip(text={"norm_kwargs": {"eps": 1e-6, "bias": False}}), None, None, r"text_cfg\.norm_kwargs sets bias"),
    (_siglip(text={"hf_tokenizer_name": "timm/ViT-B-16-SigLIP2"}), None, None,
     r"hf_tokenizer_name='timm/ViT-B-16-SigLIP2': the rows of that tokenizer"),
    (_siglip(text={"tokenizer_kwargs": {}}), None, None, r"tokenizer_kwargs\.clean='whitespace'"),
    (_siglip(text={"tokenizer_kwargs": {"clean": "canonicalize", "strip_sep_token": True}}), None, None,
     r"tokenizer_kwargs sets strip_sep_token"),
    (_siglip(init_logit_scale=2.3), None, None, r"model_cfg sets init_logit_scale"),
    (_siglip(), {**SIGLIP_PREPROCESS, "resize_mode": "longest"}, None, r"resize_mode='longest'"),
    (_siglip(), {**SIGLIP_PREPROCESS, "interpolation": "bilinear"}, None, r"interpolation='bilinear'"),
    (_siglip(), {**SIGLIP_PREPROCESS, "fill_color": 0}, None, r"preprocess_cfg sets fill_color"),
    ({**TINY_CLIP, "quick_gelu": True}, None, False,
     r"model_cfg says quick_gelu=true; quick_gelu=false contradicts it"),
    ({k: v for k, v in TINY_CLIP.items() if k != "embed_dim"}, None, False, r"model_cfg has no embed_dim"),
], ids=["timm_trunk_with_vit_shape", "drop_path", "timm_proj", "timm_pool", "act_kwargs", "pool_type", "norm_kwargs",
        "unknown_tokenizer", "hf_whitespace_clean", "tokenizer_kwargs", "init_logit_scale", "longest", "bilinear",
        "fill_color", "quick_gelu_contradiction", "missing_key"])
def test_what_the_config_mapping_cannot_express_is_named(model_cfg, preprocess_cfg, quick_gelu, message):
    with pytest.raises(FormatError, match=message):
        config_overrides(model_cfg, quick_gelu, preprocess_cfg)


def test_a_tensor_the_mapping_cannot_express_is_named():
    with pytest.raises(FormatError, match=r"OpenCLIP tensor visual\.attnpool\.k_proj\.weight \[4, 4\] has no "
                                          r"counterpart here"):
        convert_state_dict({"visual.attnpool.k_proj.weight": torch.zeros(4, 4)})
