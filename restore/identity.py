"""Message identity: normalisation and fingerprints (pure functions, no I/O).

Two copies are the same message when their normalised Message-ID, Date and
From agree (``auto``); a message without Message-ID is identified by a digest
of its origin headers and body. What delivery adds or changes never counts:
delivery headers are not read at all (only the origin headers below are),
line endings (CRLF, LF, CR), header folding, mbox ``>From`` quoting and a
``[SPAM]`` tag a filter put in front of the Subject change nothing.

Real mail is hostile: unknown charsets, 8-bit bytes in headers, broken
folding, huge header lines, NUL bytes. Nothing here may raise on any input,
so headers are split by hand rather than by ``email``'s strict policies.
"""

from __future__ import annotations

import calendar
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parseaddr, parsedate_tz

MATCH_MODES = ("auto", "message-id", "strict")

# The headers an identity digest reads when there is no Message-ID: set by
# the author's client, untouched by transport and delivery.
ORIGIN_HEADERS = ("from", "to", "cc", "date", "subject", "in-reply-to", "references")

_QUOTED_FROM = re.compile(rb"(?m)^>+(From )")
_MID = re.compile(r"<([^<>\s]+)>")
_SPACE = re.compile(r"\s+")
_SPAM_TAG = re.compile(r"^\s*(?:\[\s*spam\s*\??\]|\*+\s*spam\s*\*+|spam:)\s*", re.IGNORECASE)

EARLIEST = 0.0                       # 1970: earlier dates are garbage, not history
LATEST = calendar.timegm((2100, 1, 1, 0, 0, 0))


@dataclass(frozen=True, slots=True)
class Facts:
    """What identity and the timeline need of one message, a few hundred bytes."""

    message_id: str | None
    key: str                     # --match auto: Message-ID + Date + From (or digest)
    mid_key: str                 # --match message-id
    strict_key: str              # --match strict: auto + body
    received: float | None       # date of the topmost Received: header
    date: float | None           # Date: header
    size: int
    envelope: dict[str, list[str]] = field(default_factory=dict)

    def key_for(self, match: str) -> str:
        if match == "message-id":
            return self.mid_key
        if match == "strict":
            return self.strict_key
        return self.key


def _digest(*parts: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def normalize_newlines(data: bytes) -> bytes:
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data


def split_message(data: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Headers as (lower-case name, unfolded value) in order, and the body.

    Lines that are neither a header nor a continuation are skipped; a message
    with no blank line is all headers.
    """
    data = normalize_newlines(data)
    if data.startswith(b"From "):            # a stray mbox From_ line
        data = data.partition(b"\n")[2]
    if data.startswith(b"\n"):
        return [], data[1:]
    block, sep, body = data.partition(b"\n\n")
    # Unfolded as bytes and decoded whole: decoding line by line would let a
    # header's text depend on where it was folded when its lines differ in charset.
    fields: list[tuple[bytes, list[bytes]]] = []
    for raw in block.split(b"\n"):
        if raw[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].append(raw.strip())
            continue
        name, colon, value = raw.partition(b":")
        if not colon or not name or b" " in name.strip() or len(name) > 200:
            continue
        fields.append((name, [value.strip()]))
    headers = [(_text(name).strip().lower(), _text(b" ".join(parts)).strip())
               for name, parts in fields]
    return headers, body


def _text(raw: bytes) -> str:
    """Header bytes as text, deterministically, whatever the charset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_date(value: str | None) -> float | None:
    """RFC 5322 date -> epoch seconds; a date without zone is taken as UTC. Never raises."""
    if not value:
        return None
    try:
        parsed = parsedate_tz(value)
        if parsed is None:
            return None
        year, month, day, hour, minute, second = parsed[:6]
        # datetime refuses 31 Feb, 25:61 and zones beyond 24 h, which
        # timegm would silently roll over into another day. A leap second
        # (:60) is real, but datetime cannot hold it.
        zone = timezone(timedelta(seconds=parsed[9] or 0))
        ts = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=zone).timestamp()
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    return float(ts) if EARLIEST <= ts < LATEST else None


def received_date(value: str) -> float | None:
    """Date of a Received: header: what follows its last ';'."""
    _, semi, when = value.rpartition(";")
    return parse_date(when) if semi else None


def normalize_message_id(value: str | None) -> str | None:
    if not value:
        return None
    m = _MID.search(value)
    mid = m.group(1) if m else value.strip().strip("<>").strip()
    if not mid or any(c.isspace() for c in mid):
        return None
    return f"<{mid}>"


def normalize_from(value: str | None) -> str:
    if not value:
        return ""
    try:
        addr = parseaddr(value)[1]
    except (ValueError, TypeError, IndexError):
        addr = ""
    return addr.lower() if addr else _SPACE.sub(" ", value).strip().lower()


def normalize_subject(value: str | None) -> str:
    subject = _SPACE.sub(" ", value or "").strip()
    while True:
        stripped = _SPAM_TAG.sub("", subject, count=1)
        if stripped == subject:
            return subject
        subject = stripped


def normalize_body(body: bytes) -> bytes:
    """Body as compared: LF endings, ``>From`` quoting undone, trailing blank lines dropped."""
    body = normalize_newlines(body)
    if b"From " in body:
        body = _QUOTED_FROM.sub(rb"\1", body)
    return body.rstrip(b"\n")


def facts_of(
    data: bytes,
    envelope_headers: Iterable[str] = (),
    *,
    headers_only: bool = False,
) -> Facts:
    """Fingerprint one message. ``envelope_headers`` are kept (values) for recipient lookup.

    With ``headers_only`` (an IMAP replica fetched only header fields) the
    body is unknown: the digests of a message without Message-ID and the
    strict key are then marked as such and match nothing that has a body.
    """
    headers, body = split_message(data)
    first: dict[str, str] = {}
    received: float | None = None
    topmost_seen = False
    wanted = {h.lower() for h in envelope_headers}
    envelope: dict[str, list[str]] = {}
    for name, value in headers:
        if name == "received":
            if not topmost_seen:    # only the topmost counts, even when its date is garbage
                received, topmost_seen = received_date(value), True
            continue
        if name in wanted:
            envelope.setdefault(name, []).append(value)
        first.setdefault(name, value)

    message_id = normalize_message_id(first.get("message-id"))
    date_value = first.get("date")
    date = parse_date(date_value)
    date_norm = str(int(date)) if date is not None else _SPACE.sub(" ", date_value or "").strip()
    sender = normalize_from(first.get("from"))
    body_digest = "headers-only" if headers_only else _digest(normalize_body(body))
    if message_id:
        key = _digest("m", message_id, date_norm, sender)
        mid_key = _digest("i", message_id)
    else:
        origin = [
            date_norm if name == "date"
            else normalize_subject(first.get(name)) if name == "subject"
            else _SPACE.sub(" ", first.get(name, "")).strip()
            for name in ORIGIN_HEADERS
        ]
        key = mid_key = _digest("d", *origin, body_digest)
    return Facts(
        message_id=message_id,
        key=key,
        mid_key=mid_key,
        strict_key=_digest("s", key, body_digest),
        received=received,
        date=date,
        size=len(data),
        envelope=envelope,
    )


def fingerprint_of(data: bytes) -> str:
    """The identity key (``auto``) a plan line's ``fingerprint`` holds."""
    return facts_of(data).key
