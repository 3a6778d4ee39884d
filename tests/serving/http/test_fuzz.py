"""Schemathesis over every operation of the served app (the same app ``tessera serve`` runs),
in process over ASGI against a real Redis: no server error and no response outside the
documented schema, for a bounded number of generated requests per operation."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from serving.http.main import ServeConfig, build_app
from serving.scorer.synthetic import write_repo_file
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration
EXAMPLES = 30  # per operation, derandomized (the same requests every run): the suite's budget


@pytest.fixture(scope="module")
def served_schema(redis_url, tmp_path_factory):
    import redis

    tmp = tmp_path_factory.mktemp("fuzz")
    mp = pytest.MonkeyPatch()
    mp.setenv("TESSERA_HOME", str(tmp))
    client = redis.Redis.from_url(redis_url)
    _, reg, _ = make_world(client, tmp)
    app = build_app(ServeConfig(redis_url, str(reg.storage.root), ["fraud"],
                                str(write_repo_file(tmp / "repo.py"))))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    mp.undo()


def test_no_server_error_and_responses_match_the_schema(served_schema):
    """Each operation in turn (schemathesis' own pytest plugin does not run on pytest 9)."""
    from hypothesis import given

    failures, operations = {}, 0
    for result in served_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance,
                                           status_code_conformance])

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as e:  # schemathesis' FailureGroup is a Base-
            failures[operation.label] = str(e)[:2000]  # ExceptionGroup; all reported below
    assert operations >= 15
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
