"""benchmarks/gpu.py (`make bench-gpu`) in its CPU dry run (tiny towers, batch 4, aot_eager), so that the script a
lent GPU runs first time cannot rot: every planned row is written with finite numbers, a run stops at the end of its
budget or on SIGTERM with what it measured and exits 0, and the largest-batch search keeps the last batch that fit."""
import json
import math
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.py"
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu  # noqa: E402

MODELS = ("clip_b16", "siglip_b16")
SIDES = ("ours", "OpenCLIP")
DROPS = (0.0, gpu.PATCH_DROP)
# The dry run's plan: eager rows at batch 4 and at the largest batch (capped at 8) for both models, sides and patch
# dropouts; compiled rows for the first model only; one loader row.
EXPECTED = ({(side, model, "eager", drop, largest) for side in SIDES for model in MODELS for drop in DROPS
             for largest in (False, True)}
            | {(side, "clip_b16", "compiled", drop, False) for side in SIDES for drop in DROPS}
            | {("ours", "clip_b16", "eager", 0.0, "loader")})


def key(row: dict) -> tuple:
    return (row["side"], row["model"], row["step"], row["patch_drop"],
            "loader" if row["data"] != "synthetic" else row["largest"] is not None)


def dry_run(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *args], cwd=out.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen, timeout: float) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict, str]:
    out = tmp_path_factory.mktemp("full") / "bench"
    code, output = finished(dry_run(out), timeout=240)
    return code, output, json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


@pytest.mark.slow
def test_the_dry_run_writes_every_planned_row_and_exits_0(full_run):
    code, output, result, _ = full_run
    assert code == 0, output[-3000:]
    assert result["complete"] and result["stopped"] is None and result["failed"] == []
    assert Counter(map(key, result["rows"])) == Counter(EXPECTED)  # each once
    assert result["not_measured"] == ["compiled rows of siglip_b16 (a dry run compiles the first model's only)"]


@pytest.mark.slow
def test_every_figure_of_the_dry_run_is_a_finite_number(full_run):
    _, _, result, _ = full_run
    assert math.isfinite(result["peak_bf16_tflops_measured"]) and result["peak_bf16_tflops_measured"] > 0
    assert result["datasheet_entry"] == "unknown" and result["peak_bf16_tflops_datasheet"] is None
    for row in result["rows"]:
        for name in ("s_per_step", "samples_per_s", "tflop_per_step", "tflops", "mfu_measured_peak"):
            assert math.isfinite(row[name]) and row[name] > 0, (name, row)
        assert row["peak_memory_gib"] is None  # CPU: no device memory to read
        assert (row["compile_s"] is not None) == (row["step"] == "compiled")
        if row["compile_s"] is not None:
            assert math.isfinite(row["compile_s"])
        if row["data"] != "synthetic":
            assert 0 <= row["data_wait"] <= 1 and row["ours_over_openclip_samples_per_s"] is None
        elif row["side"] == "ours":  # each synthetic row of ours has its OpenCLIP counterpart
            assert math.isfinite(row["ours_over_openclip_samples_per_s"]), row
        if row["largest"] is not None:
            assert row["batch"] == 8 and row["largest"] == "stopped at the cap, 8"


@pytest.mark.slow
def test_the_markdown_table_has_a_line_per_row_and_the_run_printed_it(full_run):
    _, output, result, markdown = full_run
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(result["rows"])  # the header, then a line per row
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert "every measurement ran" in markdown and markdown.strip() in output


@pytest.mark.slow
def test_a_tiny_budget_writes_a_partial_table_and_exits_0(tmp_path):
    out = tmp_path / "bench"
    code, output = finished(dry_run(out, "--budget-s", "2"), timeout=120)
    assert code == 0, output[-3000:]
    result = json.loads((out / "gpu.json").read_text())
    assert result["stopped"] == "budget" and not result["complete"] and result["failed"] == []
    assert len(result["rows"]) < len(EXPECTED)
    assert result["elapsed_s"] < 2 + 5  # the alarm stops a measurement that overruns
    assert any(note.endswith("(budget)") for note in result["not_measured"])
    assert "stopped (budget)" in (out / "gpu.md").read_text()


@pytest.mark.slow
def test_sigterm_writes_the_rows_measured_so_far_and_exits_0(tmp_path):
    out = tmp_path / "bench"
    process = dry_run(out)
    deadline = time.monotonic() + 120
    while not (out / "gpu.json").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert (out / "gpu.json").exists(), process.communicate()[0][-3000:]
    process.send_signal(signal.SIGTERM)
    code, output = finished(process, timeout=60)
    assert code == 0, output[-3000:]
    result = json.loads((out / "gpu.json").read_text())
    assert result["stopped"] == "SIGTERM" and 1 <= len(result["rows"]) < len(EXPECTED)
    assert "stopped (SIGTERM)" in (out / "gpu.md").read_text()


def row_at(batch: int) -> gpu.Row:
    return gpu.Row("ours", "clip_b16", "eager", 0.0, batch, "synthetic", 0.1, 1.0, None)


def test_the_largest_batch_is_the_last_that_fit_before_one_ran_out_of_memory():
    tried, freed = [], []

    def measure(batch: int) -> gpu.Row:
        tried.append(batch)
        if batch > 1024:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return row_at(batch)

    best = gpu.largest_batch(measure, row_at(256), 256, 8192, gpu.Deadline(60), lambda: freed.append(True))
    assert tried == [512, 1024, 2048] and len(freed) == 3
    assert best.batch == 1024 and best.largest == "2048 ran out of memory"


def test_when_twice_the_first_batch_runs_out_of_memory_the_first_is_the_largest():
    def out_of_memory(batch: int) -> gpu.Row:
        raise torch.OutOfMemoryError("CUDA out of memory")

    best = gpu.largest_batch(out_of_memory, row_at(256), 256, 8192, gpu.Deadline(60), lambda: None)
    assert best.batch == 256 and best.largest == "512 ran out of memory"
    assert gpu.largest_batch(out_of_memory, None, 256, 8192, gpu.Deadline(60), lambda: None) is None


@pytest.mark.parametrize("name, entry, tflops", [("NVIDIA H100 80GB HBM3", "H100", 989), ("NVIDIA H200", "H200", 989),
                                                 ("NVIDIA H100 PCIe", "H100 PCIe", 756),
                                                 ("NVIDIA GH200 480GB", "GH200", 989),
                                                 ("NVIDIA A100-SXM4-80GB", "A100", 312)])
def test_the_datasheet_peak_is_looked_up_from_the_device_name(name, entry, tflops):
    assert gpu.datasheet_peak(name) == (entry, tflops)


def test_a_device_without_a_datasheet_entry_has_none():
    assert gpu.datasheet_peak("NVIDIA GeForce RTX 4090") is None
