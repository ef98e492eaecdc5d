"""The JSON records slurm/ writes: a sweep's manifest and a run's state; atomic, readable by others, checked."""
import json
import stat

import pytest

from slurm import run_state
from slurm.errors import SlurmError
from slurm.manifest import Manifest, SweepPoint


def test_manifest_round_trip_with_run_dirs_relative_to_the_sweep(tmp_path):
    manifest = Manifest(created="2026-11-23T12:00:00", config="demo", overrides=["train.steps=30"],
                        axes={"loss.name": ["clip", "siglip"]}, local=False,
                        points=[SweepPoint("loss.name=clip", ["loss.name=clip"], "12_0"),
                                SweepPoint("loss.name=siglip", ["loss.name=siglip"], "12_1")])
    path = manifest.write(tmp_path)
    assert Manifest.read(path) == manifest
    assert manifest.run_dirs(tmp_path) == [tmp_path / "loss.name=clip", tmp_path / "loss.name=siglip"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_run_state_round_trip_and_default(tmp_path):
    assert run_state.read(tmp_path) == run_state.RunState()
    state = run_state.RunState(world_size=4, starts=2, requeues=1, finished_step=None, job_ids=["5"])
    run_state.write(tmp_path, state)
    assert run_state.read(tmp_path) == state
    assert json.loads((tmp_path / "slurm" / "run_state.json").read_text())["world_size"] == 4


@pytest.mark.parametrize("text, message", [
    ("{", "run_state.json is not valid JSON"),
    ("[1]", "run_state.json holds a JSON list; expected a run state"),
    ('{"world_size": 2, "nodes": 1}', "run_state.json: .*unexpected keyword argument 'nodes'"),
])
def test_a_damaged_run_state_is_named(tmp_path, text, message):
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "run_state.json").write_text(text)
    with pytest.raises(SlurmError, match=message):
        run_state.read(tmp_path)
