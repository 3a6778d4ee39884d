import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.errors import DefinitionError
from features.semantics.windows import (
    DAY,
    HOUR,
    MINUTE,
    default_hop,
    format_duration,
    in_window,
    parse_duration,
    tile_of,
    tiles_covering,
    window_start,
)

WINDOWS = st.sampled_from(["1m", "5m", "1h", "24h", "7d", "30d"]).map(parse_duration)
TIMES = st.integers(min_value=-(10**15), max_value=4 * 10**15)


def test_parse_and_format_round_trip():
    assert parse_duration("5m") == 5 * MINUTE
    assert parse_duration("7d") == 7 * DAY
    assert format_duration(parse_duration("24h")) == "1d"
    assert format_duration(HOUR) == "1h"
    with pytest.raises(DefinitionError, match="cannot parse duration"):
        parse_duration("5 minutes")
    with pytest.raises(DefinitionError):
        parse_duration("0h")


@given(WINDOWS)
def test_default_hop_at_most_a_tenth_and_divides(window):
    hop = default_hop(window)
    assert hop * 10 <= window and window % hop == 0


@given(WINDOWS, TIMES)
def test_window_covers_between_w_and_w_plus_h(window, t):
    hop = default_hop(window)
    start = window_start(t, window, hop)
    assert start % hop == 0
    assert window <= t - start < window + hop


@given(WINDOWS, TIMES, st.integers(min_value=-3 * DAY * 10, max_value=3 * DAY * 10))
def test_tiles_covering_matches_in_window(window, t, delta):
    """An event is in the window iff its tile is covered and (for the head tile) ts < t."""
    hop = default_hop(window)
    ts = t - delta
    covered = tile_of(ts, hop) in tiles_covering(t, window, hop)
    assert in_window(ts, t, window, hop) == (covered and ts < t)


def test_event_at_query_time_is_excluded():
    hop = default_hop(HOUR)
    assert not in_window(10 * HOUR, 10 * HOUR, HOUR, hop)
    assert in_window(10 * HOUR - 1, 10 * HOUR, HOUR, hop)
