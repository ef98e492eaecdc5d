"""The exception slurm/ raises for problems a user can fix: no cluster, a refused request, a run that cannot resume."""


class SlurmError(RuntimeError):
    """Submission or job-lifecycle problem, worded so the user knows what to change."""
