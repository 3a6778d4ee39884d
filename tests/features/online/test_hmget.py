"""HashReads against a real Redis: the busy-polled and the sleeping read give redis-py's replies,
pipelines larger than a socket buffer work, error replies and timeouts are typed -- on both
transports (the raw wire and redis-py's pipeline, ``raw=False``: what TLS clients use)."""

import time

import pytest
import redis

from features.errors import OnlineStoreError
from features.online.hmget import Breaker, HashReads

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("raw", [True, False], ids=["wire", "pipeline"])
@pytest.mark.parametrize("spin_us", [0.0, 200.0])
def test_replies_equal_redis_py_single_and_pipelined(redis_client, unique_name, spin_us, raw):
    big = bytes(range(256)) * 300  # 75 kB: more than one receive buffer
    keys = [f"{unique_name}:{i}" for i in range(300)]
    for i, k in enumerate(keys[:250]):
        redis_client.hset(k, mapping={"a": str(i).encode(), "b": big if i % 50 == 0 else b"x"})
    reads = HashReads(redis_client, spin_us=spin_us, raw=raw)
    fields = ["a", "b", "nope"]
    assert reads.fetch([(keys[3], fields)]) == [redis_client.hmget(keys[3], fields)]
    want = [redis_client.hmget(k, fields) for k in keys]
    assert reads.fetch([(k, fields) for k in keys]) == want  # 300 replies, ~400 kB
    assert reads.fetch([(keys[-1], fields)]) == [[None, None, None]]  # absent key


@pytest.mark.parametrize("raw", [True, False], ids=["wire", "pipeline"])
def test_error_reply_raises_and_the_connection_stays_usable(redis_client, unique_name, raw):
    redis_client.set(f"{unique_name}:str", b"not a hash")
    redis_client.hset(f"{unique_name}:h", "a", b"1")
    reads = HashReads(redis_client, raw=raw)
    with pytest.raises(OnlineStoreError, match="Redis answered an error: WRONGTYPE"):
        reads.fetch([(f"{unique_name}:str", ["a"]), (f"{unique_name}:h", ["a"])])
    assert reads.fetch([(f"{unique_name}:h", ["a"])]) == [[b"1"]]


@pytest.mark.parametrize("raw", [True, False], ids=["wire", "pipeline"])
def test_slow_redis_times_out_with_the_client_timeout_then_recovers(redis_url, unique_name, raw):
    client = redis.Redis.from_url(redis_url, socket_timeout=0.1)
    client.hset(unique_name, "a", b"1")
    reads = HashReads(client, spin_us=200.0, breaker=Breaker(retry_s=0.5), raw=raw)
    assert reads.fetch([(unique_name, ["a"])]) == [[b"1"]]  # connected: the read itself waits
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("CLIENT", "PAUSE", 500, "ALL")
    t0 = time.monotonic()
    with pytest.raises(OnlineStoreError, match="too slow"):
        reads.fetch([(unique_name, ["a"])])
    assert time.monotonic() - t0 < 0.4
    # the breaker is open: calls fail at once instead of each waiting out the timeout
    t0 = time.monotonic()
    with pytest.raises(OnlineStoreError, match="too slow.*failing fast"):
        reads.fetch([(unique_name, ["a"])])
    assert time.monotonic() - t0 < 0.02
    time.sleep(0.6)
    # retry_s later one call probes; the timed-out socket was dropped (its late reply must not
    # answer the next call)
    assert reads.fetch([(unique_name, ["a"])]) == [[b"1"]]
    assert reads.breaker.opened is None


@pytest.mark.parametrize("spin_us", [0.0, 200.0])
def test_cluster_reads_group_keys_by_node_one_send_each(cluster_client, unique_name,
                                                        monkeypatch, spin_us):
    """300 keys over 3 primaries: redis-py's replies, in request order, and one buffer sent
    per node touched (one round trip per node, the nodes answering in parallel)."""
    from features.online import hmget
    from features.online.cluster import by_node

    keys = [f"{unique_name}:{i}" for i in range(300)]
    for i, k in enumerate(keys[:250]):
        cluster_client.hset(k, mapping={"a": str(i).encode(), "b": b"x" * (i % 7)})
    assert len(by_node(cluster_client, keys)) == 3
    reads = HashReads(cluster_client, spin_us=spin_us)
    sends: list = []
    real_send = hmget._Wire.send
    monkeypatch.setattr(hmget._Wire, "send",
                        lambda self, data, dl: (sends.append(self), real_send(self, data, dl)))
    fields = ["a", "b", "nope"]
    want = [cluster_client.hmget(k, fields) for k in keys]
    assert reads.fetch([(k, fields) for k in keys]) == want
    assert len(sends) == 3 and len(set(map(id, sends))) == 3
    sends.clear()
    assert reads.fetch([(keys[7], fields)]) == [want[7]]
    assert len(sends) == 1


def test_cluster_read_with_a_stale_slot_map_follows_moved(cluster_client, unique_name):
    """A slot map that sends a key to the wrong node (as after a resharding) gets a real
    MOVED reply; the read relearns the map and answers right."""
    from redis.crc import key_slot

    key = f"{unique_name}:k"
    cluster_client.hset(key, "a", b"1")
    reads = HashReads(cluster_client)
    assert reads.fetch([(key, ["a"])]) == [[b"1"]]
    cache = cluster_client.nodes_manager.slots_cache
    slot = key_slot(key.encode())
    right = cache[slot][0]
    cache[slot] = [next(n for n in cluster_client.get_primaries() if n.name != right.name)]
    assert reads.fetch([(key, ["a"])]) == [[b"1"]]
    assert cluster_client.nodes_manager.slots_cache[slot][0].name == right.name
