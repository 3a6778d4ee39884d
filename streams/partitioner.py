"""The SDK's partitioner, re-exported from the base layer (``features.partitioner``) where the
HTTP push ingest (``serving/ingest``) also reads it: one definition of an entity's home
partition for every producer."""

from __future__ import annotations

from features.partitioner import home_partition

__all__ = ["home_partition"]
