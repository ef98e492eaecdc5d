"""The training step does not wait for the device: between log steps nothing reads a tensor on the host (counted by
patching the reads: .item(), .tolist(), bool(), float()), in one process and in DDP at W = 2; a non-finite step
leaves the weights, the optimizer's moments and its step count bit-identical."""
import contextlib
from collections import Counter
from pathlib import Path

import pytest
import torch

from contrastive import step as step_module, stopping
from contrastive.config import load_config
from contrastive.model import build_model
from contrastive.optim import build_optimizer
from contrastive.step import train_step
from contrastive.train import train
from tests.contrastive.tiny_run import TINY_MODEL, tiny_config
from tests.multiprocess import run_ranks

HOST_READS = ("item", "tolist", "__bool__", "__float__")
STEPS, LOG_EVERY = 16, 16  # steady state: after the early console line of step 10, before the log of step 16


def _host_reads_per_step(root: str) -> list[Counter]:
    """Train with every host read of a tensor counted; the reads between the starts of consecutive steps."""
    stopping.reset()
    reads: Counter = Counter()
    per_step: list[Counter] = []
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(name):
        def read(self, *args, **kwargs):
            reads[name] += 1
            return originals[name](self, *args, **kwargs)
        return read

    forward_backward = step_module.forward_backward

    def step_start(*args, **kwargs):
        per_step.append(reads.copy())
        return forward_backward(*args, **kwargs)

    cfg = tiny_config(Path(root), f"train.steps={STEPS}", f"train.log_every={LOG_EVERY}", "train.checkpoint_every=100",
                      "data.workers=1")
    step_module.forward_backward = step_start
    for name in HOST_READS:
        setattr(torch.Tensor, name, counting(name))
    try:
        assert train(cfg).finished
    finally:
        step_module.forward_backward = forward_backward
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    return [after - before for before, after in zip(per_step, per_step[1:])]


def _steady(per_step: list[Counter]) -> list[Counter]:
    return per_step[10:STEPS - 1]  # from the start of step 11 to the start of step 16


def test_a_steady_state_step_reads_nothing_from_the_device(tmp_path):
    per_step = _host_reads_per_step(str(tmp_path))
    assert len(_steady(per_step)) == 5
    assert all(not reads for reads in _steady(per_step)), _steady(per_step)
    assert any(per_step[:10]), "the counting saw nothing at all: the early console lines read the metrics"


def test_a_steady_state_ddp_step_reads_nothing_from_the_device(tmp_path):
    tiny_config(tmp_path)  # the shards and the tokenizer, written once before the ranks start
    for per_step in run_ranks(_host_reads_per_step, 2, str(tmp_path)):
        assert all(not reads for reads in _steady(per_step)), _steady(per_step)


@pytest.mark.parametrize("bad", ["loss", "gradient"])
def test_a_non_finite_step_leaves_weights_moments_and_step_count_bit_identical(bad, monkeypatch):
    cfg = load_config(None, TINY_MODEL)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss, vocab_size=40, pad_id=0)
    optimizer = build_optimizer(model, cfg.optim)
    images, tokens = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.randint(1, 40, (4, 12))
    assert train_step(model, model, optimizer, images, tokens, 1e-3, contextlib.nullcontext).skipped == 0
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = [{k: v.clone() for k, v in s.items()} for s in optimizer.state.values()]
    assert state and all("step" in s and "exp_avg" in s for s in state)
    original = step_module.forward_backward

    def non_finite(model_, *args, **kwargs):
        out = original(model_, *args, **kwargs)
        if bad == "loss":
            out["loss"] = out["loss"] * float("nan")
        else:
            next(model_.parameters()).grad.fill_(float("inf"))
        return out

    monkeypatch.setattr(step_module, "forward_backward", non_finite)
    assert train_step(model, model, optimizer, images, tokens, 1e-3, contextlib.nullcontext).skipped == 1
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    for now, before in zip(optimizer.state.values(), state):
        assert all(torch.equal(now[k], before[k]) for k in before)
    monkeypatch.undo()
    assert train_step(model, model, optimizer, images, tokens, 1e-3, contextlib.nullcontext).skipped == 0
    assert not torch.equal(next(model.parameters()), weights[next(iter(weights))])  # and the next step updates


def test_the_compiled_step_recompiles_nothing_after_the_first_and_computes_the_eager_losses():
    """`train.compile=step` compiles forward + loss (inductor; aot_eager here, which traces the same graphs
    without inductor's minutes of code generation on 2 cores): steps 2 and 3 reuse the first step's graph."""
    import torch._dynamo

    cfg = load_config(None, TINY_MODEL)
    images, tokens = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.randint(1, 40, (4, 12))
    losses = {}
    for name, forward in (("eager", None), ("compiled", step_module.compiled_forward("aot_eager"))):
        torch.manual_seed(0)
        model = build_model(cfg.model, cfg.loss, vocab_size=40, pad_id=0)
        optimizer = build_optimizer(model, cfg.optim)
        torch._dynamo.reset()
        losses[name] = []
        for step in range(3):
            with torch._dynamo.config.patch(error_on_recompile=step > 0):
                result = train_step(model, model, optimizer, images, tokens, 1e-3, contextlib.nullcontext,
                                    forward=forward)
            losses[name].append(result.out["loss"].item())
        if forward is not None:
            assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # no graph break either
    torch.testing.assert_close(losses["compiled"], losses["eager"], rtol=1e-5, atol=1e-6)


def test_a_run_with_the_compiled_step_reports_its_compile_time_and_trains(tmp_path, monkeypatch, capsys):
    from contrastive import train as train_module

    stopping.reset()
    monkeypatch.setattr(train_module, "compiled_forward", lambda: step_module.compiled_forward("aot_eager"))
    assert train(tiny_config(tmp_path, "train.compile=step", "train.steps=2")).finished
    assert "step 1 compiled the step in " in capsys.readouterr().out
