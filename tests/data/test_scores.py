"""data.scores: the score file format, written and read back with its types and metadata; files that are not score
files are refused by name."""
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.errors import DataError
from data.scores import (ScoreMetadata, read_metadata, read_scores, score_table, scores_path, shard_keys_sha256,
                         write_scores)

METADATA = ScoreMetadata("shard-000007.tar", 1234, shard_keys_sha256(["a", "b", "c"]), 3, "runs/demo",
                         {"corrupt_image": 1})


def _table(embeddings: bool) -> pa.Table:
    similarities = [np.array([0.1, 0.4, -0.2]), np.array([0.3])]
    if not embeddings:
        return score_table(["a", "c"], "shard-000007.tar", similarities)
    return score_table(["a", "c"], "shard-000007.tar", similarities, [np.full(4, 0.5), np.full(4, -0.5)],
                       [np.eye(3, 4), np.ones((1, 4))])


def test_names_follow_the_shard_and_the_key_digest_is_of_the_newline_joined_keys(tmp_path):
    assert scores_path(tmp_path, "/pool/shard-000007.tar") == tmp_path / "shard-000007.parquet"
    assert scores_path("out", "pool/x.tar.gz") == scores_path("out", "x.tar.gz") and str(
        scores_path("out", "x.tar.gz")).endswith("x.tar.gz.parquet")
    assert shard_keys_sha256(["a", "b"]) == hashlib.sha256(b"a\nb").hexdigest()


@pytest.mark.parametrize("embeddings", [False, True])
def test_a_written_file_reads_back_with_its_types_rows_and_metadata(tmp_path, embeddings):
    path = tmp_path / "shard-000007.parquet"
    write_scores(path, _table(embeddings), METADATA)
    table, metadata = read_scores(path)
    assert metadata == METADATA and metadata.scored == 2 and read_metadata(path) == (METADATA, embeddings)
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == ["a", "c"] and {r["shard"] for r in rows} == {"shard-000007.tar"}
    assert [r["score"] for r in rows] == [np.float32(0.4), np.float32(0.3)]
    assert table.schema.field("score").type == pa.float32()
    assert table.schema.field("similarities").type == pa.list_(pa.float32())
    if embeddings:
        assert table.schema.field("image_embedding").type == pa.list_(pa.float16())
        assert table.schema.field("text_embeddings").type == pa.list_(pa.list_(pa.float16()))
        assert rows[0]["text_embeddings"] == np.eye(3, 4).tolist() and rows[1]["image_embedding"] == [-0.5] * 4
    else:
        assert table.column_names == ["key", "shard", "score", "similarities"]
    raw = pq.read_schema(path).metadata
    assert json.loads(raw[b"contrastive.skipped"]) == {"corrupt_image": 1}
    assert raw[b"contrastive.samples"] == b"3" and raw[b"contrastive.model"] == b"runs/demo"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_files_that_are_not_score_files_are_refused_by_name(tmp_path):
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"key": ["a"]}), plain)
    with pytest.raises(DataError, match=f"{plain} is not a score file: it has no column 'shard'"):
        read_scores(plain)
    no_metadata = tmp_path / "no_metadata.parquet"
    pq.write_table(_table(False), no_metadata)
    with pytest.raises(DataError, match="is not a score file: its Parquet metadata lacks contrastive.shard, "):
        read_metadata(no_metadata)
    text = tmp_path / "text.parquet"
    text.write_text("hello")
    with pytest.raises(DataError, match=f"{text} is not a readable Parquet score file"):
        read_scores(text)
    with pytest.raises(DataError, match="score file .*missing.parquet does not exist"):
        read_scores(tmp_path / "missing.parquet")
