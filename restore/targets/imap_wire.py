"""What IMAP APPEND sends and answers: CRLF line ends, APPENDUID, the keywords a folder keeps."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from restore.identity import normalize_newlines

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.IGNORECASE)


def to_crlf(data: bytes) -> bytes:
    """IMAP wants CRLF line ends (a bare CR too becomes one); every other byte stays as it is."""
    return normalize_newlines(data).replace(b"\n", b"\r\n")


def keyword_refusal(permanent_flags: Sequence[bytes], flags: Iterable[str]) -> str | None:
    """Why the folder will not keep the keywords among ``flags``, or None.

    A server lists in PERMANENTFLAGS the flags it stores, ``\\*`` when any
    new keyword may be made. After EXAMINE (read-only) the list is empty,
    which says nothing: the stored flags are then checked after APPEND.
    """
    if not permanent_flags or b"\\*" in permanent_flags:
        return None
    allowed = {flag.decode("ascii", "replace").lower() for flag in permanent_flags}
    refused = sorted(f for f in flags if not f.startswith("\\") and f.lower() not in allowed)
    if not refused:
        return None
    return (f"the server does not store keyword {' '.join(refused)} here (PERMANENTFLAGS "
            f"{' '.join(f.decode('ascii', 'replace') for f in permanent_flags)})")


def lost_keywords(sent: Sequence[str], stored: Sequence[bytes] | None) -> str:
    """A warning when a keyword sent is not among the flags the server stored."""
    if stored is None:
        return ""
    kept = {flag.decode("ascii", "replace").lower() for flag in stored}
    lost = [flag for flag in sent if not flag.startswith("\\") and flag.lower() not in kept]
    return f"server did not keep keyword {' '.join(lost)}" if lost else ""


def parse_appenduid(response: bytes | str) -> tuple[int, list[int]]:
    """``b"[APPENDUID 1700000000 4:6] ..."`` -> (1700000000, [4, 5, 6])."""
    if isinstance(response, str):
        response = response.encode("ascii", "replace")
    match = _APPENDUID.search(response or b"")
    if not match:
        return 0, []
    uids: list[int] = []
    for part in match.group(2).split(b","):
        low, _, high = part.partition(b":")
        first, last = sorted((int(low), int(high or low)))
        uids.extend(range(first, last + 1))
    return int(match.group(1)), uids


def last_line(data: list[bytes | None] | None) -> bytes:
    return next((line for line in reversed(data or []) if line), b"")
