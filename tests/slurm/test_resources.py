"""Resources: what a job asks for, checked, and how it reaches sbatch."""
import pytest

from slurm.errors import SlurmError
from slurm.executor import sbatch_parameters
from slurm.resources import Resources


def test_every_field_reaches_sbatch_and_unset_ones_are_left_to_the_cluster():
    full = Resources(partition="gpu", account="vision", qos="high", nodes=2, gpus_per_node=8, cpus_per_task=10,
                     mem_gb=480, timeout_min=4320, constraint="a100", exclude="node[01-02]", comment="ablation",
                     signal_delay_s=120, array_parallelism=4, extra={"mail-type": "END"})
    assert sbatch_parameters(full, "train") == {
        "job_name": "train", "time": 4320, "nodes": 2, "ntasks_per_node": 8, "cpus_per_task": 10,
        "signal_delay_s": 120, "array_parallelism": 4, "partition": "gpu", "account": "vision", "qos": "high",
        "constraint": "a100", "exclude": "node[01-02]", "comment": "ablation", "gpus_per_node": 8, "mem": "480GB",
        "additional_parameters": {"mail-type": "END"}}
    assert sbatch_parameters(Resources(), "x") == {
        "job_name": "x", "time": 60, "nodes": 1, "ntasks_per_node": 1, "cpus_per_task": 1, "signal_delay_s": 120,
        "array_parallelism": 64}


def test_one_task_per_gpu_unless_tasks_per_node_is_given():
    assert (Resources(nodes=2, gpus_per_node=4).world_size, Resources(gpus_per_node=0).world_size) == (8, 1)
    assert Resources(nodes=3, gpus_per_node=0, tasks_per_node=2).world_size == 6


def test_from_mapping_names_unknown_fields():
    assert Resources.from_mapping({"nodes": 2, "extra": {}}) == Resources(nodes=2)
    with pytest.raises(SlurmError, match="unknown Slurm resource field.* gpus; valid: .*gpus_per_node"):
        Resources.from_mapping({"gpus": 8})


@pytest.mark.parametrize("fields, message", [
    ({"nodes": 0}, "nodes=0 must be at least 1"),
    ({"tasks_per_node": 0}, "tasks_per_node=0 must be at least 1"),
    ({"timeout_min": 2, "signal_delay_s": 120},
     r"signal_delay_s=120 must be below the time limit \(timeout_min=2, 120 s\)"),
])
def test_impossible_requests_are_refused(fields, message):
    with pytest.raises(SlurmError, match=message):
        Resources(**fields)
