"""`contrastive export`, held to the peers' own loaders: a run trained here, exported, is loaded by OpenCLIP
(`create_model_and_transforms("local-dir:OUT")`, `get_tokenizer`) and by transformers (`from_pretrained`, the
processors), which give our embeddings and logits on their own preprocessing and tokenization of the same images
and captions; importing an export gives back our weights bit for bit and our config; a peer's model imported and
exported back is the peer's own tensors. What a target cannot carry is refused before anything is written."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

from contrastive.checkpoint import load_checkpoint  # noqa: E402
from contrastive.commands import export_model, import_model  # noqa: E402
from contrastive.config import to_flat_dict  # noqa: E402
from contrastive.errors import FormatError  # noqa: E402
from contrastive.evaluate import load_model, load_run  # noqa: E402
from contrastive.train import train  # noqa: E402
from data.decode import square_pixels  # noqa: E402
from tests.contrastive.command_line import run_command  # noqa: E402
from tests.contrastive.test_import import CLIP_BPE, FAMILIES  # noqa: E402
from tests.peers import TINY_CLIP  # noqa: E402
from tests.contrastive.tiny_run import tiny_config  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
CAPTIONS = ["a red square", "A BLUE square, number 3!", "a green  square", "yellow", ""]
CLIP_VIT = "model.image.timm_name=vit_base_patch16_clip_224"  # a CLIP-style ViT, as the demo's


def trained(root: Path, *overrides: str) -> Path:
    cfg = tiny_config(root, CLIP_VIT, "train.steps=2", *overrides)
    assert train(cfg).finished
    return Path(cfg.run_dir)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory) -> Path:
    return trained(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def siglip_run(tmp_path_factory) -> Path:
    return trained(tmp_path_factory.mktemp("siglip"), "loss.name=siglip")


def images() -> list[Image.Image]:
    generator = torch.Generator().manual_seed(0)
    return [Image.fromarray(torch.randint(0, 256, (40, 50, 3), dtype=torch.uint8, generator=generator).numpy())
            for _ in range(3)]


def ours(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object]:
    """Our image and text embeddings and logits for images() and CAPTIONS, and the run's tokenizer."""
    run = load_run(run_dir, [])
    model = load_model(run, run_dir / "checkpoints" / "step_000002.pt", torch.device("cpu"))[0].eval()
    pixels = torch.stack([square_pixels(i, run.cfg.model.image.image_size, run.cfg.model.image.resize)
                          for i in images()])
    with torch.no_grad():
        image, text = model.encode_image(pixels), model.encode_text(run.tokenizer(CAPTIONS))
        return image, text, model.logits(image, text), run.tokenizer


@pytest.mark.parametrize("run", ["clip_run", "siglip_run"])
def test_openclip_loads_an_export_and_scores_as_we_do(run, request, tmp_path):
    run_dir = request.getfixturevalue(run)
    out = tmp_path / "out"
    assert run_command(export_model, "export", str(run_dir), "--format", "open_clip", str(out)) == 0
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    image, text, logits, ours_tokenizer = ours(run_dir)
    assert torch.equal(tokenizer(CAPTIONS), ours_tokenizer(CAPTIONS))
    with torch.no_grad():
        theirs_image = model.encode_image(torch.stack([preprocess(i) for i in images()]), normalize=True)
        theirs_text = model.encode_text(tokenizer(CAPTIONS), normalize=True)
    torch.testing.assert_close(theirs_image, image, atol=1e-5, rtol=0)
    torch.testing.assert_close(theirs_text, text, atol=1e-5, rtol=0)
    bias = model.logit_bias if getattr(model, "logit_bias", None) is not None else 0.0
    torch.testing.assert_close(model.logit_scale.exp() * theirs_image @ theirs_text.T + bias, logits,
                               atol=1e-4, rtol=0)


