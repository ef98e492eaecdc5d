"""Sharded checkpoints (train.strategy=fsdp; contrastive/sharded_checkpoint.py) and asynchronous saves
(train.checkpoint_async): a checkpoint written by FSDP at W = 2 is read back at W = 3 and W = 1 with the same weights
and optimizer state and the same next step, and an FSDP run written at W = 2 resumes through `contrastive train` at
W = 3 and W = 1; the layout on disk, `latest`, pruning across both formats and the clean-up of partial writes; eval,
export, model.init_from and `contrastive checkpoint consolidate` read a sharded checkpoint in one process; a missing
or truncated file is one error naming it; nothing in one runs code; an asynchronous save (one process and two ranks,
both formats) writes what a synchronous one writes, and its failure is reported at the next save."""
from __future__ import annotations

import contextlib
import copy
import errno
import os
import pickle
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.checkpoint import filesystem
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict)

from contrastive import checkpoint, cli, sharding, stopping
from contrastive.checkpoint import Checkpointer, load_checkpoint, load_checkpoint_header, load_checkpoint_weights
from contrastive.config import Config, load_config
from contrastive.distributed import all_gather_objects
from contrastive.errors import CheckpointError
from contrastive.evaluate import checkpoints_to_evaluate, load_model, load_run, run_of
from contrastive.exporting import export_model
from contrastive.init_from import initial_weights
from contrastive.model import build_model
from contrastive.optim import build_optimizer
from contrastive.sharded_checkpoint import METADATA, RUN_STATE
from contrastive.step import forward_backward
from contrastive.train import train
from tests.contrastive.test_ddp import PAD, VOCAB, assert_all_close
from tests.contrastive.tiny_run import TINY_MODEL, tiny_config, write_tiny_dataset
from tests.faults.partial_write import half_written_save, shard_write_failing_at
from tests.multiprocess import run_ranks

BATCH = 12  # divisible by every world size here: 1, 2, 3
WHOLE = StateDictOptions(full_state_dict=True, cpu_offload=True)


@pytest.fixture(autouse=True)
def clear_stop_flag():
    stopping.reset()
    yield
    stopping.reset()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (BATCH, 3, 32, 32), dtype=torch.uint8, generator=g)
    tokens = torch.randint(1, VOCAB, (BATCH, 12), generator=g)
    tokens[torch.arange(12).expand(BATCH, 12) >= torch.randint(3, 12, (BATCH, 1), generator=g)] = PAD
    return images, tokens


def _sharded_model(seed: int):
    """The tiny model with a sigmoid loss (its bias is a replicated scalar beside the shards), FSDP-sharded over the
    ranks there are (a plain model in one process), and its AdamW."""
    cfg = load_config(None, [*TINY_MODEL, "loss.name=siglip", "optim.weight_decay=0.1"])
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.loss, vocab_size=VOCAB, pad_id=PAD)
    wrapped = sharding.distribute(model, "fsdp", torch.device("cpu"), accum_steps=1)
    return model, wrapped, build_optimizer(model, cfg.optim)


def _step(model, wrapped, optimizer) -> float:
    """One step on this rank's rows of the batch; the full-batch loss (the mean of the ranks')."""
    images, tokens = _batch()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    loss = forward_backward(model, wrapped, images[rows], tokens[rows], contextlib.nullcontext)["loss"].item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return sum(all_gather_objects(loss)) / world


def _whole_state(model, optimizer) -> dict:
    """Model and optimizer (keyed by name) whole, on rank 0 (empty elsewhere); copies (in one process the state
    dicts hold the live tensors, which the next step changes)."""
    return copy.deepcopy({"model": get_model_state_dict(model, options=WHOLE),
                          "optimizer": get_optimizer_state_dict(model, optimizer, options=WHOLE)})


