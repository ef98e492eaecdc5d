"""`contrastive data filter SHARDS --scores SCORES OUT`: the samples of a pool that pass a score rule and simple
filters, repacked into new shards (data.repack).

Score rule, over the N scored samples of the whole pool (read from the score files' `score` column alone):
  --keep-fraction F  exactly floor(F x N) samples (F as the decimal written: 0.3 of 10 is 3): those scoring above
                     the threshold t, the floor(F x N)-th highest score, and of those scoring exactly t the first in
                     pool order (shards in the order given, samples in tar order) until the count is reached.
  --min-score S      every scored sample whose score >= S (the float32 score against S as a float64).
Simple filters, each optional: every caption line has --min-caption-words to --max-caption-words words (runs of
non-whitespace); the image's shorter side is at least --min-image-size px (KEY.json's "width" and "height" where
both are there, as img2dataset writes them, else the image header, without decoding the pixels); KEY.json's
--language-field (default "language") is one of the --language values, compared exactly; --dedup removes a sample
whose image bytes (sha256) equal those of a sample kept before it in pool order.

A sample is removed by the first rule it fails, in REMOVAL_ORDER: `unscored` (no row in its score file: the score
command skipped it, for the reasons its file counts), `score`, a bad sample (data.validate's reasons: a KEY.json
that does not parse, captions that are not UTF-8 ...), the simple filters, `duplicate` last: so of several copies
of an image the first that passes every other rule is kept. The score rule selects before the other rules remove
anything, so the kept count is at most floor(F x N) (--keep-fraction).

Before any output, every shard's score file is checked: it exists, it names the shard, it scores this shard (the
shard's size and the sha256 of its keys equal what the file records) and it has a row for each sample it does not
count as skipped. OUT appears complete or not at all, summary.json (what the command prints) in it.

Two stages: each shard is filtered into OUT.parts/ (its run of kept samples, then its outcome, written last), then
the parts are packed in pool order into OUT. A stopped run keeps its finished parts; `task` (--task I/N) filters one
of N contiguous slices of the pool only, so a job array can share the first stage (`contrastive submit filter`).
OUT.parts/plan.json fingerprints the pool, the options and the scores, and parts of another plan are refused.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from data.atomic import atomic_directory, atomic_write_text
from data.errors import DataError, ShardReadError
from data.patterns import contiguous_slices
from data.plural import count
from data.progress import bar
from data.repack import SUMMARY, Repacker, RunWriter, SourceShard, check_output_folder, pool_shards, source_metadata
from data.scores import KEY, SCORE, ScoreMetadata, read_metadata, scores_path, shard_keys_sha256
from data.shards import RawSample, find_image, read_shard, shard_keys
from data.validate import CORRUPT_IMAGE, NO_IMAGE, BadSample, label, sample_captions
from data.workers import ordered_map

PLAN = "plan.json"  # in OUT.parts: the fingerprint of the filter its parts belong to
UNSCORED = "unscored"
SCORE_RULE = "score"
BAD_SAMPLE = "bad sample"  # stands in REMOVAL_ORDER for data.validate's reasons
CAPTION_WORDS = "caption_words"
IMAGE_SIZE = "image_size"
LANGUAGE = "language"
DUPLICATE = "duplicate"
REMOVAL_ORDER = (UNSCORED, SCORE_RULE, BAD_SAMPLE, CAPTION_WORDS, IMAGE_SIZE, LANGUAGE, DUPLICATE)
MISSING_VALUE = "(none)"  # the source value of a sample without the source field (or without a KEY.json)


@dataclass(frozen=True)
class FilterOptions:
    keep_fraction: Optional[str] = None  # decimal text ("0.3"), read exactly
    min_score: Optional[float] = None
    min_caption_words: Optional[int] = None
    max_caption_words: Optional[int] = None
    min_image_size: Optional[int] = None
    languages: tuple[str, ...] = ()
    language_field: str = "language"
    dedup: bool = False
    source_field: Optional[str] = None  # KEY.json field to count kept / total by, besides the source shard

    def fraction(self) -> Fraction:
        assert self.keep_fraction is not None
        return Fraction(str(self.keep_fraction))  # str: a float's decimal (0.3), not its binary value

    def check(self) -> None:
        if (self.keep_fraction is None) == (self.min_score is None):
            raise DataError("give one score rule: --keep-fraction F or --min-score S")
        if self.keep_fraction is not None:
            try:
                fraction = self.fraction()
            except ValueError:
                raise DataError(f"--keep-fraction {self.keep_fraction!r} is not a number") from None
            if not 0 < fraction <= 1:
                raise DataError(f"--keep-fraction must be in (0, 1], got {self.keep_fraction}")
        if self.min_score is not None and not math.isfinite(self.min_score):
            raise DataError(f"--min-score must be a finite number, got {self.min_score}")
        for name, value in (("--min-caption-words", self.min_caption_words),
                            ("--max-caption-words", self.max_caption_words), ("--min-image-size", self.min_image_size)):
            if value is not None and value < 0:
                raise DataError(f"{name} must be at least 0, got {value}")
        if (self.min_caption_words is not None and self.max_caption_words is not None
                and self.min_caption_words > self.max_caption_words):
            raise DataError(f"--min-caption-words {self.min_caption_words} is above --max-caption-words "
                            f"{self.max_caption_words}")


@dataclass
class ShardScores:
    """What the check of one shard's score file gives: its scores in sample order, or why it cannot be used."""
    shard: str
    samples: int = 0
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    skipped: dict[str, int] = field(default_factory=dict)
    model: str = ""
    error: Optional[str] = None


