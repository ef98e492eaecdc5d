"""Our Tokenizer gives the ids of the tokenizers published CLIP and SigLIP models were trained with: OpenCLIP's
SimpleTokenizer and HFTokenizer, transformers' CLIPTokenizer and SiglipTokenizer. Every tokenizer file is built here
from OpenCLIP's packaged CLIP vocabulary or trained on the spot; nothing is downloaded."""
import json
import os
import shlex
import subprocess
import sys

import pytest
import torch

from data.tokenizer import SIGLIP_SPIECE_CONVERSION, Tokenizer, canonicalize, clip_bpe_tokenizer_json
from tests.peers import write_hf_clip_tokenizer, write_siglip_spiece, write_unigram_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# What Hugging Face's tokenizers do not fix and OpenCLIP's cleaning does: HTML entities (html.unescape, twice) and
# ftfy's repairs (mojibake; ligatures and full-width letters).
ENTITIES = "fish &amp; chips, it&#39;s &amp;amp; more"
MOJIBAKE = "cafÃ© au lait, itâ€™s warm"
LIGATURES = "ﬁne ＦＵＬＬ width"
UNDERSCORE = "snake_case and 3.14 numbers 2024"  # SiglipTokenizer deletes "_"; OpenCLIP makes it a space
CAPTIONS = [
    "A Photo of a CAT.", "Wow!👍 A dog!!",  # "!" before "👍" is CLIP's id 0, OpenCLIP's pad
    "café crème, naïve Zoë, ÀÉÎ", "東京タワーの夜景", "a dog 🐶 and a cat 🐱", "don't stop, she'll say",
    "  two   spaces\tand a tab\nand a newline  ", UNDERSCORE, ENTITIES, MOJIBAKE, LIGATURES, "",
    "a very long caption " * 30,  # past both contexts (77 and 64)
]


@pytest.fixture(scope="module")
def simple_tokenizer():
    return pytest.importorskip("open_clip.tokenizer").SimpleTokenizer(context_length=77)


@pytest.fixture(scope="module")
def clip_bpe():
    return pytest.importorskip("open_clip.tokenizer").default_bpe()


def test_openclip_clip_vocabulary_gives_simple_tokenizer_ids(simple_tokenizer, clip_bpe):
    ours = Tokenizer(clip_bpe_tokenizer_json(clip_bpe), 77, clean="openclip", pad_id=0)
    ids = ours(CAPTIONS)
    expected = simple_tokenizer(CAPTIONS)
    assert torch.equal(ids, expected)
    quirks = ["it'ſ", "a\u0345b"]  # of SimpleTokenizer's case-insensitive split (data.tokenizer.CLIP_SPLIT)
    assert torch.equal(ours(quirks), simple_tokenizer(quirks))
    assert (ours.vocab_size, ours.sot_id, ours.eot_id) == (49408, 49406, 49407)
    assert 0 in ids[1, 1:ours.eot_positions(ids)[1]]  # "!" mid-text, also the pad id
    assert torch.equal(ours.eot_positions(ids), expected.argmax(1))  # where OpenCLIP pools
    assert ids[-1, -1] == ours.eot_id and ours.decode(ids[1]) == "wow !👍 a dog !!"


def test_hugging_face_clip_tokenizer_json_gives_its_ids(simple_tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    write_hf_clip_tokenizer(tmp_path / "hf")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = Tokenizer.from_file(tmp_path / "hf" / "tokenizer.json", 77, clean="none", pad_id=hf.pad_token_id)
    ids = ours(CAPTIONS)
    assert ids.tolist() == hf(CAPTIONS, padding="max_length", max_length=77, truncation=True).input_ids
    assert hf.pad_token_id == ours.eot_id and ours.vocab_size == 49408
    # The same file with OpenCLIP's cleaning and pad gives OpenCLIP's ids, for OpenCLIP models imported with it.
    openclip_rows = Tokenizer.from_file(tmp_path / "hf" / "tokenizer.json", 77, clean="openclip", pad_id=0)
    assert torch.equal(openclip_rows(CAPTIONS), simple_tokenizer(CAPTIONS))
    assert ours.eot_positions(ids).tolist() == [row.index(ours.eot_id) for row in ids.tolist()]
    # Hugging Face's CLIP runs neither html.unescape nor ftfy: up to the end token (it pads with the end token,
    # OpenCLIP with 0), its ids differ from OpenCLIP's on those captions only.
    eot = ours.eot_id
    differ = {c for c, a, b in zip(CAPTIONS, ids.tolist(), simple_tokenizer(CAPTIONS).tolist())
              if a[:a.index(eot)] != b[:b.index(eot)]}
    assert differ == {ENTITIES, MOJIBAKE, LIGATURES}


def test_openclip_siglip_hf_tokenizer_gives_its_ids(tmp_path):
    open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")
    pytest.importorskip("transformers")
    write_unigram_tokenizer(tmp_path, CAPTIONS)
    hf = open_clip_tokenizer.HFTokenizer(str(tmp_path), context_length=64, clean="canonicalize")
    ours = Tokenizer.from_file(tmp_path / "tokenizer.json", 64, clean="canonicalize", start_token=False, pad_id=1)
    ids = ours(CAPTIONS)
    assert torch.equal(ids, hf(CAPTIONS))
    vocab = json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]
    assert ours.sot_id is None and ours.vocab_size == len(vocab)
    assert ids[-1, -1] == 1 and ids[CAPTIONS.index("")].tolist() == [1] * 64
    assert ours.eot_positions(ids)[0] == ids[0].tolist().index(1) > 0


def test_siglip_spiece_model_converts_to_siglip_tokenizer_ids(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("sentencepiece")
    folder = write_siglip_spiece(tmp_path / "siglip", CAPTIONS)
    command = shlex.split(SIGLIP_SPIECE_CONVERSION.format(folder=shlex.quote(str(folder))))
    subprocess.run([sys.executable, *command[1:]], check=True, capture_output=True)
    siglip = transformers.AutoTokenizer.from_pretrained(folder)
    assert type(siglip).__name__ == "SiglipTokenizer"  # the folder still loads as before
    ours = Tokenizer.from_file(folder / "tokenizer.json", 64, clean="canonicalize", start_token=False,
                               pad_id=siglip.pad_token_id)
    ids = ours(CAPTIONS).tolist()
    assert siglip.pad_token_id == siglip.eos_token_id == ours.eot_id == 1 and ours.vocab_size == len(siglip)

    def reference(texts):  # SiglipProcessor passes text to the tokenizer with these arguments
        return siglip(texts, padding="max_length", max_length=64, truncation=True).input_ids

    assert ids == reference([canonicalize(c) for c in CAPTIONS])  # the same ids for the same cleaned text
    # SiglipTokenizer's own cleaning runs neither ftfy nor html.unescape and deletes "_" where OpenCLIP's (and
    # big_vision's) puts a space: canonicalize_hf is that cleaning.
    assert {c for c, a, b in zip(CAPTIONS, ids, reference(CAPTIONS)) if a != b} == {ENTITIES, MOJIBAKE, UNDERSCORE}
    hf_cleaned = Tokenizer.from_file(folder / "tokenizer.json", 64, clean="canonicalize_hf", start_token=False,
                                     pad_id=siglip.pad_token_id)
    assert hf_cleaned(CAPTIONS).tolist() == reference(CAPTIONS)
