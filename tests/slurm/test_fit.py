"""fit_to_target: a request that this machine or the partition cannot serve fails before anything is submitted,
naming the slurm.* key; sinfo is scripted here (real output formats), and asked for real on the test cluster."""
import functools
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from slurm import launch
from slurm.errors import SlurmError
from slurm.fit import NodeKind, fit_to_target, gpu_count, parse_sinfo
from slurm.resources import Resources

CI_NODE = "debug* 1 2 21694 (null)\n"  # sinfo --all --exact -h -o '%P %D %c %m %G' on ../shared/slurm
GPU_CLUSTER = ("cpu* 10 128 1031000 (null)\n"
               "gpu 4 64 515000 gpu:h100:8(S:0-1)\n"
               "gpu 2 32 257000 gpu:a100:4(S:0),gpu:v100:2(S:1)\n")


def fake_tool(tmp_path: Path, monkeypatch, name: str, rc: int = 0, out: str = "", err: str = "") -> None:
    """`name` on PATH (before the real one) that prints `out` and `err` and exits with `rc`."""
    (tmp_path / f"{name}.out").write_text(out)
    (tmp_path / f"{name}.err").write_text(err)
    script = tmp_path / name
    script.write_text(f"#!/usr/bin/env bash\ncat {tmp_path}/{name}.out; cat {tmp_path}/{name}.err >&2; exit {rc}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    if str(tmp_path) not in os.environ["PATH"].split(os.pathsep):
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def sinfo(tmp_path, monkeypatch):
    """Call with sinfo's stdout (and optionally its exit code); SBATCH_PARTITION is cleared."""
    monkeypatch.delenv("SBATCH_PARTITION", raising=False)
    return functools.partial(fake_tool, tmp_path, monkeypatch, "sinfo")


# --local

def test_local_without_gpus_runs_one_cpu_process_instead_of_one_per_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    fitted = fit_to_target(Resources(gpus_per_node=8), local=True)
    assert (fitted, fitted.tasks) == (Resources(gpus_per_node=0), 1)
    assert capsys.readouterr().err == ("note: this machine has no GPU, so --local runs 1 CPU process "
                                       "(slurm.gpus_per_node=8 ignored)\n")


def test_local_without_gpus_keeps_tasks_per_node_and_needs_no_note_without_a_gpu_request(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert fit_to_target(Resources(gpus_per_node=8, tasks_per_node=2), local=True).tasks == 2
    capsys.readouterr()
    assert fit_to_target(Resources(tasks_per_node=2), local=True) == Resources(tasks_per_node=2)
    assert capsys.readouterr().err == ""


def test_local_with_gpus_refuses_more_than_the_machine_has(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert fit_to_target(Resources(gpus_per_node=2), local=True) == Resources(gpus_per_node=2)
    with pytest.raises(SlurmError, match=r"^slurm.gpus_per_node=8 but this machine has 2 GPU\(s\); "
                                         r"set slurm.gpus_per_node=2 or less for --local$"):
        fit_to_target(Resources(gpus_per_node=8), local=True)


# sinfo, scripted

@pytest.mark.parametrize("gres, gpus", [("(null)", 0), ("gpu:8", 8), ("gpu:h100:8", 8), ("gpu:h100:8(S:0-1)", 8),
                                        ("gpu:a100:4(S:0),gpu:v100:2(S:1)", 6), ("gpu:a100:2(S:0,1),nvme:1", 2),
                                        ("gpu", 1), ("gpu:tesla", 1), ("shard:8", 0)])
def test_gpus_per_node_from_the_gres_field(gres, gpus):
    assert gpu_count(gres) == gpus


def test_sinfo_lines_become_kinds_of_nodes_and_the_star_marks_the_default():
    assert parse_sinfo(GPU_CLUSTER + "\nempty 0 0 0 n/a\n") == [
        NodeKind("cpu", True, 10, 128, 1031000, 0, "none"),
        NodeKind("gpu", False, 4, 64, 515000, 8, "gpu:h100:8(S:0-1)"),
        NodeKind("gpu", False, 2, 32, 257000, 6, "gpu:a100:4(S:0),gpu:v100:2(S:1)"),
        NodeKind("empty", False, 0, 0, 0, 0, "n/a")]
    assert parse_sinfo("gpu 2 64+ 500000+ gpu:8\n") == [NodeKind("gpu", False, 2, 64, 500000, 8, "gpu:8")]


def test_gpus_on_a_cpu_partition_are_refused_naming_the_key(sinfo):
    sinfo(out=CI_NODE)
    with pytest.raises(SlurmError, match=r"^slurm.gpus_per_node=8 but no node of partition debug has GPUs "
                                         r"\(gres: none\); set slurm.gpus_per_node=0 for CPU nodes$"):
        fit_to_target(Resources(gpus_per_node=8), local=False)
    assert fit_to_target(Resources(cpus_per_task=2), local=False) == Resources(cpus_per_task=2)


def test_typed_gpus_are_counted(sinfo):
    sinfo(out=GPU_CLUSTER)
    for gpus in (8, 6, 1):
        assert fit_to_target(Resources(partition="gpu", gpus_per_node=gpus), local=False).gpus_per_node == gpus
    with pytest.raises(SlurmError, match=r"^slurm.gpus_per_node=16 but nodes of partition gpu have at most 8 GPUs "
                                         r"\(gres: gpu:h100:8\(S:0-1\), gpu:a100:4\(S:0\),gpu:v100:2\(S:1\)\)$"):
        fit_to_target(Resources(partition="gpu", gpus_per_node=16), local=False)


def test_cpus_per_node_count_every_task(sinfo):
    sinfo(out=GPU_CLUSTER)
    assert fit_to_target(Resources(partition="gpu", gpus_per_node=8, cpus_per_task=8), local=False)
    with pytest.raises(SlurmError, match=r"^slurm.cpus_per_task=10 x 8 tasks per node \(one per GPU\) = 80 CPUs "
                                         r"but nodes of partition gpu have at most 64 CPUs$"):
        fit_to_target(Resources(partition="gpu", gpus_per_node=8, cpus_per_task=10), local=False)
    sinfo(out=CI_NODE)
    with pytest.raises(SlurmError, match=r"^slurm.cpus_per_task=2 x 2 tasks per node = 4 CPUs but nodes of "
                                         r"partition debug have at most 2 CPUs$"):
        fit_to_target(Resources(cpus_per_task=2, tasks_per_node=2), local=False)
    with pytest.raises(SlurmError, match=r"^slurm.cpus_per_task=3 but nodes of partition debug have at most 2 CPUs$"):
        fit_to_target(Resources(cpus_per_task=3), local=False)


def test_memory_per_node_in_gb_of_1024_mb(sinfo):
    sinfo(out=CI_NODE)
    assert fit_to_target(Resources(mem_gb=21), local=False) == Resources(mem_gb=21)
    with pytest.raises(SlurmError, match=r"^slurm.mem_gb=22 but nodes of partition debug have at most 21 GB "
                                         r"\(21694 MB\)$"):
        fit_to_target(Resources(mem_gb=22), local=False)


def test_nodes_in_the_partition_and_nodes_that_offer_everything_at_once(sinfo):
    sinfo(out=GPU_CLUSTER)
    assert fit_to_target(Resources(partition="gpu", nodes=6, gpus_per_node=4), local=False).nodes == 6
    with pytest.raises(SlurmError, match=r"^slurm.nodes=7 but partition gpu has 6 node\(s\)$"):
        fit_to_target(Resources(partition="gpu", nodes=7), local=False)
    with pytest.raises(SlurmError, match=r"^slurm.nodes=5 but 4 of the 6 nodes of partition gpu offer 8 GPUs, "
                                         r"8 CPUs, 300 GB$"):
        fit_to_target(Resources(partition="gpu", nodes=5, gpus_per_node=8, mem_gb=300), local=False)


def test_an_unknown_partition_is_named_with_the_partitions_there_are(sinfo, monkeypatch):
    sinfo(out=GPU_CLUSTER)
    with pytest.raises(SlurmError, match=r"^slurm.partition=gpus but this cluster has no partition gpus; "
                                         r"partitions: cpu, gpu$"):
        fit_to_target(Resources(partition="gpus"), local=False)
    monkeypatch.setenv("SBATCH_PARTITION", "big")
    with pytest.raises(SlurmError, match=r"^SBATCH_PARTITION=big \(slurm.partition is unset\) but this cluster has "
                                         r"no partition big"):
        fit_to_target(Resources(), local=False)


def test_sbatch_partition_replaces_the_default_and_a_list_needs_one_that_fits(sinfo, monkeypatch):
    sinfo(out=GPU_CLUSTER)
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")
    assert fit_to_target(Resources(gpus_per_node=8), local=False).gpus_per_node == 8
    assert fit_to_target(Resources(partition="cpu,gpu", gpus_per_node=8), local=False).partition == "cpu,gpu"
    with pytest.raises(SlurmError, match=r"^slurm.gpus_per_node=8 but no node of partition cpu has GPUs"):
        fit_to_target(Resources(partition="cpu", gpus_per_node=8), local=False)


@pytest.mark.parametrize("rc, out", [(1, "sinfo: error: Unable to contact slurm controller (connect failure)\n"),
                                     (0, "")])
def test_without_an_answer_from_sinfo_nothing_is_checked(sinfo, rc, out):
    sinfo(rc=rc, out=out)
    assert fit_to_target(Resources(gpus_per_node=8, nodes=100), local=False) == Resources(gpus_per_node=8, nodes=100)


def test_without_sinfo_on_path_nothing_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert fit_to_target(Resources(gpus_per_node=8), local=False) == Resources(gpus_per_node=8)


# sbatch's own refusal

def test_a_gres_refusal_is_one_line_that_names_gpus_per_node(tmp_path, monkeypatch, capfd):
    fake_tool(tmp_path, monkeypatch, "sinfo", out=CI_NODE)
    fake_tool(tmp_path, monkeypatch, "srun")
    fake_tool(tmp_path, monkeypatch, "sbatch", rc=1,
              err="sbatch: error: Invalid generic resource (gres) specification\n")
    with pytest.raises(SlurmError) as refused:
        launch.submit([functools.partial(sum, [1, 2])], [tmp_path / "slurm"], Resources(gpus_per_node=8),
                      local=False, job_name="fit")
    assert str(refused.value) == (
        "sbatch refused the job: Invalid generic resource (gres) specification (slurm.gpus_per_node=8 asks for GPUs "
        "that the partition's nodes do not have; set slurm.gpus_per_node=0 for CPU nodes)")
    assert capfd.readouterr().err == ""


def test_sbatch_error_lines_are_joined_into_one():
    err = ("sbatch: error: invalid partition specified: nope\n"
           "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert launch.refusal_message(err, Resources(gpus_per_node=8)) == (
        "sbatch refused the job: invalid partition specified: nope; "
        "Batch job submission failed: Invalid partition name specified")


# the real cluster (../shared/slurm/up.sh: one CPU node, no GPUs)

def submitted_with_name(name: str) -> str:
    """Ids of the jobs named `name` that Slurm has queued or accounted for; "" when none."""
    queued = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True)
    accounted = subprocess.run(["sacct", "-n", "-X", "--name", name, "-o", "JobID"], capture_output=True, text=True,
                               check=True)
    return (queued.stdout + accounted.stdout).strip()


@pytest.mark.slurm
def test_on_the_cluster_sbatch_refusing_gpus_says_so_once_naming_the_key(tmp_path, capfd):
    with pytest.raises(SlurmError) as refused:
        launch.submit([functools.partial(sum, [1, 2])], [tmp_path / "slurm"], Resources(gpus_per_node=1), local=False,
                      job_name="fit")
    assert str(refused.value).startswith("sbatch refused the job: Invalid generic resource (gres) specification "
                                         "(slurm.gpus_per_node=1 asks for GPUs")
    assert "\n" not in str(refused.value) and capfd.readouterr().err == ""


@pytest.mark.slurm
def test_on_the_cluster_a_gpu_request_fails_before_submission_and_a_fitting_one_runs(tmp_path):
    name = f"fit-{uuid.uuid4().hex[:8]}"
    with pytest.raises(SlurmError, match=r"^slurm.gpus_per_node=1 but no node of partition \S+ has GPUs "
                                         r"\(gres: none\); set slurm.gpus_per_node=0 for CPU nodes$"):
        resources = fit_to_target(Resources(gpus_per_node=1, timeout_min=5, signal_delay_s=30), local=False)
        launch.submit([functools.partial(sum, [1, 2])], [tmp_path / "slurm"], resources, local=False, job_name=name)
    assert submitted_with_name(name) == ""

    fitting = Resources(cpus_per_task=1, timeout_min=5, signal_delay_s=30)
    assert fit_to_target(fitting, local=False) == fitting
    job = launch.submit([functools.partial(sum, [1, 2])], [tmp_path / "slurm"], fitting, local=False,
                        job_name=name)[0]
    assert job.result() == 3