def check_scores(scores_dir: str, shard: str, against_shard: bool = True) -> ShardScores:
    """Run in a worker: errors come back as values (ordered_map's workers do not pass exceptions on). Without
    `against_shard` the score file alone is read (the scores another task of a split filter checks against its
    shard)."""
    path = scores_path(scores_dir, shard)
    name = Path(shard).name
    if not path.is_file():
        return ShardScores(shard, error=f"shard {shard} has no score file {path}: score the pool with `contrastive "
                                        "data score`, or give the folder of its score files as --scores")
    try:
        metadata, _ = read_metadata(path)
        table = pq.read_table(path, columns=[KEY, SCORE])
    except (DataError, pa.ArrowException, OSError) as e:
        return ShardScores(shard, error=f"shard {shard}: {e}")
    if metadata.shard != name:
        return ShardScores(shard, error=f"shard {shard}: its score file {path} is from another pool: it scores the "
                                        f"shard {metadata.shard}")
    if not against_shard:
        return _scores_of(shard, path, table, metadata.samples, metadata)
    try:
        keys = shard_keys(shard)
    except ShardReadError as e:
        return ShardScores(shard, error=str(e))
    size = os.path.getsize(shard)
    if metadata.shard_bytes != size:
        problem = f"scores a shard of {metadata.shard_bytes} bytes, this one has {size}"
    elif metadata.samples != len(keys) or metadata.shard_keys_sha256 != shard_keys_sha256(keys):
        problem = "scores a shard of other sample keys"
    else:
        problem = None
    if problem is not None:
        return ShardScores(shard, error=f"shard {shard}: its score file {path} is from another pool: it {problem}")
    row_keys = table.column(KEY).to_pylist()
    if _unmatched_row(keys, row_keys) is not None:
        return ShardScores(shard, error=f"shard {shard} is not fully scored in {path}: it has rows of keys the "
                                        "shard does not hold, or not in its order; score the shard again")
    return _scores_of(shard, path, table, len(keys), metadata)


def _scores_of(shard: str, path: Path, table: pa.Table, samples: int, metadata: ScoreMetadata) -> ShardScores:
    rows = table.num_rows
    if samples - rows != sum(metadata.skipped.values()):
        return ShardScores(shard, error=f"shard {shard} is not fully scored in {path}: {rows} rows and "
                                        f"{sum(metadata.skipped.values())} skipped for {count(samples, 'sample')}; "
                                        "score the shard again")
    scores = table.column(SCORE).to_numpy().astype(np.float32)
    if not np.isfinite(scores).all():
        return ShardScores(shard, error=f"shard {shard}: {path} holds non-finite scores")
    return ShardScores(shard, samples, scores, metadata.skipped, metadata.model)


