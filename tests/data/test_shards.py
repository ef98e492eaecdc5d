import io
import tarfile
from pathlib import Path

import pytest

from data.errors import DataError, ShardReadError
from data.shards import ShardWriter, find_image, read_shard, sample_key, shard_keys, split_member_name
from tests.data.loader_fixtures import good_sample, truncate_inside, write_shard


def _sample(i: int, payload: int = 10) -> dict[str, bytes]:
    return {"png": bytes([i % 256]) * payload, "txt": f"caption {i}".encode(), "json": b"{}"}


def test_count_bounded_shards_with_members_in_order(tmp_path):
    with ShardWriter(tmp_path, max_samples=3) as writer:
        for i in range(7):
            writer.write(sample_key(i), _sample(i))
    assert [p.name for p in writer.shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(writer.shards[1]) as tar:
        assert tar.getnames() == [f"00000000{i}.{ext}" for i in (3, 4, 5) for ext in ("json", "png", "txt")]
        member = tar.getmember("000000004.txt")
        assert (member.mtime, member.uid, member.uname, member.mode) == (0, 0, "", 0o644)
        assert tar.extractfile(member).read() == b"caption 4"
    assert writer.samples_written == 7


def test_size_bounded_shards(tmp_path):
    # each sample: 3 members of 512 header + 512 data bytes = 3072 bytes
    with ShardWriter(tmp_path, max_samples=100, max_bytes=7000) as writer:
        for i in range(5):
            writer.write(sample_key(i), _sample(i))
    assert [len(list(read_shard(p))) for p in writer.shards] == [2, 2, 1]


def test_same_samples_give_identical_bytes(tmp_path):
    for run in ("a", "b"):
        with ShardWriter(tmp_path / run) as writer:
            for i in range(4):
                writer.write(sample_key(i), _sample(i))
    assert (tmp_path / "a/shard-000000.tar").read_bytes() == (tmp_path / "b/shard-000000.tar").read_bytes()


def test_shard_appears_only_when_closed_and_an_error_discards_it(tmp_path):
    writer = ShardWriter(tmp_path, max_samples=10)
    writer.write("000000001", _sample(1))
    assert list(tmp_path.glob("shard-*.tar")) == []
    writer.close()
    assert [p.name for p in tmp_path.glob("shard-*.tar")] == ["shard-000000.tar"]
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "failed") as failed:
        failed.write("000000001", _sample(1))
        raise RuntimeError("conversion died")
    assert list((tmp_path / "failed").iterdir()) == []


def test_duplicate_and_malformed_keys_are_refused(tmp_path):
    with ShardWriter(tmp_path) as writer:
        writer.write("000000001", _sample(1))
        with pytest.raises(DataError, match="duplicate sample key '000000001'"):
            writer.write("000000001", _sample(1))
        with pytest.raises(DataError, match="must not contain"):
            writer.write("a.b", _sample(2))


def test_read_back_groups_members_by_key(tmp_path):
    with ShardWriter(tmp_path) as writer:
        for i in range(3):
            writer.write(sample_key(i), _sample(i, payload=3))
    samples = list(read_shard(writer.shards[0]))
    assert [s.key for s in samples] == ["000000000", "000000001", "000000002"]
    assert samples[2].members == {"json": b"{}", "png": b"\x02\x02\x02", "txt": b"caption 2"}
    assert find_image(samples[2].members) == ("png", b"\x02\x02\x02")
    assert split_member_name("dir/000000012.seg.JPG") == ("dir/000000012", "seg.jpg")



