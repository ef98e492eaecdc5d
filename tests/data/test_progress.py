"""The data commands' progress bars: samples/s, and an ETA from a total known or estimated from the shards read."""
import io

from data.progress import ShardProgress, bar


def test_a_bar_is_hidden_off_a_terminal_unless_asked_for(capsys):
    list(bar(range(3), desc="synth", total=3))
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal
    list(bar(range(3), desc="synth", total=3, progress=True))
    err = capsys.readouterr().err
    assert "synth: 100%" in err and "3/3" in err and "sample/s" in err


def test_the_total_of_a_shard_bar_is_estimated_from_the_shards_read_so_far():
    with ShardProgress(4, "inspect", progress=True) as progress:
        progress.bar.fp = io.StringIO()
        for _ in range(10):
            progress.sample()
        progress.shard_done()
        assert (progress.bar.total, progress.bar.desc) == (40, "inspect (shard 1/4): ")
        for _ in range(20):
            progress.sample()
        progress.shard_done()
        assert (progress.bar.total, progress.bar.desc) == (60, "inspect (shard 2/4): ")  # 30 samples in 2 of 4
