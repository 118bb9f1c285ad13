"""Times and durations, as mailrestore reads and writes them.

Inside, a time is epoch seconds (a float, UTC). It becomes text only at the
edges: ISO 8601 with an offset in JSON and plans (``iso``), a short UTC
form for people (``human``). One parser reads both back (``parse_iso``), so
any time the tool prints can be pasted into --since, --until and --now. A
file's time needs an offset; on the command line a time without one is
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

# What ``human`` appends, and ISO 8601's Z in either case: an offset of zero.
_UTC_SUFFIX = re.compile(r"\s*(?:UTC|Z)$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class NoOffset(ValueError):
    """An ISO 8601 time without a UTC offset, where one is required."""


def iso(ts: float | None) -> str | None:
    """``2017-12-08T16:02:00+00:00``; None stays None (JSON null)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def human(ts: float | None) -> str:
    """``2017-12-08 16:02:00 UTC`` for a report; ``-`` for no time.

    A time with a fraction of a second keeps it (``16:02:00.25``): a window
    bound pasted back into --since/--until must be the same instant, or the
    message at the bound falls out.
    """
    if ts is None:
        return "-"
    micro = datetime.fromtimestamp(ts, UTC).microsecond
    fraction = f".{micro:06d}".rstrip("0") if micro else ""
    return f"{plain(ts)}{fraction} UTC"


def to_the_second(ts: float | None) -> str:
    """``2026-12-07 19:30:12 UTC``: when the tool itself did something (a run's start).

    Such a time is read, never pasted into a window option, so the fraction
    of a second that ``human`` keeps would only be noise in a table.
    """
    return "-" if ts is None else f"{plain(ts)} UTC"


def plain(ts: float) -> str:
    """``2017-12-08 16:02:00`` (UTC): what a spreadsheet reads as a date and time."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_iso(text: str, *, naive_is_utc: bool = False) -> float:
    """ISO 8601 or the ``human`` form -> epoch seconds.

    Accepts ``2017-12-08T16:02:00+00:00``, ``…Z``, ``2017-12-08 16:02:00 UTC``,
    and a date or minute alone (``2017-12-08``, ``2017-12-08 16:00``: the
    timeline's rows). Raises ValueError when ``text`` is none of these, and
    NoOffset when it has no offset (nor ``UTC``), unless ``naive_is_utc``.
    """
    text = text.strip()
    utc = _UTC_SUFFIX.search(text)
    parsed = datetime.fromisoformat(text[:utc.start()] + "+00:00" if utc else text)
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
            f"{option} {value!r}: expected ISO 8601 (2017-12-08T16:02:00Z, an offset, or none for "
            "UTC) or a time as printed (2017-12-08 16:02:00 UTC)") from None


def parse_duration(text: str, option: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d`` -> seconds; UsageError naming ``option`` otherwise."""
    m = _DURATION.match(text or "")
    if not m:
        raise UsageError(f"{option} {text!r}: expected a duration like 90s, 15m, 24h or 7d")
    return float(m.group(1)) * _UNIT[m.group(2)]
