"""`contrastive submit {train,eval,score,filter}`: training runs, sweeps (one job array), evaluations, the scoring
of shards (one job array) and their filtering (one job array, then a job that packs) as Slurm jobs, or as local
processes with --local (submitit's local executor).

    contrastive submit train -c demo train.steps=300 --sweep loss.name=clip,siglip,llip
    contrastive submit eval runs/demo --all
    contrastive submit score 'pool/{000000..009999}.tar' --model runs/demo --out scores/ --tasks 100
    contrastive submit filter 'pool/{000000..009999}.tar' --scores scores/ filtered/ --keep-fraction 0.3 --tasks 100

Everything is validated before anything is submitted: every sweep point's config, each run dir's saved
config (a different one is refused unless --allow-config-change) and its world size. The training and
evaluation modules (models, timm), submitit and the launching modules of slurm (slurm.fit imports torch) are
imported when a command runs, not when the CLI starts.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from contrastive.commands.data import add_filter_arguments, add_score_arguments, filter_options
from contrastive.commands.train import add_check_flags
from contrastive.config import Config, ConfigError, load_config, to_yaml
from contrastive.stopping import request_stop
from data.atomic import atomic_write_bytes
from data.plural import count
from eval.results import format_metric, headline
from slurm import run_state, sweep
from slurm.manifest import Manifest, SweepPoint
from slurm.resources import Resources

if TYPE_CHECKING:
    import submitit

    from contrastive.scoring import ScoreJob, ScoreReport
    from data.filtering import FilterOptions, FilterReport, TaskReport
    from slurm.job import CompletedRun

SLURM_OVERRIDE = re.compile(r"slurm\.[\w.]+=")  # among submit score's shard patterns


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("submit", help="submit training runs, sweeps or evaluations to Slurm",
                                   description="Submit jobs to Slurm through submitit (or run them locally with "
                                               "--local). Resources come from the slurm.* config keys.")
    kinds = parser.add_subparsers(dest="submit_command", required=True, metavar="JOB")

    train = kinds.add_parser("train", help="a training run, or a sweep as one job array",
                             description="Submit a training run; with --sweep, the cartesian product of the axes "
                                         "as one job array with one run dir per point under "
                                         "RUNS/sweep-YYYYMMDD-HHMM/ (or under run_dir=PATH if given).")
    train.add_argument("-c", "--config", help="named config (e.g. demo, clip_b16) or a YAML file")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides for every run")
    train.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="a sweep axis; repeat for a grid (e.g. --sweep loss.name=clip,siglip,llip)")
    train.add_argument("--allow-config-change", action="store_true",
                       help="submit into a run dir whose saved config differs (the run resumes with the new one)")
    _add_common_flags(train)
    train.set_defaults(run=submit_train)

    evaluate = kinds.add_parser("eval", help="evaluate checkpoints or runs, one job each (one job array)",
                                description="Evaluate run dirs (their latest checkpoint, or every one with --all) "
                                            "or checkpoint files; arguments that are not existing paths are "
                                            "key=value overrides for every evaluation.")
    evaluate.add_argument("targets", nargs="+", metavar="RUN_DIR_OR_CHECKPOINT|key=value")
    evaluate.add_argument("--all", action="store_true", help="one job per checkpoint of each run dir")
    _add_common_flags(evaluate)
    evaluate.set_defaults(run=submit_eval)

    scoring = kinds.add_parser("score", help="score shards with a model as one job array (contrastive data score)",
                               description="Score the shards that have no score file in OUT yet, as one job array: "
                                           "each task scores a contiguous slice of them, as `contrastive data score` "
                                           "would, into its own files. Resources are the model run's slurm.* keys "
                                           "(one node, one task, at most one GPU); change them with slurm.KEY=VALUE "
                                           "arguments among the shard patterns.")
    add_score_arguments(scoring)
    scoring.add_argument("--tasks", type=int, default=None, metavar="N",
                         help="array tasks (default: one per shard up to slurm.array_parallelism; 1 with --local)")
    _add_common_flags(scoring)
    scoring.set_defaults(run=submit_score)

    filtering = kinds.add_parser("filter", help="filter shards by score as one job array and a packing job "
                                                "(contrastive data filter)",
                                 description="As `contrastive data filter`, split between jobs: a job array whose "
                                             "tasks each filter a contiguous slice of the pool into OUT.parts (as "
                                             "`data filter --task I/N`), then one job, started once every task has "
                                             "succeeded, that writes OUT from them (the same bytes as one process). "
                                             "Logs in OUT.slurm. Resources are the default config's slurm.* keys "
                                             "without GPUs; change them with slurm.KEY=VALUE arguments among the "
                                             "shard patterns. With --local this command waits for the tasks before "
                                             "it starts the packing job.")
    add_filter_arguments(filtering)
    filtering.add_argument("--tasks", type=int, default=None, metavar="N",
                           help="array tasks (default: one per shard up to slurm.array_parallelism; 1 with --local)")
    _add_common_flags(filtering)
    filtering.set_defaults(run=submit_filter)


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local", action="store_true",
                        help="run on this machine with submitit's local executor instead of Slurm")
    parser.add_argument("--wait", action="store_true", help="wait for the jobs and print how each ended")
    add_check_flags(parser, "the jobs")


def run_training(cfg: Config, allow_config_change: bool) -> Any:
    """The training job's body (runs inside the job)."""
    from contrastive.train import train

    return train(cfg, allow_config_change=allow_config_change)


