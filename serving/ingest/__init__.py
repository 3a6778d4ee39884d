"""Push ingest over HTTP: ``POST /v1/push/{source}`` validates events as the SDK does
(``features.event_schema``), places them with the SDK's partitioner (``features.partitioner``)
and publishes them with ``acks=all``. It lives in ``serving`` (a router the scorer app includes)
and imports only the base layer, never ``streams``."""
