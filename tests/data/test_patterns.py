from pathlib import Path

import pytest

from data.errors import DataError
from data.patterns import expand_patterns
from tests.data.loader_fixtures import write_dataset


def test_braces_globs_and_pipes(tmp_path: Path):
    write_dataset(tmp_path, num_shards=3, per_shard=1)
    braces = expand_patterns([str(tmp_path / "shard-{000000..000002}.tar")])
    assert [Path(u).name for u in braces] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert expand_patterns([str(tmp_path / "shard-*.tar")]) == braces
    assert expand_patterns(["pipe:cat a{0..1}.tar"]) == ["pipe:cat a0.tar", "pipe:cat a1.tar"]
    assert expand_patterns([str(tmp_path / "shard-000002.tar"), str(tmp_path / "shard-00000[01].tar")]) == \
        [braces[2], braces[0], braces[1]]


def test_errors_name_the_pattern_and_what_it_is_for(tmp_path: Path):
    write_dataset(tmp_path, num_shards=2, per_shard=1)
    with pytest.raises(DataError, match=r"^pattern '.*nothing-\*\.tar' matches no file"):
        expand_patterns([str(tmp_path / "nothing-*.tar")])
    with pytest.raises(DataError, match=r"1 file missing, first .*shard-000002\.tar"):
        expand_patterns([str(tmp_path / "shard-{000000..000002}.tar")])
    with pytest.raises(DataError, match=r"matches no file"):
        expand_patterns([str(tmp_path / "shard-{000003..000004}.tar")])
    with pytest.raises(DataError, match=r"table pattern 'pipe:cat t.csv' matches no file"):
        expand_patterns(["pipe:cat t.csv"], noun="table pattern", allow_pipe=False)
    with pytest.raises(DataError, match="no pattern given"):
        expand_patterns([])


def test_a_folder_stands_for_its_shards(tmp_path: Path):
    write_dataset(tmp_path, num_shards=3, per_shard=1)
    (tmp_path / "notes.txt").write_text("not a shard")
    assert expand_patterns([str(tmp_path)]) == expand_patterns([str(tmp_path / "shard-*.tar")])
    assert expand_patterns([f"{tmp_path}/"]) == expand_patterns([str(tmp_path / "shard-*.tar")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"shard pattern '.*empty': folder .*empty holds no \.tar shards"):
        expand_patterns([str(tmp_path / "empty")], noun="shard pattern")
