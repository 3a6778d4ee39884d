"""POST /v1/outcomes: predict responses carry request ids, labels sent for them (or for an
entity and a time) land in the outcome log exactly once, and the experiment report joins them.
Bad requests are 4xx in the one error body."""

import polars as pl
import pytest
from fastapi.testclient import TestClient

from features.online.read import OnlineStore
from serving.experiments.records import OUTCOME_SCHEMA, PREDICTION_SCHEMA
from serving.experiments.report import dataset_dirs, experiment_report
from serving.experiments.router import ExperimentRouter
from serving.experiments.sink import import_frame, read_dataset
from serving.experiments.spec import DeploymentSpec, DeploymentStore
from serving.http.app import create_app
from serving.http.outcome_log import ParquetOutcomeLog
from serving.http.outcomes import Outcomes, outcomes_router
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from serving.scorer.synthetic import REPO
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration


class FlakyLog(ParquetOutcomeLog):
    fail_next = False

    def write(self, rows):
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full")
        super().write(rows)


@pytest.fixture(scope="module")
def served(redis_url, tmp_path_factory):
    import redis

    tmp_path = tmp_path_factory.mktemp("outcomes")
    redis_client = redis.Redis.from_url(redis_url)
    redis_client.flushdb()
    client, reg, now = make_world(redis_client, tmp_path)
    models = ModelSet(reg)
    models.serve("fraud")
    scorer = Scorer(OnlineStore(client, REPO), models)
    store = DeploymentStore(tmp_path / "models")
    store.save(DeploymentSpec("fraud", "1"))
    logged = []
    router = ExperimentRouter(store, "fraud", models.predict_fn("fraud"), log=logged.append)
    scorer.routers["fraud"] = router
    pred_dir, out_dir = dataset_dirs(tmp_path / "offline")
    log = FlakyLog(out_dir)
    app = create_app(scorer, routers=[outcomes_router(Outcomes(scorer, log, client))])
    with TestClient(app) as http:
        yield http, logged, log, tmp_path, pred_dir, out_dir
    router.close()
    redis_client.close()


def test_outcomes_by_request_id_and_entity_once_each(served):
    http, logged, log, tmp_path, pred_dir, out_dir = served
    ents = [{"user_id": f"u{i}"} for i in range(20)]
    preds = http.post("/v1/predict/fraud", json={"entities": ents}).json()["predictions"]
    rids = [p["request_id"] for p in preds]
    assert len(set(rids)) == 20 and [r.request_id for r in logged] == rids  # the logged ids
    by_id = [{"request_id": rids[i], "label": i % 2} for i in range(10)]
    by_entity = [{"model": "fraud", "entity": ents[i], "label": 1} for i in range(10, 15)]
    r = http.post("/v1/outcomes", json={"outcomes": by_id + by_entity})
    assert r.status_code == 200, r.text
    assert (r.json()["recorded"], r.json()["duplicates"]) == (15, 0)
    again = http.post("/v1/outcomes", json={"outcomes": by_id[:3]}).json()
    assert (again["recorded"], again["duplicates"]) == (0, 3)
    assert {x["status"] for x in again["results"]} == {"duplicate"}
    one = http.post("/v1/outcomes", json=by_id[0]).json()  # the single-object form
    assert one["results"] == [{"request_id": rids[0], "status": "duplicate"}]
    # an entity outcome at the same time is the same outcome; inside one request too
    twice = {"model": "fraud", "entity": ents[16], "label": 0, "at": 1_900_000_000_000}
    r = http.post("/v1/outcomes", json={"outcomes": [twice, twice]}).json()
    assert (r["recorded"], r["duplicates"]) == (1, 1)
    rows = read_dataset(out_dir, OUTCOME_SCHEMA)
    assert rows.height == 16 and rows["request_id"].drop_nulls().n_unique() == 10
    assert sorted(rows["entity_key"].drop_nulls().to_list()) == sorted(
        [f"u{i}" for i in range(10, 15)] + ["u16"])
    # a failed write records nothing and can be retried
    log.fail_next = True
    late = {"request_id": rids[17], "label": 1}
    r = http.post("/v1/outcomes", json=late)
    assert r.status_code == 503 and r.json()["code"] == "outcome_log_unavailable"
    assert http.post("/v1/outcomes", json=late).json()["recorded"] == 1
    # the report joins them: 10 by id + 5 by entity + the retried one (u16's is in the future)
    import_frame(pred_dir, pl.from_arrow(
        PREDICTION_SCHEMA.empty_table().from_pylist([vars(x) for x in logged],
                                                    schema=PREDICTION_SCHEMA)))
    rep = experiment_report(tmp_path / "models", tmp_path / "offline", "fraud", reps=0)
    assert rep["champion"]["predictions"] == 20 and rep["champion"]["labelled"] == 16


