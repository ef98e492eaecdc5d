"""The exceptions that mean bad input rather than a bug: the CLI prints them as one clear line."""
from contrastive.checkpoint import CheckpointError
from contrastive.config import ConfigError
from contrastive.train import TrainingDiverged
from data.errors import DataError
from eval.errors import EvalError
from slurm.errors import SlurmError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DataError, EvalError, SlurmError, CheckpointError, TrainingDiverged, FileNotFoundError,
)
