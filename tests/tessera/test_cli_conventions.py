"""The conventions CLI users expect: --version, help on every option, one spelling per flag."""

from importlib.metadata import version

import pytest
import typer.main
from kafka.admin import KafkaAdminClient
from typer.testing import CliRunner

from tessera import cli
from tessera.local import free_port

SAME_CONCEPT = {  # parameter names that mean one thing, and the one flag that spells it
    "timestamp": "--timestamp-column", "timestamp_column": "--timestamp-column",
    "reason": "--why", "why": "--why",
}


def _options():
    cli._register()
    out = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        for p in cmd.params:
            if getattr(p, "param_type_name", "") == "option":
                out.append((" ".join(path), p))

    walk(typer.main.get_command(cli.app), [])
    return out


def test_version():
    cli._register()
    out = CliRunner().invoke(cli.app, ["--version"])
    assert out.exit_code == 0 and out.output.strip() == f"tessera {version('tessera')}"


def test_every_option_has_help():
    missing = [(cmd, p.opts[0]) for cmd, p in _options() if not p.help]
    assert not missing, f"options without help text: {missing}"


def test_one_spelling_per_flag():
    for cmd, p in _options():
        long = [o for o in p.opts if o.startswith("--")]
        assert len(long) == 1, f"{cmd} {p.name}: several spellings {long}"
        if p.name in SAME_CONCEPT:
            assert long[0] == SAME_CONCEPT[p.name], f"{cmd}: {long[0]} for {p.name}"


def test_an_unreachable_broker_is_one_clear_error_not_a_traceback(monkeypatch, capsys):
    """What kafka-python raises when no broker answers (here a real client on a closed port)
    ends any command with exit 2 and one line naming the setting to check."""
    port = free_port()
    with pytest.raises(Exception) as got:
        KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", bootstrap_timeout_ms=1000)
    assert cli._kafka_unreachable(got.value)
    assert not cli._kafka_unreachable(ValueError("unable to bootstrap"))  # only Kafka's errors

    def no_broker() -> None:
        raise got.value

    monkeypatch.setattr(cli, "_register", lambda: None)
    monkeypatch.setattr(cli, "app", no_broker)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (kafka's own log lines before)
    assert last.startswith("error: cannot reach Kafka") and "KAFKA_BOOTSTRAP" in last
