"""Shards with a few percent of bad samples and a truncated shard: training completes, every injected bad sample
is counted once under its reason (the loader's skipped() and tensorboard's data/skipped_*), the truncation is one
event, and every good sample before the cut is trained on."""
from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

from PIL import Image

from contrastive import train as train_module
from contrastive.commands.report import read_scalar
from contrastive.config import load_config
from contrastive.train import train
from data.shards import ShardWriter
from data.stream import epoch_shards
from data.tokenizer import train_bpe
from tests.contrastive.tiny_run import COLOURS, TINY_MODEL

SHARDS, PER_SHARD, BATCH = 4, 40, 8
BAD_AT = {5: 0, 17: 1, 29: 2}  # position in a shard -> offset into the cycle of bad kinds
BAD_KINDS = ["corrupt_image", "empty_caption", "non_utf8_caption", "missing_caption", "no_image"]
CUT_AT = 36  # the truncated shard is cut inside this sample's caption: it and the ones after it are lost


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def bad_sample(kind: str, good: dict[str, bytes]) -> dict[str, bytes]:
    return {"corrupt_image": {"png": good["png"][:60], "txt": good["txt"]},
            "empty_caption": {"png": good["png"], "txt": b" \n\n"},
            "non_utf8_caption": {"png": good["png"], "txt": "caf\xe9 au lait".encode("latin-1")},
            "missing_caption": {"png": good["png"]},
            "no_image": {"txt": good["txt"]}}[kind]


def cut_inside(path: Path, member: str) -> None:
    with tarfile.open(path) as tar:
        info = tar.getmember(member)
    path.write_bytes(path.read_bytes()[:info.offset_data + info.size // 2])


def write_shards(root: Path) -> tuple[Counter, set[str], str]:
    """Returns the injected bad samples by reason (those before the cut), the good keys before the cut, and
    the truncated shard's path."""
    injected: Counter = Counter()
    good_keys, captions = set(), []
    with ShardWriter(root / "shards", max_samples=PER_SHARD) as writer:
        for shard in range(SHARDS):
            for position in range(PER_SHARD):
                i = shard * PER_SHARD + position
                name = list(COLOURS)[i % len(COLOURS)]
                caption = f"a {name} square number {i % 7}"
                captions.append(caption)
                sample = {"png": png(COLOURS[name]), "txt": caption.encode()}
                truncated_away = shard == SHARDS - 1 and position >= CUT_AT
                if position in BAD_AT:
                    kind = BAD_KINDS[(shard * len(BAD_AT) + BAD_AT[position]) % len(BAD_KINDS)]
                    sample = bad_sample(kind, sample)
                    injected[kind] += not truncated_away
                elif not truncated_away:
                    good_keys.add(f"{i:09d}")
                writer.write(f"{i:09d}", sample)
    truncated = root / "shards" / f"shard-{SHARDS - 1:06d}.tar"
    cut_inside(truncated, f"{(SHARDS - 1) * PER_SHARD + CUT_AT:09d}.txt")
    train_bpe(captions, vocab_size=300, out_path=root / "tokenizer.json")
    return injected, good_keys, str(truncated)


def seed_reading_the_truncated_shard_before_the_last(shards: list[str], truncated: str) -> int:
    """Skips are counted as samples are read; the run reads exactly one epoch of good samples, so the truncated
    shard must not be the epoch's last (its break is met only when reading past its last sample)."""
    return next(seed for seed in range(100)
                if epoch_shards(shards, seed=seed, source=0, epoch=0, slot=0, num_slots=1)[-1] != truncated)


def test_bad_samples_and_a_truncated_shard_are_counted_exactly_and_no_good_sample_is_lost(tmp_path, monkeypatch,
                                                                                         figures):
    injected, good_keys, truncated = write_shards(tmp_path)
    shards = [str(tmp_path / "shards" / f"shard-{i:06d}.tar") for i in range(SHARDS)]
    seed = seed_reading_the_truncated_shard_before_the_last(shards, truncated)
    steps = len(good_keys) // BATCH
    assert steps * BATCH == len(good_keys)
    cfg = load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"data.shards={tmp_path / 'shards' / 'shard-{000000..000003}.tar'}",
        f"data.tokenizer={tmp_path / 'tokenizer.json'}", "data.workers=0", "data.shuffle_buffer=0",
        f"train.batch_size={BATCH}", f"train.steps={steps}", f"train.seed={seed}", "train.precision=fp32",
        f"train.log_every={steps}", f"train.checkpoint_every={steps}", "optim.warmup_steps=2", *TINY_MODEL])

    seen: list[str] = []
    loaders = []
    make_loader = train_module.train_loader

    def recording_loader(*args, **kwargs):
        loader = make_loader(*args, **kwargs)
        batches = loader._batches

        def recorded(generation):
            for batch in batches(generation):
                seen.extend(batch.keys)
                yield batch

        loader._batches = recorded
        loaders.append(loader)
        return loader

    monkeypatch.setattr(train_module, "train_loader", recording_loader)
    assert train(cfg).finished

    expected = {**injected, "unreadable_shard": 1}
    assert sum(injected.values()) == 12 and set(injected) == set(BAD_KINDS)
    assert loaders[0].skipped() == expected
    logged = {tag.removeprefix("data/skipped_"): read_scalar(tmp_path / "run" / "tb", tag)
              for tag in (f"data/skipped_{reason}" for reason in expected)}
    assert logged == {reason: [(steps, float(n))] for reason, n in expected.items()}
    assert len(seen) == len(set(seen)) and set(seen) == good_keys
    figures["corrupt samples injected"] += sum(injected.values())
    figures["corrupt samples counted"] += sum(n for r, n in loaders[0].skipped().items() if r != "unreadable_shard")
    figures["truncated shards injected and counted once"] += loaders[0].skipped()["unreadable_shard"]
