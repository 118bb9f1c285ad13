"""Times and durations, as mailrestore reads and writes them.

Inside, a time is epoch seconds (a float, UTC). It becomes text only at the
edges: ISO 8601 with an offset in JSON and plans (``iso``), a short UTC
form for people (``human``). Read back, ISO 8601 needs an offset where a
file holds it (``parse_iso``); on the command line a time without one is
taken as UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from restore.errors import UsageError

# The plausible range of mail times: a Date: outside it is garbage, not history,
# and it bounds a window given by one side only.
EARLIEST = 0.0                  # 1970-01-01
LATEST = 4102444800.0           # 2100-01-01

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class NoOffset(ValueError):
    """An ISO 8601 time without a UTC offset, where one is required."""


def iso(ts: float | None) -> str | None:
    """``2017-12-08T16:02:00+00:00``; None stays None (JSON null)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def human(ts: float | None) -> str:
    """``2017-12-08 16:02:00 UTC`` for a report; ``-`` for no time."""
    if ts is None:
        return "-"
    return f"{plain(ts)} UTC"


def plain(ts: float) -> str:
    """``2017-12-08 16:02:00`` (UTC): what a spreadsheet reads as a date and time."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_iso(text: str, *, naive_is_utc: bool = False) -> float:
    """ISO 8601 (``Z`` or an offset) -> epoch seconds.

    Raises ValueError when ``text`` is no ISO 8601 time, and NoOffset when it
    has no offset, unless ``naive_is_utc``.
    """
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        if not naive_is_utc:
            raise NoOffset(f"{text!r} has no UTC offset")
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_time_option(value: str | None, option: str) -> float | None:
    """A --since/--until/--now value -> epoch seconds; "auto" or None -> None."""
    if value is None or value == "auto":
        return None
    try:
        return parse_iso(value, naive_is_utc=True)
    except ValueError:
        raise UsageError(
            f"{option} {value!r}: expected ISO 8601, e.g. 2017-12-08T16:02:00+00:00") from None


def parse_duration(text: str, option: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d`` -> seconds; UsageError naming ``option`` otherwise."""
    m = _DURATION.match(text or "")
    if not m:
        raise UsageError(f"{option} {text!r}: expected a duration like 90s, 15m, 24h or 7d")
    return float(m.group(1)) * _UNIT[m.group(2)]
