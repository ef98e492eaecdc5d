"""`contrastive import`, held to the peers end to end: a model each peer library builds itself with random weights
(nothing downloaded), saved in its own format, imported, then evaluated by `contrastive eval`, gives the peer's own
zero-shot logits and retrieval scores (its preprocessing, its tokenizer, its forward, scale and bias) on a small
ImageFolder and Karpathy set. And the refusals: a TorchScript archive, an architecture without its activation, a
tensor that does not fit, a non-empty RUN_DIR; a failed or killed import leaves nothing behind."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

open_clip = pytest.importorskip("open_clip")

from contrastive.commands import eval as eval_command  # noqa: E402
from contrastive.commands import import_model, report, submit  # noqa: E402
from contrastive.config import load_config  # noqa: E402
from contrastive.errors import CheckpointError, FormatError  # noqa: E402
from contrastive.evaluate import load_model, load_run  # noqa: E402
from contrastive.openclip_format import ARCHITECTURES  # noqa: E402
from contrastive.train import train  # noqa: E402
from data.decode import square_pixels  # noqa: E402
from eval.retrieval import open_retrieval_set  # noqa: E402
from eval.runtime import Runtime  # noqa: E402
from eval.zeroshot import class_representations, open_classification_set  # noqa: E402
from tests.contrastive.command_line import run_command  # noqa: E402
from tests.eval.fixtures import write_image_folder, write_karpathy  # noqa: E402
from tests.peers import (TINY_CLIP, perturbed, write_hf_clip_tokenizer, write_openclip_folder, write_siglip_spiece,  # noqa: E402
                         write_unigram_tokenizer)

CLIP_BPE = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
CLASSES = ["blue whale", "green tree frog", "red fox"]  # in sorted-folder order, as classnames.txt lists them
TEMPLATES = ["a photo of a {c}.", "a drawing of the {c}!"]
CAPTIONS = [["a dog on grass", "A DOG,  running"], ["two cats & a hat"], ["an owl at night", "the owl's eyes"]]


@dataclass
class Peer:
    """The peer's own pipeline: PIL images -> normalised image embeddings, texts -> normalised text embeddings,
    and its logit scale (exp applied) and bias."""
    images: Callable[[list[Image.Image]], torch.Tensor]
    texts: Callable[[list[str]], torch.Tensor]
    scale: float
    bias: float = 0.0

    def logits(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.scale * image @ text.T + self.bias


def noise_image(seed: int, size: tuple[int, int] = (40, 50)) -> Image.Image:
    """Non-square (40 x 50 resizes to 32 x 40 and crops 4 rows off each end exactly): a colour of its own, each
    channel's level and noise amplitude drawn from `seed`, so that images differ beyond rounding in any model."""
    generator = torch.Generator().manual_seed(seed)
    level, spread = torch.rand(3, 1, 1, generator=generator) * 255, torch.rand(3, 1, 1, generator=generator) * 80
    pixels = level + spread * torch.randn(3, size[1], size[0], generator=generator)
    return Image.fromarray(pixels.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sets")
    images = {name.replace(" ", "_"): [noise_image(10 * i + j) for j in range(2)] for i, name in enumerate(CLASSES)}
    folder = write_image_folder(root / "zeroshot", images, classnames=CLASSES, templates=TEMPLATES)
    karpathy = write_karpathy(root / "retrieval", [(noise_image(100 + i), c) for i, c in enumerate(CAPTIONS)])
    return folder, karpathy


def openclip_clip(tmp_path: Path) -> tuple[Path, Peer, list[str]]:
    torch.manual_seed(0)
    peer = perturbed(open_clip.model.CLIP(**TINY_CLIP, quick_gelu=True))
    preprocess_cfg = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD),
                      "interpolation": "bicubic", "resize_mode": "shortest"}
    src = write_openclip_folder(tmp_path / "openclip", peer, {**TINY_CLIP, "quick_gelu": True}, preprocess_cfg)
    transform = open_clip.image_transform(32, is_train=False, **preprocess_cfg)
    tokenize = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    with torch.no_grad():
        return src, Peer(lambda images: peer.encode_image(torch.stack([transform(i) for i in images]), normalize=True),
                         lambda texts: peer.encode_text(tokenize(texts), normalize=True),
                         peer.logit_scale.exp().item()), ["--tokenizer", str(CLIP_BPE)]


