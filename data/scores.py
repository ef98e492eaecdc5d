"""The score file format: one Parquet file of per-sample scores per shard, as `contrastive data score` writes it
and `contrastive data filter` reads it.

For shard `.../NAME.tar` the file is `OUT/NAME.parquet` (a name not ending in .tar keeps its whole name), one row
per scored sample in the shard's sample order:

    key               string              the sample's __key__
    shard             string              the shard's file name, NAME.tar
    score             float32             max(similarities): the sample's best caption
    similarities      list<float32>       one per caption line of its txt, in order
    image_embedding   list<float16>       with --embeddings: the image vector `score` is the cosine of
    text_embeddings   list<list<float16>> with --embeddings: one vector per caption line

so that score == <image_embedding, text_embeddings[argmax(similarities)]> (up to float16 rounding). Samples that
could not be scored (undecodable image, missing or empty caption, ...) have no row; the schema metadata (utf-8
key-value pairs) counts them by reason and names what was scored:

    contrastive.shard               NAME.tar
    contrastive.shard_bytes         the shard file's size in bytes
    contrastive.shard_keys_sha256   sha256 hex of every key of the shard (unscored ones too) in order, "\\n"-joined
    contrastive.samples             number of samples in the shard
    contrastive.model               the model (run dir) as given to the command
    contrastive.skipped             JSON {reason: count} of the samples without a row

A file exists under its name only once complete (written to a temp file, fsynced, renamed).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.atomic import AtomicFile
from data.errors import DataError

T = TypeVar("T")

SUFFIX = ".parquet"
SHARD_SUFFIX = ".tar"

KEY = "key"
SHARD = "shard"
SCORE = "score"
SIMILARITIES = "similarities"
IMAGE_EMBEDDING = "image_embedding"
TEXT_EMBEDDINGS = "text_embeddings"

META_SHARD = "contrastive.shard"
META_SHARD_BYTES = "contrastive.shard_bytes"
META_SHARD_KEYS_SHA256 = "contrastive.shard_keys_sha256"
META_SAMPLES = "contrastive.samples"
META_MODEL = "contrastive.model"
META_SKIPPED = "contrastive.skipped"
META_KEYS = (META_SHARD, META_SHARD_BYTES, META_SHARD_KEYS_SHA256, META_SAMPLES, META_MODEL, META_SKIPPED)

COLUMN_TYPES = {
    KEY: pa.string(),
    SHARD: pa.string(),
    SCORE: pa.float32(),
    SIMILARITIES: pa.list_(pa.float32()),
    IMAGE_EMBEDDING: pa.list_(pa.float16()),
    TEXT_EMBEDDINGS: pa.list_(pa.list_(pa.float16())),
}
REQUIRED_COLUMNS = (KEY, SHARD, SCORE, SIMILARITIES)
EMBEDDING_COLUMNS = (IMAGE_EMBEDDING, TEXT_EMBEDDINGS)


@dataclass(frozen=True)
class ScoreMetadata:
    shard: str  # the shard's file name, NAME.tar
    shard_bytes: int
    shard_keys_sha256: str
    samples: int
    model: str
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def scored(self) -> int:
        return self.samples - sum(self.skipped.values())

    def to_parquet(self) -> dict[bytes, bytes]:
        values = {META_SHARD: self.shard, META_SHARD_BYTES: str(self.shard_bytes),
                  META_SHARD_KEYS_SHA256: self.shard_keys_sha256, META_SAMPLES: str(self.samples),
                  META_MODEL: self.model, META_SKIPPED: json.dumps(self.skipped, sort_keys=True)}
        return {k.encode("utf-8"): v.encode("utf-8") for k, v in values.items()}

    @classmethod
    def from_parquet(cls, raw: Optional[dict[bytes, bytes]], path: Path) -> ScoreMetadata:
        values = {k.decode("utf-8"): v.decode("utf-8") for k, v in (raw or {}).items()}
        missing = [k for k in META_KEYS if k not in values]
        if missing:
            raise DataError(f"{path} is not a score file: its Parquet metadata lacks {', '.join(missing)}")
        try:
            skipped = json.loads(values[META_SKIPPED])
            if not isinstance(skipped, dict) or not all(isinstance(n, int) for n in skipped.values()):
                raise ValueError(f"{META_SKIPPED} is not a JSON object of counts")
            return cls(shard=values[META_SHARD], shard_bytes=int(values[META_SHARD_BYTES]),
                       shard_keys_sha256=values[META_SHARD_KEYS_SHA256], samples=int(values[META_SAMPLES]),
                       model=values[META_MODEL], skipped=skipped)
        except ValueError as e:
            raise DataError(f"{path}: malformed score metadata ({e})") from None


def scores_path(out_dir: str | os.PathLike, shard: str | os.PathLike) -> Path:
    """OUT/NAME.parquet for shard .../NAME.tar."""
    name = Path(shard).name
    return Path(out_dir) / (name.removesuffix(SHARD_SUFFIX) + SUFFIX)


def shard_keys_sha256(keys: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def _lists(rows: Sequence[np.ndarray], value_type: pa.DataType) -> pa.Array:
    """One list per row, from arrays whose first axis is the list's length."""
    lengths = np.array([len(row) for row in rows], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    values = np.concatenate(rows) if rows else np.zeros((0,), dtype=value_type.to_pandas_dtype())
    return pa.ListArray.from_arrays(offsets, pa.array(values, type=value_type))


def score_table(keys: Sequence[str], shard: str, similarities: Sequence[np.ndarray],
                image_embeddings: Optional[Sequence[np.ndarray]] = None,
                text_embeddings: Optional[Sequence[np.ndarray]] = None) -> pa.Table:
    """The rows of one shard: similarities[i] is [captions_i] float32; with embeddings, image_embeddings[i] is [D]
    and text_embeddings[i] is [captions_i, D] (stored as float16)."""
    if (image_embeddings is None) != (text_embeddings is None):
        raise ValueError("give both image and text embeddings, or neither")
    if any(len(s) == 0 for s in similarities):
        raise ValueError("every scored sample has at least one caption similarity")
    similarities = [np.asarray(s, dtype=np.float32) for s in similarities]
    scores = np.array([s.max() for s in similarities], dtype=np.float32)
    columns = {KEY: pa.array(keys, type=pa.string()), SHARD: pa.array([shard] * len(keys), type=pa.string()),
               SCORE: pa.array(scores, type=pa.float32()), SIMILARITIES: _lists(similarities, pa.float32())}
    if image_embeddings is not None and text_embeddings is not None:
        images = [np.asarray(e, dtype=np.float16).reshape(-1) for e in image_embeddings]
        texts = [np.asarray(e, dtype=np.float16) for e in text_embeddings]
        inner = _lists([vector for sample in texts for vector in sample], pa.float16())
        lengths = np.array([len(sample) for sample in texts], dtype=np.int32)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        columns[IMAGE_EMBEDDING] = _lists(images, pa.float16())
        columns[TEXT_EMBEDDINGS] = pa.ListArray.from_arrays(offsets, inner)
    return pa.table(columns, schema=pa.schema([(name, COLUMN_TYPES[name]) for name in columns]))


def write_scores(path: str | os.PathLike, table: pa.Table, metadata: ScoreMetadata) -> None:
    """Atomically: the file appears under `path` complete, or not at all."""
    table = table.replace_schema_metadata(metadata.to_parquet())
    with AtomicFile(path) as out:
        pq.write_table(table, out.file, compression="zstd")


def read_scores(path: str | os.PathLike) -> tuple[pa.Table, ScoreMetadata]:
    """A score file's rows (with the embedding columns if it has them) and its metadata."""
    path = Path(path)
    table = _read(path, pq.read_table)
    metadata = _checked(table.schema, path)
    return table.replace_schema_metadata(None), metadata


def read_metadata(path: str | os.PathLike) -> tuple[ScoreMetadata, bool]:
    """A score file's metadata and whether it holds the embedding columns, without reading its rows."""
    path = Path(path)
    schema = _read(path, pq.read_schema)
    return _checked(schema, path), IMAGE_EMBEDDING in schema.names


def _read(path: Path, read: Callable[[Path], T]) -> T:
    """`read(path)` (the rows, or only the schema), its failures as one error naming the file."""
    try:
        return read(path)
    except FileNotFoundError:
        raise DataError(f"score file {path} does not exist") from None
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path} is not a readable Parquet score file: {e}") from None


def _checked(schema: pa.Schema, path: Path) -> ScoreMetadata:
    for name in (*REQUIRED_COLUMNS, *(c for c in EMBEDDING_COLUMNS if c in schema.names)):
        if name not in schema.names:
            raise DataError(f"{path} is not a score file: it has no column {name!r} (columns: "
                            f"{', '.join(schema.names)})")
        if schema.field(name).type != COLUMN_TYPES[name]:
            raise DataError(f"{path}: column {name!r} is {schema.field(name).type}, expected {COLUMN_TYPES[name]}")
    if (IMAGE_EMBEDDING in schema.names) != (TEXT_EMBEDDINGS in schema.names):
        raise DataError(f"{path} has only one of the columns {IMAGE_EMBEDDING!r}, {TEXT_EMBEDDINGS!r}")
    return ScoreMetadata.from_parquet(schema.metadata, path)
