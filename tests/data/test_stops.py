"""`contrastive data convert` and `contrastive data synth` stopped from outside, as real processes: the signal
goes to the whole process group (as Ctrl-C, `timeout` or scancel send it), workers included."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from contrastive import cli
from data.shards import ShardWriter, read_shard, sample_key
from data.synth import synthesize

REPO = Path(__file__).resolve().parents[2]
IMAGES = 200
PER_SHARD = 10
SYNTH = ["--train-samples", "1000", "--samples-per-shard", "50", "--image-size", "32", "--images-per-class", "1",
         "--retrieval-images", "20"]


def _noise_folder(root: Path, count: int) -> Path:
    """An ImageFolder of incompressible PNGs: re-encoding each takes a few ms, so a convert runs for seconds."""
    (root / "noise").mkdir(parents=True)
    Image.frombytes("RGB", (128, 128), os.urandom(128 * 128 * 3)).save(root / "noise" / "000.png")
    data = (root / "noise" / "000.png").read_bytes()
    for i in range(1, count):
        (root / "noise" / f"{i:03d}.png").write_bytes(data)
    return root


def _stop_when(args: list[str], ready: Path, signum: int) -> tuple[int, str]:
    """Run `contrastive ARGS` in a new process group, send `signum` to the group once `ready` exists; return the
    exit code and the output (stderr, then stdout). Fails if the command finishes first, hangs or leaves a process."""
    process = subprocess.Popen([sys.executable, "-m", "contrastive", *args], cwd=REPO, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert process.poll() is None, f"it ended before {ready} appeared:\n{process.communicate()}"
            assert time.monotonic() < deadline, f"{ready} did not appear"
            time.sleep(0.01)
        os.killpg(process.pid, signum)
        stdout, stderr = process.communicate(timeout=30)  # a pool that waits for workers ignoring SIGTERM hangs here
        deadline = time.monotonic() + 10
        while _group_alive(process.pid):
            assert time.monotonic() < deadline, "a worker outlived the command"
            time.sleep(0.05)
    finally:
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    return process.returncode, stderr + stdout


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _keys(shard: Path) -> list[str]:
    return [sample.key for sample in read_shard(shard)]  # raises ShardReadError on a cut shard


@pytest.mark.slow  # each starts `contrastive` (its imports take seconds)
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)], ids=["TERM", "INT"])
def test_stopped_convert_keeps_complete_shards_and_the_rerun_refuses_until_cleared(tmp_path, capsys, signum,
                                                                                   exit_code):
    src, out = _noise_folder(tmp_path / "src", IMAGES), tmp_path / "out"
    args = ["data", "convert", str(src), str(out), "--workers", "2", "--format", "png",
            "--max-samples-per-shard", str(PER_SHARD)]
    returncode, output = _stop_when(args, out / "shard-000001.tar", signum)

    assert returncode == exit_code, output
    assert "Traceback" not in output
    shards = sorted(out.glob("shard-*.tar"))
    assert 2 <= len(shards) < IMAGES // PER_SHARD, "stopped in the middle"
    assert output.splitlines() == [f"stopped by {signal.Signals(signum).name}: {out} holds the first {len(shards)} "
                                   f"complete shards and no skipped.jsonl; convert does not resume: run "
                                   f"`rm -r {out}`, then the same command again"]
    assert [p.name for p in out.iterdir() if not p.name.startswith("shard-")] == []  # no temp file, no skipped.jsonl
    assert [key for shard in shards for key in _keys(shard)] == [sample_key(i) for i in range(len(shards) * PER_SHARD)]
    stopped = {p.name: p.read_bytes() for p in shards}

    assert cli.main(args) == 2
    error = capsys.readouterr().err
    assert f"{out} already holds shards: {len(shards)} shards of a convert that did not finish (no skipped.jsonl)" \
        in error
    cleanup = re.search(r"`(.+)`", error).group(1)
    assert cleanup == f"rm -r {out}"
    subprocess.run(cleanup, shell=True, check=True)
    assert cli.main(args) == 0
    assert f"converted {IMAGES} of {IMAGES} records into {IMAGES // PER_SHARD} shards" in capsys.readouterr().out
    assert all((out / name).read_bytes() == data for name, data in stopped.items())  # what the stop kept was right


@pytest.mark.slow
def test_stopped_synth_leaves_the_earlier_output_and_the_rerun_replaces_it(tmp_path):
    out, partial = tmp_path / "demo", tmp_path / "demo.partial"
    synthesize(out, seed=1, train_samples=20, samples_per_shard=10, image_size=32, images_per_class=1,
               retrieval_images=2, progress=False)
    earlier = _digests(out)
    args = ["data", "synth", str(out), "--seed", "2", *SYNTH]
    returncode, output = _stop_when(args, partial / "train" / "shard-000001.tar", signal.SIGTERM)

    assert returncode == 0, output
    assert output.splitlines() == [f"stopped by SIGTERM: {out} is as it was; the unfinished build in {partial} is "
                                   f"deleted when you run the same command again, which builds {out} from the start"]
    assert _digests(out) == earlier
    assert [p for p in partial.rglob(".*")] == []  # no temp file
    shards = sorted((partial / "train").glob("shard-*.tar"))
    assert [len(_keys(shard)) for shard in shards] == [50] * len(shards)

    assert cli.main(args) == 0
    assert json.loads((out / "info.json").read_text())["seed"] == 2
    assert not partial.exists() and not (tmp_path / "demo.old").exists()
    synthesize(tmp_path / "uninterrupted", seed=2, train_samples=1000, samples_per_shard=50, image_size=32,
               images_per_class=1, retrieval_images=20, progress=False)
    assert _digests(out) == _digests(tmp_path / "uninterrupted")


def test_an_exception_while_a_shard_opens_leaves_no_temp_file(tmp_path, monkeypatch):
    """A stop signal can land between the temp file's creation and the writer recording it."""
    def stopped(*_, **__):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), ShardWriter(tmp_path, max_samples=1) as writer:
        writer.write("000000000", {"txt": b"a"})
        monkeypatch.setattr(tarfile, "open", stopped)
        writer.write("000000001", {"txt": b"b"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]
