"""`contrastive data curate SHARDS --metadata ENTRIES --per-entry-cap T OUT`: MetaCLIP's balancing (Xu et al., 2023,
"Demystifying CLIP Data"), repacked into new shards (data.repack).

Matching, as MetaCLIP's metaclip/substr_matching.py does it: an entry matches a caption when " ENTRY " (the entry
padded with one space each side) is a substring of the caption spaced out: padded with one space each side, each
of , . ; : ? ! ` wrapped in spaces, tabs and line breaks made spaces. So whole words and phrases match, partial
words do not ("cat" is not in "cats"), and other punctuation stays attached ("dog's" and "(dog)" hold no "dog").
Matching is case-sensitive, as MetaCLIP's (its metadata holds "Apple" and "apple" as two entries); --lowercase
lower-cases captions and entries both. Captions are a sample's caption lines (data.validate: whitespace runs
already one space); a sample's entries are those any of its lines matches, an entry counting once per sample.
All entries are found in one Aho-Corasick pass over the caption (pyahocorasick), linear in its length whatever
the number of entries.

Balancing: count(e) is the number of samples of the pool matching entry e. A sample that matches no entry is
dropped; one that does is kept if any of its entries' independent coins succeeds, entry e's with probability
p(e) = min(1, T / count(e)): P(keep) = 1 - prod over its entries of (1 - p(e)). Entries of at most T matches keep
every sample; one entry above T keeps about T (Binomial(count, T / count)) of the samples that match it alone. The
coin of (sample, entry) is blake2b(seed, the sample's key, the entry's text) as a number in [0, 1): the result
depends on neither the worker count, nor the way the pool is split into shards or the counts into parts, nor the
order of the metadata file. (Keys identify samples across a pool's shards, as img2dataset and convert write
them; two samples of one key would draw the same coins.)

Counting is a pass of its own that can be split across jobs: `--counts-only` writes one part's counts to a file,
and the balancing pass takes every part (`--counts PATTERN`), checks that together they count each shard of its
pool once, and at that size, with this metadata, and counts again as it goes: counts that turn out to be another
pool's are an error, and OUT is then not written. Without --counts the command makes both passes itself.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence

import ahocorasick
import numpy as np

from data.atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from data.errors import DataError, ShardReadError
from data.patterns import expand_patterns
from data.plural import count
from data.progress import bar
from data.repack import SUMMARY, Repacker, RunWriter, SourceShard, check_output_folder, pool_shards, source_metadata
from data.shards import read_shard
from data.validate import BadSample, label, sample_captions
from data.workers import ordered_map

PUNCTUATION_TO_SPACE_OUT = (",", ".", ";", ":", "?", "!", "`")  # MetaCLIP's spacing()
COUNTS_FORMAT = "contrastive.entry_counts"
COUNTS_VERSION = 1
UNMATCHED = "unmatched"
NOT_DRAWN = "not_drawn"  # matched, but no coin of its entries succeeded
PLOT = "entry_counts.png"
HEAD_ENTRIES = 10


def spaced(caption: str) -> str:
    """The caption as MetaCLIP matches in it."""
    caption = f" {caption} "
    for mark in PUNCTUATION_TO_SPACE_OUT:
        caption = caption.replace(mark, f" {mark} ")
    for char in "\t\n\r":
        caption = caption.replace(char, " ")
    return caption


def read_entries(path: str | os.PathLike) -> list[str]:
    """The metadata entries of a text file, one per line (surrounding whitespace stripped, blank lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read the metadata file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"metadata file {path} is not UTF-8 ({e.reason} at byte {e.start})") from None
    entries: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry:
            continue
        if entry in first_line:
            raise DataError(f"metadata file {path}: entry {entry!r} on line {number} is on line "
                            f"{first_line[entry]} already")
        first_line[entry] = number
        entries.append(entry)
    if not entries:
        raise DataError(f"metadata file {path} holds no entries (one per line)")
    return entries


