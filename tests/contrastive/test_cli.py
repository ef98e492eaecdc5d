import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from contrastive.cli import main


def test_console_script_help_runs_in_a_fresh_process():
    script = Path(sys.executable).with_name("contrastive")  # installed by `pip install -e .`
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "data" in done.stdout and "usage: contrastive" in done.stdout


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["data", "synth", "--help"],
                                  ["data", "convert", "--help"], ["data", "tokenizer", "--help"],
                                  ["data", "inspect", "--help"]])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["data"], ["nonsense"], ["data", "convert", "only-src"],
                                  ["data", "convert", "a", "b", "--format", "gif"], ["data", "synth", "x", "--seed", "one"]])
def test_usage_errors_exit_two(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_data_errors_are_one_line_and_exit_two(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path / "shard-{000000..000001}.tar")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: pattern ") and "matches no file" in err and err.count("\n") == 1
    assert main(["data", "convert", str(tmp_path / "rows.csv"), str(tmp_path / "out"),
                 "--captions-template", "a {}"]) == 2
    assert "--captions-template applies to ImageFolder sources only" in capsys.readouterr().err


def test_convert_inspect_and_tokenizer_commands(tmp_path, capsys):
    (tmp_path / "src" / "red_circle").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "src" / "red_circle" / f"{i}.png")
    (tmp_path / "src" / "red_circle" / "3.png").write_bytes(b"broken")
    assert main(["data", "convert", str(tmp_path / "src"), str(tmp_path / "out"), "--captions-template", "a {}",
                 "--captions-template", "one {}", "--max-samples-per-shard", "2"]) == 0
    assert "converted 3 of 4 records into 2 shards" in capsys.readouterr().out
    with tarfile.open(tmp_path / "out" / "shard-000001.tar") as tar:
        assert tar.extractfile("000000002.txt").read() == b"a red circle\none red circle"
    for shards in (str(tmp_path / "out" / "shard-*.tar"), str(tmp_path / "out")):  # a pattern, or convert's folder
        assert main(["data", "inspect", shards]) == 0
        assert "3 (3 good, 0 bad)" in capsys.readouterr().out
    assert main(["data", "tokenizer", str(tmp_path / "out"), str(tmp_path / "tok.json"), "--vocab-size", "300"]) == 0
    assert "tok.json" in capsys.readouterr().out and (tmp_path / "tok.json").is_file()


def test_synth_command_writes_the_layout(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path / "d"), "--train-samples", "4", "--image-size", "16",
                 "--images-per-class", "1", "--retrieval-images", "2", "--seed", "5"]) == 0
    assert "4 training samples in 1 shards" in capsys.readouterr().out
    assert (tmp_path / "d" / "train" / "shard-000000.tar").is_file() and (tmp_path / "d" / "tokenizer.json").is_file()
    assert main(["data", "synth", str(tmp_path / "d"), "--image-size", "8"]) == 2
    assert "image size must be at least 16" in capsys.readouterr().err
