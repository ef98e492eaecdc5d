import gzip
import json
import pickle

import pytest
import torch
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE

from data.errors import DataError
from data.tokenizer import Tokenizer, captions_from_files, clip_bpe_tokenizer_json, train_bpe
from data.shards import ShardWriter

CAPTIONS = ["a large red circle on a grey background", "a small blue square", "a big green star",
            "two shapes: a red disc and a blue box"] * 20


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory):
    return train_bpe(CAPTIONS, 400, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_round_trip_with_start_end_and_padding(bpe_file):
    tok = Tokenizer.from_file(bpe_file, context_length=16)
    ids = tok(["A   Large RED circle", "a small blue square"])
    assert ids.dtype == torch.long and ids.shape == (2, 16)
    assert tok.decode(ids[0]) == "a large red circle"
    assert ids[:, 0].tolist() == [tok.sot_id, tok.sot_id]
    eot = tok.eot_positions(ids)
    assert ids[torch.arange(2), eot].tolist() == [tok.eot_id, tok.eot_id]
    assert (ids[0, eot[0] + 1:] == tok.pad_id).all()
    assert len({tok.pad_id, tok.sot_id, tok.eot_id}) == 3
    assert tok.vocab_size == len(json.loads(bpe_file.read_text())["model"]["vocab"]) > int(ids.max())


def test_truncation_keeps_the_end_token(bpe_file):
    tok = Tokenizer.from_file(bpe_file, context_length=5)
    ids = tok(["a large red circle on a grey background and more words", ""])
    assert ids[0].tolist()[0] == tok.sot_id and ids[0].tolist()[-1] == tok.eot_id
    assert tok.pad_id not in ids[0].tolist()
    assert ids[1].tolist() == [tok.sot_id, tok.eot_id] + [tok.pad_id] * 3
    assert tok.eot_positions(ids).tolist() == [4, 1]


def test_special_token_strings_in_text_are_plain_text(bpe_file):
    tok = Tokenizer.from_file(bpe_file, context_length=40)
    ids = tok(["<|endoftext|> <|pad|> red"])[0]
    assert ids.tolist().count(tok.eot_id) == 1 and tok.pad_id not in ids[: tok.eot_positions(ids[None])[0]]
    assert tok.decode(ids) == "<|endoftext|> <|pad|> red"


def test_training_is_deterministic_and_html_is_unescaped(bpe_file, tmp_path):
    again = train_bpe(CAPTIONS, 400, tmp_path / "again.json")
    assert again.read_bytes() == bpe_file.read_bytes()
    tok = Tokenizer.from_file(bpe_file, 12)
    assert torch.equal(tok(["red &amp; blue"]), tok(["red & blue"]))


def test_pickles_for_dataloader_workers(bpe_file):
    tok = Tokenizer.from_file(bpe_file, context_length=8)
    clone = pickle.loads(pickle.dumps(tok))
    texts = ["a red circle", "<|pad|>"]
    assert torch.equal(clone(texts), tok(texts))
    assert (clone.pad_id, clone.vocab_size, clone.context_length) == (tok.pad_id, tok.vocab_size, 8)


def test_pickling_keeps_the_options(bpe_file):
    tok = Tokenizer.from_file(bpe_file, context_length=8, clean="canonicalize", start_token=False, pad_id=5)
    clone = pickle.loads(pickle.dumps(tok))
    assert (clone.clean, clone.start_token, clone.sot_id, clone.pad_id) == ("canonicalize", False, None, 5)
    texts = ["a red, circle!", "blue_square"]
    assert torch.equal(clone(texts), tok(texts))
    assert not torch.equal(tok(texts), Tokenizer.from_file(bpe_file, context_length=8)(texts))


def test_rows_without_start_token_padded_with_the_end_token(tmp_path):
    vocab, sot, eot = _clip_format_tokenizer(tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(tmp_path / "tokenizer.json", context_length=4, start_token=False, pad_id=eot)
    assert tok.vocab_size == eot + 1 and tok.sot_id is None  # nothing appended
    ids = tok(["red", "", "photo red photo"])
    assert ids.tolist() == [[vocab["red</w>"], eot, eot, eot], [eot] * 4,
                            [vocab["photo</w>"], vocab["red</w>"], vocab["photo</w>"], eot]]
    assert tok.eot_positions(ids).tolist() == [1, 0, 3]


def test_a_text_token_can_pad(bpe_file):
    red = Tokenizer.from_file(bpe_file, context_length=8)(["a red circle"])[0, 2].item()  # " red"
    tok = Tokenizer.from_file(bpe_file, context_length=8, pad_id=red)  # as OpenCLIP pads CLIP with "!"
    ids = tok(["a red circle", "a"])
    assert ids[0, 2] == red and ids[1, 3:].tolist() == [red] * 5
    assert tok.eot_positions(ids).tolist() == [4, 2]
    assert [tok.decode(row) for row in ids] == ["a red circle", "a"]


def test_bad_options_are_clear_errors(bpe_file, tmp_path):
    size = Tokenizer.from_file(bpe_file, 8).vocab_size
    for pad_id in (size, -1):
        with pytest.raises(DataError, match=f"pad_id={pad_id} is not a token id of .*tokenizer.json"):
            Tokenizer.from_file(bpe_file, 8, pad_id=pad_id)
    with pytest.raises(DataError, match="clean='lower' is not a text cleaning; known: clip, openclip"):
        Tokenizer.from_file(bpe_file, 8, clean="lower")
    (tmp_path / "plain.txt.gz").write_text("not gzip")
    with pytest.raises(DataError, match="plain.txt.gz is not a gzipped CLIP BPE merges file"):
        clip_bpe_tokenizer_json(tmp_path / "plain.txt.gz")
    (tmp_path / "short.txt.gz").write_bytes(gzip.compress(b"#version\na b\n"))
    with pytest.raises(DataError, match="short.txt.gz is not CLIP's BPE merges file: CLIP needs 48894 merges"):
        clip_bpe_tokenizer_json(tmp_path / "short.txt.gz")


def _clip_format_tokenizer(path):
    """A tiny tokenizer.json built exactly like Hugging Face's openai/clip-vit-base-patch32 file:
    BPE with a `</w>` end-of-word suffix, CLIP's normalizer and split regex, byte-level pieces,
    RobertaProcessing, and <|startoftext|>/<|endoftext|> as the last two ids; no pad token."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    vocab.update({f"{c}</w>": len(vocab) + i for i, c in enumerate(sorted(alphabet))})
    merges = [("p", "h"), ("ph", "o"), ("pho", "t"), ("phot", "o</w>"), ("r", "e"), ("re", "d</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = HFTokenizer(BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
                          fuse_unk=False, unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    sot, eot = len(vocab), len(vocab) + 1
    tok.add_special_tokens([AddedToken("<|startoftext|>", special=True), AddedToken("<|endoftext|>", special=True)])
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", eot), ("<|startoftext|>", sot),
                                                      trim_offsets=False, add_prefix_space=False)
    tok.save(str(path))
    return vocab, sot, eot


def test_loads_hugging_face_clip_format_and_adds_a_pad_token(tmp_path):
    vocab, sot, eot = _clip_format_tokenizer(tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(tmp_path / "tokenizer.json", context_length=6)
    assert (tok.sot_id, tok.eot_id) == (sot, eot)
    assert tok.pad_id == eot + 1 and tok.vocab_size == eot + 2  # the file had no pad: one token added
    ids = tok(["A Photo  RED", "xy"])
    assert ids[0].tolist() == [sot, vocab["a</w>"], vocab["photo</w>"], vocab["red</w>"], eot, tok.pad_id]
    assert ids[1].tolist() == [sot, vocab["x"], vocab["y</w>"], eot, tok.pad_id, tok.pad_id]


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Tokenizer.from_file(tmp_path / "missing.json", 8)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json is not a tokenizers JSON file"):
        Tokenizer.from_file(tmp_path / "bad.json", 8)
    plain = HFTokenizer(BPE(vocab={"a": 0}, merges=[]))
    plain.save(str(tmp_path / "nospecial.json"))
    with pytest.raises(DataError, match="nospecial.json has no start token; looked for <|startoftext|>"):
        Tokenizer.from_file(tmp_path / "nospecial.json", 8)


def test_captions_from_shards_and_text_files(tmp_path):
    with ShardWriter(tmp_path) as writer:
        writer.write("000000000", {"png": b"x", "txt": b"red circle\nblue square\n"})
        writer.write("000000001", {"png": b"x", "txt": b"\xff\xfe"})
    (tmp_path / "more.txt").write_text("green star\n\n  pink   cross \n")
    captions = list(captions_from_files([str(tmp_path / "shard-*.tar"), str(tmp_path / "more.txt")]))
    assert captions == ["red circle", "blue square", "green star", "pink cross"]


def test_captions_are_read_as_the_loader_reads_them(tmp_path):
    with ShardWriter(tmp_path) as writer:
        writer.write("000000000", {"png": b"x", "json": b'{"captions": ["red  circle", "blue square"]}'})
    (tmp_path / "more.txt").write_bytes(b"green star\ncaf\xe9 latin-1\npink cross\n")
    captions = list(captions_from_files([str(tmp_path / "shard-*.tar"), str(tmp_path / "more.txt")]))
    assert captions == ["red circle", "blue square", "green star", "pink cross"]