def _unmatched_row(keys: list[str], row_keys: list[str]) -> Optional[str]:
    """The first row key that is not next in the shard's key order (rows are a subsequence of the samples)."""
    position = 0
    for row_key in row_keys:
        while position < len(keys) and keys[position] != row_key:
            position += 1
        if position == len(keys):
            return row_key
        position += 1
    return None


@dataclass(frozen=True)
class ShardCut:
    """A shard's score rule: keep scores above `threshold`, and of those equal to it the first `ties` (None: all)."""
    threshold: float
    ties: Optional[int]


def score_cuts(options: FilterOptions, checked: Sequence[ShardScores]) -> tuple[dict[str, Any], list[ShardCut]]:
    """The rule's summary and each shard's cut, from every shard's scores."""
    scores = np.concatenate([c.scores for c in checked]) if checked else np.zeros(0, np.float32)
    if options.min_score is not None:
        selected = int((scores >= options.min_score).sum())
        return ({"rule": "min_score", "min_score": options.min_score, "scored": len(scores), "selected": selected},
                [ShardCut(options.min_score, None)] * len(checked))
    selected = math.floor(options.fraction() * len(scores))
    summary: dict[str, Any] = {"rule": "keep_fraction", "keep_fraction": options.keep_fraction,
                               "scored": len(scores), "selected": selected}
    if selected == 0:
        return {**summary, "threshold": None}, [ShardCut(math.inf, 0)] * len(checked)
    threshold = np.partition(scores, len(scores) - selected)[len(scores) - selected]
    ties_left = selected - int((scores > threshold).sum())
    summary.update(threshold=float(threshold), at_threshold=int((scores == threshold).sum()),
                   at_threshold_selected=ties_left)
    cuts = []
    for shard in checked:
        ties = min(ties_left, int((shard.scores == threshold).sum()))
        ties_left -= ties
        cuts.append(ShardCut(float(threshold), ties))
    return summary, cuts


@dataclass(frozen=True)
class FilterTask:
    source: SourceShard
    scores: str  # its score file
    cut: ShardCut


@dataclass(frozen=True)
class KeptSample:
    image_sha256: Optional[bytes]  # with --dedup
    source_value: Optional[str]  # with a source field


@dataclass
class ShardOutcome:
    source: SourceShard
    samples: int = 0
    removed: Counter[str] = field(default_factory=Counter)  # REMOVAL_ORDER's reasons, bad samples by their own
    kept: list[KeptSample] = field(default_factory=list)  # the run's samples, in order
    source_samples: Counter[str] = field(default_factory=Counter)  # samples per source field value
    error: Optional[str] = None

    def to_json(self, plan: str) -> dict[str, Any]:
        return {"plan": plan, "shard": self.source.name, "samples": self.samples, "removed": dict(self.removed),
                "kept": [[k.image_sha256.hex() if k.image_sha256 is not None else None, k.source_value]
                         for k in self.kept],
                "source_samples": dict(self.source_samples)}

    @classmethod
    def from_json(cls, source: SourceShard, data: dict[str, Any]) -> ShardOutcome:
        return cls(source, data["samples"], Counter(data["removed"]),
                   [KeptSample(bytes.fromhex(digest) if digest is not None else None, value)
                    for digest, value in data["kept"]], Counter(data["source_samples"]))


def filter_shard(options: FilterOptions, task: FilterTask) -> ShardOutcome:
    """Run in a worker: the shard's kept samples go into its run, errors come back as values."""
    outcome = ShardOutcome(task.source)
    table = pq.read_table(task.scores, columns=[KEY, SCORE])
    row_keys, row_scores = table.column(KEY).to_pylist(), table.column(SCORE).to_numpy()
    row = 0
    ties_left = task.cut.ties
    try:
        with RunWriter(task.source) as run:
            for sample in read_shard(task.source.path):
                outcome.samples += 1
                score: Optional[float] = None
                if row < len(row_keys) and row_keys[row] == sample.key:
                    score, row = float(row_scores[row]), row + 1
                selected = False
                if score is not None:
                    selected = score > task.cut.threshold
                    if score == task.cut.threshold and (ties_left is None or ties_left > 0):
                        selected = True
                        ties_left = None if ties_left is None else ties_left - 1
                bad_metadata: Optional[str] = None  # the reason, once the score rule has seen the sample
                try:
                    metadata = source_metadata(sample.members)
                except BadSample as e:
                    metadata, bad_metadata = {}, e.reason
                source_value = _source_value(options, metadata)
                if source_value is not None:
                    outcome.source_samples[source_value] += 1
                if score is None:
                    outcome.removed[UNSCORED] += 1
                    continue
                if not selected:
                    outcome.removed[SCORE_RULE] += 1
                    continue
                try:
                    reason = bad_metadata or _failed_filter(options, sample, metadata)
                    image_sha256 = hashlib.sha256(_image(sample)).digest() if options.dedup else None
                except BadSample as e:
                    reason = e.reason
                if reason is not None:
                    outcome.removed[reason] += 1
                    continue
                run.write(sample.members, {**metadata, "source_shard": task.source.name, "source_key": sample.key,
                                           "score": score})
                outcome.kept.append(KeptSample(image_sha256, source_value))
    except DataError as e:
        outcome.error = str(e)
    return outcome


