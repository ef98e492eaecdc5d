import io
import itertools
import os
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2.functional import to_pil_image

from data.errors import DataError
from data.loader import Batch, StreamLoader
from data.tokenizer import Tokenizer, train_bpe
from tests.data.loader_fixtures import (ByteTokenizer, decode_tokens, good_sample, image_bytes, write_dataset,
                                        write_shard)


def _loader(shards: list[str], **kwargs) -> StreamLoader:
    settings = dict(batch_size=3, image_size=8, shuffle_buffer=4, workers=0) | kwargs
    return StreamLoader(shards, ByteTokenizer(), **settings)


def _keys(loader: StreamLoader, batches: int) -> list[list[str]]:
    stream = iter(loader)
    return [next(stream).keys for _ in range(batches)]


def test_round_trip_pixels_and_captions_survive(tmp_path: Path):
    pixels = torch.randint(0, 256, (3, 12, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    png = io.BytesIO()
    to_pil_image(pixels).save(png, "PNG")
    write_shard(tmp_path / "shard-000000.tar", [
        {"__key__": "000", "png": png.getvalue(), "txt": "a random picture\nthe same picture, other words"},
        {"__key__": "001", "jpg": image_bytes((250, 120, 0), (16, 16), "JPEG"), "json": '{"captions": ["orange"]}'},
        {"__key__": "002", "webp": image_bytes((0, 0, 250), (16, 16), "WEBP"), "txt": "blue"},
    ])
    loader = _loader([str(tmp_path / "shard-000000.tar")], batch_size=3, image_size=12, train=False)
    seen: dict[str, set[str]] = {}
    for batch in itertools.islice(iter(loader), 12):
        assert batch.images.dtype == torch.uint8 and batch.images.shape == (3, 3, 12, 12)
        assert batch.tokens.dtype == torch.long and batch.tokens.shape == (3, ByteTokenizer.context_length)
        assert [decode_tokens(row) for row in batch.tokens] == batch.captions
        rows = dict(zip(batch.keys, batch.images))
        assert torch.equal(rows["000"], pixels[:, :, 2:14])  # resize to 12 is a no-op, centre crop cuts 2 px each side
        assert (rows["001"][:, 6, 6] - torch.tensor([250, 120, 0])).abs().max() <= 3
        assert rows["002"][2].float().mean() > 240
        for key, caption in zip(batch.keys, batch.captions):
            seen.setdefault(key, set()).add(caption)
    assert seen == {"000": {"a random picture", "the same picture, other words"}, "001": {"orange"}, "002": {"blue"}}


def test_each_sample_once_per_epoch_across_ranks_and_workers(tmp_path: Path):
    keys = write_dataset(tmp_path, num_shards=8, per_shard=6)  # 4 slots x 2 shards x 6 = 12 samples = 4 batches/slot
    epochs = {0: [], 1: []}
    for rank in range(2):
        batches = _keys(_loader([str(tmp_path / "shard-{000000..000007}.tar")], rank=rank, world_size=2,
                                workers=2), 16)
        epochs[0] += [k for batch in batches[:8] for k in batch]
        epochs[1] += [k for batch in batches[8:] for k in batch]
    assert sorted(epochs[0]) == sorted(keys) and sorted(epochs[1]) == sorted(keys)
    assert epochs[0] != epochs[1]


def test_same_seed_same_stream_new_seed_new_order(tmp_path: Path):
    write_dataset(tmp_path, num_shards=3, per_shard=5)
    shards = [str(tmp_path / "shard-*.tar")]
    first, again = (list(itertools.islice(iter(_loader(shards)), 6)) for _ in range(2))
    assert [b.keys for b in first] == [b.keys for b in again]
    assert all(torch.equal(a.images, b.images) for a, b in zip(first, again))
    assert [b.keys for b in first] != _keys(_loader(shards, seed=1), 6)


def test_iterating_leaves_the_global_rng_alone(tmp_path: Path):
    write_dataset(tmp_path, num_shards=1, per_shard=4)
    before = torch.get_rng_state()
    _keys(_loader([str(tmp_path / "*.tar")]), 3)
    assert torch.equal(before, torch.get_rng_state())


def _dataset_with_bad_samples(directory: Path) -> list[str]:
    """4 shards x 7 samples; three have broken images, one has no caption: 24 good samples."""
    directory.mkdir(exist_ok=True)
    for shard in range(4):
        samples = [good_sample(f"{shard:02d}{i:03d}") for i in range(7)]
        for sample in samples:
            if sample["__key__"] in ("01002", "01005", "03000"):
                sample["png"] = b"broken"
            if sample["__key__"] == "02004":
                del sample["txt"]
        write_shard(directory / f"shard-{shard:06d}.tar", samples)
    return [str(directory / "shard-{000000..000003}.tar")]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_at_any_step_continues_the_uninterrupted_sequence(tmp_path: Path, workers: int):
    shards = _dataset_with_bad_samples(tmp_path)
    loader = _loader(shards, workers=workers, batch_size=4, shuffle_buffer=5)
    stream = iter(loader)
    keys, states, skipped = [], [], []
    for _ in range(16):  # 24 good samples: 16 batches of 4 run through 2.7 epochs
        keys.append(next(stream).keys)
        states.append(loader.state_dict())
        skipped.append(loader.skipped())
    assert skipped[-1]["corrupt_image"] >= 6 and skipped[-1]["missing_caption"] >= 2
    for step in [1, 4, 7, 12]:
        buffer = io.BytesIO()
        torch.save(states[step - 1], buffer)
        resumed = _loader(shards, workers=workers, batch_size=4, shuffle_buffer=5)
        resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
        assert resumed.skipped() == skipped[step - 1]
        assert _keys(resumed, 4) == keys[step:step + 4]
        assert resumed.skipped() == skipped[step + 3]


def test_refuses_a_changed_world_size_worker_count_or_rank(tmp_path: Path):
    write_dataset(tmp_path, num_shards=4, per_shard=2)
    shards = [str(tmp_path / "*.tar")]
    state = _loader(shards, rank=1, world_size=2, workers=2).state_dict()
    with pytest.raises(DataError, match=r"saved with 2 ranks x 2 worker slots .*this run has 1 rank x 2"):
        _loader(shards, rank=0, world_size=1, workers=2).load_state_dict(state)
    with pytest.raises(DataError, match=r"world_size=2, workers=2\), this run has .*workers=1\)"):
        _loader(shards, rank=1, world_size=2, workers=1).load_state_dict(state)
    with pytest.raises(DataError, match="belongs to rank 1, this is rank 0"):
        _loader(shards, rank=0, world_size=2, workers=2).load_state_dict(state)
    with pytest.raises(DataError, match="seed: saved 0, now 3"):
        _loader(shards, rank=1, world_size=2, workers=2, seed=3).load_state_dict(state)


def test_fewer_shards_than_slots_is_an_error(tmp_path: Path):
    write_dataset(tmp_path, num_shards=3, per_shard=2)
    with pytest.raises(DataError, match=r"3 shards for 2 ranks x 2 worker slots = 4 slots"):
        _loader([str(tmp_path / "*.tar")], world_size=2, workers=2)


def test_pipe_urls_stream_like_files(tmp_path: Path):
    write_dataset(tmp_path, num_shards=2, per_shard=4)
    from_files = _keys(_loader([str(tmp_path / "shard-{000000..000001}.tar")]), 5)
    from_pipes = _keys(_loader([f"pipe:cat {tmp_path}/shard-{{000000..000001}}.tar"]), 5)
    assert from_pipes == from_files


def test_batch_is_the_public_type(tmp_path: Path):
    write_dataset(tmp_path, num_shards=1, per_shard=2)
    batch = next(iter(_loader([str(tmp_path / "*.tar")], batch_size=2)))
    assert isinstance(batch, Batch) and sorted(batch.keys) == ["00000", "00001"]


def test_forked_workers_tokenize_on_one_thread_each(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "unset by this test")  # so that teardown removes it again
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    tokenizer = Tokenizer.from_file(train_bpe(["a red circle", "caption of 00001"] * 10, 300, tmp_path / "t.json"), 32)
    tokenizer(["a red circle"] * 256)  # the parent encodes in parallel first, as evaluation does before training
    keys = write_dataset(tmp_path / "shards", num_shards=2, per_shard=3)
    pattern = str(tmp_path / "shards/*.tar")
    next(iter(StreamLoader([pattern], tokenizer, batch_size=3, image_size=8, workers=0)))
    assert "TOKENIZERS_PARALLELISM" not in os.environ  # no fork, no change
    loader = StreamLoader([pattern], tokenizer, batch_size=3, image_size=8, workers=2)
    batches = list(itertools.islice(iter(loader), 2))
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert sorted(k for batch in batches for k in batch.keys) == sorted(keys)
    assert [tokenizer.decode(row) for row in batches[0].tokens] == [f"caption of {k}" for k in batches[0].keys]
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # forked workers that use the pool hang
    assert len(next(iter(loader)).keys) == 3
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
