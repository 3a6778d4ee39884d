"""``POST /v1/push/{source}``, framework-free: parse, validate, place and publish a batch.

The contract (``docs/serving.md``, "Push ingest"):

- the body is a JSON list of event objects, at most ``max_events`` of them and at most the
  scorer's body cap (413 beyond it);
- every event is checked by ``features.event_schema.normalize``, the code the SDK and the
  worker use; an invalid event is listed in ``rejected`` as ``{index, field, reason}`` and the
  valid ones are published (a 422 when none is valid: nothing was published);
- valid events are keyed and encoded as the SDK does (``key_of``, ``encode``), placed as the
  SDK places them (murmur2 of the key, ``features.partitioner.home_partition``, computed by
  librdkafka: ``serving.ingest.sink``) and sent with ``acks=all``; the answer waits for every ack;
- 200 means every event not in ``rejected`` is in the topic. If the broker does not acknowledge
  some, the answer is a 503 ``publish_failed`` naming how many, with ``failed`` (their indexes
  and reasons) and ``accepted``: a client retries exactly the failed indexes.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from features.definitions import EventSource
from features.errors import SchemaError
from features.event_schema import encode, key_of, normalize
from features.kafka_config import KafkaSecurity
from serving.http.errors import ApiError, dumps, error_body
from serving.ingest.metrics import SourceMetrics
from serving.ingest.sink import Delivery, KafkaSink, SinkUnavailable


@dataclass(frozen=True)
class PushLimits:
    max_events: int = 10_000  # events per request
    max_rejections: int = 1_000  # rejections listed in one answer (the count is always given)


@dataclass
class Prepared:
    records: list[tuple[bytes, bytes]]  # (key, value)
    indexes: list[int]  # request index of each record
    rejected: list[dict[str, Any]]
    n_rejected: int
    total: int


def prepare(source: EventSource, events: list[Any], max_rejections: int) -> Prepared:
    """Validate, key and encode every event (the SDK's checks and bytes)."""
    records: list[tuple[bytes, bytes]] = []
    indexes: list[int] = []
    rejected: list[dict[str, Any]] = []
    n_rejected = 0
    for i, obj in enumerate(events):
        try:
            ev = normalize(source, obj)
        except SchemaError as e:
            n_rejected += 1
            if len(rejected) < max_rejections:
                rejected.append({"index": i, "field": e.field, "reason": str(e)})
            continue
        records.append((key_of(source, ev).encode(), encode(source, ev)))
        indexes.append(i)
    return Prepared(records, indexes, rejected, n_rejected, len(events))


def _bad(code: str, message: str, field: str | None = "body", status: int = 400) -> ApiError:
    return ApiError(status, code, message, field)


def parse_events(body: bytes, limits: PushLimits) -> list[Any]:
    try:
        events = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise _bad("invalid_json", f"request body is not JSON: {e}") from None
    if not isinstance(events, list):
        raise _bad("invalid_json", "request body must be a JSON list of event objects: "
                   '[{"user_id": "u1", "amount": 12.5, "ts": "2026-12-01T10:00:00Z"}, ...]')
    if not events:
        raise _bad("invalid_field", "the list of events is empty; send at least one event")
    if len(events) > limits.max_events:
        raise _bad("too_many_events", f"{len(events)} events in one request; the limit is "
                   f"{limits.max_events}: split the batch")
    return events


class PushService:
    """Push for the sources of one feature repo. The producer is made at the first push."""

    def __init__(self, sources: dict[str, EventSource], bootstrap: str | None,
                 limits: PushLimits | None = None, delivery_timeout_ms: int = 10_000,
                 metadata_timeout_s: float = 5.0, security: KafkaSecurity | None = None) -> None:
        self.sources = sources
        self.bootstrap = bootstrap
        self.limits = limits or PushLimits()
        self.sink = (KafkaSink(bootstrap, delivery_timeout_ms,
                               metadata_timeout_s=metadata_timeout_s, security=security)
                     if bootstrap else None)
        self.delivery_timeout_s = delivery_timeout_ms / 1000
        self.metrics = {name: SourceMetrics(name) for name in sources}
        # one producing thread: batches are sent in the order they were prepared, and the
        # validation of a large batch does not hold the event loop
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tessera-push")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.sink is not None:
            self.sink.close()

    def _source(self, name: str) -> EventSource:
        source = self.sources.get(name)
        if source is None:
            raise ApiError(404, "unknown_source", f"no event source {name!r} in the feature "
                           f"repo this scorer serves; known: "
                           f"{', '.join(sorted(self.sources)) or 'none'}", "source")
        if self.sink is None:
            raise ApiError(503, "push_disabled", "push ingest needs a Kafka broker: start the "
                           "scorer with KAFKA_BOOTSTRAP set", None)
        return source

    def _send(self, source: EventSource, events: list[Any], loop: asyncio.AbstractEventLoop,
              future: asyncio.Future) -> Prepared:
        """On the producing thread: check the topic is there, validate, produce."""
        assert self.sink is not None
        self.sink.partitions(source.topic)
        prep = prepare(source, events, self.limits.max_rejections)
        self.sink.produce(source.topic, prep.records, loop, future)
        return prep

    async def push(self, name: str, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, JSON body) for one push request."""
        t0 = time.perf_counter()
        try:
            source = self._source(name)
            events = parse_events(body, self.limits)
        except ApiError as e:
            return e.status, dumps(e.body())
        m = self.metrics[name]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivery] = loop.create_future()
        try:
            prep = await loop.run_in_executor(self.pool, self._send, source, events, loop,
                                              future)
        except SinkUnavailable as e:
            m.failed.inc(len(events))
            return 503, dumps(error_body("broker_unavailable", f"{e}; nothing was published",
                                         None, accepted=0))
        m.rejected.inc(prep.n_rejected)
        if not prep.records:
            m.latency.observe(time.perf_counter() - t0)
            return 422, dumps(error_body(
                "invalid_events", f"none of the {prep.total} events is valid for source "
                f"{name!r}; nothing was published (see rejected)", prep.rejected[0]["field"],
                accepted=0, rejected=prep.rejected, rejected_count=prep.n_rejected))
        try:  # librdkafka reports every record within the delivery timeout; this is a guard
            delivery = await asyncio.wait_for(future, self.delivery_timeout_s + 5)
        except TimeoutError:
            m.failed.inc(len(prep.records))
            return 503, dumps(error_body(
                "publish_unknown", f"no delivery report for {len(prep.records)} events within "
                f"{self.delivery_timeout_s + 5:.0f} s; some may be in the topic", None,
                rejected=prep.rejected, rejected_count=prep.n_rejected))
        m.accepted.inc(delivery.acked)
        m.latency.observe(time.perf_counter() - t0)
        if delivery.failed:
            m.failed.inc(len(delivery.failed))
            failed = sorted(({"index": prep.indexes[i], "reason": r}
                             for i, r in delivery.failed), key=lambda f: f["index"])
            return 503, dumps(error_body(
                "publish_failed", f"{len(failed)} of {len(prep.records)} valid events were not "
                f"acknowledged by the broker ({failed[0]['reason']}); the other "
                f"{delivery.acked} were published: retry the failed indexes only", None,
                accepted=delivery.acked, failed=failed, rejected=prep.rejected,
                rejected_count=prep.n_rejected))
        return 200, dumps({"source": name, "accepted": delivery.acked,
                           "rejected": prep.rejected, "rejected_count": prep.n_rejected})
