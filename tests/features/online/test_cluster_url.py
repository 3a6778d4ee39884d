"""Which client a Redis URL gives: ``redis://`` one Redis, ``redis+cluster://`` a cluster."""

import pytest
import redis

from features.online.cluster import RedisUrlError, by_node, connect, is_cluster, primaries


def test_plain_urls_stay_one_redis():
    client = connect("redis://127.0.0.1:1/0", socket_timeout=0.5)  # lazy: nothing connects
    assert isinstance(client, redis.Redis) and not is_cluster(client)
    assert by_node(client, ["a", "b"]) == [(client, [0, 1])]
    assert primaries(client) == [client]


@pytest.mark.parametrize("url, what", [
    ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
    ("redis+cluster://127.0.0.1", "host:port"),
    ("redis+cluster://127.0.0.1:7000,:7001", "host:port"),
])
def test_bad_cluster_urls_say_what_to_write(url, what):
    with pytest.raises(RedisUrlError, match=what):
        connect(url)


@pytest.mark.integration
def test_cluster_url_gives_a_cluster_client_with_options(redis_cluster_url):
    client = connect(redis_cluster_url + "/?socket_timeout=2.5")
    assert is_cluster(client) and len(primaries(client)) == 3
    node = primaries(client)[0]
    assert node.connection_pool.connection_kwargs["socket_timeout"] == 2.5
    groups = by_node(client, [f"k{i}" for i in range(200)])
    assert sorted(i for _, ix in groups for i in ix) == list(range(200)) and len(groups) == 3
    client.close()
