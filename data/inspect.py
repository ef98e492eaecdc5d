"""`contrastive data inspect SHARDS`: what a set of shards holds and what in it is bad.

    report = inspect_shards(["demo_data/train/shard-{000000..000007}.tar"])
    report.samples, report.bad   # 8000, {}

Every image is decoded and every caption parsed, with the checks of data/validate.py; a
truncated or unreadable shard counts once as "truncated tar" (its samples before the damage
are counted as usual).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from data.errors import ShardReadError
from data.patterns import expand_patterns
from data.progress import ShardProgress
from data.shards import read_shard
from data.validate import DUPLICATE_KEY, TRUNCATED_TAR, BadSample, image_and_captions, label, load_image

MAX_EXAMPLES = 20


@dataclass
class Summary:
    """min / mean / max of a list of numbers (all 0 when empty)."""
    count: int = 0
    min: float = 0.0
    mean: float = 0.0
    max: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> "Summary":
        values = list(values)
        if not values:
            return cls()
        return cls(len(values), min(values), math.fsum(values) / len(values), max(values))

    def __str__(self) -> str:
        return f"min {self.min:g}, mean {self.mean:.1f}, max {self.max:g}" if self.count else "-"


@dataclass
class InspectReport:
    shards: int
    samples: int  # samples read, good and bad
    good: int
    members: dict[str, int]  # sorted member extensions of a sample ("json+png+txt") -> samples
    first_keys: list[str]
    image_width: Summary
    image_height: Summary
    caption_chars: Summary  # per caption line
    caption_lines: Summary  # per sample
    bad: dict[str, int]  # reason -> count
    bad_examples: list[str] = field(default_factory=list)  # "shard key: reason", the first few


def inspect_shards(patterns: Sequence[str], progress: bool | None = None) -> InspectReport:
    shards = expand_patterns(patterns)
    members: Counter[str] = Counter()
    bad: Counter[str] = Counter()
    examples: list[str] = []
    keys: set[str] = set()
    first_keys: list[str] = []
    widths, heights, chars, lines = [], [], [], []
    samples = 0

    def reject(shard: str, key: str, reason: str, detail: str = "") -> None:
        bad[label(reason)] += 1
        if len(examples) < MAX_EXAMPLES:
            examples.append(f"{shard} {key}: {label(reason)}" + (f" ({detail})" if detail else ""))

    with ShardProgress(len(shards), "inspect", progress) as bar:
        for shard in shards:
            try:
                for sample in read_shard(shard):
                    samples += 1
                    bar.sample()
                    members["+".join(sorted(sample.members))] += 1
                    if len(first_keys) < 5:
                        first_keys.append(sample.key)
                    if sample.key in keys:
                        reject(shard, sample.key, DUPLICATE_KEY)
                        continue
                    keys.add(sample.key)
                    try:
                        image_data, captions = image_and_captions(sample.members)
                        image = load_image(image_data)
                    except BadSample as e:
                        reject(shard, sample.key, e.reason)
                        continue
                    widths.append(image.width)
                    heights.append(image.height)
                    lines.append(len(captions))
                    chars += [len(c) for c in captions]
            except ShardReadError as e:
                reject(shard, "-", TRUNCATED_TAR, str(e))
            bar.shard_done()
    return InspectReport(
        shards=len(shards), samples=samples, good=len(widths), members=dict(members), first_keys=first_keys,
        image_width=Summary.of(widths), image_height=Summary.of(heights), caption_chars=Summary.of(chars),
        caption_lines=Summary.of(lines), bad=dict(bad), bad_examples=examples,
    )


def format_report(report: InspectReport) -> str:
    rows = [
        ("shards", str(report.shards)),
        ("samples", f"{report.samples} ({report.good} good, {report.samples - report.good} bad)"),
        ("members", ", ".join(f"{m}: {n}" for m, n in sorted(report.members.items())) or "-"),
        ("first keys", ", ".join(report.first_keys) or "-"),
        ("image width px", str(report.image_width)),
        ("image height px", str(report.image_height)),
        ("caption chars", str(report.caption_chars)),
        ("captions/sample", str(report.caption_lines)),
        ("bad", ", ".join(f"{r}: {n}" for r, n in sorted(report.bad.items())) or "none"),
    ]
    width = max(len(name) for name, _ in rows)
    text = "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
    if report.bad_examples:
        text += "\nfirst bad samples:\n" + "\n".join(f"  {e}" for e in report.bad_examples)
    return text
