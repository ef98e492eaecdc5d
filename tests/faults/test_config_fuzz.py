"""Random override keys, types and values through the real `contrastive train --check` on a tiny dataset: a clear
`error: ...` and exit 2 (never a traceback), or a config that passes the whole pre-flight, builds on the meta device
(so that huge widths cost nothing) and survives the round trip through the run's saved config.yaml. Either way no
run dir is left behind."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from contrastive import cli
from contrastive.config import Config, from_yaml_text, load_config, to_flat_dict, to_yaml
from contrastive.model import build_model
from data.tokenizer import Tokenizer
from tests.contrastive.tiny_run import TINY_MODEL, write_tiny_dataset
from tests.faults.conftest import ALL_FAULTS, FIGURES

KEYS = sorted(to_flat_dict(Config()))
SECTIONS = sorted({key.rsplit(".", 1)[0] for key in KEYS if "." in key})
YAML_ODDITIES = ["", "[", "]", "{", "}", ":", "null", "~", "*a", "&a 1", "!!python/object/apply:os.system ['true']",
                 "!!binary aGk=", "!!set {a, b}", "1e999", "-0", "0x10", "1_000", "'", '"', "|", ">", "%x", "@", "`",
                 "- a", "? a", "!tag x", ".nan", "-.inf", "yes", "off", "[1, [2]]", "{a: {b: c}}", "2026-11-23",
                 "[0.5, 0.1]", "[0.9, 0.98, 0.99]", "pipe:cat x.tar", "a\tb", "é", "\x00", "a=b"]

numbers = st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(numbers.map(str), st.booleans().map(str), st.text(max_size=12), st.sampled_from(YAML_ODDITIES))
values = st.one_of(scalars, st.lists(scalars, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
                   st.dictionaries(st.text("abc", min_size=1, max_size=3), scalars, max_size=2)
                   .map(lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"))
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS),
                 st.tuples(st.sampled_from(KEYS), st.text("._abcxyz0", max_size=4)).map("".join),
                 st.sampled_from(["eval.zeroshot.", "eval.retrieval.", "slurm.extra."]).map(lambda p: p + "x"),
                 st.text("._abcdefghijklmnopqrstuvwxyz", max_size=16))
overrides = st.one_of(st.tuples(keys, values).map(lambda kv: f"{kv[0]}={kv[1]}"), st.text(max_size=20))


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> tuple[Path, list[str]]:
    """A run dir that must never appear, and overrides of a valid tiny run (so that many fuzzed configs pass)."""
    root = tmp_path_factory.mktemp("fuzz")
    pattern, tokenizer = write_tiny_dataset(root)
    run_dir = root / "run"
    return run_dir, [f"run_dir={run_dir}", f"data.shards={pattern}", f"data.tokenizer={tokenizer}", "data.workers=0",
                     "train.batch_size=8", *TINY_MODEL]


@settings(max_examples=3000 if ALL_FAULTS else 100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(argv=st.lists(overrides, min_size=1, max_size=4))
def test_random_overrides_give_a_clear_error_or_pass_the_preflight_and_build(tiny_base, argv):
    run_dir, base = tiny_base
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(["train", "--check", *base, *argv])
        except SystemExit as e:  # argparse: an argument that looks like an option
            code = e.code
            assert "usage: contrastive" in err.getvalue()
    assert code in (0, 2), err.getvalue()
    assert not run_dir.exists()
    if code == 2:
        assert err.getvalue().startswith(("error: ", "usage: ")) and "Traceback" not in err.getvalue(), err.getvalue()
        FIGURES["bad configs tried (clear error, exit 2)"] += 1
        return
    cfg = load_config(None, [*base, *argv])
    assert from_yaml_text(to_yaml(cfg)) == cfg  # what the run saves as config.yaml reads back the same
    tokenizer = Tokenizer.from_file(cfg.data.tokenizer, context_length=cfg.model.text.context_length)
    with torch.device("meta"):
        build_model(cfg.model, cfg.loss, tokenizer.vocab_size, tokenizer.pad_id)
    FIGURES["random configs that passed the pre-flight (built on meta, round trip checked)"] += 1
