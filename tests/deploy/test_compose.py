"""docker-compose.yml and the Dockerfile, checked against what the images and Compose expect.

No Docker engine runs here, so the file is read the way the engine and the images would read it:
the Compose spec's JSON schema (vendored in deploy/schemas/), Kafka's rules for the cluster id
and listeners, where each image writes, and the real ``tessera`` CLI parsing every command.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.cli_args import parse

ROOT = Path(__file__).resolve().parents[2]
TESSERA_SERVICES = ("apply", "token", "worker", "scorer", "sink")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env(svc: dict) -> dict:
    return svc.get("environment", {})


def _named_volume_targets(svc: dict) -> dict[str, str]:
    """mount target -> named volume of a service's short-syntax volumes."""
    out = {}
    for v in svc.get("volumes", []):
        source, target = v.split(":")[:2]
        if not source.startswith((".", "/")):
            out[target] = source
    return out


def _listeners(spec: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    out = {}
    for item in spec.split(","):
        name, _, addr = item.partition("://")
        host, _, port = addr.rpartition(":")
        out[name] = (host, int(port))
    return out


# -- the file as Compose reads it ------------------------------------------------------------


def test_the_file_is_valid_against_the_compose_spec(compose):
    schema = json.loads((ROOT / "deploy" / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_misspelt_key(compose):
    schema = json.loads((ROOT / "deploy" / "schemas" / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["scorer"]["healthchek"] = broken["services"]["scorer"].pop("healthcheck")
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_every_reference_names_a_defined_service_or_volume(compose, services):
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in _named_volume_targets(svc).values():
            assert volume in compose["volumes"], f"{name} mounts undeclared volume {volume}"
        for v in svc.get("volumes", []):
            source = v.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# -- Kafka -----------------------------------------------------------------------------------


def test_kafka_runs_in_kraft_mode_without_zookeeper(services):
    assert "zookeeper" not in services
    env = _env(services["kafka"])
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    node, _, addr = voters.partition("@")
    assert int(node) == env["KAFKA_NODE_ID"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert _listeners(env["KAFKA_LISTENERS"])[controller][1] == int(addr.rsplit(":", 1)[1])
    assert addr.split(":")[0] == services["kafka"]["hostname"]


def test_cluster_id_is_a_base64url_16_byte_uuid(services):
    cid = str(_env(services["kafka"])["CLUSTER_ID"])
    # Kafka's Uuid.fromString: 22 characters of URL-safe base64 without padding -> 16 bytes
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid), cid
    raw = base64.urlsafe_b64decode(cid + "==")
    assert len(raw) == 16 and raw != bytes(16)


def test_advertised_listeners_match_the_listeners_and_the_published_port(services):
    kafka = services["kafka"]
    env = _env(kafka)
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols), "a listener without a security protocol"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    for name, (_host, port) in advertised.items():
        assert name in listeners and listeners[name][1] == port, f"{name} advertises {port}"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # the inter-broker listener is advertised under a name the other containers resolve
    assert advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]][0] == kafka["hostname"]
    # every published port is a listener advertised as localhost on that same port
    by_port = {port: host for host, port in advertised.values()}
    for mapping in kafka["ports"]:
        host_port, container_port = (int(p) for p in str(mapping).split(":")[-2:])
        assert host_port == container_port, "advertised port must be the host's port"
        assert by_port.get(container_port) == "localhost", (
            f"published {container_port} is not advertised as localhost: host clients would be "
            "sent to an address only the compose network resolves")


def test_tessera_services_bootstrap_from_an_advertised_in_network_listener(services):
    advertised = _listeners(_env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"])
    in_network = {f"{h}:{p}" for h, p in advertised.values() if h == services["kafka"]["hostname"]}
    for name in TESSERA_SERVICES:
        env = _env(services[name])
        assert env["KAFKA_BOOTSTRAP"] in in_network, name
        assert env["REDIS_URL"].split("@")[-1].startswith("redis:6379")


# -- secure defaults --------------------------------------------------------------------------
def test_secrets_come_from_an_uncommitted_env_file(services):
    import re

    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert {"REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= required
    assert "--requirepass" in services["redis"]["command"]
    assert "${REDIS_PASSWORD" in _env(services["worker"])["REDIS_URL"]
    example = (ROOT / ".env.example").read_text()
    assert all(f"{name}=" in example for name in required), "document every required secret"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_only_the_scorer_is_reachable_from_the_network_by_default(services):
    assert "ports" not in services["redis"]
    for name, svc in services.items():
        for mapping in svc.get("ports", []):
            if name == "scorer":  # behind tokens: it refuses to listen openly without one
                continue
            assert str(mapping).startswith("${PUBLISH_ADDR:-127.0.0.1}:"), (name, mapping)


# -- volumes where the images write -----------------------------------------------------------


def _arg(command: list[str], flag: str) -> str | None:
    for i, word in enumerate(command):
        if word == flag:
            return command[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def test_volumes_are_mounted_where_each_image_writes(services):
    kafka = services["kafka"]
    # the apache/kafka image writes to /tmp/kraft-combined-logs unless KAFKA_LOG_DIRS says else
    assert _env(kafka)["KAFKA_LOG_DIRS"] in _named_volume_targets(kafka)
    redis = services["redis"]
    assert (_arg(redis["command"], "--dir") or "/data") in _named_volume_targets(redis)
    prom = services["prometheus"]
    assert _arg(prom["command"], "--storage.tsdb.path") in _named_volume_targets(prom)
    assert "/var/lib/grafana" in _named_volume_targets(services["grafana"])
    for name in TESSERA_SERVICES:
        svc = services[name]
        assert _env(svc)["TESSERA_HOME"] in _named_volume_targets(svc), name
    homes = {_named_volume_targets(services[n])[_env(services[n])["TESSERA_HOME"]]
             for n in TESSERA_SERVICES}
    assert len(homes) == 1, "apply, worker and scorer must share one registry and event log"


def test_redis_persists_to_an_append_only_file_and_never_evicts(services):
    command = services["redis"]["command"]
    assert _arg(command, "--appendonly") == "yes"
    assert _arg(command, "--maxmemory-policy") == "noeviction"


# -- the Tessera services --------------------------------------------------------------------


def test_every_service_command_is_a_real_tessera_command(services):
    for name in TESSERA_SERVICES:
        svc = services[name]
        assert (ROOT / svc["build"] / "Dockerfile").exists()
        parse(svc["command"])  # raises on an unknown command, option or value


def test_the_command_check_rejects_what_the_cli_would():
    from typer._click.exceptions import UsageError

    with pytest.raises(UsageError):
        parse(["serve", "--no-such-flag"])
    with pytest.raises(UsageError):
        parse(["serve", "--port", "eight-thousand"])  # values are converted and checked
    with pytest.raises(UsageError):
        parse(["scorer"])


def test_a_token_exists_before_the_scorer_listens_beyond_loopback(services):
    # `tessera serve` refuses a non-loopback --host while no token exists
    scorer = services["scorer"]["command"]
    assert scorer[scorer.index("--host") + 1] not in ("127.0.0.1", "localhost")
    assert services["scorer"]["depends_on"]["token"] == {
        "condition": "service_completed_successfully"}
    token = services["token"]["command"]
    assert parse(token) == ["tokens", "create"]
    assert "--if-missing" in token, "a new token on every start would pile up secrets"
    assert "restart" not in services["token"]


def test_the_scorer_starts_without_a_model(services):
    # `tessera serve` with no champion exits 2; with restart: unless-stopped that is a loop
    assert "--allow-no-model" in services["scorer"]["command"]


def test_the_scorer_logs_feature_vectors_for_drift(services):
    import importlib

    env = _env(services["scorer"])
    hook = env.get("TESSERA_SCORER_HOOK")
    if hook:
        module, _, name = hook.partition(":")
        assert callable(getattr(importlib.import_module(module), name))
    # either the hook or the setting that replaces it (tessera.yaml's serve.log_vectors)
    assert hook == "serving.monitoring.hook:log_vectors" or str(
        env.get("TESSERA_SERVE__LOG_VECTORS")).lower() in ("1", "true")


def test_long_running_services_have_healthchecks_and_restart(services):
    for name in ("kafka", "redis", "worker", "scorer", "prometheus", "grafana"):
        svc = services[name]
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc.get("restart") == "unless-stopped", name
    assert "apply" not in {n for n, s in services.items() if s.get("restart")}
    worker_check = " ".join(services["worker"]["healthcheck"]["test"])
    assert ":9100/metrics" in worker_check and "--metrics-port" in services["worker"]["command"]
    assert "localhost:8000/healthz" in " ".join(services["scorer"]["healthcheck"]["test"])


def test_worker_can_scale(services):
    worker = services["worker"]
    # --scale worker=N fails with fixed container names or host ports
    assert "container_name" not in worker and "ports" not in worker


def test_prometheus_scrapes_the_worker_and_scorer_metrics_ports(services):
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = set()
    for job in config["scrape_configs"]:
        for sd in job.get("static_configs", []):
            targets.update(sd["targets"])
        for sd in job.get("dns_sd_configs", []):
            targets.update(f"{n}:{sd['port']}" for n in sd["names"])
    worker_port = _arg(services["worker"]["command"], "--metrics-port")
    scorer_port = _arg(services["scorer"]["command"], "--port")
    assert {f"worker:{worker_port}", f"scorer:{scorer_port}"} <= targets


# -- the image -------------------------------------------------------------------------------


def test_the_dockerfile_installs_libgomp_for_lightgbm():
    text = (ROOT / "Dockerfile").read_text()
    runs = " ".join(re.findall(r"^RUN (.+?)(?<!\\)$", text, flags=re.M | re.S))
    assert re.search(r"apt-get install[^&]*\blibgomp1\b", runs), "LightGBM needs libgomp.so.1"
    assert re.search(r"^ENTRYPOINT \[\"tessera\"\]", text, flags=re.M)
    assert re.search(r"^ENV TESSERA_HOME=/data$", text, flags=re.M)
