"""One logging set-up for the long-running commands (``worker``, ``serve``).

JSON lines when the output is not a terminal (log collectors parse them; no colours or
cursor escapes end up in files), plain text on a terminal. ``--log-format`` overrides the guess.
The set-up is a ``logging.config`` dict so that hosts which configure logging themselves
(faust's worker, uvicorn) can be handed the same one instead of installing their own.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

FORMATS = ("auto", "json", "text")
_FIELDS = "%(asctime)s %(name)s %(levelname)s %(message)s"


def logging_config(level: str = "warning", fmt: str = "auto") -> dict[str, Any]:
    """A ``dictConfig`` for the root logger on stderr, in JSON or text."""
    from features.errors import DefinitionError

    if fmt not in FORMATS:
        raise DefinitionError(f"--log-format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not isinstance(logging.getLevelName(level.upper()), int):
        raise DefinitionError(f"--log-level {level!r} is not a logging level "
                              "(debug, info, warning, error, critical)")
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    formatter: dict[str, Any] = {"format": _FIELDS}
    if fmt == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS

        formatter = {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": _FIELDS,
                     "rename_fields": {"asctime": "time", "levelname": "level",
                                       "name": "logger"},
                     # uvicorn's coloured copy of each message has no place in a log file
                     "reserved_attrs": [*RESERVED_ATTRS, "color_message"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "default"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def setup_logging(level: str = "warning", fmt: str = "auto") -> dict[str, Any]:
    """Apply :func:`logging_config` now; returns it for hosts that configure logging again."""
    config = logging_config(level, fmt)
    logging.config.dictConfig(config)
    return config