def run_evaluation(checkpoint: str, overrides: list[str]) -> list[dict[str, float]]:
    """The evaluation job's body (runs inside the job)."""
    from contrastive.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, overrides, progress=False)[1]


def run_filter(shards: list[str], scores: str, out: str, options: FilterOptions, max_samples_per_shard: int,
               workers: int, task: tuple[int, int] | None) -> FilterReport | TaskReport:
    """A filter task's body, or (task None) the packing job's (runs inside the job)."""
    from data.filtering import filter_pool

    return filter_pool(shards, scores, out, options, max_samples_per_shard, workers, progress=False, task=task)


def run_scoring(job: ScoreJob) -> ScoreReport:
    """A scoring task's body (runs inside the job)."""
    from contrastive.scoring import score_shards

    return score_shards(job, progress=False)


def resources_of(cfg: Config) -> Resources:
    return Resources.from_mapping(dataclasses.asdict(cfg.slurm))


def submit_train(args: argparse.Namespace) -> int:
    from slurm import launch
    from slurm.fit import fit_to_target
    from slurm.job import TrainJob

    axes = sweep.parse_axes(args.sweep)
    if any(axis.key == "run_dir" for axis in axes):
        raise ConfigError("config error: --sweep run_dir=... is not an axis: a sweep names its run dirs after "
                          "the overrides; give the sweep's directory as run_dir=PATH instead")
    points = sweep.points(axes) if axes else [[]]
    cfgs = [load_config(args.config, [*args.overrides, *point]) for point in points]
    resources = fit_to_target(_common_resources(cfgs, points), local=args.local)

    sweep_dir = None
    new_dirs: list[Path] = []
    if axes:
        if any(o.partition("=")[0].strip() == "run_dir" for o in args.overrides):
            sweep_dir = Path(cfgs[0].run_dir)
            new_dirs += [] if sweep_dir.exists() else [sweep_dir]
        else:
            sweep_dir = sweep.new_sweep_dir(Path(cfgs[0].run_dir).parent, datetime.datetime.now())
            new_dirs.append(sweep_dir)
        cfgs = [dataclasses.replace(cfg, run_dir=str(sweep_dir / sweep.point_name(point)))
                for cfg, point in zip(cfgs, points)]
    new_dirs += [Path(cfg.run_dir) for cfg in cfgs if not Path(cfg.run_dir).exists()]
    from contrastive.preflight import preflight

    # Every run checked as its job will check it, before anything is submitted or a run dir is made.
    warnings = [w for cfg in cfgs for w in preflight(cfg, resources.world_size, args.check_paths)]
    for warning in dict.fromkeys(warnings):
        print(warning)
    with _removed_on_error(new_dirs):
        todo = [(cfg, point) for cfg, point in zip(cfgs, points) if _check_run_dir(cfg, args)]
        if args.check:
            print(f"check passed: {count(len(todo), 'run')} to submit at world size {resources.world_size}"
                  f"{' (local)' if args.local else ''}; nothing submitted")
            return 0
        if not todo:
            return 0
        jobs = launch.submit(
            [TrainJob(functools.partial(run_training, cfg, args.allow_config_change), request_stop, cfg.run_dir,
                      cfg.train.steps, resources.max_requeues) for cfg, _ in todo],
            [Path(cfg.run_dir) / "slurm" for cfg, _ in todo], resources, local=args.local,
            job_name=(sweep_dir or Path(cfgs[0].run_dir)).name,
            array_folder=sweep_dir / "slurm" if sweep_dir else None)
    for job, (cfg, _) in zip(jobs, todo):
        # Written once submitted (the job writes the same file when it starts): a pending run is already
        # described, and the next submission into its run dir is compared with it.
        atomic_write_bytes(Path(cfg.run_dir) / "config.yaml", to_yaml(cfg).encode())
        print(f"submitted job {job.job_id}: {cfg.run_dir} (logs in {Path(cfg.run_dir) / 'slurm'})")
    if sweep_dir is not None:
        manifest = Manifest(created=datetime.datetime.now().isoformat(timespec="seconds"), config=args.config,
                            overrides=list(args.overrides), axes={a.key: list(a.values) for a in axes},
                            local=args.local,
                            points=[SweepPoint(run_dir=Path(cfg.run_dir).name, overrides=point, job_id=job.job_id)
                                    for job, (cfg, point) in zip(jobs, todo)])
        print(f"sweep of {count(len(todo), 'run')}: {manifest.write(sweep_dir)}")
    return _wait(jobs, [cfg.run_dir for cfg, _ in todo], _trained) if args.wait else 0


