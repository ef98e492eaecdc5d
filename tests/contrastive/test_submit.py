"""`contrastive submit`: bad input refused before anything is submitted; real training and evaluation jobs
through submitit's local executor (everywhere) and on a real Slurm cluster (tests marked slurm)."""
import dataclasses
import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from contrastive.checkpoint import Checkpointer
from contrastive.commands import report, submit
from contrastive.config import ConfigError, load_config, to_yaml
from contrastive.stopping import request_stop
from data.synth import synthesize
from slurm import launch, run_state
from slurm.errors import SlurmError
from slurm.job import CompletedRun, TrainJob
from tests.contrastive.command_line import run_command
from tests.slurm.waiting import release_when_requeued, wait_until

TINY_MODEL = [
    "model.embed_dim=16", "model.image.image_size=32",
    "model.image.kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}", "model.image.mixture_tokens=2",
    "model.text.context_length=16", "model.text.width=32", "model.text.depth=1", "model.text.heads=2",
]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """A small copy of the embedded demo dataset (`contrastive data synth`)."""
    root = tmp_path_factory.mktemp("demo") / "demo_data"
    synthesize(root, train_samples=96, samples_per_shard=48, image_size=32, images_per_class=2, retrieval_images=16,
               vocab_size=300, progress=False)
    return root


def demo_run(data: Path, run_dir: Path, steps: int) -> list[str]:
    """Overrides for a run of a few seconds on `data`, without evaluation (the default config has none)."""
    return [f"run_dir={run_dir}", f"data.shards={data}/train/shard-{{000000..000001}}.tar",
            f"data.tokenizer={data}/tokenizer.json", "data.workers=0", "data.shuffle_buffer=16",
            "train.batch_size=8", f"train.steps={steps}", "train.precision=fp32", "train.log_every=4",
            "train.checkpoint_every=4", "optim.warmup_steps=2", *TINY_MODEL,
            "slurm.gpus_per_node=0", "slurm.cpus_per_task=1", "slurm.timeout_min=10", "slurm.signal_delay_s=30"]


def demo_evals(data: Path) -> list[str]:
    """The demo config's four zero-shot and retrieval evaluations, on `data` (not its other tasks: time)."""
    return [f"eval.{kind}.{name}={data}/eval/{kind}_{name}" for kind in ("zeroshot", "retrieval")
            for name in ("attributes", "relations")] + ["eval.tasks={}", "eval.batch_size=32"]


