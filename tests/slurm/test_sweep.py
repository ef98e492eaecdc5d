import datetime

import pytest

from slurm.errors import SlurmError
from slurm.sweep import Axis, new_sweep_dir, parse_axes, point_name, points


def test_the_cartesian_product_of_the_axes_first_axis_slowest():
    axes = parse_axes(["loss.name=clip,siglip", "optim.lr=1e-3, 3e-4"])
    assert axes == [Axis("loss.name", ("clip", "siglip")), Axis("optim.lr", ("1e-3", "3e-4"))]
    assert points(axes) == [["loss.name=clip", "optim.lr=1e-3"], ["loss.name=clip", "optim.lr=3e-4"],
                            ["loss.name=siglip", "optim.lr=1e-3"], ["loss.name=siglip", "optim.lr=3e-4"]]
    assert points([]) == [[]]


def test_commas_inside_brackets_belong_to_the_value():
    (axis,) = parse_axes(["optim.betas=[0.9,0.98],[0.9,0.95]"])
    assert axis.values == ("[0.9,0.98]", "[0.9,0.95]")


def test_run_dir_names_come_from_the_overrides():
    assert point_name(["loss.name=siglip"]) == "loss.name=siglip"
    assert point_name(["loss.name=llip", "data.shards=/data/cc3m.tar"]) == "loss.name=llip,data.shards=%data%cc3m.tar"


@pytest.mark.parametrize("specs, message", [
    (["loss.name"], "not of the form key=v1,v2"),
    (["=clip"], "not of the form key=v1,v2"),
    (["loss.name=clip,,siglip"], "has an empty value"),
    (["loss.name=clip,clip"], "repeats clip"),
    (["loss.name=clip", "loss.name=siglip"], "names loss.name more than once"),
])
def test_malformed_axes_are_refused(specs, message):
    with pytest.raises(SlurmError, match=message):
        parse_axes(specs)


def test_sweep_dirs_are_named_by_the_minute_and_never_reused(tmp_path):
    now = datetime.datetime(2026, 11, 23, 12, 0, 41)
    assert [new_sweep_dir(tmp_path / "runs", now).name for _ in range(3)] == [
        "sweep-20261123-1200", "sweep-20261123-1200-2", "sweep-20261123-1200-3"]
