"""Counter-based randomness for the data stream: every random choice is a pure function of its key.

A key is a tuple such as ("sample", seed, source, epoch, slot, position). Because nothing depends
on a generator's history, a resumed stream makes the same choices as the uninterrupted one, in any
process, with no RNG state to checkpoint.
"""
import hashlib

import torch


def derive_seed(*key: object) -> int:
    """A 63-bit seed from a key of ints and strings (stable across processes and Python runs, unlike hash())."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def unit_interval(*key: object) -> float:
    """A uniform draw in [0, 1) for the key."""
    return derive_seed(*key) / 2**63


def generator(*key: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*key))