def _source_value(options: FilterOptions, metadata: dict[str, Any]) -> Optional[str]:
    if options.source_field is None:
        return None
    value = metadata.get(options.source_field)
    return MISSING_VALUE if value is None else str(value)


def _image(sample: RawSample) -> bytes:
    image = find_image(sample.members)
    if image is None:
        raise BadSample(NO_IMAGE)
    return image[1]


def _failed_filter(options: FilterOptions, sample: RawSample, metadata: dict[str, Any]) -> Optional[str]:
    """The first simple filter the sample fails, or None; raises BadSample for a sample no filter can judge."""
    if options.min_caption_words is not None or options.max_caption_words is not None:
        words = [len(line.split()) for line in sample_captions(sample.members)]
        if options.min_caption_words is not None and min(words) < options.min_caption_words:
            return CAPTION_WORDS
        if options.max_caption_words is not None and max(words) > options.max_caption_words:
            return CAPTION_WORDS
    if options.min_image_size is not None and min(_image_size(sample, metadata)) < options.min_image_size:
        return IMAGE_SIZE
    if options.languages and metadata.get(options.language_field) not in options.languages:
        return LANGUAGE
    return None


def _image_size(sample: RawSample, metadata: dict[str, Any]) -> tuple[int, int]:
    width, height = metadata.get("width"), metadata.get("height")
    if type(width) is int and type(height) is int:  # not bool, not a float
        return width, height
    try:
        with Image.open(io.BytesIO(_image(sample))) as image:  # reads the header; the pixels are never decoded
            return image.size
    except BadSample:
        raise
    except Exception as e:  # PIL raises many types on bytes that are not an image
        raise BadSample(CORRUPT_IMAGE, f"{type(e).__name__}: {e}") from None


