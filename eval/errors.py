class EvalError(ValueError):
    """Bad evaluation input (a dataset path, its layout, a file's contents); the message names the file and what
    was expected."""
