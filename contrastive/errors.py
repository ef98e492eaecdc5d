"""The exceptions that mean bad input rather than a bug: the CLI prints them as one clear line. Those of the
training modules are defined here, so that the CLI catches them without importing torch, timm or torchvision."""
from contrastive.config import ConfigError
from data.errors import DataError
from eval.errors import EvalError
from slurm.errors import SlurmError


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or from another run, named in the message."""


class FormatError(ValueError):
    """What a peer's model files hold that this codebase cannot express, named (the tensor or key, and what was
    expected), or files that are not the format they claim."""


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient (train.max_bad_steps)."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DataError, EvalError, SlurmError, CheckpointError, FormatError, TrainingDiverged, FileNotFoundError,
)