@pytest.mark.parametrize("body,status,code,field", [
    (b"{nope", 400, "invalid_json", "body"),
    (b"[1]", 400, "invalid_json", "body"),
    (b'{"request_id": "r1"}', 400, "invalid_field", "label"),
    (b'{"request_id": "r1", "label": "yes"}', 400, "invalid_field", "label"),
    (b'{"request_id": 5, "label": 1}', 400, "invalid_field", "request_id"),
    (b'{"label": 1}', 400, "missing_key", "body"),
    (b'{"entity": {"user_id": "u1"}, "label": 1}', 400, "missing_key", "model"),
    (b'{"model": "nope", "entity": {"user_id": "u1"}, "label": 1}', 404, "unknown_model",
     "model"),
    (b'{"model": "fraud", "entity": {"who": "u1"}, "label": 1}', 400, "missing_key", "entity"),
    (b'{"model": "fraud", "entity": {"user_id": null}, "label": 1}', 400, "invalid_field",
     "entity.user_id"),
    (b'{"request_id": "r1", "label": 1, "at": "soon"}', 400, "invalid_at", "at"),
    (b'{"outcomes": []}', 400, "invalid_field", "outcomes"),
    (b'{"outcomes": [{"request_id": "r1", "label": 1}, 7]}', 400, "invalid_field",
     "outcomes[1]"),
])
def test_bad_outcomes_are_4xx_in_the_error_schema(served, body, status, code, field):
    http, *_, out_dir = served
    before = read_dataset(out_dir, OUTCOME_SCHEMA).height
    r = http.post("/v1/outcomes", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and r.json()["field"] == field and r.json()["error"]
    assert read_dataset(out_dir, OUTCOME_SCHEMA).height == before


def test_through_kafka_and_the_sink_once_each(kafka_bootstrap, redis_url, unique_name, tmp_path):
    """With a broker: posted labels go to the outcomes topic, a repeat adds nothing there, and
    the sink's Parquet copy holds each once."""
    import redis

    from features.kafka_admin import delete_topics
    from serving.experiments.records import outcome_normalizer
    from serving.experiments.sink import ParquetSink
    from serving.http.outcome_log import KafkaOutcomeLog

    client = redis.Redis.from_url(redis_url)
    log = KafkaOutcomeLog(kafka_bootstrap, topic=unique_name)
    try:
        outcomes = Outcomes(None, log, client)  # by request id only: no scorer needed
        body = b'{"outcomes": [%s]}' % b", ".join(
            b'{"request_id": "%s-%d", "label": %d}' % (unique_name.encode(), i, i % 2)
            for i in range(30))
        assert outcomes.record(body)["recorded"] == 30
        again = outcomes.record(body)
        assert (again["recorded"], again["duplicates"]) == (0, 30)
        sink = ParquetSink(kafka_bootstrap, unique_name, tmp_path / "out", OUTCOME_SCHEMA,
                           normalize=outcome_normalizer())
        sink.run(idle_s=1.0)
        sink.close()
        rows = read_dataset(tmp_path / "out", OUTCOME_SCHEMA)
        assert rows.height == 30 and rows["request_id"].n_unique() == 30
        assert rows["label"].sum() == 15 and sink.bad_records == 0
    finally:
        log.close()
        client.close()
        delete_topics([unique_name], kafka_bootstrap)
