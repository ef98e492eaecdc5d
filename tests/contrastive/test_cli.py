import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from contrastive.cli import build_parser, main


def test_console_script_help_runs_in_a_fresh_process():
    script = Path(sys.executable).with_name("contrastive")  # installed by `pip install -e .`
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "data" in done.stdout and "usage: contrastive" in done.stdout


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["eval", "--help"], ["submit", "--help"],
                                  ["submit", "train", "--help"], ["submit", "eval", "--help"], ["report", "--help"],
                                  ["data", "--help"], ["data", "synth", "--help"], ["data", "convert", "--help"],
                                  ["data", "tokenizer", "--help"], ["data", "inspect", "--help"],
                                  ["train", "-c", "demo", "a=1", "--help"], ["eval", "runs/x", "a=1", "--help"],
                                  ["submit", "train", "a=1", "--help", "b=2"], ["submit", "eval", "runs/x", "--help"],
                                  ["report", "runs/x", "--help"], ["data", "inspect", "a.tar", "--help"]])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["data"], ["nonsense"], ["data", "convert", "only-src"],
                                  ["data", "convert", "a", "b", "--format", "gif"],
                                  ["data", "synth", "x", "--seed", "one"], ["submit"], ["submit", "eval"], ["eval"]])
def test_usage_errors_exit_two(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["train", "--bogus"], ["train", "a=1", "--bogus", "b=2"],
                                  ["eval", "runs/x", "--bogus"], ["submit", "train", "a=1", "--bogus"],
                                  ["submit", "eval", "--bogus", "runs/x"], ["report", "runs/x", "--bogus"],
                                  ["data", "inspect", "a.tar", "--bogus"], ["data", "synth", "--bogus", "x"]])
def test_an_unknown_flag_anywhere_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: contrastive") and "unrecognized arguments: --bogus" in err


# The same command with its flags before (as plain argparse required), between and after its positional arguments.
INTERMIXED = {
    "train": [["train", "-c", "demo", "--check", "a=1", "b=2"], ["train", "a=1", "-c", "demo", "b=2", "--check"],
              ["train", "a=1", "b=2", "--check", "-c", "demo"]],
    "eval": [["eval", "--all", "runs/demo", "eval.zeroshot.imagenet=/data/imagenet/val", "b=2"],
             ["eval", "runs/demo", "--all", "eval.zeroshot.imagenet=/data/imagenet/val", "b=2"],
             ["eval", "runs/demo", "eval.zeroshot.imagenet=/data/imagenet/val", "b=2", "--all"]],
    "submit train": [["submit", "train", "-c", "demo", "--sweep", "loss.name=clip,siglip", "--local", "a=1", "b=2"],
                     ["submit", "train", "a=1", "--sweep", "loss.name=clip,siglip", "b=2", "-c", "demo", "--local"],
                     ["submit", "train", "a=1", "b=2", "--local", "-c", "demo", "--sweep", "loss.name=clip,siglip"]],
    "submit eval": [["submit", "eval", "--all", "--local", "runs/a", "runs/b", "k=v"],
                    ["submit", "eval", "runs/a", "--all", "runs/b", "--local", "k=v"],
                    ["submit", "eval", "runs/a", "runs/b", "k=v", "--all", "--local"]],
    "report": [["report", "--format", "csv", "--plot", "p.png", "runs/a", "runs/b"],
               ["report", "runs/a", "--format", "csv", "runs/b", "--plot", "p.png"],
               ["report", "runs/a", "runs/b", "--plot", "p.png", "--format", "csv"]],
    "data synth": [["data", "synth", "--seed", "3", "out"], ["data", "synth", "out", "--seed", "3"]],
    "data convert": [["data", "convert", "--workers", "2", "--captions-template", "a {}", "src", "out"],
                     ["data", "convert", "src", "--workers", "2", "out", "--captions-template", "a {}"],
                     ["data", "convert", "src", "out", "--captions-template", "a {}", "--workers", "2"]],
    "data tokenizer": [["data", "tokenizer", "--vocab-size", "300", "a.tar", "b.txt", "tok.json"],
                       ["data", "tokenizer", "a.tar", "--vocab-size", "300", "b.txt", "tok.json"],
                       ["data", "tokenizer", "a.tar", "b.txt", "tok.json", "--vocab-size", "300"]],
}  # data inspect has no flag but --help, which test_help_exits_zero gives it after its positionals


@pytest.mark.parametrize("variants", INTERMIXED.values(), ids=INTERMIXED.keys())
def test_flags_go_before_between_or_after_the_positional_arguments(variants):
    parser = build_parser()
    first, *others = (parser.parse_args(argv) for argv in variants)
    for argv, other in zip(variants[1:], others):
        assert other == first, argv


def test_eval_takes_its_flag_between_the_run_and_the_overrides():  # the command of issue 14
    args = build_parser().parse_args(["eval", "runs/demo", "--all", "eval.zeroshot.imagenet=/data/imagenet/val"])
    assert (args.path, args.all, args.overrides) == ("runs/demo", True, ["eval.zeroshot.imagenet=/data/imagenet/val"])


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
    assert "4 training samples in 1 shard " in capsys.readouterr().out
    assert (tmp_path / "d" / "train" / "shard-000000.tar").is_file() and (tmp_path / "d" / "tokenizer.json").is_file()
    assert main(["data", "synth", str(tmp_path / "d"), "--image-size", "8"]) == 2
    assert "image size must be at least 16" in capsys.readouterr().err
