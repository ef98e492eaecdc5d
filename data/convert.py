"""`contrastive data convert SRC OUT`: image-caption sources into shards (img2dataset layout).

Sources: a table (CSV, TSV or JSONL; brace/glob patterns for several) with an image path and a
caption per row, paths relative to the table's directory; or an ImageFolder tree (one folder per
class) whose captions come from templates (`a photo of a {}.`, one caption line per template).
Each image is decoded before it is written; a record with a missing file, a corrupt image, a
missing, empty or non-UTF-8 caption is skipped, counted, and listed in OUT/skipped.jsonl.
A sample's key is its record's index in the source, so keys are unique and map back to it.

OUT/skipped.jsonl is written last, so OUT with shards but without it is a convert that was stopped (or
failed) before it finished. Convert never adds to shards already in OUT, nor resumes: that is only exact
with the same source and options, which it cannot check. It refuses, with the command that clears OUT.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

from PIL import Image

from data.atomic import atomic_write_text
from data.errors import DataError
from data.patterns import expand_patterns
from data.plural import count
from data.progress import bar
from data.shards import ShardWriter, sample_key
from data.validate import LABELS, MALFORMED_RECORD, MISSING_FILE, BadSample, caption_lines, load_image
from data.workers import ordered_map

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}  # shard extension -> PIL format
JPEG_QUALITY = 95
DEFAULT_TEMPLATE = "a photo of a {}."
SKIPPED_LIST = "skipped.jsonl"
# What convert writes into OUT: shards, the skipped list, and their temp files (data.atomic.AtomicFile)
OWN_FILE = re.compile(r"(shard-\d{6}\.tar|skipped\.jsonl)|\.(shard-\d{6}\.tar|skipped\.jsonl)\.\w+\.tmp")


@dataclass
class SourceRecord:
    source: str  # where it came from, for skipped.jsonl: "table.csv:12" or "cat/001.jpg"
    image_path: Optional[Path]  # None: the record names no image
    captions: Optional[str]  # newline-separated; may hold surrogates for non-UTF-8 bytes; None: no caption
    fields: dict[str, Any] = field(default_factory=dict)  # extra metadata for KEY.json
    problem: Optional[str] = None  # set when the record itself is unusable (e.g. malformed JSON)


@dataclass(frozen=True)
class ConvertOptions:
    resize_longer: Optional[int] = None  # shrink so the longer side is at most this; never enlarge
    image_format: Optional[str] = None  # jpg | png | webp; None keeps jpg/png/webp sources as they are


@dataclass
class ConvertReport:
    records: int
    samples: int
    shards: list[Path]
    skipped: dict[str, int]  # reason -> count
    skipped_list: Path

    def summary(self) -> str:
        line = f"converted {self.samples} of {count(self.records, 'record')} into {count(len(self.shards), 'shard')}"
        if self.shards:
            line += f" in {self.shards[0].parent}"
        if self.skipped:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped.items()))
            line += f"; skipped {sum(self.skipped.values())} ({reasons}), listed in {self.skipped_list}"
        return line


def table_records(patterns: Sequence[str], image_column: str = "image",
                  caption_column: str = "caption") -> Iterator[SourceRecord]:
    """Rows of CSV (.csv), TSV (.tsv) or JSON-lines (.jsonl) files; a JSONL caption may be a list."""
    for table in map(Path, expand_patterns(patterns, noun="table pattern", allow_pipe=False)):
        suffix = table.suffix.lower()
        if suffix in (".csv", ".tsv"):
            yield from _csv_records(table, image_column, caption_column, "\t" if suffix == ".tsv" else ",")
        elif suffix == ".jsonl":
            yield from _jsonl_records(table, image_column, caption_column)
        else:
            raise DataError(f"{table}: unknown table format {suffix!r}; expected .csv, .tsv or .jsonl")


def _open_text(path: Path) -> io.TextIOWrapper:
    # surrogateescape keeps undecodable bytes, so one bad row is skipped instead of failing the file
    return open(path, encoding="utf-8", errors="surrogateescape", newline="")


def _csv_records(table: Path, image_column: str, caption_column: str, delimiter: str) -> Iterator[SourceRecord]:
    with _open_text(table) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = reader.fieldnames or []
        for column in (image_column, caption_column):
            if column not in columns:
                raise DataError(f"{table}: no column {column!r}; columns are {', '.join(columns) or '(none)'} "
                                f"(choose them with --image-column/--caption-column)")
        for row in reader:
            image = row.get(image_column) or ""
            fields = {k: v for k, v in row.items() if k not in (image_column, caption_column) and k is not None}
            yield SourceRecord(f"{table.name}:{reader.line_num}", table.parent / image if image else None,
                               row.get(caption_column), fields)


def _jsonl_records(table: Path, image_column: str, caption_column: str) -> Iterator[SourceRecord]:
    with _open_text(table) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            source = f"{table.name}:{line_number}"
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                yield SourceRecord(source, None, None, problem=f"{LABELS[MALFORMED_RECORD]}: {e}")
                continue
            image, captions = row.get(image_column), row.get(caption_column)
            if isinstance(captions, list):
                captions = "\n".join(str(c) for c in captions)
            elif captions is not None:
                captions = str(captions)
            fields = {k: v for k, v in row.items() if k not in (image_column, caption_column)}
            yield SourceRecord(source, table.parent / str(image) if image else None, captions, fields)


def imagefolder_records(root: str | os.PathLike,
                        templates: Sequence[str] = (DEFAULT_TEMPLATE,)) -> Iterator[SourceRecord]:
    """Images of `root/CLASS/*`, classes in sorted folder order. Class names come from
    root/classnames.txt (one per line, sorted folder order) if present, else from the folder
    name with underscores as spaces. Templates hold `{}` (or `{c}`) where the class name goes."""
    root = Path(root)
    for template in templates:
        if "{}" not in template and "{c}" not in template:
            raise DataError(f"caption template {template!r} has no '{{}}' for the class name")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"{root} has no class folders (expected an ImageFolder tree: {root}/CLASS/IMAGE)")
    names_file = root / "classnames.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) != len(folders):
            raise DataError(f"{names_file} has {len(names)} names for {len(folders)} class folders")
    else:
        names = [folder.name.replace("_", " ") for folder in folders]
    for label, (folder, name) in enumerate(zip(folders, names)):
        captions = "\n".join(t.replace("{}", name).replace("{c}", name) for t in templates)
        for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            yield SourceRecord(str(image.relative_to(root)), image, captions,
                               {"class": folder.name, "label": label, "classname": name})


def _encode(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": JPEG_QUALITY} if image_format == "jpg" else {}
    image.convert("RGB").save(buffer, format=FORMATS[image_format], **options)
    return buffer.getvalue()


def _image_bytes(record: SourceRecord) -> bytes:
    if record.image_path is None:
        raise BadSample(MISSING_FILE, "the record names no image")
    try:
        return record.image_path.read_bytes()
    except OSError as e:
        raise BadSample(MISSING_FILE, str(e)) from None


def process_record(options: ConvertOptions,
                   item: tuple[int, SourceRecord]) -> tuple[int, SourceRecord, Union[dict[str, bytes], str]]:
    """(index, record, tar members) for a good record, (index, record, reason label) for a bad one."""
    index, record = item
    if record.problem is not None:
        return index, record, record.problem
    try:
        captions = caption_lines(record.captions)
        data = _image_bytes(record)
        image = load_image(data)
    except BadSample as e:
        return index, record, e.label
    source_format = {v: k for k, v in FORMATS.items()}.get(image.format or "")
    target_format = options.image_format or source_format or "jpg"
    original_size = image.size
    if options.resize_longer is not None and max(image.size) > options.resize_longer:
        scale = options.resize_longer / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    keep_bytes = image.size == original_size and target_format == source_format
    key = sample_key(index)
    metadata = {**record.fields, "key": key, "caption": captions[0], "source": record.source,
                "width": image.width, "height": image.height,
                "original_width": original_size[0], "original_height": original_size[1]}
    return index, record, {
        target_format: data if keep_bytes else _encode(image, target_format),
        "txt": "\n".join(captions).encode("utf-8"),
        "json": json.dumps(metadata, sort_keys=True).encode("utf-8"),
    }


def convert(records: Iterable[SourceRecord], out_dir: str | os.PathLike, options: ConvertOptions = ConvertOptions(),
            max_samples_per_shard: int = 1000, max_shard_bytes: Optional[int] = None, workers: int = 1,
            progress: Optional[bool] = None, total: Optional[int] = None) -> ConvertReport:
    """`records` into shards in `out_dir`; `total`, the number of records if known, gives the progress bar its ETA."""
    out_dir = Path(out_dir)
    if options.image_format is not None and options.image_format not in FORMATS:
        raise DataError(f"image format {options.image_format!r} is not one of {', '.join(FORMATS)}")
    if options.resize_longer is not None and options.resize_longer < 1:
        raise DataError(f"--resize-longer must be positive, got {options.resize_longer}")
    shards = _shards(out_dir)
    if shards and (out_dir / SKIPPED_LIST).exists():
        raise DataError(f"{out_dir} already holds shards: a finished convert ({count(len(shards), 'shard')}, "
                        f"{SKIPPED_LIST}); convert into another directory, or remove them first with "
                        f"`{_cleanup_command(out_dir)}`")
    if shards:
        raise DataError(f"{out_dir} already holds shards: {count(len(shards), 'shard')} of a convert that did not "
                        f"finish (no {SKIPPED_LIST}); convert does not resume or add to them: remove them with "
                        f"`{_cleanup_command(out_dir)}` and run it again")
    skipped: Counter[str] = Counter()
    skipped_lines: list[str] = []
    records_seen = 0
    work = partial(process_record, options)
    with ShardWriter(out_dir, max_samples=max_samples_per_shard, max_bytes=max_shard_bytes) as writer, \
            ordered_map(workers) as mapper:
        results = mapper(work, enumerate(records))
        for index, record, outcome in bar(results, desc="convert", total=total, progress=progress):
            records_seen += 1
            if isinstance(outcome, str):
                reason = outcome.split(":")[0]
                skipped[reason] += 1
                skipped_lines.append(json.dumps({"source": record.source, "reason": outcome,
                                                 "image": str(record.image_path) if record.image_path else None}))
            else:
                writer.write(sample_key(index), outcome)
    if records_seen == 0:
        raise DataError("the source holds no records")
    skipped_list = out_dir / SKIPPED_LIST
    atomic_write_text(skipped_list, "".join(f"{line}\n" for line in skipped_lines))
    return ConvertReport(records_seen, writer.samples_written, writer.shards, dict(skipped), skipped_list)


def describe_stopped(out_dir: str | os.PathLike) -> str:
    """What a stopped convert left in `out_dir` and what to do next, for the one line the command prints."""
    out_dir = Path(out_dir)
    shards = _shards(out_dir)
    if (out_dir / SKIPPED_LIST).exists():
        return f"the convert had finished: {out_dir} holds its {count(len(shards), 'shard')} and {SKIPPED_LIST}"
    if not shards:
        return f"no shard was complete, {out_dir} holds none; run the same command again to convert from the start"
    return (f"{out_dir} holds the first {count(len(shards), 'complete shard')} and no {SKIPPED_LIST}; convert "
            f"does not resume: run `{_cleanup_command(out_dir)}`, then the same command again")


def _shards(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("shard-*.tar")) if out_dir.is_dir() else []


def _cleanup_command(out_dir: Path) -> str:
    """`rm -r OUT` when OUT holds only what convert writes; otherwise remove just that, keeping the rest."""
    quoted = shlex.quote(str(out_dir))
    if all(OWN_FILE.fullmatch(p.name) for p in out_dir.iterdir()):
        return f"rm -r {quoted}"
    skipped = f" {shlex.quote(str(out_dir / SKIPPED_LIST))}" if (out_dir / SKIPPED_LIST).exists() else ""
    return f"rm {quoted}/shard-*.tar{skipped}"