def test_transformers_loads_an_export_and_scores_as_we_do(clip_run, tmp_path):
    out = tmp_path / "out"
    assert run_command(export_model, "export", str(clip_run), "--format", "hf", str(out)) == 0
    model = transformers.CLIPModel.from_pretrained(out).eval()
    processor = transformers.CLIPProcessor.from_pretrained(out)
    image, text, logits, ours_tokenizer = ours(clip_run)
    context = ours_tokenizer.context_length
    batch = processor(text=CAPTIONS, images=images(), padding="max_length", max_length=context, truncation=True,
                      return_tensors="pt")
    assert torch.equal(batch.input_ids, ours_tokenizer(CAPTIONS))
    with torch.no_grad():
        theirs = model(input_ids=batch.input_ids, pixel_values=batch.pixel_values)
    # transformers' processors resize tensors (torchvision's antialiased bicubic), not PIL images: the image side
    # is held to our pixels, normalised as the exported preprocessor_config.json says (docs/interop.md)
    pixels = torch.stack([square_pixels(i, 32, "crop") for i in images()])
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (processor.image_processor.image_mean,
                                                            processor.image_processor.image_std))
    with torch.no_grad():
        ours_pixels = model.get_image_features(pixel_values=(pixels / 255 - mean) / std).pooler_output
    torch.testing.assert_close(F.normalize(ours_pixels, dim=-1), image, atol=1e-5, rtol=0)
    torch.testing.assert_close(F.normalize(theirs.text_embeds, dim=-1), text, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.logit_scale.exp() * F.normalize(ours_pixels, dim=-1) @ text.T, logits,
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("target", ["open_clip", "hf"])
def test_an_export_imported_gives_back_our_weights_bit_for_bit_and_our_config(clip_run, target, tmp_path):
    out, back = tmp_path / "out", tmp_path / "back"
    run_command(export_model, "export", str(clip_run), "--format", target, str(out))
    run_command(import_model, "import", str(out), str(back))
    original = load_checkpoint(clip_run / "checkpoints" / "step_000002.pt")["model"]
    returned = load_checkpoint(back / "checkpoints" / "step_000000.pt")["model"]
    assert original.keys() == returned.keys()
    assert all(torch.equal(original[k], returned[k]) for k in original)
    source, imported = to_flat_dict(load_run(clip_run, []).cfg), to_flat_dict(load_run(back, []).cfg)
    differ = {k for k in source if k.startswith(("model.", "loss.")) and source[k] != imported.get(k)}
    assert differ == set()


def test_what_a_target_cannot_carry_is_refused_before_anything_is_written(siglip_run, tmp_path):
    with pytest.raises(FormatError, match="SiglipModel"):
        run_command(export_model, "export", str(siglip_run), "--format", "hf", str(tmp_path / "out"))
    llip = trained(tmp_path / "llip", "loss.name=llip")
    for target in ("open_clip", "hf"):
        with pytest.raises(FormatError, match=r"loss llip scores the image tower's mixture tokens \(Llip's\): neither "
                                              r"OpenCLIP nor transformers has a model for them"):
            run_command(export_model, "export", str(llip), "--format", target, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_non_empty_out_is_refused_and_step_picks_the_checkpoint(clip_run, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(FormatError, match="exists and is not empty"):
        run_command(export_model, "export", str(clip_run), "--format", "hf", str(tmp_path / "out"))
    with pytest.raises(Exception, match=r"no checkpoint of step 1 \(its steps: 2\)"):
        run_command(export_model, "export", str(clip_run), "--format", "hf", str(tmp_path / "new"), "--step", "1")
    assert run_command(export_model, "export", str(clip_run), "--format", "hf", str(tmp_path / "new"),
                       "--step", "2") == 0
    exported = load_file(tmp_path / "new" / "model.safetensors")
    assert "text_model.embeddings.token_embedding.weight" in exported


@pytest.mark.parametrize("family", FAMILIES)
def test_a_peer_model_imported_and_exported_back_is_the_peers_own_tensors(family, tmp_path):
    src = FAMILIES[family](tmp_path)[0]
    target, weights = ("hf", "model.safetensors") if family.startswith("hf") else ("open_clip",
                                                                                  "open_clip_model.safetensors")
    run_command(import_model, "import", str(src), str(tmp_path / "run"), *([] if target == "hf" or family.endswith(
        "siglip") else ["--tokenizer", str(CLIP_BPE)]))
    run_command(export_model, "export", str(tmp_path / "run"), "--format", target, str(tmp_path / "out"))
    original, exported = load_file(src / weights), load_file(tmp_path / "out" / weights)
    buffers = {k for k in original if k.endswith("position_ids")}  # transformers' index buffers, not weights
    assert original.keys() - buffers == exported.keys() - buffers
    assert [k for k in exported if k not in buffers and not torch.equal(exported[k], original[k])] == []


def test_openclip_loads_an_export_by_architecture_name_and_weights_file(tmp_path):
    """create_model_and_transforms(arch, pretrained=file), where an OpenCLIP architecture describes the model: an
    imported OpenCLIP model exported back (here a tiny architecture registered with OpenCLIP the way its own are)."""
    src = FAMILIES["openclip_clip"](tmp_path)[0]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny-clip-test.json").write_text(json.dumps({**TINY_CLIP, "quick_gelu": True}))
    open_clip.add_model_config(tmp_path / "configs")
    run_command(import_model, "import", str(src), str(tmp_path / "run"), "--tokenizer", str(CLIP_BPE))
    run_command(export_model, "export", str(tmp_path / "run"), "--format", "open_clip", str(tmp_path / "out"))
    model, _, _ = open_clip.create_model_and_transforms(
        "tiny-clip-test", pretrained=str(tmp_path / "out" / "open_clip_model.safetensors"))
    original = load_file(src / "open_clip_model.safetensors")
    assert all(torch.equal(value, original[name]) for name, value in model.state_dict().items())