@dataclass
class FilterReport:
    out: str
    samples: int
    kept: int
    shards_written: int
    score: dict[str, Any]  # the rule, its threshold, counts
    removed: dict[str, int]  # reason -> samples, in REMOVAL_ORDER (bad samples by their data.validate reason)
    unscored: dict[str, int]  # why the score command skipped the unscored samples, from the score files
    models: list[str]  # that wrote the score files
    per_shard: dict[str, dict[str, int]]  # source shard name -> {"samples", "kept"}
    source_field: Optional[str] = None
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)  # source field value -> {"samples", "kept"}
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        summary = {"command": "filter", "samples": self.samples, "kept": self.kept,
                   "shards_written": self.shards_written, "score": self.score, "removed": self.removed,
                   "unscored": self.unscored, "models": self.models, "options": self.options,
                   "per_shard": self.per_shard}
        if self.source_field is not None:
            summary["per_source"] = {"field": self.source_field, "values": self.per_source}
        return summary

    def summary(self) -> str:
        percent = f" ({100 * self.kept / self.samples:.1f}%)" if self.samples else ""
        lines = [f"filter: kept {self.kept} of {count(self.samples, 'sample')}{percent} in "
                 f"{count(self.shards_written, 'shard')} in {self.out}"]
        score = self.score
        if score["rule"] == "min_score":
            lines.append(f"score: {score['selected']} of {score['scored']} scored samples at or above the minimum "
                         f"{score['min_score']:g}")
        elif score["threshold"] is None:
            lines.append(f"score: the top {score['keep_fraction']} of {score['scored']} scored samples is none")
        else:
            lines.append(f"score: the top {score['keep_fraction']} of {score['scored']} scored samples, "
                         f"{score['selected']}, score >= {score['threshold']:.6g} ({score['at_threshold_selected']} of "
                         f"the {score['at_threshold']} scoring exactly that, first in pool order)")
        removed = ", ".join(f"{label(reason)} {n}" for reason, n in self.removed.items()) or "none"
        lines.append(f"removed: {removed}")
        if self.unscored:
            lines.append("unscored (skipped by the score command): "
                         + ", ".join(f"{label(reason)} {n}" for reason, n in sorted(self.unscored.items())))
        fractions = [v["kept"] / v["samples"] for v in self.per_shard.values() if v["samples"]]
        if fractions:
            lines.append(f"per source shard: kept {100 * min(fractions):.1f}% to {100 * max(fractions):.1f}% of "
                         f"each of {count(len(self.per_shard), 'shard')} (each in {self.out}/{SUMMARY})")
        if self.source_field is not None:
            values = sorted(self.per_source.items(), key=lambda item: (-item[1]["samples"], item[0]))
            shown = ", ".join(f"{value} {v['kept']}/{v['samples']}" for value, v in values[:20])
            more = f", and {len(values) - 20} more in {SUMMARY}" if len(values) > 20 else ""
            lines.append(f"per {self.source_field!r} (kept/samples): {shown}{more}")
        return "\n".join(lines)


def parts_folder(out: str | os.PathLike) -> Path:
    """Where the selection of each source shard waits to be packed into OUT: OUT.parts beside it (for OUT given as
    `filtered/` too)."""
    return beside(out, ".parts")


def beside(out: str | os.PathLike, suffix: str) -> Path:
    """OUT with `suffix` added to its name: a sibling of OUT, never a path inside it."""
    out = Path(out)
    return out.with_name(out.name + suffix)


@dataclass(frozen=True)
class FilterPlan:
    """What every task of one filter shares: the pool, the rule's cut of each shard, and their fingerprint."""
    shards: list[str]
    options: FilterOptions
    checked: list[ShardScores]
    score_summary: dict[str, Any]
    cuts: list[ShardCut]

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps({"shards": [Path(s).name for s in self.shards],
                                            "options": _options_json(self.options)}, sort_keys=True).encode())
        for shard_scores in self.checked:
            digest.update(shard_scores.scores.tobytes())
        return digest.hexdigest()


def plan_filter(mapper: Any, shards: Sequence[str], scores_dir: str | os.PathLike, options: FilterOptions,
                checked_shards: range, progress: Optional[bool]) -> FilterPlan:
    """Every shard's scores, those in `checked_shards` checked against their shard as well; raises for the first
    problem, before anything is written."""
    own = set(checked_shards)
    checks = [partial(check_scores, str(scores_dir), shard, index in own) for index, shard in enumerate(shards)]
    checked = list(bar(mapper(_call, checks), desc="filter: check scores", total=len(shards), unit="shard",
                       progress=progress))
    for shard_scores in checked:
        if shard_scores.error is not None:
            raise DataError(shard_scores.error)
    score_summary, cuts = score_cuts(options, checked)
    return FilterPlan(list(shards), options, checked, score_summary, cuts)


def _call(fn: Any) -> Any:
    return fn()


def select_parts(mapper: Any, plan: FilterPlan, scores_dir: str | os.PathLike, parts: Path, indices: range,
                 progress: Optional[bool]) -> int:
    """Filters the shards at `indices` that have no finished part yet into `parts`: per shard NNNNNN/, the run of
    its kept samples, then NNNNNN.json, its outcome, written last (a part without it is redone). Returns how many
    shards it filtered."""
    check_parts(plan, parts)
    fingerprint = plan.fingerprint
    atomic_write_text(parts / PLAN, json.dumps({"plan": fingerprint, "shards": len(plan.shards)}) + "\n")
    sources = [SourceShard(index, plan.shards[index], str(parts / f"{index:06d}")) for index in indices
               if not _outcome_file(parts, index).is_file()]
    for source in sources:
        shutil.rmtree(source.run, ignore_errors=True)  # what a killed task left
    tasks = [FilterTask(source, str(scores_path(scores_dir, source.path)), plan.cuts[source.index])
             for source in sources]
    for outcome in bar(mapper(partial(filter_shard, plan.options), tasks), desc="filter", total=len(tasks),
                       unit="shard", progress=progress):
        if outcome.error is not None:
            raise DataError(outcome.error)
        atomic_write_text(_outcome_file(parts, outcome.source.index), json.dumps(outcome.to_json(fingerprint)))
    return len(tasks)


