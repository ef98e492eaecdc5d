"""Every command line of the README's Tour, through the real `contrastive` entry point, in order, in a tmp dir:
what the earlier lines make, the later ones use. Lines that can run here run for real on tiny data; lines that
would train at full size (ViT-B/16, 8 GPUs, thousands of shards) run with `--check`, the whole pre-flight.

What a line gets beyond its own words is stated in LINES, and nothing else is changed:
- arguments appended at its end: sizes small enough for a test (`--train-samples 256 ...`, `train.steps=4`),
  `--local --wait` for Slurm lines, `--check` for full-size lines;
- paths that stand for the reader's own data, replaced by tiny stand-ins (SUBSTITUTES): `/data/...` shards by
  the demo's training shards, `clip.json` by the demo's tokenizer, `/data/imagenet/val` by a demo zero-shot set,
  and torchrun's `...` by the demo's data; the downloaded OpenCLIP model by a tiny random one in its layout, with
  a Hugging Face CLIP tokenizer.json beside it (made with open-clip-torch, a test-only dependency).
A Tour line without an entry in LINES fails the test, so the README and this test cannot drift apart.
"""
from __future__ import annotations

import glob
import re
import shlex
import signal
from pathlib import Path

import pytest
from PIL import Image

from contrastive import cli, stopping
from tests.peers import TINY_CLIP, write_hf_clip_tokenizer, write_openclip_folder

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL_SYNTH = ["--train-samples", "256", "--samples-per-shard", "32", "--retrieval-images", "20",
               "--images-per-class", "2"]
TINY_STEPS = ["train.steps=4", "train.log_every=2", "train.checkpoint_every=2", "optim.warmup_steps=1"]
SUBSTITUTES = {"'/data/{00000..09999}.tar'": "demo_data/train", "clip.json": "demo_data/tokenizer.json",
               "/data/imagenet/val": "demo_data/eval/zeroshot_attributes",
               "...": "data.shards=demo_data/train data.tokenizer=demo_data/tokenizer.json data.workers=1"}
RUN, CHECK = "run", "check"
# README line (comment stripped) -> (run for real or pre-flight only, arguments appended)
LINES: dict[str, tuple[str, list[str]]] = {
    "contrastive data synth demo_data": (RUN, SMALL_SYNTH),
    "contrastive data convert images.csv shards/": (RUN, []),
    "contrastive data tokenizer shards/ tokenizer.json": (RUN, ["--vocab-size", "300"]),
    "contrastive data inspect shards/": (RUN, []),
    "contrastive train -c demo": (RUN, TINY_STEPS),
    "contrastive train -c clip_b16 data.shards='/data/{00000..09999}.tar' data.tokenizer=clip.json loss.name=siglip":
        (CHECK, ["--check"]),
    "contrastive train -c clip_b16 data.shards='/data/{00000..09999}.tar' data.tokenizer=clip.json --check":
        (CHECK, []),
    "contrastive train runs/demo train.steps=2000": (CHECK, ["--check"]),
    "torchrun --nproc-per-node 8 -m contrastive train -c clip_b16 ...": (CHECK, ["--check"]),
    "contrastive eval runs/demo": (RUN, []),
    "contrastive eval runs/demo --all eval.zeroshot.imagenet=/data/imagenet/val": (RUN, []),
    "contrastive import ViT-B-32-openai/ runs/openai-b32": (RUN, []),
    "contrastive eval runs/openai-b32 eval.zeroshot.imagenet=/data/imagenet/val": (RUN, []),
    "contrastive export runs/demo --format hf demo-hf/": (RUN, []),
    "contrastive data score shards/ --model runs/demo --out scores/": (RUN, ["--workers", "0"]),
    "contrastive data filter shards/ filtered/ --scores scores/ --keep-fraction 0.3": (RUN, []),
    # Without the demo's hard negatives and linear probe, which `train -c demo` above runs: the 4-step Llip model's
    # probe alone takes a minute on 2 cores (an ill-conditioned fit; tests/eval/test_linear_probe.py covers Llip's).
    "contrastive submit train -c demo --sweep loss.name=clip,siglip,llip":
        (RUN, [*TINY_STEPS, "eval.tasks={}", "--local", "--wait"]),
    "contrastive report runs/sweep-*/": (RUN, []),
}


def tour_lines() -> list[str]:
    text = README.read_text()
    block = re.search(r"^## Tour\n+```\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert block, "README.md has no ## Tour code block"
    return [re.split(r"\s#\s", line)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def argv_of(line: str, appended: list[str]) -> tuple[list[str], int]:
    """The arguments `contrastive` gets, and the world size the line runs at (torchrun's --nproc-per-node)."""
    for stands_for, stand_in in SUBSTITUTES.items():
        line = line.replace(stands_for, stand_in)
    words = shlex.split(line)
    world_size = 1
    if words[0] == "torchrun":
        world_size = int(words[words.index("--nproc-per-node") + 1])
        words = words[words.index("contrastive"):]
    assert words[0] == "contrastive", line
    expanded = [match for word in words[1:] for match in (sorted(glob.glob(word)) if "*" in word else [word])]
    return expanded + appended, world_size


@pytest.fixture
def own_signal_handlers():
    previous = {sig: signal.getsignal(sig) for sig in stopping.STOP_SIGNALS}
    yield
    stopping.reset()
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_every_line_of_the_readme_tour_runs_or_passes_its_preflight(tmp_path, monkeypatch, capsys,
                                                                     own_signal_handlers):
    lines = tour_lines()
    assert [line for line in lines if line not in LINES] == [], "Tour lines this test does not know (add to LINES)"
    assert [line for line in LINES if line not in lines] == [], "LINES entries no longer in the Tour"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    rows = ["image,caption"]
    for i, colour in enumerate(["red", "green", "blue", "white"]):
        Image.new("RGB", (24, 24), colour).save(tmp_path / "images" / f"{i}.png")
        rows.append(f"images/{i}.png,a {colour} square")
    (tmp_path / "images.csv").write_text("\n".join(rows) + "\n")
    open_clip = pytest.importorskip("open_clip")
    write_hf_clip_tokenizer(write_openclip_folder(tmp_path / "ViT-B-32-openai", open_clip.model.CLIP(**TINY_CLIP),
                                                  {**TINY_CLIP, "quick_gelu": True}))

    printed = {}
    for line in lines:
        how, appended = LINES[line]
        argv, world_size = argv_of(line, appended)
        monkeypatch.setenv("WORLD_SIZE", str(world_size))
        code = cli.main(argv)
        captured = capsys.readouterr()
        assert code == 0, f"{line}\n  ran as: contrastive {shlex.join(argv)}\n{captured.out}{captured.err}"
        assert ("check passed" in captured.out) == (how == CHECK), captured.out
        printed[line] = captured.out
        stopping.reset()
    assert "samples          4 (4 good, 0 bad)" in printed["contrastive data inspect shards/"]
    assert printed["contrastive data filter shards/ filtered/ --scores scores/ --keep-fraction 0.3"].startswith(
        "filter: kept 1 of 4 samples (25.0%) in 1 shard in filtered")
    report = printed["contrastive report runs/sweep-*/"]
    assert all(f"loss.name={loss}" in report for loss in ("clip", "siglip", "llip"))