def test_members_group_as_webdataset_groups_them_skipping_names_of_no_sample(tmp_path: Path):
    # macOS's tar writes a `._NAME` resource fork before each file; a README has no extension. Keying these
    # (rather than skipping them, as webdataset does) would cut every sample in two around its forks.
    names = ["README", "./._k0.jpg", "./k0.jpg", "./._k0.txt", "./k0.txt", "./._k1.jpg", "./k1.jpg", "./k1.txt"]
    with tarfile.open(tmp_path / "mac.tar", "w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(name)
            tar.addfile(info, io.BytesIO(name.encode()))
    samples = list(read_shard(tmp_path / "mac.tar"))
    assert [(s.key, s.members) for s in samples] == [("./k0", {"jpg": b"./k0.jpg", "txt": b"./k0.txt"}),
                                                     ("./k1", {"jpg": b"./k1.jpg", "txt": b"./k1.txt"})]
    assert split_member_name("d/._k0.jpg") is None and split_member_name("d/README") is None

@pytest.mark.parametrize("cut, complete", [(10240 + 700, 2), (10240, 2), (9216 + 512, 2), (4608 + 1024, 1), (4608, 0)])
def test_truncated_shard_yields_complete_samples_then_raises(tmp_path, cut, complete):
    # 4 samples of 4608 bytes each (json 1024, png 2560, txt 1024); cuts inside and between members
    with ShardWriter(tmp_path) as writer:
        for i in range(4):
            writer.write(sample_key(i), _sample(i, payload=2000))
    (tmp_path / "cut.tar").write_bytes(writer.shards[0].read_bytes()[:cut])
    keys = []
    with pytest.raises(ShardReadError, match="cut.tar is truncated"):
        for sample in read_shard(tmp_path / "cut.tar"):
            keys.append(sample.key)
    assert keys == [sample_key(i) for i in range(complete)]
    assert len(list(read_shard(writer.shards[0]))) == 4


def test_read_shard_groups_members_by_key(tmp_path: Path):
    path = write_shard(tmp_path / "a.tar", [
        {"__key__": "d/k1", "jpg": b"i", "txt": "t", "json": "{}"},
        {"__key__": "d/k2", "PNG": b"p", "x.txt": "t2"},
    ])
    samples = list(read_shard(str(path)))
    assert [(s.key, sorted(s.members)) for s in samples] == [("d/k1", ["jpg", "json", "txt"]), ("d/k2", ["png", "x.txt"])]
    assert samples[1].members["x.txt"] == b"t2" and samples[0].shard == str(path)


def test_truncated_shard_yields_the_samples_before_the_break(tmp_path: Path):
    path = write_shard(tmp_path / "a.tar", [good_sample(f"k{i}") for i in range(6)])
    truncate_inside(path, "k3.png")
    keys = []
    with pytest.raises(ShardReadError, match="ReadError"):
        for sample in read_shard(str(path)):
            keys.append(sample.key)
    assert keys == ["k0", "k1", "k2"]  # k3 was cut mid-sample: dropped with the break


def test_pipe_shard_and_failing_command(tmp_path: Path):
    path = write_shard(tmp_path / "a.tar", [good_sample(f"k{i}") for i in range(3)])
    assert [s.key for s in read_shard(f"pipe:cat {path}")] == ["k0", "k1", "k2"]
    with pytest.raises(ShardReadError, match="status 3"):
        list(read_shard(f"pipe:cat {path}; exit 3"))


def test_pipe_shard_cut_at_a_member_boundary_raises(tmp_path: Path):
    path = write_shard(tmp_path / "a.tar", [good_sample(f"k{i}") for i in range(3)])
    with tarfile.open(path) as tar:
        cut = tar.getmember("k2.png").offset
    keys = []
    with pytest.raises(ShardReadError, match="without the end-of-archive marker"):
        for sample in read_shard(f"pipe:head -c {cut} {path}"):
            keys.append(sample.key)
    assert keys == ["k0"]  # k1 ends where the cut is: it may have lost members


def test_shard_keys_are_the_keys_read_shard_yields_from_the_headers_alone(tmp_path: Path):
    samples = [good_sample("d/k0"), good_sample("k1"), good_sample("k0"), good_sample("k1")]
    path = write_shard(tmp_path / "a.tar", samples)
    assert shard_keys(path) == [s.key for s in read_shard(path)] == ["d/k0", "k1", "k0", "k1"]
    with pytest.raises(ShardReadError, match="a.tar"):
        shard_keys(tmp_path / "missing" / "a.tar")