def check_parts(plan: FilterPlan, parts: Path) -> None:
    """Parts already in `parts` must be of this plan."""
    plan_file = parts / PLAN
    if plan_file.is_file() and json.loads(plan_file.read_text())["plan"] != plan.fingerprint:
        raise DataError(f"{parts} holds the parts of another filter (other shards, options or scores than these): "
                        "give the options it was started with, or remove it to start over")


def _outcome_file(parts: Path, index: int) -> Path:
    return parts / f"{index:06d}.json"


def pack_parts(plan: FilterPlan, parts: Path, out: str | os.PathLike, max_samples_per_shard: int,
               progress: Optional[bool]) -> FilterReport:
    """The parts' kept samples (every shard has its part), in pool order, into OUT (whole or not at all); the parts
    are removed after."""
    fingerprint = plan.fingerprint
    removed: Counter[str] = Counter()
    per_shard: dict[str, dict[str, int]] = {}
    per_source: dict[str, dict[str, int]] = {}
    seen: set[bytes] = set()
    with atomic_directory(out) as staging, Repacker(staging, max_samples_per_shard) as repacker:
        for index, shard in enumerate(bar(plan.shards, desc="filter: pack", unit="shard", progress=progress)):
            source = SourceShard(index, shard, str(parts / f"{index:06d}"))
            data = json.loads(_outcome_file(parts, index).read_text())
            if data["plan"] != fingerprint:
                raise DataError(f"{_outcome_file(parts, index)} is a part of another filter than this one: remove "
                                f"{parts} to start over")
            outcome = ShardOutcome.from_json(source, data)
            removed.update(outcome.removed)
            shard_counts = per_shard[source.name] = {"samples": outcome.samples, "kept": 0}
            for value, n in outcome.source_samples.items():
                per_source.setdefault(value, {"samples": 0, "kept": 0})["samples"] += n
            for members, kept in zip(repacker.take_run(source, remove=False), outcome.kept):
                if kept.image_sha256 is not None:
                    if kept.image_sha256 in seen:
                        removed[DUPLICATE] += 1
                        continue
                    seen.add(kept.image_sha256)
                repacker.write(members)
                shard_counts["kept"] += 1
                if kept.source_value is not None:
                    per_source[kept.source_value]["kept"] += 1
        repacker.close()
        unscored: Counter[str] = Counter()
        for shard_scores in plan.checked:
            unscored.update(shard_scores.skipped)
        options = plan.options
        report = FilterReport(
            out=str(out), samples=sum(v["samples"] for v in per_shard.values()), kept=repacker.samples,
            shards_written=len(repacker.shards), score=plan.score_summary, removed=_in_removal_order(removed, options),
            unscored=dict(sorted(unscored.items())), models=sorted({c.model for c in plan.checked}),
            per_shard=per_shard, source_field=options.source_field, per_source=dict(sorted(per_source.items())),
            options={"max_samples_per_shard": max_samples_per_shard, **_options_json(options)})
        atomic_write_text(Path(staging) / SUMMARY, json.dumps(report.to_json(), indent=2) + "\n")
    shutil.rmtree(parts)
    return report


def _options_json(options: FilterOptions) -> dict[str, Any]:
    return {**vars(options), "languages": list(options.languages)}