def _train_two_steps_and_save_at_two_ranks(run_dir: str) -> dict:
    model, wrapped, optimizer = _sharded_model(seed=0)
    _step(model, wrapped, optimizer)
    _step(model, wrapped, optimizer)
    Checkpointer(run_dir, sharded=True).save_sharded(2, sharding.sharded_state(model, optimizer),
                                                     {"step": 2, "world_size": dist.get_world_size()})
    saved = _whole_state(model, optimizer)
    return {"saved": saved, "next_loss": _step(model, wrapped, optimizer),
            "next_weights": _whole_state(model, optimizer)["model"]}


def _restore_then_step(run_dir: str) -> dict:
    model, wrapped, optimizer = _sharded_model(seed=1)  # other initial weights: all must come from the checkpoint
    sharding.restore_state(model, optimizer, Checkpointer(run_dir).latest())
    restored = _whole_state(model, optimizer)
    return {"restored": restored, "next_loss": _step(model, wrapped, optimizer),
            "next_weights": _whole_state(model, optimizer)["model"]}


@pytest.fixture(scope="module")
def written_at_two_ranks(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("resharding") / "run"
    return run_dir, run_ranks(_train_two_steps_and_save_at_two_ranks, 2, str(run_dir))[0]


def assert_same_state(actual: dict, expected: dict) -> None:
    assert actual["model"].keys() == expected["model"].keys()
    for name, value in expected["model"].items():
        assert torch.equal(actual["model"][name], value), name
    assert actual["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]
    assert actual["optimizer"]["state"].keys() == expected["optimizer"]["state"].keys()
    for name, moments in expected["optimizer"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(actual["optimizer"]["state"][name][key], value), (name, key)


@pytest.mark.parametrize("world_size", [3, 1])
def test_a_checkpoint_written_at_two_ranks_loads_resharded_at_three_and_at_one(written_at_two_ranks, world_size):
    run_dir, written = written_at_two_ranks
    files = sorted(p.name for p in (run_dir / "checkpoints" / "step_000002.dcp").iterdir())
    assert files == [METADATA, "__0_0.distcp", "__1_0.distcp", RUN_STATE]  # one shard file per rank, no gather
    if world_size == 1:
        resumed = _restore_then_step(str(run_dir))  # this process, no process group
    else:
        resumed = run_ranks(_restore_then_step, world_size, str(run_dir))[0]
    assert_same_state(resumed["restored"], written["saved"])
    assert resumed["next_loss"] == pytest.approx(written["next_loss"], rel=1e-5)
    assert_all_close(resumed["next_weights"], written["next_weights"], rtol=1e-5)


def _elastic_run(root: Path, name: str) -> Config:
    """An FSDP run of 4 steps on 6 shards (a slot for every rank at W = 3, written by `_write_six_shards`) with a
    batch every world size here divides."""
    shards = root / "six" / "shards" / "shard-{000000..000005}.tar"
    return tiny_config(root, f"run_dir={root / name}", "train.strategy=fsdp", "train.steps=4",
                       f"train.batch_size={BATCH}", f"data.shards={shards}",
                       f"data.tokenizer={root / 'six' / 'tokenizer.json'}")


def _write_six_shards(root: Path) -> None:
    """Before the ranks start: the tiny run's own data (tiny_config writes it on first use) and the six shards."""
    tiny_config(root)
    (root / "six").mkdir()
    write_tiny_dataset(root / "six", shards=6, per_shard=16)


def _train_then_cut_copies_back_to_step_2(root: str) -> int:
    step = train(_elastic_run(Path(root), "at2")).step
    if dist.get_rank() == 0:
        for copy in ("at3", "at1"):
            shutil.copytree(Path(root) / "at2", Path(root) / copy)
            shutil.rmtree(Path(root) / copy / "checkpoints" / "step_000004.dcp")
            (Path(root) / copy / "checkpoints" / "latest").write_text("step_000002.dcp\n")
    dist.barrier()
    return step


def _resume(root: str, name: str) -> int:
    return train(_elastic_run(Path(root), name), allow_config_change=True).step  # the copy's config names at2


def test_an_fsdp_run_written_at_two_ranks_resumes_through_training_at_three_and_at_one(tmp_path, capsys):
    _write_six_shards(tmp_path)
    assert run_ranks(_train_then_cut_copies_back_to_step_2, 2, str(tmp_path)) == [4, 4]
    assert run_ranks(_resume, 3, str(tmp_path), "at3") == [4, 4, 4]
    assert _resume(str(tmp_path), "at1") == 4
    assert "resuming " + str(tmp_path / "at1") + " from step_000002.dcp (step 2)" in capsys.readouterr().out
    for name, world_size in (("at2", 2), ("at3", 3), ("at1", 1)):
        latest = Checkpointer(tmp_path / name).latest()
        assert latest.name == "step_000004.dcp"
        state = load_checkpoint(latest)
        assert state["world_size"] == world_size and state["step"] == 4
        assert all(torch.isfinite(value).all() for value in state["model"].values())
        assert sorted(p.name for p in latest.glob("__*.distcp")) == [f"__{r}_0.distcp" for r in range(world_size)]


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((4, 3), value)}, "optimizer": {"state": {"w": {"exp_avg": torch.zeros(4, 3)}},
                                                                      "param_groups": [{"lr": 0.1, "params": ["w"]}]}}


def test_latest_names_a_sharded_checkpoint_once_complete_and_pruning_spans_both_formats(tmp_path):
    Checkpointer(tmp_path, keep=2).save(1, {"step": 1, **_state(1.0)})
    sharded = Checkpointer(tmp_path, keep=2, sharded=True)
    partial_dirs = []
    original = checkpoint.sharded_checkpoint.write

    def write_and_look(directory, *args):
        partial_dirs.append(directory.name)
        assert Checkpointer(tmp_path).latest().name != "step_000003.dcp"  # not named while being written
        original(directory, *args)

    checkpoint.sharded_checkpoint.write = write_and_look
    try:
        for step in (2, 3):
            sharded.save_sharded(step, _state(float(step)), {"step": step, "world_size": 1})
    finally:
        checkpoint.sharded_checkpoint.write = original
    assert partial_dirs == ["step_000002.dcp.partial", "step_000003.dcp.partial"]
    assert sharded.latest().name == "step_000003.dcp" and sharded.steps() == [2, 3]  # keep=2 pruned step 1's file
    assert sorted(p.name for p in sharded.dir.iterdir()) == ["latest", "step_000002.dcp", "step_000003.dcp"]
    loaded = load_checkpoint(sharded.latest())
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.full((4, 3), 3.0))
    assert loaded["optimizer"]["param_groups"] == [{"lr": 0.1, "params": ["w"]}]
    assert torch.load(sharded.latest() / RUN_STATE, weights_only=True) == {"step": 3, "world_size": 1}


