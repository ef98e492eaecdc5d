from data.plural import count


def test_one_is_singular_everything_else_plural():
    assert [count(n, "shard") for n in (0, 1, 2)] == ["0 shards", "1 shard", "2 shards"]
    assert [count(n, "process", "processes") for n in (1, 3)] == ["1 process", "3 processes"]
