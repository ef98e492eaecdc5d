"""Launching on Slurm through submitit; depends on nothing in `contrastive` (it gets callables and resources).

    resources = Resources.from_mapping(slurm_section_as_dict)
    jobs = launch.submit([TrainJob(run, request_stop, run_dir, steps, resources.max_requeues)],
                         [run_dir / "slurm"], resources, local=False, job_name="train")

Modules: resources (what a job asks for), fit (does it fit this machine or the partition, from sinfo), executor
(submitit executor, Slurm or local), launch (jobs and job arrays, logs per run dir), job (checkpointable training
job: stop, requeue, resume), run_state (per-run record in RUN_DIR/slurm/run_state.json), sweep (axes -> points ->
run dir names), manifest (a sweep's record).
"""
