"""Counts in messages: `1 shard`, `8 shards`, `1 process`, `2 processes`."""
from __future__ import annotations

from typing import Optional


def count(n: int, noun: str, plural: Optional[str] = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
