"""Window math: the one definition of which events a windowed feature sees.

All times are integer microseconds since the Unix epoch, UTC. For a window ``W`` with hop ``h``
(``W`` a multiple of ``h``) the value at query time ``t`` aggregates the events with
``start(t) <= ts < t`` where ``start(t) = h * floor((t - W) / h)``.

Tiles are the hop grid: tile ``k`` holds the events with ``k*h <= ts < (k+1)*h``. A window at
``t`` is exactly the ``W/h`` whole tiles before the tile of ``t`` plus the *head*: the part of the
tile of ``t`` that lies before ``t``. Online we store one partial per tile and fold them at read
time; offline we fold events over ``[start(t), t)`` directly. Both call these functions.
"""

from __future__ import annotations

import re

from features.errors import DefinitionError

US = 1
MS = 1_000
SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

_UNITS = {"s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")

# Default hops, largest first. The default hop of W is the largest of these that is at most W/10
# and divides W, so a window always covers between W and W*1.1 and tiles per window stay ~10-24.
_HOP_LADDER = [
    DAY, 12 * HOUR, 6 * HOUR, 2 * HOUR, HOUR, 30 * MINUTE, 15 * MINUTE, 10 * MINUTE,
    5 * MINUTE, 2 * MINUTE, MINUTE, 30 * SECOND, 10 * SECOND, 5 * SECOND, SECOND,
]


def parse_duration(text: str | int) -> int:
    """Parse ``"30s" | "5m" | "1h" | "7d" | "2w"`` (or an int of microseconds) to microseconds."""
    if isinstance(text, int):
        if text <= 0:
            raise DefinitionError(f"duration must be positive, got {text}")
        return text
    m = _DURATION.match(str(text))
    if not m or int(m.group(1)) == 0:
        raise DefinitionError(
            f"cannot parse duration {text!r}: use a positive number and one of s, m, h, d, w "
            "(e.g. '30s', '5m', '1h', '7d')"
        )
    return int(m.group(1)) * _UNITS[m.group(2)]


def format_duration(us: int) -> str:
    """Shortest exact label for a duration, used in generated feature names (``1h``, ``7d``)."""
    for unit, size in (("w", 7 * DAY), ("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND)):
        if us % size == 0:
            if unit == "w":  # '7d' reads better than '1w' in feature names
                return f"{us // DAY}d"
            return f"{us // size}{unit}"
    return f"{us}us"


def default_hop(window: int) -> int:
    """The hop used when an aggregation does not set one: never more than ``window / 10``."""
    for hop in _HOP_LADDER:
        if hop * 10 <= window and window % hop == 0:
            return hop
    if window >= 10 * SECOND and window % SECOND == 0:
        return SECOND
    raise DefinitionError(
        f"window {format_duration(window)} is too short for a default hop; windows must be at "
        "least 10s, or set hop explicitly"
    )


def check_hop(window: int, hop: int) -> None:
    """Reject hops the tile math cannot represent exactly."""
    if hop <= 0 or window % hop != 0:
        raise DefinitionError(
            f"hop {format_duration(hop)} must divide window {format_duration(window)} exactly"
        )
    if hop * 10 > window:
        raise DefinitionError(
            f"hop {format_duration(hop)} is more than a tenth of window {format_duration(window)}; "
            "a window may then cover up to 110% of its length. Use a smaller hop."
        )


def tile_of(ts: int, hop: int) -> int:
    """Index of the tile holding ``ts`` (floor division also for times before 1970)."""
    return ts // hop


def window_start(t: int, window: int, hop: int) -> int:
    """``start(t) = h * floor((t - W) / h)``: the inclusive lower bound of the window at ``t``."""
    return hop * ((t - window) // hop)


def in_window(ts: int, t: int, window: int, hop: int) -> bool:
    """Whether an event at ``ts`` counts in the window evaluated at ``t``."""
    return window_start(t, window, hop) <= ts < t


def tiles_covering(t: int, window: int, hop: int) -> range:
    """Tile indices the online read folds for a query at ``t``: ``W/h`` whole tiles plus the head.

    The head tile ``tile_of(t)`` may also hold events at or after ``t`` if the store has seen
    them; the online read assumes it has not (serving asks at "now"), see ``docs``.
    """
    kt = tile_of(t, hop)
    return range(kt - window // hop, kt + 1)
