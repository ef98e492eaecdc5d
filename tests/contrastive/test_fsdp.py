"""FSDP2 (train.strategy=fsdp) on CPU with gloo at W = 2 against DDP on the same tiny model and batches: same
losses, gradient norms and weights; and an FSDP run's sharded checkpoints resume exactly and load into a plain
model, as `contrastive eval` loads them."""
import contextlib
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

from contrastive import sharding, stopping
from contrastive.checkpoint import Checkpointer, load_checkpoint
from contrastive.config import ConfigError, load_config
from contrastive.evaluate import load_model, load_run
from contrastive.model import build_model
from contrastive.optim import build_optimizer
from contrastive.step import forward_backward
from contrastive.train import train
from tests.contrastive.test_ddp import GLOBAL_BATCH, PAD, VOCAB, assert_all_close, global_batches
from tests.contrastive.tiny_run import TINY_MODEL, tiny_config
from tests.multiprocess import run_ranks

# (loss, image tower): softmax; sigmoid with a bias and a sharded scorer; a ConvNeXt, sharded by its timm blocks; a
# frozen ViT (LiT), its parameters sharded for memory but given no gradient
CASES = (("clip", "vit"), ("llip", "vit"), ("clip", "convnext"), ("clip", "frozen"))
TOWERS = {"vit": [], "convnext": ["model.image.timm_name=convnext_atto",
                                  "model.image.kwargs={depths: [1, 1, 2, 1], dims: [8, 16, 24, 32]}"],
          "frozen": ["model.image.frozen=true"]}


def _steps(loss_name: str, tower: str, strategy: str) -> dict:
    """Losses and gradient norms per step (clipping active), then the full weights, gathered onto rank 0."""
    cfg = load_config(None, [*TINY_MODEL, *TOWERS[tower], f"loss.name={loss_name}", "optim.weight_decay=0.1"])
    build = lambda: build_model(cfg.model, cfg.loss, vocab_size=VOCAB, pad_id=PAD)  # noqa: E731
    torch.manual_seed(0)
    model = build()
    wrapped = sharding.distribute(model, strategy, torch.device("cpu"), accum_steps=1)
    units = sum(isinstance(block, FSDPModule) for block in model.image_tower.repeated_blocks())
    optimizer = build_optimizer(model, cfg.optim)
    rank, local = dist.get_rank(), GLOBAL_BATCH // dist.get_world_size()
    losses, norms, image_grads = [], [], []
    for images, tokens in global_batches():
        rows = slice(rank * local, (rank + 1) * local)
        out = forward_backward(model, wrapped, images[rows], tokens[rows], contextlib.nullcontext)
        image_grads.append(sum(p.grad is not None for p in model.image_tower.parameters()))
        norms.append(sharding.full_tensor(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)).item())
        losses.append(out["loss"].item())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    copy = sharding.unsharded_copy(model, build, is_main=rank == 0)
    weights = {n: p.detach().clone() for n, p in copy.named_parameters()} if copy is not None else None
    return {"loss": losses, "grad_norm": norms, "weights": weights, "image_units": units, "image_grads": image_grads}


def _initial_image_tower() -> dict[str, torch.Tensor]:
    cfg = load_config(None, TINY_MODEL)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss, vocab_size=VOCAB, pad_id=PAD)
    return {n: p.detach() for n, p in model.named_parameters() if n.startswith("image_tower.")}


def _train_fsdp_then_resume_a_copy_from_step_2(root: str) -> list[int]:
    """A 4-step run, then a copy of its run dir cut back to the step-2 checkpoint (a crash after it) resumed."""
    stopping.reset()
    overrides = ("train.steps=4", "train.strategy=fsdp", "train.precision=bf16")
    steps = [train(tiny_config(Path(root), f"run_dir={Path(root) / 'straight'}", *overrides)).step]
    if dist.get_rank() == 0:
        shutil.copytree(Path(root) / "straight", Path(root) / "resumed")
        shutil.rmtree(Path(root) / "resumed/checkpoints/step_000004.dcp")
        (Path(root) / "resumed/checkpoints/latest").write_text("step_000002.dcp\n")
    dist.barrier()
    resumed = tiny_config(Path(root), f"run_dir={Path(root) / 'resumed'}", *overrides)
    steps.append(train(resumed, allow_config_change=True).step)  # the copied config.yaml names the other run_dir
    return steps


def _everything_on_this_rank(root: str) -> dict:
    """One spawn of two ranks for every test here (starting processes is most of the time)."""
    results = {(*case, strategy): _steps(*case, strategy) for case in CASES for strategy in ("ddp", "fsdp")}
    results["train_steps"] = _train_fsdp_then_resume_a_copy_from_step_2(root)
    cfg = load_config(None, TINY_MODEL)
    try:
        sharding.distribute(build_model(cfg.model, cfg.loss, VOCAB, PAD), "fsdp", torch.device("cpu"), accum_steps=2)
        results["accum_refused"] = False
    except ConfigError:
        results["accum_refused"] = True
    return results


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fsdp")
    tiny_config(root)  # shards and tokenizer, written once before the ranks start
    return root


@pytest.fixture(scope="module")
def two_ranks(root):
    return run_ranks(_everything_on_this_rank, 2, str(root))


@pytest.mark.parametrize("case", CASES, ids=["-".join(case) for case in CASES])
def test_fsdp_matches_ddp_at_two_ranks(two_ranks, case):
    for rank, result in enumerate(two_ranks):
        ddp, fsdp = result[(*case, "ddp")], result[(*case, "fsdp")]
        assert (ddp["image_units"], fsdp["image_units"]) == (0, {"vit": 1, "convnext": 8, "frozen": 1}[case[1]])
        if case[1] == "frozen":
            assert ddp["image_grads"] == fsdp["image_grads"] == [0, 0]
            if rank == 0:
                assert all(torch.equal(fsdp["weights"][name], value) for name, value in _initial_image_tower().items())
        torch.testing.assert_close(fsdp["loss"], ddp["loss"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fsdp["grad_norm"], ddp["grad_norm"], rtol=1e-5, atol=1e-6)
        assert fsdp["grad_norm"][0] > 0.05  # clipping was active, so the sharded norm mattered
        if rank == 0:  # the gathered, unsharded copy lives on rank 0 only
            assert_all_close(fsdp["weights"], ddp["weights"])
        else:
            assert fsdp["weights"] is None


def test_fsdp_refuses_gradient_accumulation(two_ranks):
    assert all(result["accum_refused"] for result in two_ranks)


def test_fsdp_training_resumes_exactly_and_its_checkpoint_loads_for_eval(two_ranks, root):
    assert [result["train_steps"] for result in two_ranks] == [[4, 4]] * 2
    straight = load_checkpoint(Checkpointer(root / "straight").latest())
    resumed = load_checkpoint(Checkpointer(root / "resumed").latest())
    assert straight["step"] == resumed["step"] == 4 and straight["world_size"] == 2
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    model, step = load_model(load_run(root / "straight", []), Checkpointer(root / "straight").latest(),
                             torch.device("cpu"))
    assert step == 4
    for name, value in model.state_dict().items():
        assert torch.equal(value, straight["model"][name]), name