@dataclass(frozen=True)
class TaskReport:
    """What one task of a split filter did."""
    task: tuple[int, int]
    shards: list[str]  # its slice of the pool
    filtered: int  # of them, those it filtered (the others had a finished part)
    parts: Path
    finished: int  # finished parts of the whole pool, after this task
    pool: int

    def summary(self) -> str:
        index, tasks = self.task
        done = (f"{count(self.filtered, 'shard')} filtered" if self.filtered == len(self.shards) else
                f"{self.filtered} filtered, {len(self.shards) - self.filtered} had finished before")
        slice_ = f"{self.shards[0]} to {self.shards[-1]}" if self.shards else "no shard"
        return (f"filter task {index}/{tasks}: {count(len(self.shards), 'shard')} ({slice_}), {done}, into "
                f"{self.parts}; {self.finished} of {count(self.pool, 'shard')} of the pool finished: once every task "
                "has, the same command without --task writes OUT")


def filter_pool(patterns: Sequence[str], scores_dir: str | os.PathLike, out: str | os.PathLike,
                options: FilterOptions, max_samples_per_shard: int = 1000, workers: int = 1,
                progress: Optional[bool] = None, task: Optional[tuple[int, int]] = None) -> FilterReport | TaskReport:
    """The whole filter (every shard without a finished part is filtered, then all are packed into OUT), or with
    `task` = (I, N) only the I-th of N contiguous slices of the pool, into OUT.parts. The output is the same bytes
    whatever the workers and tasks: each part depends on its shard and the plan alone, and packing reads them in
    pool order."""
    shards = _check_arguments(patterns, out, options, max_samples_per_shard, task)
    indices = range(len(shards)) if task is None else task_slice(len(shards), *task)
    parts = parts_folder(out)
    with ordered_map(workers) as mapper:
        plan = plan_filter(mapper, shards, scores_dir, options, indices, progress)
        filtered = select_parts(mapper, plan, scores_dir, parts, indices, progress)
    if task is None:
        return pack_parts(plan, parts, out, max_samples_per_shard, progress)
    finished = sum(_outcome_file(parts, index).is_file() for index in range(len(shards)))
    return TaskReport(task, [Path(shards[i]).name for i in indices], filtered, parts, finished, len(shards))


def check_filter(patterns: Sequence[str], scores_dir: str | os.PathLike, out: str | os.PathLike,
                 options: FilterOptions, max_samples_per_shard: int = 1000, workers: int = 1,
                 progress: Optional[bool] = None) -> FilterPlan:
    """Every check the filter's tasks make before they write, over the whole pool: what `submit filter` runs before
    it submits."""
    shards = _check_arguments(patterns, out, options, max_samples_per_shard, None)
    with ordered_map(workers) as mapper:
        plan = plan_filter(mapper, shards, scores_dir, options, range(len(shards)), progress)
    check_parts(plan, parts_folder(out))
    return plan


def _check_arguments(patterns: Sequence[str], out: str | os.PathLike, options: FilterOptions,
                     max_samples_per_shard: int, task: Optional[tuple[int, int]]) -> list[str]:
    """The pool's shards, once the arguments are checked."""
    options.check()
    shards = pool_shards(patterns)
    check_output_folder(out)
    if max_samples_per_shard < 1:
        raise DataError(f"--max-samples-per-shard must be at least 1, got {max_samples_per_shard}")
    if task is not None and not 0 <= task[0] < task[1]:
        raise DataError(f"--task {task[0]}/{task[1]}: the task index must be in 0 to {task[1] - 1}")
    return shards


def task_slice(shards: int, index: int, tasks: int) -> range:
    """Task `index` of `tasks`'s contiguous slice of the pool (empty for a task beyond the shard count)."""
    slices = contiguous_slices(shards, tasks)
    return slices[index] if index < len(slices) else range(0)


def _in_removal_order(removed: Counter[str], options: FilterOptions) -> dict[str, int]:
    """Every rule in force (0 where it removed nothing), bad samples by reason where there are any."""
    in_force = {UNSCORED, SCORE_RULE}
    if options.min_caption_words is not None or options.max_caption_words is not None:
        in_force.add(CAPTION_WORDS)
    if options.min_image_size is not None:
        in_force.add(IMAGE_SIZE)
    if options.languages:
        in_force.add(LANGUAGE)
    if options.dedup:
        in_force.add(DUPLICATE)
    rank = {reason: i for i, reason in enumerate(REMOVAL_ORDER)}
    reasons = sorted(in_force | set(removed), key=lambda r: (rank.get(r, rank[BAD_SAMPLE]), r))
    return {reason: removed[reason] for reason in reasons}
