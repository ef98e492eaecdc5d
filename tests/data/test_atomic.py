"""data.atomic.atomic_directory: a folder appears complete or not at all."""
import os

import pytest

from data.atomic import atomic_directory


def test_a_folder_appears_whole_when_the_block_ends(tmp_path):
    with atomic_directory(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("a")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.txt").write_text("b")
        assert not (tmp_path / "out").exists()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "out", os.path.join("out", "a.txt"), os.path.join("out", "sub"), os.path.join("out", "sub", "b.txt")]


def test_a_block_that_raises_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_directory(tmp_path / "out") as staging:
            (staging / "a.txt").write_text("a")
            raise RuntimeError("half way")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_folder_is_taken_a_non_empty_one_refused_and_a_killed_writers_staging_removed(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / ".out.staging-123").mkdir()  # what a kill -9 leaves
    with atomic_directory(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(FileExistsError, match="out exists and is not an empty folder"):
        with atomic_directory(tmp_path / "out"):
            pass
