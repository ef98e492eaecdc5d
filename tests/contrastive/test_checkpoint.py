import os
import pickle

import pytest
import torch

from contrastive import checkpoint as ckpt
from contrastive.checkpoint import Checkpointer, CheckpointError, load_checkpoint


def state(step):
    return {"step": step, "model": {"w": torch.full((3,), float(step))}, "rng": [torch.get_rng_state()]}


def test_save_then_latest_loads_with_weights_only(tmp_path):
    c = Checkpointer(tmp_path, keep=2)
    for step in (10, 20, 30):
        c.save(step, state(step))
    assert c.latest().name == "step_000030.pt"
    assert c.steps() == [20, 30]  # keep=2 pruned step 10
    loaded = load_checkpoint(c.latest())
    assert loaded["step"] == 30 and torch.equal(loaded["model"]["w"], torch.full((3,), 30.0))
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_crash_while_writing_leaves_latest_intact(tmp_path, monkeypatch):
    c = Checkpointer(tmp_path)
    c.save(1, state(1))

    def dies_half_way(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", dies_half_way)
    with pytest.raises(CheckpointError, match=r"step_000002.pt could not be written \(\[Errno 28\] No space left on "
                                              r"device\); `latest` still names step_000001.pt"):
        c.save(2, state(2))
    monkeypatch.undo()
    assert c.latest().name == "step_000001.pt"
    assert load_checkpoint(c.latest())["step"] == 1
    assert sorted(p.name for p in c.dir.iterdir()) == ["latest", "step_000001.pt"]


def test_a_pickle_with_a_payload_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"step": 1, "model": Payload()}))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_missing_truncated_and_foreign_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    torch.save(state(5), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated.pt cannot be loaded"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(foreign)


def test_latest_naming_a_missing_file_is_an_error(tmp_path):
    c = Checkpointer(tmp_path)
    c.save(3, state(3))
    c.path(3).unlink()
    with pytest.raises(CheckpointError, match="names step_000003.pt, which does not exist"):
        c.latest()
