"""Peer models' files as the peers write them, made here (nothing is downloaded): weights perturbed off their
initial values, and the tokenizer files of published CLIP and SigLIP models, from OpenCLIP's packaged CLIP vocabulary
or trained on the spot. The peers are test-only dependencies: callers importorskip them first."""
from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from data.tokenizer import canonicalize

# An OpenAI-style CLIP ViT in OpenCLIP's model_cfg, small enough for any test.
TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32,
                                             "patch_size": 8},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 2}}
# Words to train the SigLIP-like tokenizers on.
CORPUS = ["a photo of a cat", "wow a dog", "café crème naïve zoë àéî", "東京タワーの夜景", "a dog 🐶 and a cat 🐱",
          "dont stop shell say", "two spaces and a tab and a newline", "snake case and 314 numbers 2024",
          "fish chips its more", "a red fox", "blue whale", "green tree frog", "a drawing of the", "an owl at night",
          "the owls eyes", "two cats a hat", "running", "a very long caption"]


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """In eval mode, with every parameter of at most one dimension (norm gains, biases, the key bias included, layer
    scales, logit scale and bias) moved off its initial value, so a dropped or misplaced one shows."""
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim <= 1:
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def write_openclip_folder(folder: Path, model: torch.nn.Module, model_cfg: dict,
                          preprocess_cfg: dict | None = None) -> Path:
    """OpenCLIP's layout on the Hugging Face hub: open_clip_config.json and open_clip_model.safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    config = {"model_cfg": model_cfg, **({"preprocess_cfg": preprocess_cfg} if preprocess_cfg else {})}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder


def caption_corpus(captions: list[str] = CORPUS) -> list[str]:
    words = " ".join(canonicalize(c) for c in captions).split()
    return [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20


def write_hf_clip_tokenizer(folder: Path) -> Path:
    """The tokenizer files of openai/clip-vit-base-patch32 (vocab.json, merges.txt, tokenizer.json, its config:
    pad = <|endoftext|>), from OpenCLIP's SimpleTokenizer tables."""
    import transformers
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    with tempfile.TemporaryDirectory() as tables:
        (Path(tables) / "vocab.json").write_text(json.dumps({names.get(t, t): i for t, i in simple.encoder.items()}))
        merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)
        (Path(tables) / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        transformers.CLIPTokenizerFast.from_pretrained(tables).save_pretrained(folder)
    return folder


def write_unigram_tokenizer(folder: Path, captions: list[str] = CORPUS, vocab_size: int = 200) -> Path:
    """A T5/SigLIP-like tokenizer.json (Unigram, Metaspace words, "</s>" appended; pad = eos = 1, unk 2) and the
    config that makes transformers load it as written (PreTrainedTokenizerFast), as OpenCLIP's HFTokenizer does."""
    tok = HFTokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(caption_corpus(captions), trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    # transformers 5's T5Tokenizer would rebuild the file keeping only a SentencePiece (Precompiled) normaliser.
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
        "model_max_length": 64}))
    return folder


def write_siglip_spiece(folder: Path, captions: list[str] = CORPUS, vocab_size: int = 200) -> Path:
    """A Hugging Face SigLIP folder's tokenizer as google/siglip-base-patch16-224 ships it: a T5-style SentencePiece
    model (pad 0, eos 1, unk 2, no bos, NFKC) and SiglipTokenizer's config; no tokenizer.json."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(caption_corpus(captions)), model_writer=model, vocab_size=vocab_size,
        hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        normalization_rule_name="nmt_nfkc", character_coverage=1.0, minloglevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    special = {"lstrip": True, "normalized": False, "rstrip": True, "single_word": False, "special": True}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": {"1": {**special, "content": "</s>"}, "2": {**special, "content": "<unk>"}},
        "additional_special_tokens": [], "do_lower_case": True, "eos_token": "</s>", "model_max_length": 64,
        "pad_token": "</s>", "processor_class": "SiglipProcessor", "tokenizer_class": "SiglipTokenizer",
        "unk_token": "<unk>"}))
    (folder / "special_tokens_map.json").write_text(json.dumps({"eos_token": "</s>", "pad_token": "</s>",
                                                                "unk_token": "<unk>"}))
    return folder