def test_the_next_writer_removes_what_a_killed_one_left(tmp_path):
    sharded = Checkpointer(tmp_path, sharded=True)
    sharded.save_sharded(2, _state(2.0), {"step": 2, "world_size": 1})
    (sharded.dir / "step_000004.dcp.partial").mkdir()
    (sharded.dir / "step_000004.dcp.partial" / "__1_0.distcp").write_bytes(b"half a shard")
    (sharded.dir / ".step_000004.pt.abc.tmp").write_bytes(b"half a file")
    (sharded.dir / "step_000006.dcp").mkdir()  # renamed, but killed before `latest` named it
    (sharded.dir / "step_000006.dcp" / "stale").write_bytes(b"")
    assert sharded.latest().name == "step_000002.dcp"
    sharded.save_sharded(6, _state(6.0), {"step": 6, "world_size": 1})
    assert sorted(p.name for p in sharded.dir.iterdir()) == ["latest", "step_000002.dcp", "step_000006.dcp"]
    assert not (sharded.dir / "step_000006.dcp" / "stale").exists()
    assert torch.equal(load_checkpoint(sharded.latest())["model"]["w"], torch.full((4, 3), 6.0))


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    """A 4-step FSDP run in one process (its checkpoints sharded, steps 2 and 4), with a CLIP-style ViT to export."""
    root = tmp_path_factory.mktemp("fsdp_run")
    assert train(tiny_config(root, f"run_dir={root / 'run'}", "train.steps=4", "train.strategy=fsdp",
                             "model.image.timm_name=vit_base_patch16_clip_224")).finished
    return root / "run"