def submit_eval(args: argparse.Namespace) -> int:
    from contrastive.evaluate import checkpoints_to_evaluate, run_of
    from slurm import launch
    from slurm.fit import fit_to_target

    paths = [Path(t) for t in args.targets if Path(t).exists()]
    overrides = [t for t in args.targets if not Path(t).exists()]
    for item in overrides:
        if "=" not in item:
            raise FileNotFoundError(f"{item} is neither an existing run dir or checkpoint nor a key=value override")
    if not paths:
        raise FileNotFoundError("no run dir or checkpoint given (arguments: " + " ".join(args.targets) + ")")
    checkpoints: list[Path] = []
    run_dirs: list[Path] = []
    cfgs: dict[Path, Config] = {}
    for path in paths:
        run_dir, found = checkpoints_to_evaluate(path, args.all)
        checkpoints += found
        run_dirs += [run_dir] * len(found)
        cfgs[run_dir] = run_of(run_dir, found[0], overrides).cfg
    train_resources = resources_of(cfgs[run_dirs[0]])
    resources = fit_to_target(dataclasses.replace(train_resources, nodes=1, tasks_per_node=1,
                                                  gpus_per_node=min(1, train_resources.gpus_per_node)),
                              local=args.local)
    if args.check_paths:
        from contrastive.preflight import check_eval_datasets

        for cfg in cfgs.values():
            check_eval_datasets(cfg)
    if args.check:
        print(f"check passed: {count(len(checkpoints), 'evaluation')} to submit; nothing submitted")
        return 0
    jobs = launch.submit([functools.partial(run_evaluation, str(c), overrides) for c in checkpoints],
                         [run_dir / "slurm" for run_dir in run_dirs], resources, local=args.local, job_name="eval")
    for job, checkpoint in zip(jobs, checkpoints):
        print(f"submitted job {job.job_id}: eval of {checkpoint}")
    return _wait(jobs, [str(c) for c in checkpoints], _evaluated) if args.wait else 0


