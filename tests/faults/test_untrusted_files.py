"""Files from elsewhere never run code: a checkpoint carrying a pickle payload is refused by `contrastive eval`
and by resuming, and a YAML config (named with -c, or a run's saved config.yaml) with a tag that builds Python
objects is a one-line config error."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from contrastive import cli
from contrastive.config import load_config, to_yaml
from tests.faults.runs import tiny_run_overrides


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def run_dir_with(tmp_path: Path, checkpoint: object, config_yaml: str | None = None) -> Path:
    run_dir = tmp_path / "run"
    overrides = tiny_run_overrides(tmp_path, run_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config_yaml or to_yaml(load_config(None, overrides)))
    shutil.copy(tmp_path / "tokenizer.json", run_dir / "tokenizer.json")
    torch.save(checkpoint, run_dir / "checkpoints" / "step_000002.pt")
    (run_dir / "checkpoints" / "latest").write_text("step_000002.pt\n")
    return run_dir


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["eval", "train"])
def test_a_checkpoint_with_a_pickle_payload_is_refused_without_running_it(tmp_path, capsys, command, figures):
    marker = tmp_path / "payload-ran"
    run_dir = run_dir_with(tmp_path, {"step": 2, "model": Payload(marker)})
    evaluator = [f"eval.zeroshot.colours={tmp_path}"] if command == "eval" else []
    assert cli.main([command, str(run_dir), *evaluator]) == 2
    err = one_line_error(capsys)
    assert f"checkpoint {run_dir / 'checkpoints' / 'step_000002.pt'} cannot be loaded: UnpicklingError" in err
    assert not marker.exists()
    figures["untrusted files refused without running code"] += 1


PYTHON_TAG = "run_dir: !!python/object/apply:os.system ['touch {marker}']\n"


@pytest.mark.parametrize("where", ["-c", "train RUN_DIR", "eval RUN_DIR"])
def test_a_yaml_config_with_a_python_tag_is_a_config_error(tmp_path, capsys, where, figures):
    marker = tmp_path / "payload-ran"
    evil = PYTHON_TAG.format(marker=marker)
    if where == "-c":
        (tmp_path / "evil.yaml").write_text(evil)
        argv, source = ["train", "-c", str(tmp_path / "evil.yaml")], f"config {tmp_path / 'evil.yaml'}"
    else:
        run_dir = run_dir_with(tmp_path, {"step": 2, "model": {}}, config_yaml=evil)
        argv = [where.split()[0], str(run_dir), *([f"eval.zeroshot.colours={tmp_path}"] if "eval" in where else [])]
        source = f"config {run_dir / 'config.yaml'}"
    assert cli.main(argv) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"error: config error: {source} is not valid YAML data: could not determine a "
                          f"constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"), err
    assert not marker.exists()
    figures["untrusted files refused without running code"] += 1