def _copy(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", tmp_path / "run" / "checkpoints" / "step_000004.dcp"


BREAKAGES = {
    "missing shard": ("__0_0.distcp", lambda p: p.unlink(), "its shard file {path} is missing"),
    "truncated shard": ("__0_0.distcp", lambda p: p.write_bytes(p.read_bytes()[:1000]),
                        r"its shard file {path} is truncated \(1000 bytes; the metadata places data up to byte \d+\)"),
    "missing metadata": (METADATA, lambda p: p.unlink(), "{path} is missing"),
    "truncated metadata": (METADATA, lambda p: p.write_bytes(p.read_bytes()[:100]), "{path} cannot be loaded"),
    "missing run state": (RUN_STATE, lambda p: p.unlink(), "{path} is missing"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_missing_or_truncated_file_is_one_error_naming_it(fsdp_run, tmp_path, breakage):
    name, damage, message = BREAKAGES[breakage]
    run_dir, broken = _copy(fsdp_run, tmp_path)
    damage(broken / name)
    expected = message.format(path=broken / name)
    for read in (load_checkpoint, load_checkpoint_weights, load_checkpoint_header):
        with pytest.raises(CheckpointError, match=expected):
            read(broken)
    model, _, optimizer = _sharded_model(seed=0)
    with pytest.raises(CheckpointError, match=expected):
        sharding.restore_state(model, optimizer, broken)


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_metadata_pickle_with_a_payload_is_refused_without_running_it(fsdp_run, tmp_path):
    run_dir, sharded = _copy(fsdp_run, tmp_path)
    marker = tmp_path / "payload-ran"
    (sharded / METADATA).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError, match=r"cannot be loaded: UnpicklingError: posix.system is not part of DCP "
                                              r"metadata \(refused: it could run code\)"):
        load_checkpoint(sharded)
    assert not marker.exists()


def test_a_non_tensor_value_with_a_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload-ran"
    state = _state(1.0)
    state["optimizer"]["param_groups"][0]["lr"] = Payload(marker)  # DCP writes a non-tensor value with torch.save
    Checkpointer(tmp_path, sharded=True).save_sharded(1, state, {"step": 1, "world_size": 1})
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"step_000001.dcp cannot be loaded: .*Weights only load failed"):
        load_checkpoint(Checkpointer(tmp_path).latest())
    assert not marker.exists()


def test_eval_export_and_init_from_read_a_sharded_checkpoint_directly(fsdp_run, tmp_path):
    latest = Checkpointer(fsdp_run).latest()
    assert latest.name == "step_000004.dcp"
    whole = load_checkpoint(latest)
    run = load_run(fsdp_run, [])
    model, step = load_model(run, latest, torch.device("cpu"))
    assert step == 4
    assert {name: value for name, value in model.state_dict().items()}.keys() == whole["model"].keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, whole["model"][name]), name
    taken = initial_weights(load_config(str(fsdp_run / "config.yaml"), [f"model.init_from={fsdp_run}"]), model)
    assert taken.keys() == whole["model"].keys() and all(torch.equal(taken[n], whole["model"][n]) for n in taken)
    from safetensors.torch import load_file

    assert export_model(fsdp_run, "open_clip", tmp_path / "from_sharded") == latest
    single = tmp_path / "single.pt"
    torch.save(whole, single)  # the same checkpoint as one file, outside the run dir (it carries config, tokenizer)
    export_model(single, "open_clip", tmp_path / "from_file")
    exported = load_file(tmp_path / "from_sharded" / "open_clip_model.safetensors")
    expected = load_file(tmp_path / "from_file" / "open_clip_model.safetensors")
    assert exported.keys() == expected.keys() and all(torch.equal(exported[n], expected[n]) for n in expected)
    loose = tmp_path / "elsewhere" / "step_000004.dcp"  # copied out of its run dir: it carries config and tokenizer
    shutil.copytree(latest, loose)
    run_dir, found = checkpoints_to_evaluate(loose, all_checkpoints=False)
    assert (run_dir, found) == (loose.parent, [loose])
    assert run_of(run_dir, loose, []).cfg.model == run.cfg.model