def submit_score(args: argparse.Namespace) -> int:
    from contrastive.commands.data import score_job
    from contrastive.evaluate import run_of
    from contrastive.scoring import model_checkpoint, pending_shards, split_job
    from slurm import launch
    from slurm.fit import fit_to_target

    _check_array_arguments(args, "the shard list here to split it between the tasks, so the shards must be")
    overrides = _take_slurm_overrides(args)
    job = score_job(args)
    cfg = run_of(*model_checkpoint(args.model), overrides).cfg
    train_resources = resources_of(cfg)
    resources = fit_to_target(dataclasses.replace(train_resources, nodes=1, tasks_per_node=1,
                                                  gpus_per_node=min(1, train_resources.gpus_per_node)),
                              local=args.local)
    todo = pending_shards(job)
    if not todo:
        print(f"all {count(len(job.shards), 'shard')} already have their score file in {args.out}; nothing submitted")
        return 0
    tasks = args.tasks or (1 if args.local else resources.array_parallelism)
    jobs_of_tasks = split_job(dataclasses.replace(job, shards=todo), tasks)
    if args.check:
        print(f"check passed: {count(len(todo), 'shard')} to score in {count(len(jobs_of_tasks), 'task')}"
              f"{f' ({len(job.shards) - len(todo)} already scored)' if len(todo) < len(job.shards) else ''}; "
              "nothing submitted")
        return 0
    log_dir = Path(args.out) / "slurm"
    jobs = launch.submit([functools.partial(run_scoring, task) for task in jobs_of_tasks],
                         [log_dir] * len(jobs_of_tasks), resources, local=args.local, job_name="score",
                         array_folder=log_dir)
    labels = [f"{count(len(task.shards), 'shard')}, {task.shards[0]} to {task.shards[-1]}" for task in jobs_of_tasks]
    for submitted, label in zip(jobs, labels):
        print(f"submitted job {submitted.job_id}: scoring {label} into {args.out} (logs in {log_dir})")
    return _wait(jobs, labels, functools.partial(_scored, args.out)) if args.wait else 0


def submit_filter(args: argparse.Namespace) -> int:
    from data.filtering import beside, check_filter, parts_folder, task_slice
    from slurm import launch
    from slurm.fit import fit_to_target

    _check_array_arguments(args, "the pool and its scores here to check them and split the pool between the tasks, "
                                 "so they must be")
    # OUT is the last positional argument that is not a slurm.KEY=VALUE item (they may come after it)
    args.shards.append(args.out)
    overrides = _take_slurm_overrides(args)
    args.out = args.shards.pop()
    if not args.shards:
        raise FileNotFoundError(f"no shard pattern given before OUT ({args.out})")
    options = filter_options(args)
    resources = fit_to_target(dataclasses.replace(resources_of(load_config(None, overrides)), nodes=1,
                                                  tasks_per_node=1, gpus_per_node=0), local=args.local)
    plan = check_filter(args.shards, args.scores, args.out, options, args.max_samples_per_shard, args.workers)
    shards = len(plan.shards)
    tasks = min(args.tasks or (1 if args.local else resources.array_parallelism), shards)
    if args.check:
        print(f"check passed: {count(shards, 'shard')} to filter in {count(tasks, 'task')}, then a job packing "
              f"them into {args.out}; nothing submitted")
        return 0
    log_dir = beside(args.out, ".slurm")
    job = functools.partial(run_filter, args.shards, args.scores, args.out, options, args.max_samples_per_shard,
                            args.workers)
    task_jobs = launch.submit([functools.partial(job, (index, tasks)) for index in range(tasks)],
                              [log_dir] * tasks, resources, local=args.local, job_name="filter", array_folder=log_dir)
    labels = []
    for index, submitted in enumerate(task_jobs):
        names = [Path(plan.shards[i]).name for i in task_slice(shards, index, tasks)]
        labels.append(f"task {index}/{tasks}, {count(len(names), 'shard')}, {names[0]} to {names[-1]}")
        print(f"submitted job {submitted.job_id}: filter {labels[-1]} into {parts_folder(args.out)} "
              f"(logs in {log_dir})")
    if args.local:  # the local executor has no dependencies: the tasks must end before the packing job starts
        if _wait(task_jobs, labels, _filtered):
            print("not all tasks succeeded: nothing packed; submit the same command again to finish (finished "
                  "shards are not filtered again)")
            return 1
        pack_resources, after = resources, ""
    else:
        array_id = task_jobs[0].job_id.split("_")[0]
        after = f" once every task of job {array_id} has succeeded"
        pack_resources = dataclasses.replace(resources, extra={**resources.extra, "dependency": f"afterok:{array_id}",
                                                               "kill-on-invalid-dep": "yes"})
    pack = launch.submit([functools.partial(job, None)], [log_dir], pack_resources, local=args.local,
                         job_name="filter-pack")[0]
    print(f"submitted job {pack.job_id}: packing into {args.out}{after} (logs in {log_dir})")
    if not args.wait:
        return 0
    failed = 0 if args.local else _wait(task_jobs, labels, _filtered)
    return _wait([pack], [args.out], _filtered) or failed


