"""Worker wiring: one consumer-group member reading every source topic in batches.

Per polled batch:
1. decode all messages of each partition at once; dead letters for the invalid ones;
2. fold the valid events into the tile rings and write Redis in one fenced MULTI/EXEC with the
   partitions' offset watermarks (the feature is readable from here on);
3. buffer them for the offline event log.
About once a second and on shutdown — Quix's checkpoint order, sinks then offsets: append the
buffer to the event log, then commit Kafka offsets (on revocation the buffer is flushed too).
A crash anywhere replays from the last committed offset; both sinks skip what they hold.

The consumer is aiokafka's group consumer (faust's own client, with C record parsing: ~5x
kafka-python's rate here) polled with ``getmany``; the sinks run in a thread so the event
loop keeps heartbeating. No per-event agent dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import polars as pl
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.structs import TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition

from features.definitions import EventSource, FeatureRepo, FeatureView
from features.errors import DefinitionError
from features.event_columns import decode_columns
from features.kafka_config import PLAINTEXT, KafkaSecurity, aiokafka, kafka_python
from features.offline.event_log import EventLog
from features.online.backend import OnlineBackend, open_backend
from features.online.connection import RedisTransport, connect
from features.online.layout import GENERATION_FIELD, REBUILDING_PREFIX, STORE_KEY, Watermark
from features.semantics.windows import parse_duration
from streams.partitioner import home_partition
from streams.topics import delete_topics, ensure_topics
from streams.worker.checkpoint import Checkpoint
from streams.worker.dlq import DeadLetters, dead_letter
from streams.worker.epochs import EpochCheck, fingerprint
from streams.worker.offline_sink import OfflineWriter
from streams.worker.online import REP_BASE, TTL_REFRESH_S, OnlineWriter, StoreLost
from streams.worker.rebuild import rebuild
from streams.worker.repartition import Forwarder, parse_origin

log = logging.getLogger("tessera.worker")
STORE_CHECK_S = 1.0  # when idle, how often to check that Redis still holds our watermarks
# with no record for this long, check (this often) that the broker still has our logs; only
# then: the check holds the processing lock for a few broker round trips
EPOCH_CHECK_S = 5.0


@dataclass
class WorkerConfig:
    bootstrap: str
    redis_url: str
    offline_dir: Path
    group: str = "tessera-worker"
    sources: tuple[str, ...] = ()
    allowed_lateness: str = "1h"
    max_records: int = 10_000
    session_timeout_ms: int = 10_000
    stats_every_s: float = 10.0
    checkpoint_every_s: float = 1.0
    fetch_max_wait_ms: int = 20
    checkpoint_rows: int = 200_000
    # Redis commits: after every poll that drains the topic (fresh path), else once this many
    # events or this much time has been folded (catching up: one write per entity per window)
    commit_events: int = 200_000
    commit_interval_s: float = 1.0
    redis_transport: RedisTransport = field(default_factory=RedisTransport)  # ACL user, TLS
    kafka_security: KafkaSecurity = PLAINTEXT  # SASL, TLS (features.kafka_config)


class _Pipeline:
    """Everything one source needs: its online and offline writers and dead letters."""

    def __init__(self, source: EventSource, views: list[FeatureView], cfg: WorkerConfig,
                 sink: OnlineBackend, event_log: EventLog) -> None:
        self.source = source
        self.views = [v.name for v in views]
        self.forwarder = Forwarder(cfg.bootstrap, source, cfg.kafka_security)
        self.online = OnlineWriter(source, views, sink, cfg.group,
                                   parse_duration(cfg.allowed_lateness),
                                   forward=self.forwarder.forward,
                                   partitions=topic_partitions(source, cfg.bootstrap,
                                                               cfg.kafka_security))
        self.offline = OfflineWriter(event_log, source)
        self.dlq = DeadLetters(cfg.bootstrap, source.dlq_topic, cfg.kafka_security)
        self.consumed = 0
        self.rebuilds = 0
        self.rebuilt_entities = 0
        self.epoch_changes = 0

    def process(self, partition: int, records: list) -> dict[int, tuple]:
        """``{stream: (valid events as columns, the last offset, that record's fingerprint
        (stored with the watermark, see ``epochs``), the last Kafka offset read)}``."""
        max_ts = time.time_ns() // 1000 + self.source.max_future_us
        events, errors = decode_columns(self.source, [r.value for r in records],
                                        [r.offset for r in records], max_ts_us=max_ts)
        if errors:
            wm = self.online.watermark(partition)
            topic = self.source.topic
            self.dlq.send([
                dead_letter(topic, partition, r.offset, r.key, r.value, r.headers, e)
                for i, e in errors if (r := records[i]).offset > wm
            ])
        self.consumed += len(records)
        r = records[-1]
        return {partition: (events, r.offset, fingerprint(r.key, r.value, r.timestamp),
                            r.offset)}

    def process_forwarded(self, home: int, records: list) -> dict[int, tuple]:
        """Records of the repartition topic, one stream per origin partition, with their
        origin offsets (a record forwarded twice is skipped by its stream's watermark)."""
        online = self.online
        by_origin: dict[int, list] = {}
        for r in records:
            origin = parse_origin(r.headers)
            if origin is None:
                log.warning("%s/%d offset %d has no origin header; skipped",
                            self.source.repartition_topic, home, r.offset)
                continue
            by_origin.setdefault(origin[0], []).append((r, origin))
        out = {}
        for o, recs in by_origin.items():
            sid = online.rep_sid(home, o)
            epoch = max(e for _, (_, _, e) in recs)
            if epoch > online.epoch(sid):  # the origin's log restarted: so do its offsets
                online.restart_stream(sid, epoch)
            recs = [(r, org) for r, org in recs if org[2] == epoch]
            events, errors = decode_columns(self.source, [r.value for r, _ in recs],
                                            [org[1] for _, org in recs])
            for i, e in errors:  # cannot happen: the origin validated them
                log.warning("forwarded record %s is invalid (%s); skipped", recs[i][1], e)
            if len(events):
                out[sid] = (events, recs[-1][1][1], 0, recs[-1][0].offset)
        self.consumed += len(records)
        return out


class Worker:
    def __init__(self, repo: FeatureRepo, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        views_by_source: dict[str, list[FeatureView]] = {}
        for v in repo.views.values():
            if isinstance(v, FeatureView):
                views_by_source.setdefault(v.source.name, []).append(v)
        wanted = cfg.sources or tuple(views_by_source)
        if not wanted:
            raise DefinitionError(
                "the feature repo has no windowed feature view, so the worker has nothing to "
                "compute; define a FeatureView over one of its sources "
                f"({sorted(repo.sources) or 'none'})")
        unknown = [s for s in wanted if s not in views_by_source]
        if unknown:
            raise DefinitionError(
                f"no windowed feature view reads source(s) {unknown}; sources with views: "
                f"{sorted(views_by_source)}"
            )
        # the worker's client waits longer than a read: a big batch write is one round trip
        self.redis = connect(cfg.redis_url, cfg.redis_transport, socket_timeout=30,
                             socket_connect_timeout=5)
        sink = open_backend(self.redis)
        event_log = EventLog(cfg.offline_dir)
        self.sink, self.event_log = sink, event_log
        self.views_by_source = views_by_source
        self._epochs: EpochCheck | None = None
        self._store_checked = time.monotonic()
        self._checked: set = set()  # partitions checked since taken (_check_partitions)
        self._epochs_checked = time.monotonic()
        self._reread: set = set()  # repartition partitions to read again (after a rebuild)
        self._backfill_due: dict[str, set[int]] = {}  # main topic -> partitions to backfill
        self.pipelines = {
            repo.sources[s].topic: _Pipeline(repo.sources[s], views_by_source[s], cfg, sink,
                                             event_log)
            for s in wanted
        }
        # both topics of a source reach its pipeline (partition h of each: one owner)
        self._pipe_of = {t: p for p in self.pipelines.values()
                         for t in (p.source.topic, p.source.repartition_topic)}
        self.consumer: AIOKafkaConsumer | None = None
        self._lock = threading.Lock()  # processing vs. taking the offline buffer
        self.ckpt = Checkpoint(self.pipelines, self._pipe_of, self._lock, lambda: self.consumer)
        self._polled = self.ckpt.polled  # TopicPartition -> next offset given to the sinks
        self._folded_since: float | None = None  # oldest fold not yet submitted to Redis
        self._stop = False
        self.first_record_at: float | None = None
        self.on_tick: Callable[[Worker], None] | None = None  # each poll (metrics.update)

    def stop(self, *_: object) -> None:
        self._stop = True
        for p in self.pipelines.values():
            p.offline.stop()  # a log write stuck on a full disk gives up: a restart replays it

    def _process(self, polled: dict) -> int:
        """Sinks for one polled batch (runs in a thread; the event loop keeps heartbeating).

        Folds go into the cached rings at once; they are written to Redis after every poll
        that drains the topics (the fresh path), else once enough events or time have been
        folded (catching up: one write per entity for many events). Each write runs in the
        background while the next polls are decoded and folded.
        """
        t0 = time.time()
        with self._lock:
            if self.first_record_at is None:
                self.first_record_at = time.time()
            self._check_new_and_rewound(polled)
            n = 0
            by_topic: dict[str, dict[int, tuple]] = {}
            for tp, records in polled.items():
                self._polled[tp] = records[-1].offset + 1
                pipe = self._pipe_of[tp.topic]
                streams = (pipe.process(tp.partition, records) if tp.topic == pipe.source.topic
                           else pipe.process_forwarded(tp.partition, records))
                by_topic.setdefault(pipe.source.topic, {}).update(streams)
                n += len(records)
            for topic, batch in by_topic.items():
                pipe = self.pipelines[topic]
                landing = pipe.online.fold(batch)  # stamped when its Redis write lands
                for sid, (events, *_) in batch.items():
                    if sid < REP_BASE:  # the log keeps events at their origin
                        pipe.offline.add(sid, events, landing)
            if self._folded_since is None:
                self._folded_since = time.monotonic()
            pending = sum(p.online.pending for p in self.pipelines.values())
            if (n < self.cfg.max_records or pending >= self.cfg.commit_events
                    or time.monotonic() - self._folded_since >= self.cfg.commit_interval_s):
                for p in self.pipelines.values():
                    p.online.submit()
                self._folded_since = None
            if log.isEnabledFor(logging.DEBUG):
                oldest = min(r[0].timestamp for r in polled.values())
                log.debug("batch %d records in %.1f ms, oldest record %.1f ms old", n,
                          (time.time() - t0) * 1000, t0 * 1000 - oldest)
            return n

    def commit_online(self) -> None:
        """Everything folded so far into Redis (blocks until it is there)."""
        with self._lock:
            for p in self.pipelines.values():
                p.online.commit()
            self._folded_since = None

    @property
    def last_commit_at(self) -> float | None:
        """When the last write reached Redis (the features were readable from then on)."""
        landed = [p.online.landed_at for p in self.pipelines.values()
                  if p.online.landed_at is not None]
        return max(landed) if landed else None

    def _buffered(self) -> int:
        return self.ckpt.buffered

    async def checkpoint(self, wait: bool = False) -> None:
        """Steps 5 and 6 of the protocol (``checkpoint.py``), in the background."""
        await self.ckpt.run(wait)

    async def flush_offline(self) -> None:
        await self.ckpt.flush_offline()

    def stats(self) -> dict:
        out: dict = {"first_record_at": self.first_record_at,
                     "last_commit_at": self.last_commit_at}
        for topic, p in self.pipelines.items():
            s = p.online.stats
            out[topic] = {
                "consumed": p.consumed, "applied": s.applied, "late": s.late,
                "skipped_replay": s.skipped_replay, "fence_retries": s.fence_retries,
                "forwarded": s.forwarded,
                "dead_letters": p.dlq.sent, "offline_rows": p.offline.written,
                "newest_event_us": s.newest_ts, "rebuilds": p.rebuilds,
                "rebuilt_entities": p.rebuilt_entities, "epoch_changes": p.epoch_changes,
                "offline_write_failures": p.offline.write_failures,
            }
        return out

    def run(self, max_idle_s: float | None = None) -> None:
        """Process until SIGTERM/SIGINT (or ``max_idle_s`` without records once assigned)."""
        asyncio.run(self._run(max_idle_s))

    async def _run(self, max_idle_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        cfg = self.cfg
        self.consumer = AIOKafkaConsumer(
            **aiokafka(cfg.kafka_security),
            bootstrap_servers=cfg.bootstrap,
            group_id=cfg.group,
            client_id="tessera-worker",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=max(500, cfg.session_timeout_ms // 5),
            max_poll_interval_ms=300_000,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            check_crcs=False,
            # the broker may hold a fetch for the whole wait even when data is there; short
            # waits keep freshness in milliseconds
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            # partition h of a source topic and of its repartition topic go to one member:
            # the owner of an entity's home partition is the only writer of its rings
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self.consumer.subscribe(list(self._pipe_of), listener=_Forget(self))
        await self.consumer.start()
        last_stats = last_data = time.monotonic()
        try:
            while not self._stop:
                try:
                    last_data = await self._step(max_idle_s, last_data)
                except StoreLost as lost:
                    await self._recover(lost)
                if last_data is None:
                    break
                if self.on_tick is not None:
                    self.on_tick(self)
                if time.monotonic() - last_stats > cfg.stats_every_s:
                    log.info("stats %s", self.stats())
                    last_stats = time.monotonic()
        finally:
            try:
                await asyncio.to_thread(self.commit_online)
                await self.checkpoint(wait=True)
            finally:
                await self.consumer.stop()
                for p in self.pipelines.values():
                    p.dlq.close()
                    p.forwarder.close()
                if self._epochs is not None:
                    self._epochs.close()
                self.redis.close()

    async def _step(self, max_idle_s: float | None, last_data: float) -> float | None:
        """One poll and what follows it; returns when data was last seen (None: stop)."""
        cfg = self.cfg
        polled = await self.consumer.getmany(timeout_ms=500,
                                             max_records=cfg.max_records)
        polled = {tp: recs for tp, recs in polled.items() if recs}
        if polled:
            await asyncio.to_thread(self._process, polled)
            await self._seek_reread()
            if self._backfill_due:
                await self._backfill()
            last_data = time.monotonic()
            if (time.monotonic() - self.ckpt.started_at > cfg.checkpoint_every_s
                    or self._buffered() >= cfg.checkpoint_rows):
                await self.checkpoint()
        else:
            if not all(p.online.idle for p in self.pipelines.values()):
                await asyncio.to_thread(self.commit_online)
            if self._buffered():
                await self.checkpoint()  # idle: the log and offsets catch up now
            if time.monotonic() - self._store_checked > STORE_CHECK_S:
                self._store_checked = time.monotonic()
                await asyncio.to_thread(self._check_stores)
            if (time.monotonic() - self._epochs_checked > EPOCH_CHECK_S
                    and time.monotonic() - last_data > EPOCH_CHECK_S):
                # a broker that answers a fetch past its end with nothing instead of an
                # out-of-range error never rewinds us: ask it whether the log was replaced
                self._epochs_checked = time.monotonic()
                restarted = await asyncio.to_thread(self._check_idle_epochs)
                if restarted:
                    await self.consumer.seek_to_beginning(*restarted)
            if not self.consumer.assignment():
                last_data = time.monotonic()  # idle time counts once we own some
            elif max_idle_s is not None and time.monotonic() - last_data > max_idle_s:
                return None
        return last_data

    # -- faults of the log and of the store ------------------------------------------------

    async def _seek_reread(self) -> None:
        """After a rebuild, read the rebuilt partitions' forwarded events again from the
        start: those beyond the log's watermarks are not in the rebuilt rings (the rest are
        skipped by their origin watermarks)."""
        if not self._reread:
            return
        tps = [tp for tp in self._reread if tp in self.consumer.assignment()]
        self._reread.clear()
        for tp in tps:
            self._polled.pop(tp, None)
        if tps:
            await self.consumer.seek_to_beginning(*tps)

    def _check_idle_epochs(self) -> list:
        """Check every assigned partition's epoch; returns those whose log was replaced."""
        with self._lock:
            before = {tp: self._mark(tp) for tp in self.consumer.assignment()}
            try:
                self._check_partitions(list(before))
            finally:
                self._done_checking()
            restarted = [tp for tp, m in before.items()
                         if m is not None and self._mark(tp) is not None
                         and self._mark(tp).epoch > m.epoch]
            for tp in restarted:
                self._polled.pop(tp, None)
            return restarted

    def _mark(self, tp) -> Watermark | None:
        pipe = self.pipelines.get(tp.topic)
        return None if pipe is None else pipe.online.marks.get(tp.partition)

    def _check_stores(self) -> None:
        for p in self.pipelines.values():
            p.online.check_store()

    def _epoch_check(self) -> EpochCheck:
        """A consumer for single records, made on demand and closed after each round of
        checks (an idle kafka-python client's network thread costs CPU)."""
        if self._epochs is None:
            self._epochs = EpochCheck(self.cfg.bootstrap, security=self.cfg.kafka_security)
        return self._epochs

    def _done_checking(self) -> None:
        if self._epochs is not None:
            self._epochs.close()
            self._epochs = None

    def _check_new_and_rewound(self, polled: dict) -> None:
        """Before a partition's first records (newly taken) and whenever a fetch starts
        before where the partition's last one ended though nobody seeked (the broker reset the
        position: the log went backwards), check the store and the epoch."""
        fresh = [tp for tp in polled if tp not in self._checked]
        rewound = [tp for tp, recs in polled.items() if tp in self._checked
                   and tp in self._polled and recs[0].offset < self._polled[tp]]
        if rewound:
            log.warning("fetch went backwards on %s; checking the log epoch", rewound)
        if fresh or rewound:
            try:
                self._check_partitions(fresh + rewound)
            finally:
                self._done_checking()
            self._checked.update(fresh)

    def _check_partitions(self, tps: list) -> None:
        """For partitions just taken (or rewound): rebuild the store from the log if Redis
        lost their watermarks, and start a new epoch if their log was replaced.

        Runs before their first records are processed."""
        by_topic: dict[str, list[int]] = {}
        for tp in tps:
            if tp.topic in self.pipelines:
                by_topic.setdefault(tp.topic, []).append(tp.partition)
        for topic, parts in by_topic.items():
            pipe = self.pipelines[topic]
            online, source = pipe.online, pipe.source
            marks = online.sink.watermarks([online.offset_key(p) for p in parts])
            lost = [p for p, m in zip(parts, marks, strict=True)
                    if m is None and self.event_log.committed_offset(source, topic, p) is not None]
            if lost:
                online.commit()  # the other partitions' pending writes first
                self._rebuild(pipe, lost, "no offset watermark in Redis, but the event log "
                                          "holds events of these partitions")
                marks = online.sink.watermarks([online.offset_key(p) for p in parts])
            self._note_unbuilt(pipe, parts)
            for p, m in zip(parts, marks, strict=True):
                if m is None or m.offset < 0 or m.fingerprint == 0:
                    continue  # nothing applied yet, or no fingerprint to compare (older format)
                verdict = self._epoch_check().verify(topic, p, m.offset, m.fingerprint)
                if verdict.same_log:
                    continue
                self._new_epoch(pipe, p, m, verdict.why)

    def _new_epoch(self, pipe: _Pipeline, partition: int, old: Watermark, why: str) -> None:
        """Offsets of the partition restart: apply them from 0 in epoch ``old.epoch + 1``. The
        rings keep the earlier epochs' events (they happened); so does the event log."""
        source, topic = pipe.source, pipe.source.topic
        epoch = max(old.epoch, self.event_log.current_epoch(source, topic, partition)) + 1
        log.warning("%s/%d: new log epoch %d (%s; the watermark was offset %d of epoch %d): "
                    "its offsets are applied again from 0", topic, partition, epoch, why,
                    old.offset, old.epoch)
        pipe.online.commit()
        self.event_log.begin_epoch(source, topic, partition, epoch)
        mark = Watermark(-1, epoch, 0)
        self.redis.set(pipe.online.offset_key(partition), mark.encode())
        pipe.online.set_mark(partition, mark)
        pipe.epoch_changes += 1

    # -- backfill of view versions new to the store -------------------------------------------

    def _built_field(self, view: FeatureView, topic: str, partition: int) -> str:
        return f"built:{view.name}@{view.version}:{self.cfg.group}:{topic}:{partition}"

    def _note_unbuilt(self, pipe: _Pipeline, parts: list[int]) -> None:
        """Partitions where a view version has never been built: backfilled from the log
        before the stream goes on (or marked built at once when the log has nothing)."""
        source, topic = pipe.source, pipe.source.topic
        views = self.views_by_source[source.name]
        fields = [(v, p, self._built_field(v, topic, p)) for v in views for p in parts]
        have = self.redis.hmget(STORE_KEY, [f for *_, f in fields])
        empty = {}
        for (_, p, f), h in zip(fields, have, strict=True):
            if h is not None:
                continue
            if self.event_log.committed_offset(source, topic, p) is None and not any(
                    self.event_log.epoch_history(source, topic, p)):
                empty[f] = "1"  # nothing in the log yet: the stream builds it from the start
            else:
                self._backfill_due.setdefault(topic, set()).add(p)
        if empty:
            self.redis.hset(STORE_KEY, mapping=empty)

    async def _backfill(self) -> None:
        """Views new to partitions that already have history: every processed event to the
        log first (a consistent cut: the log then holds exactly what Redis does), then their
        rings from the log, written field by field (the other views' fields are untouched);
        the stream goes on from the same watermarks."""
        due, self._backfill_due = self._backfill_due, {}
        await asyncio.to_thread(self.commit_online)
        await self.checkpoint(wait=True)
        await self.flush_offline()
        for topic, parts in due.items():
            await asyncio.to_thread(self._build_views, self.pipelines[topic], sorted(parts))

    def _build_views(self, pipe: _Pipeline, parts: list[int]) -> None:
        source, topic, online = pipe.source, pipe.source.topic, pipe.online
        views = self.views_by_source[source.name]
        todo = []
        have = self.redis.hmget(STORE_KEY, [self._built_field(v, topic, p)
                                            for v in views for p in parts])
        for i, v in enumerate(views):
            if any(h is None for h in have[i * len(parts):(i + 1) * len(parts)]):
                todo.append(v)
        if not todo:
            return
        names = ", ".join(f"{v.name}@{v.version}" for v in todo)
        flag = f"{REBUILDING_PREFIX}backfill:{self.cfg.group}:{topic}"
        self.redis.hset(STORE_KEY, flag, orjson.dumps(
            {"views": names, "partitions": parts, "since": time.time()}))
        t0 = time.monotonic()
        upto = {}
        for o in range(online.n):
            wm = self.event_log.committed_offset(source, topic, o)
            if wm is not None:
                upto[o] = wm
        with self._lock:
            online.commit()
            longest = max(f.window + f.hop for v in todo for f in v.features)
            report = rebuild(self.sink, source, todo, self.event_log,
                             now_us=time.time_ns() // 1000, ttl_s=online.ttl_s + TTL_REFRESH_S,
                             upto=upto, entity_filter=home_filter(source, online.n, parts),
                             allowed_lateness_us=online.horizon_us - longest)
            online.cache.drop(parts)  # cached rings of these views were the stream's alone
        self.redis.hset(STORE_KEY, mapping={self._built_field(v, topic, p): "1"
                                            for v in todo for p in parts})
        self.redis.hdel(STORE_KEY, flag)
        log.warning("backfilled %s on %s partitions %s from the event log: %d entities, %d "
                    "events in %.1f s", names, topic, parts, report.entities, report.events,
                    time.monotonic() - t0)

    async def _recover(self, lost: StoreLost) -> None:
        """Redis lost data: everything processed goes to the log first (the checkpoint), then
        the source's assigned partitions are rebuilt from the log up to its watermarks; the
        stream goes on from there, so nothing is missing and nothing counted twice."""
        log.warning("%s; rebuilding the online store from the event log", lost)
        await self.checkpoint(wait=True)
        await self.flush_offline()
        for pipe in self.pipelines.values():
            if pipe.source.name != lost.source:
                continue  # another source's writer notices on its own next write
            parts = sorted(tp.partition for tp in self.consumer.assignment()
                           if tp.topic == pipe.source.topic)
            # all of it is in the log now, so every offset processed is covered: the log's
            # watermark is the last valid event; what follows it was dead-lettered
            done = {tp.partition: pos - 1 for tp, pos in self._polled.items()
                    if tp.topic == pipe.source.topic}
            await asyncio.to_thread(self._rebuild, pipe, parts, str(lost), done)
        await self._seek_reread()

    def _rebuild(self, pipe: _Pipeline, parts: list[int], why: str,
                 processed: dict[int, int] | None = None) -> None:
        """The partitions' rings from the event log, up to its watermarks, which become the
        Redis watermarks (or the last offset ``processed``, when everything processed is in
        the log); meanwhile the store says it is rebuilding (``/readyz``: not ready)."""
        source, topic, online = pipe.source, pipe.source.topic, pipe.online
        flag = f"{REBUILDING_PREFIX}{self.cfg.group}:{topic}"
        self.redis.hset(STORE_KEY, flag, orjson.dumps(
            {"why": why, "partitions": parts, "since": time.time()}))
        t0 = time.monotonic()
        online.wait_quietly()
        upto, marks = {}, {}
        for p in parts:
            wm = self.event_log.committed_offset(source, topic, p)
            epoch = self.event_log.current_epoch(source, topic, p)
            if wm is not None:
                upto[p] = wm
            last = max(-1 if wm is None else wm, (processed or {}).get(p, -1))
            fp = self._epoch_check().fingerprint_at(topic, p, last) if last >= 0 else 0
            marks[p] = Watermark(last, epoch, fp)
        self._done_checking()
        # events forwarded here from other partitions: the log holds them at their origin up
        # to its watermark there; later ones are read again from the repartition topic
        for o in range(online.n):
            wm = self.event_log.committed_offset(source, topic, o)
            epoch = self.event_log.current_epoch(source, topic, o)
            if wm is not None and o not in upto:
                upto[o] = wm
            for h in parts:
                marks[online.rep_sid(h, o)] = Watermark(-1 if wm is None else wm, epoch, 0)
        report = rebuild(self.sink, source, self.views_by_source[source.name], self.event_log,
                         now_us=time.time_ns() // 1000, ttl_s=online.ttl_s + TTL_REFRESH_S,
                         upto=upto, entity_filter=home_filter(source, online.n, parts),
                         allowed_lateness_us=online.allowed_lateness_us, clear_applied=True)
        self.sink.set_watermarks({online.offset_key(sid): m for sid, m in marks.items()})
        online.reset(marks)
        self._reread.update(TopicPartition(source.repartition_topic, h) for h in parts)
        pipe.rebuilds += 1
        pipe.rebuilt_entities += report.entities
        self.redis.hset(STORE_KEY, mapping={  # every view of these partitions is built
            self._built_field(v, topic, p): "1"
            for v in self.views_by_source[source.name] for p in parts})
        self.redis.hset(STORE_KEY, GENERATION_FIELD, self.sink.generation)
        self.redis.hdel(STORE_KEY, flag)
        log.warning("rebuilt %s partitions %s from the event log: %d entities, %d events in "
                    "%.1f s", topic, parts, report.entities, report.events,
                    time.monotonic() - t0)


def topic_partitions(source: EventSource, bootstrap: str,
                     security: KafkaSecurity | None = None) -> int:
    """The source topic's partition count (which the SDK's partitioner hashes over; it may
    differ from the definition's), with a repartition topic of the same count: created with
    the topics if missing, recreated if it has another count and has never held a record."""
    ensure_topics([source], bootstrap, security=security)
    c = KafkaConsumer(bootstrap_servers=bootstrap, client_id="tessera-topics",
                      **kafka_python(security))
    try:
        n = len(c.partitions_for_topic(source.topic) or ())
        rep = c.partitions_for_topic(source.repartition_topic) or set()
        if n and len(rep) != n:
            tps = [KTopicPartition(source.repartition_topic, p) for p in rep]
            if any(c.end_offsets(tps).values()):
                raise DefinitionError(
                    f"{source.repartition_topic} has {len(rep)} partitions and {source.topic} "
                    f"has {n}: they must match; stop the workers, let them drain it, delete it "
                    "and start them again (it is recreated with the right count)")
            delete_topics([source.repartition_topic], bootstrap, security=security)
            ensure_topics([source], bootstrap, repartition_partitions=n, security=security)
    finally:
        c.close()
    return n or source.partitions


def home_filter(source: EventSource, partitions: int, mine: list[int]) -> pl.Expr:
    """A log filter for the entities whose home partition is one of ``mine``."""
    keys = source.entity.keys
    if len(keys) == 1:
        key = pl.col(keys[0]).cast(pl.String)
    else:  # key_of()'s JSON list of strings
        parts: list = [pl.lit('["')]
        for i, k in enumerate(keys):
            parts += [pl.lit('","')] if i else []
            parts.append(pl.col(k).cast(pl.String))
        key = pl.concat_str([*parts, pl.lit('"]')])
    wanted = set(mine)

    def select(s: pl.Series) -> pl.Series:
        ours = [k for k in s.unique().to_list() if home_partition(k, partitions) in wanted]
        return s.is_in(ours)

    return key.map_batches(select, return_dtype=pl.Boolean)


class _Forget(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        # Flush the offline buffer so the next owner replays less. Offsets are not committed
        # here; the next owner re-reads from the last checkpoint and skips by the watermarks.
        await asyncio.to_thread(self.worker.commit_online)
        await self.worker.flush_offline()
        for tp in revoked:
            self.worker._polled.pop(tp, None)
            self.worker._checked.discard(tp)
            pipe = self.worker._pipe_of.get(tp.topic)
            if pipe is not None:
                pipe.online.forget([tp.partition])

    async def on_partitions_assigned(self, assigned) -> None:
        pass  # checked before their first records are processed (_check_new_and_rewound)
