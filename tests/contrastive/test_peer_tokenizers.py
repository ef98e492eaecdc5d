"""The tokenizer files an export ships make the peers' tokenizers (OpenCLIP's get_tokenizer, transformers'
AutoTokenizer, CLIPProcessor, SiglipProcessor) give our rows of ids, except on the captions whose cleaning a peer
cannot do as ours (contrastive.peer_tokenizers.OPENCLIP_DIFFERS, HF_DIFFERS). Nothing is downloaded."""
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import tokenizers
import torch

from contrastive.peer_tokenizers import PeerTokenizer, peer_tokenizer_files
from data.tokenizer import Tokenizer, clip_bpe_tokenizer_json, train_bpe
from tests.peers import CORPUS, write_hf_clip_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

ENTITIES = "fish &amp; chips, it&#39;s &amp;amp; more"  # html.unescape: ours, OpenCLIP's; no fast tokenizer's
MOJIBAKE = "cafÃ© au lait, itâ€™s warm"  # ftfy: OpenCLIP's and our clean="openclip"/"canonicalize" only
LIGATURES = "ﬁne ＦＵＬＬ width"  # ftfy too
SIGMA = "ΟΔΟΣ ΚΑΙ ΘΑΛΑΣΣΑ"  # Python lower-cases the word-final Σ to ς, a Lowercase normalizer to σ
TYPED_END = "a <|endoftext|> typed"  # text for us; the end token for Hugging Face's CLIP folder
TYPED_OPENCLIP_END = "an <end_of_text> typed"  # text for us; the end token for OpenCLIP's SimpleTokenizer
CAPTIONS = [
    "A Photo of a CAT.", "Wow!👍 A dog!!",  # "!" is CLIP's id 0, OpenCLIP's pad
    "café crème, naïve Zoë, ÀÉÎ", "cafe\u0301 decomposed", "東京タワーの夜景", "a dog 🐶 and a cat 🐱",
    "don't stop, she'll say", "  two   spaces\tand a tab\nand a newline  ", "snake_case and 3.14 numbers 2024",
    ENTITIES, MOJIBAKE, LIGATURES, SIGMA, TYPED_END, TYPED_OPENCLIP_END, "", "a very long caption " * 30,
]


@pytest.fixture(scope="module")
def bpe_json(tmp_path_factory) -> str:
    return train_bpe(CORPUS, 300, tmp_path_factory.mktemp("bpe") / "tokenizer.json").read_text()


@pytest.fixture(scope="module")
def clip_bpe_json() -> str:
    return clip_bpe_tokenizer_json(open_clip.tokenizer.default_bpe())


def write(peer: PeerTokenizer, folder: Path) -> Path:
    folder.mkdir()
    for name, text in peer.files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def openclip_tokenizer(tok: Tokenizer, folder: Path, peer: PeerTokenizer) -> Callable[[list[str]], torch.Tensor]:
    """OpenCLIP's tokenizer for the folder, as its open_clip_config.json (written here) makes it."""
    text_cfg = {"context_length": tok.context_length, "vocab_size": tok.vocab_size, "width": 64, "heads": 1,
                "layers": 1, **peer.text_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 32, "text_cfg": text_cfg}}))
    return open_clip.get_tokenizer(f"local-dir:{folder}")


def hf_ids(tok: Tokenizer, folder: Path, family: str) -> list[list[int]]:
    """AutoTokenizer's ids, after checking that the family's processor (with its image processor's file, as an
    export holds) loads the folder and gives the same."""
    image_processor, processor = {"clip": (transformers.CLIPImageProcessor, transformers.CLIPProcessor),
                                  "siglip": (transformers.SiglipImageProcessor, transformers.SiglipProcessor)}[family]
    image_processor().save_pretrained(folder)
    kwargs = {"padding": "max_length", "max_length": tok.context_length, "truncation": True}
    ids = transformers.AutoTokenizer.from_pretrained(folder)(CAPTIONS, **kwargs).input_ids
    assert processor.from_pretrained(folder)(text=CAPTIONS, **kwargs)["input_ids"] == ids
    assert type(transformers.AutoProcessor.from_pretrained(folder)) is processor
    return ids


def differing(ours: torch.Tensor, theirs: list[list[int]]) -> set[str]:
    return {caption for caption, a, b in zip(CAPTIONS, ours.tolist(), theirs, strict=True) if a != b}