def entries_sha256(entries: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()


class EntryMatcher:
    def __init__(self, entries: Sequence[str], lowercase: bool = False):
        self.entries = list(entries)
        self.lowercase = lowercase
        by_needle: dict[str, list[int]] = {}  # with --lowercase, "Apple" and "apple" are one needle of two entries
        for index, entry in enumerate(self.entries):
            by_needle.setdefault(f" {entry.lower() if lowercase else entry} ", []).append(index)
        self._automaton = ahocorasick.Automaton()
        for needle, indices in by_needle.items():
            self._automaton.add_word(needle, tuple(indices))
        self._automaton.make_automaton()

    def match(self, caption: str) -> set[int]:
        """Indices of the entries in the caption."""
        text = spaced(caption.lower() if self.lowercase else caption)
        return {index for _, indices in self._automaton.iter(text) for index in indices}

    def sample_entries(self, members: dict[str, bytes]) -> set[int]:
        """The entries any caption line of a shard sample matches; BadSample for a sample without captions."""
        return set().union(*(self.match(line) for line in sample_captions(members)))


@dataclass(frozen=True)
class MatcherSpec:
    """What a worker builds its EntryMatcher from (an entry list of 500k would be a large message to send)."""
    metadata: str
    sha256: str
    lowercase: bool


@functools.lru_cache(maxsize=1)
def matcher(spec: MatcherSpec) -> EntryMatcher:
    entries = read_entries(spec.metadata)
    if entries_sha256(entries) != spec.sha256:
        raise DataError(f"metadata file {spec.metadata} changed while the command ran")
    return EntryMatcher(entries, spec.lowercase)


def coin(seed: int, key: str, entry: str) -> float:
    """The uniform draw in [0, 1) of a sample's coin for one entry."""
    digest = hashlib.blake2b(f"{seed}\0{key}\0{entry}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def keep_probabilities(counts: np.ndarray, cap: int) -> np.ndarray:
    """p(e) = min(1, cap / count(e)) (1 for an entry nothing matches)."""
    return np.minimum(1.0, cap / np.maximum(counts, 1))


@dataclass
class EntryCounts:
    """Per-entry match counts of some shards: one part of a pool, or the merge of its parts."""
    metadata_sha256: str
    lowercase: bool
    counts: np.ndarray  # int64 [entries]: samples matching each entry
    shards: dict[str, dict[str, int]]  # shard file name -> {"bytes", "samples"}
    samples: int
    matched: int
    bad: dict[str, int]  # samples without captions, by data.validate reason

    def to_json(self) -> dict[str, Any]:
        return {"format": COUNTS_FORMAT, "version": COUNTS_VERSION, "metadata_sha256": self.metadata_sha256,
                "lowercase": self.lowercase, "samples": self.samples, "matched": self.matched, "bad": self.bad,
                "shards": self.shards, "counts": self.counts.tolist()}

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> EntryCounts:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("format") != COUNTS_FORMAT or data.get("version") != COUNTS_VERSION:
                raise ValueError(f"not a {COUNTS_FORMAT} file of version {COUNTS_VERSION}")
            return cls(data["metadata_sha256"], data["lowercase"], np.asarray(data["counts"], dtype=np.int64),
                       data["shards"], data["samples"], data["matched"], data["bad"])
        except OSError as e:
            raise DataError(f"cannot read the counts file {path}: {e.strerror or e}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{path} is not a counts file of `contrastive data curate --counts-only`: {e}") from None


def merge_counts(parts: Sequence[tuple[str, EntryCounts]], spec: MatcherSpec, entries: int,
                 pool: dict[str, int]) -> EntryCounts:
    """The counts of (file, part) pairs, checked to count each shard of the pool (name -> bytes) once."""
    counted_in: dict[str, str] = {}
    for path, part in parts:
        if part.metadata_sha256 != spec.sha256 or len(part.counts) != entries:
            raise DataError(f"counts file {path} counts another metadata list than {spec.metadata}")
        if part.lowercase != spec.lowercase:
            raise DataError(f"counts file {path} was counted {'with' if part.lowercase else 'without'} --lowercase")
        for name, shard in part.shards.items():
            if name in counted_in:
                raise DataError(f"shard {name} is counted twice, in {counted_in[name]} and in {path}")
            counted_in[name] = path
            if name not in pool:
                raise DataError(f"counts file {path} counts shard {name}, which is not in the pool given")
            if shard["bytes"] != pool[name]:
                raise DataError(f"shard {name} has {pool[name]} bytes, but {path} counted it at {shard['bytes']}: "
                                "count it again")
    missing = [name for name in pool if name not in counted_in]
    if missing:
        raise DataError(f"{count(len(missing), 'shard')} of the pool in no counts file, first {missing[0]}: count "
                        "every shard (--counts-only) and give every counts file")
    bad: Counter[str] = Counter()
    for _, part in parts:
        bad.update(part.bad)
    return EntryCounts(spec.sha256, spec.lowercase, sum(part.counts for _, part in parts),
                       {name: shard for _, part in parts for name, shard in part.shards.items()},
                       sum(part.samples for _, part in parts), sum(part.matched for _, part in parts), dict(bad))


@dataclass
class ShardCounts:
    shard: str
    bytes: int = 0
    samples: int = 0
    matched: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    entries: Counter[int] = field(default_factory=Counter)  # entry index -> samples matching it
    error: Optional[str] = None


def count_shard(spec: MatcherSpec, shard: str) -> ShardCounts:
    """Run in a worker: errors come back as values (ordered_map's workers do not pass exceptions on)."""
    counts = ShardCounts(Path(shard).name)
    try:
        entry_matcher = matcher(spec)
        counts.bytes = os.path.getsize(shard)
        for sample in read_shard(shard):
            counts.samples += 1
            try:
                entries = entry_matcher.sample_entries(sample.members)
            except BadSample as e:
                counts.bad[e.reason] += 1
                continue
            counts.matched += bool(entries)
            counts.entries.update(entries)
    except ShardReadError as e:
        counts.error = str(e)
    except (DataError, OSError) as e:
        counts.error = f"shard {shard}: {e}"
    return counts


def count_pool(patterns: Sequence[str], metadata: str | os.PathLike, lowercase: bool = False, workers: int = 1,
               progress: Optional[bool] = None) -> EntryCounts:
    """The first pass: the shards' entry counts (a part of the pool, or all of it)."""
    entries = read_entries(metadata)
    spec = MatcherSpec(str(metadata), entries_sha256(entries), lowercase)
    shards = pool_shards(patterns)
    with ordered_map(workers) as mapper:
        return _count(mapper, shards, spec, len(entries), progress)


def _count(mapper: Any, shards: Sequence[str], spec: MatcherSpec, entries: int,
           progress: Optional[bool]) -> EntryCounts:
    total = EntryCounts(spec.sha256, spec.lowercase, np.zeros(entries, np.int64), {}, 0, 0, {})
    bad: Counter[str] = Counter()
    for shard in bar(mapper(partial(count_shard, spec), shards), desc="curate: count", total=len(shards),
                     unit="shard", progress=progress):
        if shard.error is not None:
            raise DataError(shard.error)
        total.shards[shard.shard] = {"bytes": shard.bytes, "samples": shard.samples}
        total.samples += shard.samples
        total.matched += shard.matched
        bad.update(shard.bad)
        _add(total.counts, shard.entries)
    total.bad = dict(sorted(bad.items()))
    return total


def _add(counts: np.ndarray, entries: Counter[int]) -> None:
    if entries:
        indices, values = zip(*entries.items())
        counts[list(indices)] += values


@dataclass(frozen=True)
class BalancePlan:
    spec: MatcherSpec
    probabilities: np.ndarray  # p(e) per entry
    seed: int


@dataclass
class CuratedShard:
    source: SourceShard
    samples: int = 0
    removed: Counter[str] = field(default_factory=Counter)  # unmatched, not drawn, bad samples by reason
    entries: Counter[int] = field(default_factory=Counter)  # this pass's count of the shard, to check the counts
    kept: list[tuple[int, ...]] = field(default_factory=list)  # each kept sample's entries, in run order
    error: Optional[str] = None


def curate_shard(plan: BalancePlan, source: SourceShard) -> CuratedShard:
    """Run in a worker: the shard's kept samples go into its run, errors come back as values."""
    outcome = CuratedShard(source)
    try:
        entry_matcher = matcher(plan.spec)
        with RunWriter(source) as run:
            for sample in read_shard(source.path):
                outcome.samples += 1
                try:
                    entries = sorted(entry_matcher.sample_entries(sample.members))
                    metadata = source_metadata(sample.members) if entries else {}
                except BadSample as e:
                    outcome.removed[e.reason] += 1
                    continue
                outcome.entries.update(entries)
                if not entries:
                    outcome.removed[UNMATCHED] += 1
                    continue
                if not any(plan.probabilities[e] >= 1
                           or coin(plan.seed, sample.key, entry_matcher.entries[e]) < plan.probabilities[e]
                           for e in entries):
                    outcome.removed[NOT_DRAWN] += 1
                    continue
                run.write(sample.members, {**metadata, "source_shard": source.name, "source_key": sample.key,
                                           "metadata_entries": [entry_matcher.entries[e] for e in entries]})
                outcome.kept.append(tuple(entries))
    except ShardReadError as e:
        outcome.error = str(e)
    except (DataError, OSError) as e:
        outcome.error = f"shard {source.path}: {e}"
    return outcome


def distribution(entries: Sequence[str], before: np.ndarray, after: np.ndarray, cap: int) -> dict[str, Any]:
    """The entry counts before and after balancing: the head, the tail, and entries per count bucket."""
    matched = int((before > 0).sum())
    capped = int((before > cap).sum())
    probabilities = keep_probabilities(before, cap)
    head = np.argsort(-before, kind="stable")[:HEAD_ENTRIES]
    tail = (before > 0) & (before <= cap)
    edges = [0, 1] + [10 ** k for k in range(1, max(1, len(str(int(before.max())))) + 1)]
    buckets = []
    for low, high in zip(edges, edges[1:]):
        buckets.append({"counts": "0" if high == 1 else f"{low}-{high - 1}",
                        "before": int(((before >= low) & (before < high)).sum()),
                        "after": int(((after >= low) & (after < high)).sum())})
    return {
        "cap": cap, "entries": len(entries), "matched_entries": matched, "capped_entries": capped,
        "capped_fraction": capped / matched if matched else 0.0, "over_cap_after": int((after > cap).sum()),
        "head": [{"entry": entries[i], "before": int(before[i]), "after": int(after[i]),
                  "keep_probability": float(probabilities[i])} for i in head if before[i] > 0],
        "tail": {"entries": int(tail.sum()), "samples_before": int(before[tail].sum()),
                 "samples_after": int(after[tail].sum())},
        "histogram": buckets,
    }


def distribution_table(d: dict[str, Any]) -> str:
    cap = d["cap"]
    lines = [f"entries: {d['entries']} in the metadata, {d['matched_entries']} matched, {d['capped_entries']} above "
             f"the cap of {cap} ({100 * d['capped_fraction']:.1f}% of those matched); after balancing "
             f"{d['over_cap_after']} above it"]
    if d["head"]:
        width = max(12, *(len(row["entry"]) for row in d["head"]))
        lines.append(f"  {'head entry':<{width}}  {'before':>10}  {'after':>10}  {'p(entry)':>8}")
        lines += [f"  {row['entry']:<{width}}  {row['before']:>10}  {row['after']:>10}  "
                  f"{row['keep_probability']:>8.4f}" for row in d["head"]]
    tail = d["tail"]
    lines.append(f"tail: {count(tail['entries'], 'entry', 'entries')} of 1 to {cap} matches keep all "
                 f"{tail['samples_after']} of their {tail['samples_before']} samples")
    lines.append(f"  {'matches':<12}  {'entries before':>14}  {'after':>10}")
    lines += [f"  {row['counts']:<12}  {row['before']:>14}  {row['after']:>10}" for row in d["histogram"]]
    return "\n".join(lines)


def plot_distribution(before: np.ndarray, after: np.ndarray, cap: int) -> bytes:
    """PNG: matches per entry against the entry's rank, before and after, log-log (MetaCLIP's figure)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for counts, name in ((before, "before"), (after, "after balancing")):
        ranked = np.sort(counts[counts > 0])[::-1]
        axes.plot(np.arange(1, len(ranked) + 1), ranked, label=name)
    axes.axhline(cap, color="grey", linestyle="--", label=f"cap {cap}")
    axes.set(xscale="log", yscale="log", xlabel="entry rank", ylabel="matching samples")
    axes.legend()
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", metadata={"Software": None})
    return png.getvalue()


@dataclass
class CurationReport:
    out: str
    samples: int
    matched: int
    kept: int
    shards_written: int
    removed: dict[str, int]
    seed: int
    lowercase: bool
    distribution: dict[str, Any]
    per_shard: dict[str, dict[str, int]]

    def to_json(self) -> dict[str, Any]:
        return {"command": "curate", "samples": self.samples, "matched": self.matched, "kept": self.kept,
                "shards_written": self.shards_written, "removed": self.removed, "seed": self.seed,
                "lowercase": self.lowercase, "distribution": self.distribution, "per_shard": self.per_shard,
                "plot": PLOT}

    def summary(self) -> str:
        removed = ", ".join(f"{label(reason)} {n}" for reason, n in self.removed.items()) or "none"
        return "\n".join([
            f"curate: kept {self.kept} of {count(self.samples, 'sample')} ({self.matched} matched an entry) in "
            f"{count(self.shards_written, 'shard')} in {self.out}, seed {self.seed}",
            f"removed: {removed}",
            distribution_table(self.distribution),
            f"plot: {self.out}/{PLOT}",
        ])


def curate_pool(patterns: Sequence[str], metadata: str | os.PathLike, out: str | os.PathLike, cap: int,
                counts: Sequence[str] = (), seed: int = 0, lowercase: bool = False, max_samples_per_shard: int = 1000,
                workers: int = 1, progress: Optional[bool] = None) -> CurationReport:
    """Balance the pool; `counts` are patterns of counts files (--counts-only) of the whole pool, else it is
    counted first."""
    if cap < 1:
        raise DataError(f"--per-entry-cap must be at least 1, got {cap}")
    entries = read_entries(metadata)
    spec = MatcherSpec(str(metadata), entries_sha256(entries), lowercase)
    shards = pool_shards(patterns)
    check_output_folder(out)
    with ordered_map(workers) as mapper:
        if counts:
            files = expand_patterns(counts, noun="counts pattern", allow_pipe=False)
            pool = {Path(shard).name: os.path.getsize(shard) for shard in shards}
            total = merge_counts([(path, EntryCounts.load(path)) for path in files], spec, len(entries), pool)
        else:
            total = _count(mapper, shards, spec, len(entries), progress)
        plan = BalancePlan(spec, keep_probabilities(total.counts, cap), seed)
        with atomic_directory(out) as staging, Repacker(staging, max_samples_per_shard) as repacker:
            recount = np.zeros(len(entries), np.int64)
            after = np.zeros(len(entries), np.int64)
            removed: Counter[str] = Counter()
            per_shard: dict[str, dict[str, int]] = {}
            for outcome in bar(mapper(partial(curate_shard, plan), repacker.sources(shards)), desc="curate",
                               total=len(shards), unit="shard", progress=progress):
                if outcome.error is not None:
                    raise DataError(outcome.error)
                _add(recount, outcome.entries)
                removed.update(outcome.removed)
                per_shard[outcome.source.name] = {"samples": outcome.samples, "kept": len(outcome.kept)}
                for members, kept_entries in zip(repacker.take_run(outcome.source), outcome.kept):
                    repacker.write(members)
                    after[list(kept_entries)] += 1
            if not np.array_equal(recount, total.counts):
                entry = int(np.flatnonzero(recount != total.counts)[0])
                raise DataError(f"the counts files do not count this pool: entry {entries[entry]!r} matches "
                                f"{recount[entry]} samples of it, the counts say {total.counts[entry]}; count the "
                                "pool again (nothing was written)")
            repacker.close()
            atomic_write_bytes(Path(staging) / PLOT, plot_distribution(total.counts, after, cap))
            report = CurationReport(
                out=str(out), samples=total.samples, matched=total.matched, kept=repacker.samples,
                shards_written=len(repacker.shards), removed=_removal_order(removed), seed=seed, lowercase=lowercase,
                distribution=distribution(entries, total.counts, after, cap), per_shard=per_shard)
            atomic_write_text(Path(staging) / SUMMARY, json.dumps(report.to_json(), indent=2) + "\n")
    return report


def _removal_order(removed: Counter[str]) -> dict[str, int]:
    """Bad samples by reason, then the unmatched, then those no coin kept."""
    first = sorted(r for r in removed if r not in (UNMATCHED, NOT_DRAWN))
    return {reason: removed[reason] for reason in (*first, UNMATCHED, NOT_DRAWN)}
