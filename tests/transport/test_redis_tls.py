"""Redis over TLS with an ACL user, for real: the worker consumes a stream into it, the scorer
answers /v1/features from it, skew-check compares it with the event log -- each configured
only through the settings (environment), so each would be refused without them."""

from __future__ import annotations

import httpx
import pytest
import redis

from features.online.cluster import RedisUrlError
from features.online.connection import RedisTransport, connect, connect_settings
from features.online.read import OnlineStore
from features.settings import Settings
from tests.reference import close
from tests.serving.http.conftest import running
from tests.streams.conftest import VIEWS, _stream_env
from tests.streams.test_worker import Produced, check_exactly_once, produce, wait_done
from tests.transport.conftest import PASSWORD, USER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_only_the_configured_user_over_tls_gets_in(tls_redis, tls_client, monkeypatch):
    tls_client.set("k", "v")
    refused = {
        "no password": RedisTransport(tls_ca=tls_redis.ca),
        "wrong password": RedisTransport(USER, "nope", tls_ca=tls_redis.ca),
        "no user (default is off)": RedisTransport(password=PASSWORD, tls_ca=tls_redis.ca),
    }
    for what, transport in refused.items():
        with pytest.raises(redis.AuthenticationError):
            connect(tls_redis.url, transport).get("k")
        assert what
    # no TLS: the server has no plaintext port; without the CA the certificate is untrusted
    with pytest.raises(redis.ConnectionError):
        connect(f"redis://127.0.0.1:{tls_redis.port}/0", RedisTransport(USER, PASSWORD),
                socket_timeout=2).get("k")
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        connect(tls_redis.url, RedisTransport(USER, PASSWORD)).get("k")
    # the settings, from the environment, are all a component needs
    for name, value in tls_redis.env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert PASSWORD not in repr(settings)  # a SecretStr
    assert connect_settings(settings).get("k") == b"v"
    assert RedisTransport.from_settings(settings).password == PASSWORD


def test_configuration_mistakes_are_refused_with_what_to_write(tls_redis):
    with pytest.raises(RedisUrlError, match="rediss://"):
        connect(f"redis://127.0.0.1:{tls_redis.port}/0", RedisTransport(tls_ca=tls_redis.ca))
    with pytest.raises(RedisUrlError, match="both in redis_url and in redis_password"):
        connect(f"rediss://u:p@127.0.0.1:{tls_redis.port}/0", RedisTransport(password="p"))
    with pytest.raises(RedisUrlError, match="go together"):
        connect(tls_redis.url, RedisTransport(tls_cert=tls_redis.ca))
    with pytest.raises(RedisUrlError, match="does not exist"):
        connect(tls_redis.url, RedisTransport(tls_ca=tls_redis.ca.with_name("missing.crt")))


def test_worker_scorer_and_skew_check_over_tls_and_acl(kafka_bootstrap, tls_redis, tls_client,
                                                       unique_name, tmp_path, monkeypatch):
    for name, value in tls_redis.env.items():
        monkeypatch.setenv(name, value)  # the worker process inherits them
    gen = _stream_env(kafka_bootstrap, tls_redis.url, unique_name, tmp_path)
    env = next(gen)
    try:
        produced = Produced()
        produce(env, produced, 400, seed=21)
        env.start_worker(max_records=200)
        wait_done(env, tls_client, produced, timeout=60)
        check_exactly_once(env, tls_client, produced)  # vs tests/reference.py and skew_check

        from typer.testing import CliRunner

        from tessera import cli

        monkeypatch.setenv("TESSERA_HOME", str(env.home))
        monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka_bootstrap)
        cli._register()
        res = CliRunner().invoke(cli.app, ["skew-check", "--view", "spend", "--sample", "50",
                                           "--repo", str(env.repo_path)])
        assert res.exit_code == 0, res.output
        assert "0 mismatches" in res.output

        from serving.http.main import ServeConfig, build_app

        settings = Settings.from_env()
        cfg = ServeConfig.from_settings(settings, models=[])
        cfg.feature_repo = str(env.repo_path)
        user = produced.valid[-1]["user_id"]
        refs = [f"{v}:{f.name}" for v in VIEWS for f in env.repo.view(v).features]
        with running(build_app(cfg)) as base:
            r = httpx.post(f"{base}/v1/features", json={
                "features": refs, "entities": [{"user_id": user}]}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        direct = OnlineStore(tls_client, env.repo).get_features(refs, [{"user_id": user}])
        assert body["features"] == refs and len(body["values"][0]) == len(refs)
        assert body["values"][0][0] >= 1  # counts:count_10m or _2h of an entity with events
        assert all(close(a, b) for a, b in zip(body["values"][0], direct.values[0], strict=True))
    finally:
        gen.close()



def test_materialize_writes_through_a_tls_socket(tls_client, tmp_path):
    """materialize writes raw RESP on the pooled connection's socket: an SSL socket there."""
    import time

    from features.definitions import FeatureRepo
    from features.online.materialize import materialize_view
    from tests.features.online.test_materialize import DAY, REFS, _write, profile

    end = time.time_ns() // 1000 - DAY
    rows = [(f"u{i}", end - DAY, i, float(i) / 2, i % 2 == 0, f"t{i}") for i in range(50)]
    _write(tmp_path, rows)
    report = materialize_view(tls_client, profile, tmp_path, end_us=end)
    assert report.entities == 50
    got = OnlineStore(tls_client, FeatureRepo.of([profile])).get_features(
        REFS, [{"user_id": f"u{i}"} for i in range(50)], at_us=end)
    assert got.values == [[i, float(i) / 2, i % 2 == 0, f"t{i}"] for i in range(50)]


def test_tls_files_in_tessera_yaml_are_relative_to_it(tls_redis, tmp_path, monkeypatch):
    project = tmp_path / "proj"
    (project / "certs").mkdir(parents=True)
    (project / "certs" / "ca.crt").write_bytes(tls_redis.ca.read_bytes())
    (project / "tessera.yaml").write_text(
        f"redis_url: {tls_redis.url}\nredis_username: {USER}\nredis_tls_ca: certs/ca.crt\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TESSERA_PROJECT", str(project / "tessera.yaml"))
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)  # the secret from the environment
    settings = Settings.from_env()
    assert settings.redis_tls_ca == project / "certs" / "ca.crt"
    assert connect_settings(settings).ping()


def test_a_tls_cluster_with_acl_is_read_and_written_like_one_redis(tls_redis, tls_cluster):
    """rediss+cluster://: the node clients the reader and the sink borrow carry TLS and the
    user too (each primary is reached, keys on every node read back in one call)."""
    from features.online.cluster import is_cluster, primaries
    from features.online.hmget import HashReads

    transport = RedisTransport(USER, PASSWORD, tls_ca=tls_redis.ca)
    client = connect(tls_cluster, transport)
    assert is_cluster(client) and len(primaries(client)) == 3
    keys = [f"tessera:user:u{i}" for i in range(30)]
    for i, k in enumerate(keys):
        client.hset(k, mapping={"a": i})
    assert {n.dbsize() > 0 for n in primaries(client)} == {True}
    assert HashReads(client).fetch([(k, ["a"]) for k in keys]) == [
        [str(i).encode()] for i in range(30)]
    with pytest.raises(redis.exceptions.RedisClusterException, match="authenticated"):
        connect(tls_cluster, RedisTransport(tls_ca=tls_redis.ca))  # no user: no slot map
