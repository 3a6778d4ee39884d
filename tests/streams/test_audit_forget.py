"""The offsets audit after ``tessera forget``: the forgotten events' offsets were written to the
log, so they count as in it (from the manifest's ``removed``), not as a gap."""

from __future__ import annotations

import pytest

from features.offline.forget import forget_events
from streams.audit import audit
from tests.streams.test_audit import _log, topic  # noqa: F401  (the module's topic fixture)

pytestmark = pytest.mark.integration


def test_forgotten_offsets_are_not_a_gap(topic, tmp_path):  # noqa: F811
    log = _log(tmp_path, topic)
    gone = sum(1 for events in topic.valid.values() for _, e in events if e["user_id"] == "u1")
    assert forget_events(log, topic.source, ("u1",)).rows == gone > 0
    rep = audit(topic.source, bootstrap=topic.bootstrap, event_log=log, group="g-forget",
                idle_s=1.0)
    assert rep.ok, rep.gaps
    assert all(p.in_log + p.in_dlq == p.expected > 0 for p in rep.partitions)
