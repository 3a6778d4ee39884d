"""docker-compose.yml cannot be run here (no Docker engine), so its shape is checked instead."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _cli_commands() -> set[str]:
    from tessera import cli

    cli._register()
    names = set()
    for c in cli.app.registered_commands:
        names.add(c.name or c.callback.__name__.replace("_", "-"))
    for g in cli.app.registered_groups:
        names.add(g.name)
    return names


def test_kafka_runs_in_kraft_mode_without_zookeeper(compose):
    services = compose["services"]
    assert "zookeeper" not in services
    env = services["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voters.startswith(f"{node}@kafka:")
    controller_port = voters.rsplit(":", 1)[1]
    assert f"CONTROLLER://:{controller_port}" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert services["kafka"]["image"].startswith("apache/kafka:")


def test_app_services_point_at_the_compose_kafka_and_redis(compose):
    services = compose["services"]
    for name in ("worker", "scorer", "apply"):
        env = services[name]["environment"]
        host, port = env["KAFKA_BOOTSTRAP"].split(":")
        assert host == "kafka" and f"PLAINTEXT://:{port}" in services["kafka"]["environment"][
            "KAFKA_LISTENERS"]
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert (ROOT / services[name]["build"] / "Dockerfile").exists()


def test_worker_can_scale(compose):
    worker = compose["services"]["worker"]
    # --scale worker=N fails with fixed container names or host ports
    assert "container_name" not in worker and "ports" not in worker


def test_service_commands_exist_in_the_cli(compose):
    commands = _cli_commands()
    for name in ("worker", "scorer", "apply"):
        cmd = compose["services"][name]["command"][0]
        assert cmd in commands, f"{name} runs `tessera {cmd}`, which the CLI does not define"


def test_dependencies_refer_to_defined_services(compose):
    services = compose["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