def openclip_siglip(tmp_path: Path) -> tuple[Path, Peer, list[str]]:
    """ViT-B-16-SigLIP's config with a small timm trunk (test_vit2: no class token, MAP pooling, 160 px by default;
    OpenCLIP passes a timm trunk no shape arguments) and text tower, its tokenizer a local Unigram file."""
    src = write_unigram_tokenizer(tmp_path / "openclip_siglip")
    siglip = ARCHITECTURES["ViT-B-16-SigLIP"]
    vocab = len(json.loads((src / "tokenizer.json").read_text())["model"]["vocab"])
    model_cfg = {**siglip, "embed_dim": 64, "vision_cfg": {**siglip["vision_cfg"], "image_size": 160,
                                                           "timm_model_name": "test_vit2"},
                 "text_cfg": {**siglip["text_cfg"], "context_length": 16, "vocab_size": vocab, "width": 48,
                              "heads": 4, "layers": 2}}
    torch.manual_seed(0)
    peer = perturbed(open_clip.model.CustomTextCLIP(**{k: v for k, v in model_cfg.items() if k != "custom_text"}))
    preprocess_cfg = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "resize_mode": "squash"}
    write_openclip_folder(src, peer, model_cfg, preprocess_cfg)
    transform = open_clip.image_transform(160, is_train=False, **preprocess_cfg)
    tokenize = open_clip.tokenizer.HFTokenizer(str(src), context_length=16, clean="canonicalize")
    with torch.no_grad():
        return src, Peer(lambda images: peer.encode_image(torch.stack([transform(i) for i in images]), normalize=True),
                         lambda texts: peer.encode_text(tokenize(texts), normalize=True),
                         peer.logit_scale.exp().item(), peer.logit_bias.item()), []


def hf_clip(tmp_path: Path) -> tuple[Path, Peer, list[str]]:
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=48, intermediate_size=100, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, eos_token_id=49407),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8), projection_dim=32)
    torch.manual_seed(0)
    peer = perturbed(transformers.CLIPModel(config))
    src = tmp_path / "hf_clip"
    peer.save_pretrained(src)
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(src)
    tokenizer = transformers.AutoTokenizer.from_pretrained(write_hf_clip_tokenizer(src))
    return src, hf_peer(peer, processor, tokenizer, context=16), []


