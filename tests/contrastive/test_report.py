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
        "| run | loss.name | steps | final loss | zeroshot/demo/top1 | retrieval/demo/t2i_R@1 |",
        "| --- | --- | --- | --- | --- | --- |",
        "| loss.name=clip | clip | 30 | 1.5 | 0.5 | 0.125 |",
        "| loss.name=siglip | siglip | 30 | 0.5 | 0.6 | 0.125 |",
        "| loss.name=llip | llip | 30 | -0.5 | 0.7 | 0.125 |",
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
    assert header == "| run | loss.name | steps | final loss | zeroshot/demo/top1 | retrieval/demo/num_images |"


def test_plot_draws_loss_and_every_metric_into_a_png(loss_sweep, tmp_path, capsys):
    png = tmp_path / "plots" / "sweep.png"
    run_report(capsys, str(loss_sweep), "--plot", str(png))
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1500, 350)  # three panels: loss, two metrics


def test_columns_are_grouped_by_task_type_headline_types_first_each_in_its_declared_metric_order(tmp_path, capsys):
    """zeroshot and retrieval first, then the other types by name (a type this process has never registered,
    from a plugin, included); within a task, its type's declared order (R@1, R@5, R@10), else by name."""
    shown = ["retrieval/coco/t2i_R@10", "retrieval/coco/t2i_R@5", "retrieval/coco/t2i_R@1", "retrieval/coco/i2t_R@1",
             "embedding_stats/coco/text_uniformity", "embedding_stats/coco/modality_gap",
             "embedding_stats/coco/random_cosine", "a_plugin_type/coco/zeta", "a_plugin_type/coco/alpha",
             "zeroshot/pets/top1", "zeroshot/attributes/top5", "zeroshot/attributes/top1",
             "retrieval/attributes/t2i_R@1"]
    make_run(tmp_path / "run", [], {10: 1.0}, {10: {name: 0.5 for name in shown}})
    header = run_report(capsys, str(tmp_path / "run")).splitlines()[0]
    assert [cell.strip() for cell in header.strip("|").split("|")][3:] == [
        "zeroshot/attributes/top1", "zeroshot/attributes/top5", "zeroshot/pets/top1",
        "retrieval/attributes/t2i_R@1", "retrieval/coco/t2i_R@1", "retrieval/coco/t2i_R@5", "retrieval/coco/t2i_R@10",
        "retrieval/coco/i2t_R@1",
        "a_plugin_type/coco/alpha", "a_plugin_type/coco/zeta",
        "embedding_stats/coco/modality_gap", "embedding_stats/coco/random_cosine",
        "embedding_stats/coco/text_uniformity"]


def test_bad_inputs_name_the_path(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty is not a run dir"):
        run_report(capsys, str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"nothing-\* matches no run dir"):
        run_report(capsys, str(tmp_path / "nothing-*"))
    (tmp_path / "manifest.json").write_text('{"points": 3}')
    with pytest.raises(SlurmError, match="manifest.json is not a sweep manifest"):
        run_report(capsys, str(tmp_path / "manifest.json"))


def test_cells_show_list_values_and_integer_counts_not_python_reprs(tmp_path, capsys):
    for name, shards in (("one", "a.tar"), ("two", "[a.tar,b.tar]")):
        make_run(tmp_path / name, [f"data.shards={shards}"], {10: 1.0},
                 {10: {"zeroshot/imagenet/top1": 0.5, "zeroshot/imagenet/num_images": 50000.0}})
    out = run_report(capsys, str(tmp_path / "one"), str(tmp_path / "two"), "--metrics", "*")
    assert out.splitlines()[2:] == ["| one | a.tar | 10 | 1 | 0.5 | 50000 |",
                                    "| two | a.tar, b.tar | 10 | 1 | 0.5 | 50000 |"]
    out = run_report(capsys, str(tmp_path / "*"), "--format", "csv", "--metrics", "*")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["data.shards"], r["zeroshot/imagenet/num_images"]) for r in rows] == [
        ("a.tar", "50000"), ("a.tar, b.tar", "50000")]


def test_plot_at_a_single_eval_step_has_integer_steps_a_legend_per_panel_and_a_marker_per_run(tmp_path):
    runs = [make_run(tmp_path / name, [f"loss.name={name}"], {1: 3.0, 10: 2.0, 20: 1.0},
                     {20: {"zeroshot/demo/top1": 0.125}}) for name in ("clip", "siglip", "llip")]
    fig = report.figure([report.summarize(run) for run in runs], ["zeroshot/demo/top1"])
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert low == 0 and high >= 20 and len(ticks) >= 4 and all(t == int(t) for t in ticks), ticks
        assert [text.get_text() for text in ax.get_legend().get_texts()] == ["clip", "siglip", "llip"]
    points = fig.axes[1].get_lines()  # the three runs' equal scores, one point each
    assert len({line.get_marker() for line in points}) == 3
    assert [line.get_markerfacecolor() for line in points] == ["none"] * 3
    sizes = [line.get_markersize() for line in points]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 3  # rings around each other, all visible
    assert fig.axes[1].get_ylim()[0] == 0


def test_a_loss_argument_is_a_column_when_it_varies_between_runs_of_that_loss(tmp_path, capsys):
    runs = [make_run(tmp_path / f"{name}-{tau}", [f"loss.name={name}", *([f"loss.tau={tau}"] if tau else [])],
                     {10: 1.0}, {}) for name, tau in [("clip", None), ("llip", 2.0), ("llip", 5.0)]]
    header = run_report(capsys, *map(str, runs)).splitlines()[0]
    assert header == "| run | loss.name | loss.tau | steps | final loss |"