def test_consolidate_writes_the_single_file_beside_the_sharded_one(fsdp_run, tmp_path, capsys):
    run_dir, sharded = _copy(fsdp_run, tmp_path)
    assert cli.main(["checkpoint", "consolidate", str(run_dir)]) == 0
    single = run_dir / "checkpoints" / "step_000004.pt"
    assert capsys.readouterr().out == f"consolidated {sharded} into {single}\n"
    from_file, from_shards = load_checkpoint(single), load_checkpoint(sharded)
    assert from_file.keys() == from_shards.keys() == {"step", "world_size", "model", "optimizer", "data", "rng",
                                                       "config", "tokenizer"}
    assert_same_state(from_file, from_shards)
    assert Checkpointer(run_dir).latest() == sharded  # `latest` stays on the sharded one
    assert Checkpointer(run_dir).at(4) == single and Checkpointer(run_dir).steps() == [2, 4]
    assert cli.main(["checkpoint", "consolidate", str(run_dir), "--step", "2"]) == 0
    assert (run_dir / "checkpoints" / "step_000002.pt").is_file()
    capsys.readouterr()
    assert cli.main(["checkpoint", "consolidate", str(run_dir), "--step", "3"]) == 2
    assert capsys.readouterr().err == f"error: {run_dir} has no checkpoint of step 3 (its steps: 2, 4)\n"
    assert cli.main(["checkpoint", "consolidate", str(single)]) == 2
    assert "is a single file already" in capsys.readouterr().err