def hf_siglip(tmp_path: Path) -> tuple[Path, Peer, list[str]]:
    """google/siglip-*'s layout: spiece.model and no tokenizer.json, which the import refuses with the command that
    converts it; run, the converted file gives SiglipTokenizer's own ids (its cleaning included)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("sentencepiece")
    src = write_siglip_spiece(tmp_path / "hf_siglip")
    tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    config = transformers.SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=100, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, projection_size=64, pad_token_id=1,
                         bos_token_id=None, eos_token_id=1),
        vision_config=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8))
    torch.manual_seed(0)
    peer = perturbed(transformers.SiglipModel(config))
    peer.save_pretrained(src)
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    processor.save_pretrained(src)
    with pytest.raises(FormatError, match="has spiece.model but no tokenizer.json; convert it once with: ") as refusal:
        run_command(import_model, "import", str(src), str(tmp_path / "refused"))
    conversion = str(refusal.value).split("convert it once with: ", 1)[1]
    subprocess.run([sys.executable, *shlex.split(conversion)[1:]], check=True, capture_output=True)
    return src, hf_peer(peer, processor, tokenizer, context=16, bias=peer.logit_bias.item()), []


def hf_peer(peer, processor, tokenizer, context: int, bias: float = 0.0) -> Peer:
    """transformers' model and tokenizer (as CLIPProcessor / SiglipProcessor call it) on our pixels, normalised with
    the processor's mean and std: transformers 5's image processors resize tensors with torchvision's antialiased
    bicubic, not PIL's bicubic as OpenCLIP and we do (test_hf_image_processors_resize_unlike_openclip)."""
    resize = "crop" if processor.do_center_crop else "squash"
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (processor.image_mean, processor.image_std))

    def images(pil_images: list[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([square_pixels(image, 32, resize) for image in pil_images])
        pixel_values = (pixels / 255 - mean) / std
        return F.normalize(peer.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)

    def texts(captions: list[str]) -> torch.Tensor:
        ids = tokenizer(captions, padding="max_length", max_length=context, truncation=True, return_tensors="pt")
        return F.normalize(peer.get_text_features(input_ids=ids.input_ids).pooler_output, dim=-1)

    return Peer(torch.no_grad()(images), torch.no_grad()(texts), peer.logit_scale.exp().item(), bias)


def test_hf_image_processors_resize_unlike_openclip():
    """What the end-to-end test leaves out for Hugging Face, measured: its processors' pixels differ from PIL's
    bicubic (OpenCLIP's and ours) by at most 1 level on a shorter-side resize and centre crop, and by several when
    squashing 40 x 50 to 32 x 32."""
    transformers = pytest.importorskip("transformers")
    image = noise_image(3)
    clip = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                           do_normalize=False, do_rescale=False)
    siglip = transformers.SiglipImageProcessor(size={"height": 32, "width": 32}, do_normalize=False, do_rescale=False)
    for processor, resize, most in ((clip, "crop", 1), (siglip, "squash", 8)):
        theirs = processor(images=[image], return_tensors="pt").pixel_values[0]
        difference = (theirs - square_pixels(image, 32, resize).float()).abs()
        assert 0 < difference.max() <= most and difference.mean() < 0.5


FAMILIES = {"openclip_clip": openclip_clip, "openclip_siglip": openclip_siglip, "hf_clip": hf_clip,
            "hf_siglip": hf_siglip}


def peer_zeroshot_logits(peer: Peer, folder: Path) -> torch.Tensor:
    """OpenCLIP's zero-shot classifier: each class's prompts normalised, averaged, renormalised."""
    classes = torch.stack([F.normalize(peer.texts([t.format(c=name) for t in TEMPLATES]).mean(0), dim=-1)
                           for name in CLASSES])
    images = [Image.open(path).convert("RGB") for name in CLASSES
              for path in sorted((folder / name.replace(" ", "_")).iterdir())]
    return peer.logits(peer.images(images), classes)


def peer_retrieval_logits(peer: Peer, karpathy: Path) -> torch.Tensor:
    images = [Image.open(p).convert("RGB") for p in sorted((karpathy / "images").iterdir())]
    return peer.logits(peer.images(images), peer.texts([c for captions in CAPTIONS for c in captions]))


@pytest.mark.parametrize("family", FAMILIES)
def test_an_imported_model_evaluates_as_the_peer_scores_it(family, tmp_path, datasets):
    folder, karpathy = datasets
    src, peer, extra = FAMILIES[family](tmp_path)
    run_dir = tmp_path / "run"
    run_command(import_model, "import", str(src), str(run_dir), *extra)
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "config.yaml", "tokenizer.json"]

    run = load_run(run_dir, [])
    model = load_model(run, run_dir / "checkpoints" / "step_000000.pt", torch.device("cpu"))[0].eval()
    runtime = Runtime(torch.device("cpu"), batch_size=4, workers=0)
    pixels = run.cfg.model.image
    classification = open_classification_set(folder, pixels.image_size, resize=pixels.resize)
    images = torch.stack([image for image, _ in classification.images])
    classes = class_representations(model, run.tokenizer, CLASSES, TEMPLATES, runtime)
    zeroshot = runtime.scores(model, runtime.encode_images(model, images), classes)
    torch.testing.assert_close(zeroshot, peer_zeroshot_logits(peer, folder), atol=2e-4, rtol=0)

    retrieval = open_retrieval_set(karpathy, pixels.image_size, resize=pixels.resize)
    images = torch.stack([image for image, _ in retrieval.images])
    texts = runtime.encode_texts(model, run.tokenizer, [c for captions in CAPTIONS for c in captions], "captions")
    scores = runtime.scores(model, runtime.encode_images(model, images), texts)
    torch.testing.assert_close(scores, peer_retrieval_logits(peer, karpathy), atol=2e-4, rtol=0)

    # The command's metrics are those of these scores (random models score near ties, so not recomputed from the
    # peer's, which agree only within the tolerance).
    assert run_command(eval_command, "eval", str(run_dir), f"eval.zeroshot.tiny={folder}",
                       f"eval.retrieval.tiny={karpathy}", "eval.workers=0") == 0
    results = json.loads((run_dir / "eval" / "step_000000.json").read_text())["metrics"]
    labels = torch.arange(len(CLASSES)).repeat_interleave(2)
    assert results["zeroshot/tiny/top1"] == (zeroshot.argmax(1) == labels).float().mean()
    owners = torch.tensor([0, 0, 1, 2, 2])
    assert results["retrieval/tiny/i2t_R@1"] == (owners[scores.argmax(1)] == torch.arange(3)).float().mean()
    assert results["retrieval/tiny/t2i_R@1"] == (scores.argmax(0) == owners).float().mean()


