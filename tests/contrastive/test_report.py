"""`contrastive report` on run dirs fabricated here: config.yaml, tensorboard events, eval JSON, a sweep manifest."""
import csv
import io
from pathlib import Path

import pytest
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from contrastive.commands import report
from contrastive.config import load_config, to_yaml
from eval.results import write_json
from slurm.errors import SlurmError
from slurm.manifest import Manifest, SweepPoint
from tests.contrastive.command_line import run_command


def make_run(run_dir: Path, overrides: list[str], losses: dict[int, float], evals: dict[int, dict[str, float]]) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(load_config(None, [f"run_dir={run_dir}", *overrides])))
    with SummaryWriter(str(run_dir / "tb")) as writer:
        for step, loss in losses.items():
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("train/lr", 1e-3, step)
    for step, metrics in evals.items():
        write_json(run_dir / "eval" / f"step_{step:06d}.json", metrics, step=step)
    return run_dir


def run_report(capsys, *argv: str) -> str:
    assert run_command(report, "report", *argv) == 0
    return capsys.readouterr().out


@pytest.fixture
def loss_sweep(tmp_path) -> Path:
    sweep = tmp_path / "sweep-20261123-1200"
    for i, name in enumerate(["clip", "siglip", "llip"]):
        make_run(sweep / f"loss.name={name}", [f"loss.name={name}", "optim.lr=0.001"],
                 {10: 3.0 - i, 20: 2.0 - i, 30: 1.5 - i},
                 {20: {"zeroshot/demo/top1": 0.25 + i / 10}, 30: {"zeroshot/demo/top1": 0.5 + i / 10,
                                                                  "retrieval/demo/t2i_R@1": 0.125,
                                                                  "retrieval/demo/num_images": 16.0}})
    Manifest(created="2026-11-23T12:00:00", config="demo", overrides=["optim.lr=0.001"],
             axes={"loss.name": ["clip", "siglip", "llip"]}, local=False,
             points=[SweepPoint(f"loss.name={n}", [f"loss.name={n}"], f"7_{i}")
                     for i, n in enumerate(["clip", "siglip", "llip"])]).write(sweep)
    return sweep


def test_markdown_has_one_row_per_run_with_what_differs_steps_final_loss_and_latest_metrics(loss_sweep, capsys):
    out = run_report(capsys, str(loss_sweep / "manifest.json"))
    assert out.splitlines() == [
        "| run | loss.name | steps | final loss | retrieval/demo/t2i_R@1 | zeroshot/demo/top1 |",
        "| --- | --- | --- | --- | --- | --- |",
        "| loss.name=clip | clip | 30 | 1.5 | 0.125 | 0.5 |",
        "| loss.name=siglip | siglip | 30 | 0.5 | 0.125 | 0.6 |",
        "| loss.name=llip | llip | 30 | -0.5 | 0.125 | 0.7 |",
    ]


def test_csv_from_a_glob_and_a_sweep_dir_lists_each_run_once(loss_sweep, capsys):
    out = run_report(capsys, "--format", "csv", str(loss_sweep / "loss.name=*"), str(loss_sweep))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["loss.name"], r["steps"], float(r["final loss"]), float(r["zeroshot/demo/top1"])) for r in rows] == [
        ("clip", "30", 1.5, 0.5), ("llip", "30", -0.5, 0.7), ("siglip", "30", 0.5, 0.6)]


def test_a_resumed_run_keeps_the_latest_value_of_a_step_logged_twice(tmp_path, capsys):
    run = make_run(tmp_path / "run", [], {10: 3.0, 20: 2.0, 30: 1.0}, {})
    with SummaryWriter(str(run / "tb")) as writer:  # the restart after a checkpoint at step 10
        for step, loss in {20: 2.5, 30: 1.5, 40: 0.75}.items():
            writer.add_scalar("train/loss", loss, step)
    assert report.read_scalar(run / "tb", "train/loss") == [(10, 3.0), (20, 2.5), (30, 1.5), (40, 0.75)]
    assert run_report(capsys, str(run)).splitlines()[2] == "| run | 40 | 0.75 |"


def test_metrics_are_chosen_by_glob(loss_sweep, capsys):
    header = run_report(capsys, str(loss_sweep), "--metrics", "*/num_*", "zeroshot/*").splitlines()[0]
    assert header == "| run | loss.name | steps | final loss | retrieval/demo/num_images | zeroshot/demo/top1 |"


def test_plot_draws_loss_and_every_metric_into_a_png(loss_sweep, tmp_path, capsys):
    png = tmp_path / "plots" / "sweep.png"
    run_report(capsys, str(loss_sweep), "--plot", str(png))
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1500, 350)  # three panels: loss, two metrics


def test_bad_inputs_name_the_path(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty is not a run dir"):
        run_report(capsys, str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"nothing-\* matches no run dir"):
        run_report(capsys, str(tmp_path / "nothing-*"))
    (tmp_path / "manifest.json").write_text('{"points": 3}')
    with pytest.raises(SlurmError, match="manifest.json is not a sweep manifest"):
        run_report(capsys, str(tmp_path / "manifest.json"))
