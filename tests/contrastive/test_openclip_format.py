"""OpenCLIP's OpenAI-style CLIP ViTs in our model (contrastive/openclip_format.py), held to the peer itself: models
built by open_clip with random weights (nothing downloaded), converted, give OpenCLIP's embeddings on the same
uint8 pixels and token ids; OpenCLIP's eval transform equals ours pixel for pixel; ViT-H-14 maps on the meta
device. open-clip-torch is a test-only dependency (setup.cfg's dev extra): the library never imports it."""
import pytest
import torch
from PIL import Image

open_clip = pytest.importorskip("open_clip")
from open_clip.model import CLIP  # noqa: E402

from contrastive.config import load_config  # noqa: E402
from contrastive.model import build_model  # noqa: E402
from contrastive.errors import FormatError  # noqa: E402
from contrastive.openclip_format import config_overrides, convert_state_dict  # noqa: E402
from data.decode import square_pixels  # noqa: E402

SOT, EOT, VOCAB = 49406, 49407, 49408
TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": VOCAB, "width": 48, "heads": 4, "layers": 2}}


def peer_and_ours(model_cfg: dict, quick_gelu: bool) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    torch.manual_seed(0)
    peer = CLIP(**model_cfg, quick_gelu=quick_gelu).eval()
    with torch.no_grad():
        for param in peer.parameters():
            if param.ndim == 1:  # norm gains, biases (the key bias included) off their initial values
                param.add_(torch.randn_like(param) * 0.1)
    cfg = load_config(None, config_overrides(model_cfg, quick_gelu=quick_gelu))
    ours = build_model(cfg.model, cfg.loss, vocab_size=VOCAB, pad_id=0).eval()
    ours.load_state_dict(convert_state_dict(peer.state_dict()))
    return peer, ours, cfg


def captions(length: int) -> torch.Tensor:
    """OpenCLIP-style rows: <sot> ids <eot>, padded with 0, which is also "!"; one row fills the context."""
    rows = [[SOT, 320, 1125, 0, 0, 539, EOT], [SOT, 1929, EOT], [SOT, *range(1000, 1000 + length - 2), EOT]]
    return torch.tensor([row + [0] * (length - len(row)) for row in rows])


def assert_same_embeddings(peer, ours, cfg, image_size: int, context: int) -> None:
    pixels = torch.randint(0, 256, (3, 3, image_size, image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    mean = torch.tensor(cfg.model.image.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.model.image.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(pixels), peer.encode_image((pixels / 255 - mean) / std,
                                                                                normalize=True), atol=1e-5, rtol=0)
        tokens = captions(context)
        torch.testing.assert_close(ours.encode_text(tokens), peer.encode_text(tokens, normalize=True),
                                   atol=1e-5, rtol=0)
    assert ours.loss.logit_scale.item() == peer.logit_scale.item()


@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quick_gelu"])
def test_a_small_openclip_model_gives_the_same_embeddings_in_ours(quick_gelu):
    peer, ours, cfg = peer_and_ours(TINY, quick_gelu)
    assert_same_embeddings(peer, ours, cfg, image_size=32, context=16)


def test_a_full_size_random_vit_b_32_gives_the_same_embeddings_in_ours():
    peer, ours, cfg = peer_and_ours(open_clip.get_model_config("ViT-B-32"), quick_gelu=True)
    assert_same_embeddings(peer, ours, cfg, image_size=224, context=77)


@pytest.mark.parametrize("arch", ["ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14"])
def test_larger_vits_map_every_tensor_to_one_of_ours_of_the_same_shape_on_the_meta_device(arch):
    model_cfg = open_clip.get_model_config(arch)
    cfg = load_config(None, config_overrides(model_cfg, quick_gelu=False))
    with torch.device("meta"):
        peer = CLIP(**model_cfg)
        ours = build_model(cfg.model, cfg.loss, vocab_size=VOCAB, pad_id=0)
    converted, expected = convert_state_dict(peer.state_dict()), ours.state_dict()
    assert converted.keys() == expected.keys()
    assert all(converted[k].shape == expected[k].shape for k in expected)


def test_openclips_eval_transform_equals_ours_pixel_for_pixel():
    image = Image.frombytes("RGB", (300, 200), torch.randint(0, 256, (200, 300, 3), dtype=torch.uint8,
                                                             generator=torch.Generator().manual_seed(2)).numpy())
    theirs = open_clip.image_transform(224, is_train=False)(image)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD))
    torch.testing.assert_close((square_pixels(image, 224, "crop") / 255 - mean) / std, theirs, atol=1e-6, rtol=0)


def test_what_the_mapping_cannot_express_is_named():
    with pytest.raises(FormatError, match=r"OpenCLIP tensor visual\.attnpool\.k_proj\.weight \[4, 4\] has no "
                                          r"counterpart here"):
        convert_state_dict({"visual.attnpool.k_proj.weight": torch.zeros(4, 4)})
    with pytest.raises(FormatError, match=r"model_cfg\.vision_cfg sets timm_model_name, which this import cannot "
                                          r"express"):
        config_overrides({**TINY, "vision_cfg": {**TINY["vision_cfg"], "timm_model_name": "x"}}, quick_gelu=False)