def test_our_bpe_to_open_clip_differs_only_where_openclip_runs_ftfy(bpe_json, tmp_path):
    tok = Tokenizer(bpe_json, 32, clean="clip")
    peer = peer_tokenizer_files(tok, "open_clip", "clip")
    assert peer.text_cfg["tokenizer_kwargs"] == {"clean": "lower"} and "hf_tokenizer_name" in peer.text_cfg
    assert (peer.start_id, peer.end_id, peer.pad_id) == (tok.sot_id, tok.eot_id, tok.pad_id) == (0, 1, 2)
    loaded = openclip_tokenizer(tok, write(peer, tmp_path / "out"), peer)
    assert isinstance(loaded, open_clip.tokenizer.HFTokenizer)
    assert differing(tok(CAPTIONS), loaded(CAPTIONS).tolist()) == {MOJIBAKE, LIGATURES}


def test_our_bpe_to_hf_differs_only_on_html_entities_and_final_sigma(bpe_json, tmp_path):
    tok = Tokenizer(bpe_json, 32, clean="clip")
    peer = peer_tokenizer_files(tok, "hf", "clip")
    assert set(peer.files) == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    ids = hf_ids(tok, write(peer, tmp_path / "out"), "clip")
    assert ids[-1][-1] == tok.eot_id and ids[CAPTIONS.index("")][:3] == [tok.sot_id, tok.eot_id, tok.pad_id]
    assert differing(tok(CAPTIONS), ids) == {ENTITIES, SIGMA}


def test_siglip_style_bpe_to_open_clip_is_exact_and_to_siglip_processor_differs_on_ftfy_entities_sigma(
        bpe_json, tmp_path):
    end = tokenizers.Tokenizer.from_str(bpe_json).token_to_id("<|endoftext|>")
    tok = Tokenizer(bpe_json, 24, clean="canonicalize", start_token=False, pad_id=end)
    peer = peer_tokenizer_files(tok, "open_clip", "siglip")
    assert peer.text_cfg["tokenizer_kwargs"] == {"clean": "canonicalize"}
    assert (peer.start_id, peer.end_id, peer.pad_id) == (None, end, end)
    ours = tok(CAPTIONS)
    assert ours[CAPTIONS.index("")].tolist() == [end] * 24
    loaded = openclip_tokenizer(tok, write(peer, tmp_path / "open_clip"), peer)
    assert differing(ours, loaded(CAPTIONS).tolist()) == set()
    peer = peer_tokenizer_files(tok, "hf", "siglip")
    assert "bos_token" not in json.loads(peer.files["tokenizer_config.json"])
    ids = hf_ids(tok, write(peer, tmp_path / "hf"), "siglip")
    assert differing(ours, ids) == {ENTITIES, MOJIBAKE, LIGATURES, SIGMA}


def test_openclip_clip_ships_nothing_to_open_clip_and_simple_tokenizer_reads_only_its_special_names(
        clip_bpe_json, tmp_path):
    tok = Tokenizer(clip_bpe_json, 77, clean="openclip", pad_id=0)
    peer = peer_tokenizer_files(tok, "open_clip", "clip")
    assert peer.files == {} and peer.text_cfg == {"tokenizer_kwargs": {"clean": "lower"}}
    loaded = openclip_tokenizer(tok, write(peer, tmp_path / "out"), peer)
    assert isinstance(loaded, open_clip.tokenizer.SimpleTokenizer)
    assert differing(tok(CAPTIONS), loaded(CAPTIONS).tolist()) == {TYPED_OPENCLIP_END}
    # The same vocabulary with another pad is no longer SimpleTokenizer's rows: it ships its files.
    assert peer_tokenizer_files(Tokenizer(clip_bpe_json, 77, clean="openclip"), "open_clip", "clip").files


def test_openclip_clip_to_hf_differs_on_ftfy_entities_and_final_sigma(clip_bpe_json, tmp_path):
    tok = Tokenizer(clip_bpe_json, 77, clean="openclip", pad_id=0)
    ids = hf_ids(tok, write(peer_tokenizer_files(tok, "hf", "clip"), tmp_path / "out"), "clip")
    ours = tok(CAPTIONS)
    assert 0 in ours[1, 1:tok.eot_positions(ours)[1]]  # "!" mid-text, as the pad
    assert differing(ours, ids) == {ENTITIES, MOJIBAKE, LIGATURES, SIGMA}


def test_hugging_face_clip_tokenizer_to_hf_gives_ours_where_its_folder_reads_a_typed_end_token(tmp_path):
    original = transformers.AutoTokenizer.from_pretrained(write_hf_clip_tokenizer(tmp_path / "hf"))
    tok = Tokenizer.from_file(tmp_path / "hf" / "tokenizer.json", 77, clean="none", pad_id=original.pad_token_id)
    ids = hf_ids(tok, write(peer_tokenizer_files(tok, "hf", "clip"), tmp_path / "out"), "clip")
    ours = tok(CAPTIONS)
    assert differing(ours, ids) == set()
    kwargs = {"padding": "max_length", "max_length": 77, "truncation": True}
    assert differing(ours, original(CAPTIONS, **kwargs).input_ids) == {TYPED_END}