@pytest.fixture
def no_slurm(tmp_path, monkeypatch):
    """PATH without sbatch: a submission that gets past validation stops at 'no Slurm cluster'."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))


def submitted_job_ids(out: str) -> list[str]:
    return re.findall(r"^submitted job (\S+):", out, flags=re.MULTILINE)


def test_a_sweep_key_that_is_not_a_config_key_fails_before_anything_is_submitted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"loss 'clip' does not take nmae; .*did you mean loss.name\?"):
        run_command(submit, "submit", "train", "--sweep", "loss.nmae=clip,siglip")
    with pytest.raises(ConfigError, match="loss.name='sigclip' is not a registered loss"):
        run_command(submit, "submit", "train", "--sweep", "loss.name=clip,sigclip")
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_over_slurm_resources_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="slurm.nodes=2 asks for other Slurm resources than slurm.nodes=1"):
        run_command(submit, "submit", "train", "--sweep", "slurm.nodes=1,2")
    assert list(tmp_path.iterdir()) == []


def test_no_slurm_and_no_local_is_a_clear_error_and_leaves_no_sweep_dir(tmp_path, monkeypatch, no_slurm):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SlurmError, match="no Slurm cluster reachable from here .*pass --local"):
        run_command(submit, "submit", "train", "--sweep", "loss.name=clip,siglip", "--no-path-check")
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_run_dir_with_another_config_is_refused_unless_allowed(tmp_path, no_slurm):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(load_config(None, [f"run_dir={run_dir}", "optim.lr=0.001"])))
    with pytest.raises(ConfigError, match=r"(?s)holds a run with a different config.*lr: 0.001 \(saved\) -> 0.002"):
        run_command(submit, "submit", "train", f"run_dir={run_dir}", "optim.lr=0.002", "--no-path-check")
    with pytest.raises(SlurmError, match="no Slurm cluster"):  # past the config check
        run_command(submit, "submit", "train", f"run_dir={run_dir}", "optim.lr=0.002", "--allow-config-change",
                    "--no-path-check")
    assert "optim:\n  lr: 0.001" in (run_dir / "config.yaml").read_text()


def test_a_run_started_at_another_world_size_is_submitted_to_resume_elastically(tmp_path, no_slurm):
    run_state.write(tmp_path, run_state.RunState(world_size=8, starts=1))
    with pytest.raises(SlurmError, match="no Slurm cluster"):  # past every check, up to the submission itself
        run_command(submit, "submit", "train", f"run_dir={tmp_path}", "slurm.gpus_per_node=0", "--no-path-check")


def test_a_finished_run_is_not_submitted_again_but_one_with_more_steps_is(tmp_path, no_slurm, capsys):
    run_state.write(tmp_path, run_state.RunState(world_size=1, starts=1, finished_step=30))
    args = ["submit", "train", f"run_dir={tmp_path}", "slurm.gpus_per_node=0"]
    assert run_command(submit, *args, "train.steps=30", "--no-path-check") == 0
    assert "already finished at step 30 (train.steps=30); not submitted" in capsys.readouterr().out
    with pytest.raises(SlurmError, match="no Slurm cluster"):
        run_command(submit, *args, "train.steps=40", "--no-path-check")


def test_local_training_job_then_an_eval_job_then_the_report(demo_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_command(submit, "submit", "train", *demo_run(demo_data, run_dir, steps=8), "--local", "--wait") == 0
    (job_id,) = submitted_job_ids(out := capsys.readouterr().out)
    assert f"\njob {job_id} finished: trained {run_dir} to step 8\n" in out
    assert Checkpointer(run_dir).steps() == [4, 8] and not (run_dir / "eval").exists()

    assert run_command(submit, "submit", "eval", str(run_dir), *demo_evals(demo_data), "--local", "--wait") == 0
    (job_id,) = submitted_job_ids(out := capsys.readouterr().out)
    score = r"[01]\.\d{4}"
    headline = ", ".join(f"{re.escape(name)} {score}" for name in [
        "retrieval/attributes/i2t_R@1", "retrieval/attributes/t2i_R@1", "retrieval/relations/i2t_R@1",
        "retrieval/relations/t2i_R@1", "zeroshot/attributes/top1", "zeroshot/relations/top1"])
    checkpoint, results = run_dir / "checkpoints" / "step_000008.pt", run_dir / "eval" / "step_000008.json"
    assert re.search(rf"^job {job_id} finished: evaluated {re.escape(str(checkpoint))} \(step 8\): {headline}; "
                     rf"{re.escape(str(results))}$", out, flags=re.MULTILINE), out
    assert run_command(report, "report", str(run_dir), "--metrics", "zeroshot/*/top1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| run | steps | final loss | zeroshot/attributes/top1 | zeroshot/relations/top1 |"
    run, steps, loss, top1_attributes, top1_relations = lines[2].strip("| ").split(" | ")
    assert (run, steps) == ("run", "8") and float(loss) > 0
    assert 0 <= float(top1_attributes) <= 1 and 0 <= float(top1_relations) <= 1
    # A checkpoint copied out of its run dir is submitted with the config and tokenizer it carries.
    loose = tmp_path / "shared" / "model.pt"
    loose.parent.mkdir()
    shutil.copy(checkpoint, loose)
    assert run_command(submit, "submit", "eval", str(loose), *demo_evals(demo_data), "--local", "--check") == 0
    assert "check passed: 1 evaluation to submit; nothing submitted" in capsys.readouterr().out


@pytest.mark.slurm
def test_an_invalid_partition_is_refused_before_submission_and_leaves_no_run_dirs(tmp_path):
    with pytest.raises(SlurmError, match="slurm.partition=no_such_partition but this cluster has no partition "
                                         "no_such_partition; partitions: debug"):
        run_command(submit, "submit", "train", f"run_dir={tmp_path / 'abl'}", "slurm.partition=no_such_partition",
                    "slurm.gpus_per_node=0", "--sweep", "loss.name=clip,siglip")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slurm
def test_sweep_of_three_losses_as_one_array_then_a_report_with_three_rows(demo_data, tmp_path, capsys):
    sweep_dir = tmp_path / "ablation"
    overrides = [*demo_run(demo_data, sweep_dir, steps=24), *demo_evals(demo_data)]
    assert run_command(submit, "submit", "train", "-c", "demo", *overrides, "--sweep", "loss.name=clip,siglip,llip",
                       "--wait") == 0
    jobs = submitted_job_ids(capsys.readouterr().out)
    assert len({j.split("_")[0] for j in jobs}) == 1 and [j.split("_")[1] for j in jobs] == ["0", "1", "2"]

    assert run_command(report, "report", str(sweep_dir), "--metrics", "zeroshot/attributes/top1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| run | loss.name | steps | final loss | zeroshot/attributes/top1 |"
    rows = [line.split(" | ") for line in lines[2:]]
    assert [r[0] for r in rows] == ["| loss.name=clip", "| loss.name=siglip", "| loss.name=llip"]
    assert [(r[1], r[2]) for r in rows] == [("clip", "24"), ("siglip", "24"), ("llip", "24")]
    assert all(float(r[3]) > 0 and 0 <= float(r[4].rstrip(" |")) <= 1 for r in rows)


@pytest.mark.slurm
def test_a_training_job_preempted_by_usr2_resumes_from_its_checkpoint(demo_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_command(submit, "submit", "train", *demo_run(demo_data, run_dir, steps=40)) == 0
    (job_id,) = submitted_job_ids(capsys.readouterr().out)
    wait_until(lambda: Checkpointer(run_dir).steps() != [], 240, "the first checkpoint")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    release_when_requeued(job_id, timeout_s=120)
    wait_until(lambda: run_state.read(run_dir).finished_step is not None, 240, "the resumed run to finish")

    log = next((run_dir / "slurm" / job_id).glob("*_0_log.out")).read_text()
    stopped = int(re.search(r"stop requested \(SIGUSR2\): checkpoint written at step (\d+)", log).group(1))
    resumed = re.search(r"resuming \S+ from step_(\d+)\.pt \(step (\d+)\)", log)
    assert 4 <= stopped < 40 and resumed.groups() == (f"{stopped:06d}", str(stopped))
    state = run_state.read(run_dir)
    assert (state.starts, state.requeues, state.finished_step, state.job_ids) == (2, 1, 40, [job_id])
    assert Checkpointer(run_dir).latest().name == "step_000040.pt"


@pytest.mark.slurm
def test_a_two_task_training_job_does_ddp_over_gloo(demo_data, tmp_path):
    cfg = load_config(None, demo_run(demo_data, tmp_path / "run", steps=8))
    resources = dataclasses.replace(submit.resources_of(cfg), tasks_per_node=2)
    job = TrainJob(functools.partial(submit.run_training, cfg, False), request_stop, cfg.run_dir, cfg.train.steps,
                   resources.max_requeues)
    results = launch.submit([job], [tmp_path / "run" / "slurm"], resources, local=False, job_name="ddp")[0].results()
    assert results == [CompletedRun(cfg.run_dir, 8, already_finished=False)] * 2
    checkpoint = torch.load(Checkpointer(cfg.run_dir).latest(), weights_only=True)
    assert (checkpoint["step"], checkpoint["world_size"], len(checkpoint["data"])) == (8, 2, 2)
