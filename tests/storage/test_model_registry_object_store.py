"""The model registry on real S3- and GCS-protocol servers: versions, aliases and the audit round
trip; racing registrations never share a version number; racing audit appends lose no line."""

from __future__ import annotations

import threading
import uuid

import pytest

from features.errors import RegistryError
from serving.registry import ModelRegistry
from serving.registry.training import train
from tests.serving.registry.helpers import write_training_set

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "train.parquet"
    write_training_set(path, n=1000)
    return train(path, "is_fraud", params={"num_iterations": 5, "num_leaves": 4}, seed=1)


@pytest.fixture(params=["s3", "gs"])
def uri(request) -> str:
    _, bucket = request.getfixturevalue(f"{'gcs' if request.param == 'gs' else 's3'}_bucket")
    return f"{request.param}://{bucket}/{uuid.uuid4().hex[:8]}/models"


def _race(n_threads: int, fn) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def run(i: int) -> None:
        start.wait()
        try:
            fn(i)
        except BaseException as e:  # collected for the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_registry_round_trip_on_an_object_store(uri, model):
    reg = ModelRegistry(uri)
    assert reg.storage.local is False
    reg.register("fraud", model.model_text, model.metadata())
    reg.set_alias("fraud", "champion", "1", why="s3 test", gate=False)
    again = ModelRegistry(uri)
    assert again.models() == ["fraud"] and again.versions("fraud") == ["1"]
    assert again.get("fraud").model_text == model.model_text
    assert again.aliases("fraud") == {"champion": "1"}
    assert [e["why"] for e in again.audit("fraud")] == ["s3 test"]
    assert again.aliases_stamp("fraud") is not None


def test_racing_registrations_never_share_a_version(uri, model):
    reg_texts: dict[str, str] = {}

    def register(i: int) -> None:
        for k in range(3):
            note = f"writer{i}-{k}"
            try:
                v = ModelRegistry(uri).register("fraud", model.model_text, {"note": note})
            except RegistryError as e:
                assert "registered concurrently" in str(e)
                continue
            reg_texts[v.version] = note

    assert not _race(3, register)
    reg = ModelRegistry(uri)
    versions = reg.versions("fraud")
    assert versions == sorted(reg_texts, key=int) and len(versions) >= 3
    for v in versions:  # each number has one writer's metadata, not a mix
        assert reg.metadata("fraud", v)["note"] == reg_texts[v]


def test_racing_audit_appends_lose_no_line(uri, model):
    ModelRegistry(uri).register("fraud", model.model_text, model.metadata())

    def move(i: int) -> None:
        reg = ModelRegistry(uri)
        for k in range(5):
            reg.storage.append_line("fraud/audit.jsonl", f'{{"who": "w{i}", "k": {k}}}')

    assert not _race(3, move)
    lines = ModelRegistry(uri).audit("fraud")
    assert sorted((e["who"], e["k"]) for e in lines) == sorted(
        (f"w{i}", k) for i in range(3) for k in range(5))


def test_a_writer_with_a_stale_view_cannot_take_a_taken_version(uri, model):
    """The race made deterministic: the loser listed the versions (and looked for the
    metadata) before the winner wrote; its claim of the number still fails."""
    ModelRegistry(uri).register("fraud", model.model_text, {"note": "first"})
    stale = ModelRegistry(uri)
    ModelRegistry(uri).register("fraud", model.model_text, {"note": "winner"})
    real_list = stale.storage.list_dir
    stale.storage.list_dir = lambda rel: ["1"] if rel.endswith("versions") else real_list(rel)
    stale.storage.exists = lambda rel: False
    with pytest.raises(RegistryError, match="version 2 was registered concurrently"):
        stale.register("fraud", model.model_text, {"note": "loser"})
    assert ModelRegistry(uri).metadata("fraud", "2")["note"] == "winner"


def test_deployment_specs_on_an_object_store_take_each_revision_once(uri):
    from serving.experiments.errors import ExperimentError
    from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore

    store = DeploymentStore(uri)
    first = store.save(DeploymentSpec("fraud", "1"), why="first", who="ana")
    stale = DeploymentStore(uri)
    stale_current = stale.current
    store.save(DeploymentSpec("fraud", "1", arms=(Arm("b", "2", 0.2),)), why="ab", who="bo")
    stale.current = lambda name: first  # read before the other writer saved revision 2
    stale._files = lambda name: ["fraud/deployments/0001.json"]
    with pytest.raises(ExperimentError, match="revision 2 was written concurrently"):
        stale.save(DeploymentSpec("fraud", "3"), why="lost")
    stale.current = stale_current
    again = DeploymentStore(uri)
    assert again.revision("fraud") == 2 and again.current("fraud").arms[0].version == "2"
    assert [s.revision for s in again.history("fraud")] == [1, 2]
    assert [e["why"] for e in again.audit_log("fraud")] == ["first", "ab"]


def test_alias_moves_from_a_stale_view_lose_no_other_move(uri, model):
    reg = ModelRegistry(uri)
    for _ in range(2):
        reg.register("fraud", model.model_text, model.metadata())
    stale = ModelRegistry(uri)
    stale.aliases = lambda name: {}  # read before the other writer's move below
    ModelRegistry(uri).set_alias("fraud", "staging", "1", gate=False)
    stale.set_alias("fraud", "canary", "2", gate=False)
    assert ModelRegistry(uri).aliases("fraud") == {"staging": "1", "canary": "2"}
    with pytest.raises(RegistryError, match="'staging' was moved to 1 concurrently"):
        stale.set_alias("fraud", "staging", "2", gate=False)
    assert ModelRegistry(uri).aliases("fraud")["staging"] == "1"
