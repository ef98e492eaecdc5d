import pytest
import torch

from contrastive.config import OPENAI_MEAN as CLIP_MEAN, OPENAI_STD as CLIP_STD, ImageTowerConfig
from contrastive.image_tower import ImageTower

EMBED = 16


TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4}
TINY_CONVNEXT = {"depths": [1, 1, 2, 1], "dims": [8, 16, 24, 32]}


def tiny_config(timm_name: str = "vit_base_patch16_clip_224", **kwargs) -> ImageTowerConfig:
    shape = TINY_VIT if timm_name.startswith("vit_") else {}
    return ImageTowerConfig(timm_name=timm_name, image_size=32, kwargs={**shape, **kwargs}, mixture_tokens=3)


def tiny_tower(output: str = "embedding", **kwargs) -> ImageTower:
    torch.manual_seed(0)
    return ImageTower(tiny_config(**kwargs), EMBED, output=output)


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def random_readout(out: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient reaches every input direction (a plain sum of a normalised output would not)."""
    return (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum()


@pytest.mark.parametrize("global_pool", ["token", "avg", "map"])
def test_embedding_is_projected_and_normalised(global_pool: str):
    out = tiny_tower(global_pool=global_pool)(images(3))
    assert out.shape == (3, EMBED)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


def test_mixture_tokens_are_the_vits_first_k_tokens_after_the_final_norm():
    tower = tiny_tower("mixture_tokens").eval()
    vit = tower.trunk
    assert vit.cls_token is None and vit.num_prefix_tokens == 3 and tower.projection is None
    x = images()
    normalised = (x.float() / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    tokens = vit.norm(vit.blocks(vit.norm_pre(vit._pos_embed(vit.patch_embed(normalised)))))
    assert tokens.shape == (2, 3 + 16, 32)
    out = tower(x)
    assert out.shape == (2, 3, 32)
    torch.testing.assert_close(out, tokens[:, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vit._pos_embed(vit.patch_embed(normalised))[:, :3],
                               vit.reg_token.expand(2, -1, -1) + vit.pos_embed[:, :3])


def test_normalises_uint8_with_clip_statistics():
    tower = tiny_tower()
    seen = []
    tower.trunk.patch_embed.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = images()
    tower(x)
    expected = (x.float() / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], expected)
    assert seen[0].dtype == torch.float32


def test_bf16_autocast_feeds_the_vit_bf16_and_stays_close_to_fp32():
    tower = tiny_tower().eval()
    seen = []
    tower.trunk.patch_embed.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    x = images()
    fp32 = tower(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = tower(x)
    assert seen == [torch.float32, torch.bfloat16]
    torch.testing.assert_close(bf16.float(), fp32, atol=0.05, rtol=0)


def test_patch_dropout_is_active_only_in_train_mode():
    dropping, plain = tiny_tower(patch_drop_rate=0.5), tiny_tower()
    plain.load_state_dict(dropping.state_dict())
    x = images()
    torch.testing.assert_close(dropping.eval()(x), plain.eval()(x))
    torch.manual_seed(1)
    first = dropping.train()(x)
    second = dropping(x)
    assert (first - plain.train()(x)).abs().amax() > 1e-3
    assert (first - second).abs().amax() > 1e-3  # a fresh random subset of patches per call


@pytest.mark.parametrize("output", ["embedding", "mixture_tokens"])
def test_grad_checkpointing_gives_the_same_gradients(output: str):
    grads = []
    for checkpointing in (False, True):
        tower = tiny_tower(output)
        tower.set_grad_checkpointing(checkpointing)
        random_readout(tower(images())).backward()
        grads.append({n: p.grad for n, p in tower.named_parameters()})
    assert grads[0]["trunk.blocks.0.attn.qkv.weight"].abs().amax() > 1e-4
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


@pytest.mark.parametrize("output, kwargs", [("embedding", {"global_pool": "map"}), ("mixture_tokens", {}),
                                            ("embedding", {"timm_name": "convnext_atto", **TINY_CONVNEXT})])
def test_every_parameter_gets_a_gradient(output: str, kwargs: dict):
    tower = tiny_tower(output, **kwargs)
    random_readout(tower(images())).backward()
    missing = [n for n, p in tower.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_no_weight_decay_names_position_embedding_and_prefix_tokens():
    assert tiny_tower().no_weight_decay() >= {"trunk.pos_embed", "trunk.cls_token"}
    names = dict(tiny_tower("mixture_tokens").named_parameters())
    assert {"trunk.pos_embed", "trunk.reg_token"} <= tiny_tower("mixture_tokens").no_weight_decay() & names.keys()
    assert tiny_tower(timm_name="convnext_atto", **TINY_CONVNEXT).no_weight_decay() == set()  # timm lists none


def test_bad_images_are_a_clear_error():
    tower = tiny_tower()
    with pytest.raises(ValueError, match=r"uint8 images \[B, 3, 32, 32\], got torch.float32"):
        tower(images().float())
    with pytest.raises(ValueError, match=r"got torch.uint8 \[2, 3, 64, 64\]"):
        tower(images(size=64))


@pytest.mark.parametrize("timm_name, kwargs, width, blocks", [
    ("vit_base_patch16_clip_224", {}, 32, ["Block"] * 2),
    ("convnext_atto", TINY_CONVNEXT, 32, ["ConvNeXtBlock", "Sequential", "ConvNeXtBlock", "Sequential",
                                         "ConvNeXtBlock", "ConvNeXtBlock", "Sequential", "ConvNeXtBlock"]),
    ("resnet18", {"layers": [1, 2, 1, 1]}, 512, ["BasicBlock"] * 5),
])
def test_any_timm_model_gives_a_projected_embedding_and_its_repeated_blocks(timm_name, kwargs, width, blocks):
    tower = tiny_tower(timm_name=timm_name, **kwargs)
    assert tower.width == width and tower.projection.in_features == width
    assert [type(block).__name__ for block in tower.repeated_blocks()] == blocks
    out = tower(images(3))
    assert out.shape == (3, EMBED)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


def test_image_size_is_timms_img_size_where_the_model_takes_one_and_otherwise_the_input_resolution():
    assert tiny_tower().trunk.patch_embed.img_size == (32, 32)
    convnext = ImageTower(ImageTowerConfig(timm_name="convnext_atto", image_size=48, kwargs=TINY_CONVNEXT), EMBED)
    assert convnext(images(size=48)).shape == (2, EMBED)


def test_convnext_grad_checkpointing_through_timms_api_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        tower = tiny_tower(timm_name="convnext_atto", **TINY_CONVNEXT)
        tower.set_grad_checkpointing(checkpointing)
        assert all(stage.grad_checkpointing == checkpointing for stage in tower.trunk.stages)
        random_readout(tower(images())).backward()
        grads.append({n: p.grad for n, p in tower.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


@pytest.mark.parametrize("output, cfg, message", [
    ("mixture_tokens", tiny_config("convnext_atto", **TINY_CONVNEXT),
     "^mixture tokens are register tokens of a timm VisionTransformer; convnext_atto has none$"),
    ("mixture_tokens", tiny_config(global_pool="avg"), "^kwargs global_pool: the mixture tokens set them"),
    ("embedding", tiny_config(img_size=64), r"^kwargs.img_size is set by the tower \(model.image.image_size\)$"),
    ("embedding", tiny_config(num_classes=10), "^kwargs.num_classes is set by the tower"),
    ("embedding", tiny_config(widht=3), r"^timm cannot build vit_base_patch16_clip_224\(.*widht=3\): .*'widht'"),
    ("embedding", tiny_config("vit_nonexistent_224"), "^timm cannot build vit_nonexistent_224"),
])
def test_what_the_tower_cannot_build_is_one_line_naming_it(output, cfg, message):
    with pytest.raises(ValueError, match=message):
        ImageTower(cfg, EMBED, output=output)


def test_the_towers_normalisation_is_the_models_mean_and_std():
    torch.manual_seed(0)
    tower = ImageTower(ImageTowerConfig(timm_name="vit_base_patch16_clip_224", image_size=32, kwargs=TINY_VIT,
                                        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), EMBED)
    seen = []
    tower.trunk.patch_embed.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = images()
    tower(x)
    torch.testing.assert_close(seen[0], x.float() / 127.5 - 1)  # SigLIP's value_range(-1, 1)