STRATEGIES = {"ddp": ".pt", "fsdp": ".dcp"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_asynchronous_save_writes_what_a_synchronous_one_writes(tmp_path, monkeypatch, strategy):
    """The copy is taken when the step's save begins: training goes on while it is written (each background write
    is held back here until the steps after it have changed the weights) and changes nothing in it."""
    writers: list[str] = []
    for name in ("write_single_file", "sharded_checkpoint.write"):
        owner, attribute = (checkpoint, name) if "." not in name else (checkpoint.sharded_checkpoint, "write")
        monkeypatch.setattr(owner, attribute, _held_back(getattr(owner, attribute), writers))
    runs = {}
    for mode in ("sync", "async"):
        cfg = tiny_config(tmp_path, f"run_dir={tmp_path / mode}", f"train.strategy={strategy}",
                          "train.keep_checkpoints=0", f"train.checkpoint_async={mode == 'async'}")
        assert train(cfg).step == 6
        runs[mode] = Checkpointer(tmp_path / mode)
    suffix = STRATEGIES[strategy]
    # Synchronous: all in the main thread; asynchronous: steps 2 and 4 in the background, the final one at once.
    assert [w for w in writers if w.startswith("write ")] == [f"write step_00000{n}{suffix}" for n in (2, 4)]
    assert runs["async"].steps() == runs["sync"].steps() == [2, 4, 6]
    assert runs["async"].latest().name == f"step_000006{suffix}"
    for sync_path, async_path in zip(runs["sync"].checkpoints(), runs["async"].checkpoints()):
        written, expected = load_checkpoint(async_path), load_checkpoint(sync_path)
        assert written["step"] == expected["step"] and written["data"] == expected["data"]
        for name, value in expected["model"].items():
            assert torch.equal(written["model"][name], value), (sync_path.name, name)
        moments = lambda state: [t for s in state["optimizer"]["state"].values() for t in s.values()]  # noqa: E731
        assert all(torch.equal(a, b) for a, b in zip(moments(written), moments(expected)))


def _held_back(write, writers: list[str]):
    """`write`, recording the thread it runs in; in a background thread only after a pause of a few steps."""
    def held_back(*args, **kwargs):
        thread = threading.current_thread()
        if thread is not threading.main_thread():
            time.sleep(1.0)
        if not str(args[0]).endswith(RUN_STATE):
            writers.append(thread.name)
        return write(*args, **kwargs)

    return held_back


def _train_sync_and_async(root: str) -> list[str]:
    """At two ranks, for both strategies: a run written synchronously and one asynchronously (its background writes
    held back, so that training goes on meanwhile, collectives included); the threads that wrote."""
    writers: list[str] = []
    checkpoint.write_single_file = _held_back(checkpoint.write_single_file, writers)
    checkpoint.sharded_checkpoint.write = _held_back(checkpoint.sharded_checkpoint.write, writers)
    for strategy in STRATEGIES:
        for mode in ("sync", "async"):
            cfg = tiny_config(Path(root), f"run_dir={Path(root) / strategy / mode}", f"train.strategy={strategy}",
                              "train.keep_checkpoints=0", f"train.checkpoint_async={mode == 'async'}")
            assert train(cfg).step == 6
    return writers


def test_an_asynchronous_save_at_two_ranks_writes_what_a_synchronous_one_writes(tmp_path):
    tiny_config(tmp_path)  # the data, before the ranks start
    rank0, rank1 = run_ranks(_train_sync_and_async, 2, str(tmp_path))
    background = [f"write step_00000{n}" for n in (2, 4)]
    assert [w for w in rank0 if w.startswith("write ")] == [f"{w}.pt" for w in background] + [f"{w}.dcp"
                                                                                               for w in background]
    assert [w for w in rank1 if w.startswith("write ")] == [f"{w}.dcp" for w in background]  # DDP: rank 0 writes
    for strategy, suffix in STRATEGIES.items():
        written, expected = (Checkpointer(tmp_path / strategy / mode) for mode in ("async", "sync"))
        assert written.steps() == expected.steps() == [2, 4, 6]
        for async_path, sync_path in zip(written.checkpoints(), expected.checkpoints()):
            assert async_path.suffix == suffix
            assert_same_state(load_checkpoint(async_path), load_checkpoint(sync_path))


def fail_the_write_of(monkeypatch, strategy: str, step: int) -> None:
    """The checkpoint of `step` fails with ENOSPC part-way (in the background thread, when asynchronous)."""
    def disk_full(f) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if strategy == "fsdp":
        monkeypatch.setattr(filesystem, "_write_item", shard_write_failing_at(step, disk_full))
    else:
        monkeypatch.setattr(checkpoint.torch, "save", half_written_save(step, disk_full))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_a_failed_asynchronous_write_is_reported_at_the_next_save(tmp_path, monkeypatch, capsys, strategy, policy):
    run_dir = tmp_path / "run"
    cfg = tiny_config(tmp_path, f"run_dir={run_dir}", f"train.strategy={strategy}", "train.checkpoint_async=true",
                      f"train.on_checkpoint_error={policy}")
    fail_the_write_of(monkeypatch, strategy, 2)
    failed = run_dir / "checkpoints" / f"step_000002{STRATEGIES[strategy]}"
    message = f"checkpoint {failed} could not be written ([Errno 28] No space left on device); `latest` still names " \
              "no checkpoint"
    checkpoints = Checkpointer(run_dir)
    if policy == "stop":
        with pytest.raises(CheckpointError) as raised:
            train(cfg)
        assert str(raised.value) == f"{message}; training stopped (train.on_checkpoint_error=stop)"
        assert "step 4/6" in capsys.readouterr().out  # reported when step 4's save began, before it was written
        assert checkpoints.steps() == [] and checkpoints.latest() is None
    else:
        assert train(cfg).finished
        assert f"warning: {message}; training goes on (train.on_checkpoint_error=continue)" in capsys.readouterr().out
        assert checkpoints.steps() == [4, 6] and checkpoints.latest().name == f"step_000006{STRATEGIES[strategy]}"
    assert not [p for p in checkpoints.dir.iterdir() if p.name.endswith((".tmp", ".partial"))]