def test_a_bare_state_dict_with_an_architecture_must_say_its_activation(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "vit_b_32.bin"
    torch.save(open_clip.model.CLIP(**TINY_CLIP).state_dict(), weights)
    with pytest.raises(FormatError, match="--arch ViT-B-32: say --quick-gelu or --no-quick-gelu"):
        run_command(import_model, "import", str(weights), str(tmp_path / "run"), "--arch", "ViT-B-32",
                    "--tokenizer", str(CLIP_BPE))
    assert not (tmp_path / "run").exists()


def test_a_state_dict_that_does_not_fit_the_architecture_names_the_tensor_and_leaves_nothing(tmp_path):
    weights = tmp_path / "tiny.bin"
    torch.save(open_clip.model.CLIP(**TINY_CLIP).state_dict(), weights)  # a tiny model is not a ViT-B-32
    with pytest.raises(FormatError, match=r"as ViT-B-32 gives \S+ of shape \[\d+, \d+\]; the configured model "
                                          r"expects \[\d+, \d+\]"):
        run_command(import_model, "import", str(weights), str(tmp_path / "run"), "--arch", "ViT-B-32",
                    "--no-quick-gelu", "--tokenizer", str(CLIP_BPE))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.bin"]


def test_an_openai_torchscript_archive_is_refused_with_how_to_convert_it(tmp_path):
    archive = tmp_path / "ViT-B-32.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, but it is what OpenAI shipped
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(archive))
    with pytest.raises(FormatError, match=r"TorchScript archive .*load_openai_model\('.*ViT-B-32\.pt'"):
        run_command(import_model, "import", str(archive), str(tmp_path / "run"), "--arch", "ViT-B-32", "--quick-gelu")
    assert not (tmp_path / "run").exists()


def test_a_non_empty_run_dir_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(FormatError, match="exists and is not empty"):
        run_command(import_model, "import", str(tmp_path), str(tmp_path / "run"), "--arch", "ViT-B-32", "--quick-gelu")


@pytest.fixture(scope="module")
def vit_b_32(tmp_path_factory) -> Path:
    """A full-size random ViT-B-32 in OpenCLIP's folder layout: 600 MB to write, the widest window to stop in."""
    torch.manual_seed(0)
    return write_openclip_folder(tmp_path_factory.mktemp("vit_b_32"), open_clip.create_model("ViT-B-32"),
                                 {**open_clip.get_model_config("ViT-B-32"), "quick_gelu": True})


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_killed_import_leaves_no_run_dir_and_the_next_one_completes(stop, vit_b_32, tmp_path):
    """Stopped while its staging folder exists, the import leaves no RUN_DIR; a SIGTERM also removes the staging
    folder, and after kill -9 the next import into the same RUN_DIR does."""
    run_dir, staging = tmp_path / "run", ".run.staging-*"
    command = [sys.executable, "-m", "contrastive", "import", str(vit_b_32), str(run_dir), "--tokenizer", str(CLIP_BPE)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "CONTRASTIVE_TEST_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(staging)) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert process.poll() is None, "the import finished before it could be stopped mid-write"
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert not run_dir.exists()
    if stop == signal.SIGTERM:
        assert process.returncode == 0 and b"nothing was written" in stderr
        assert list(tmp_path.iterdir()) == []
        return
    assert list(tmp_path.glob(staging))
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_000000.pt\n"


@pytest.fixture
def imported_tiny_clip(tmp_path) -> Path:
    torch.manual_seed(0)
    src = write_openclip_folder(tmp_path / "openclip", open_clip.model.CLIP(**TINY_CLIP), TINY_CLIP)
    run_command(import_model, "import", str(src), str(tmp_path / "run"), "--tokenizer", str(CLIP_BPE))
    return tmp_path / "run"


def test_an_imported_run_is_submitted_for_evaluation_and_reported_like_a_trained_one(imported_tiny_clip, datasets,
                                                                                     capsys):
    folder, _ = datasets
    assert run_command(submit, "submit", "eval", str(imported_tiny_clip), f"eval.zeroshot.tiny={folder}",
                       "eval.workers=0", "--local", "--wait") == 0
    assert "finished: evaluated" in capsys.readouterr().out
    assert run_command(report, "report", str(imported_tiny_clip), "--metrics", "zeroshot/*/top1") == 0
    assert "| run | steps | final loss | zeroshot/tiny/top1 |" in capsys.readouterr().out


def test_training_does_not_resume_an_imported_run(imported_tiny_clip):
    with pytest.raises(CheckpointError, match=r"holds an imported model \(OpenCLIP .*\), weights without training "
                                              r"state: training does not resume from it; start a new run dir from "
                                              r"it with model.init_from="):
        train(load_config(None, [f"run_dir={imported_tiny_clip}", "train.device=cpu"]))


def test_a_folder_of_neither_layout_says_both(tmp_path):
    (tmp_path / "downloads").mkdir()
    with pytest.raises(FormatError, match=r"downloads is neither an OpenCLIP folder \(open_clip_config.json with "
                                          r"open_clip_model.safetensors or .*\) nor a Hugging Face one"):
        run_command(import_model, "import", str(tmp_path / "downloads"), str(tmp_path / "run"))
