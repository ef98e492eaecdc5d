class DataError(ValueError):
    """Bad data input (a pattern matching nothing, an unreadable file, a malformed record), named in the message."""


class ShardReadError(DataError):
    """A shard that cannot be read to its end: missing, not a tar, truncated, or its `pipe:` command failed."""
