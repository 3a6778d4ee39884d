"""The stream worker: Kafka batches -> tile rings in Redis + the Parquet event log.

``app`` wires the pieces: ``decoding`` (batch decode + DLQ records), ``tiles`` (pure folding
of events into rings), ``online`` (the exactly-once writes through
``features.online.backend``), ``offline_sink`` (event log appends) and ``dlq`` (dead letters).
"""