def _check_array_arguments(args: argparse.Namespace, what_is_read: str) -> None:
    """What `submit score` and `submit filter`, which split a shard list between array tasks, check first."""
    if not args.check_paths:
        raise ConfigError(f"submit {args.submit_command} reads {what_is_read} readable from this machine (drop "
                          "--no-path-check)")
    if args.tasks is not None and args.tasks < 1:
        raise ConfigError(f"--tasks must be at least 1, got {args.tasks}")


def _take_slurm_overrides(args: argparse.Namespace) -> list[str]:
    """The slurm.KEY=VALUE items among args.shards, taken out of it."""
    overrides = [item for item in args.shards if SLURM_OVERRIDE.match(item)]
    args.shards = [item for item in args.shards if not SLURM_OVERRIDE.match(item)]
    if not args.shards:
        raise FileNotFoundError("no shard pattern given (arguments: " + " ".join(overrides) + ")")
    return overrides


def _common_resources(cfgs: list[Config], points: list[list[str]]) -> Resources:
    """A job array has one set of resources: a sweep over slurm.* keys must be submitted as separate sweeps."""
    resources = [resources_of(cfg) for cfg in cfgs]
    for point, r in zip(points, resources):
        if r != resources[0]:
            raise ConfigError(f"config error: the sweep point {','.join(point)} asks for other Slurm resources than "
                              f"{','.join(points[0])}; one job array has one set of resources, so submit a "
                              "separate sweep per resource setting")
    return resources[0]


def _check_run_dir(cfg: Config, args: argparse.Namespace) -> bool:
    """False (with a message) for a run that already finished; raises for one this submission cannot resume. Another
    world size than the run's last is fine: the run resumes elastically (docs/training.md)."""
    from contrastive.train import check_resume_config

    run_dir = Path(cfg.run_dir)
    check_resume_config(run_dir, cfg, args.allow_config_change)
    finished = run_state.read(run_dir).finished_step
    if finished is not None and finished >= cfg.train.steps:
        print(f"{run_dir} already finished at step {finished} (train.steps={cfg.train.steps}); not submitted")
        return False
    return True


@contextlib.contextmanager
def _removed_on_error(new_dirs: list[Path]) -> Iterator[None]:
    """Directories this submission created are removed again if it fails, so a refused sweep leaves nothing."""
    try:
        yield
    except BaseException:
        for path in new_dirs:
            shutil.rmtree(path, ignore_errors=True)
        raise


def _wait(jobs: Sequence[submitit.Job], labels: Sequence[str], describe: Callable[[str, Any], str]) -> int:
    """One line per job as it ends: `describe(label, its first task's result)`, or its failure."""
    from submitit.core.utils import UncompletedJobError

    from slurm import launch

    failed = 0
    for job, label in zip(jobs, labels):
        try:
            print(f"job {job.job_id} finished: {describe(label, launch.final_results(job)[0])}")
        except UncompletedJobError as e:
            failed += 1
            print(f"job {job.job_id} failed ({label}):\n{e}")
    return 1 if failed else 0


def _trained(run_dir: str, run: CompletedRun) -> str:
    if run.already_finished:
        return f"{run_dir} had finished at step {run.step} before the job started; nothing ran"
    return f"trained {run_dir} to step {run.step}"


def _evaluated(checkpoint: str, results: list[dict[str, float]]) -> str:
    """The headline of an evaluation job's results (of its one checkpoint) and where all of them are."""
    from contrastive.evaluate import results_path

    metrics = dict(results[0])
    step = int(metrics.pop("step"))
    scores = ", ".join(f"{name} {format_metric(name, value)}" for name, value in headline(metrics).items())
    return f"evaluated {checkpoint} (step {step}): {scores}; {results_path(Path(checkpoint).parent.parent, step)}"


def _scored(out: str, label: str, report: ScoreReport) -> str:
    return f"scored {label}: {report.summary(out)}"


def _filtered(label: str, report: FilterReport | TaskReport) -> str:
    return report.summary().splitlines()[0]
