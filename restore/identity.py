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

import functools
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from hashlib import blake2b as _blake2b
from typing import NamedTuple

from restore.times import EARLIEST, LATEST

MATCH_MODES = ("auto", "message-id", "strict")

# The headers an identity digest reads when there is no Message-ID: set by
# the author's client, untouched by transport and delivery.
ORIGIN_HEADERS = ("from", "to", "cc", "date", "subject", "in-reply-to", "references")

_BLANK_LINE = re.compile(b"\n\n")
_QUOTED_FROM = re.compile(rb"(?m)^>+(From )")
_MID = re.compile(r"<([^<>\s]+)>")
_SPACE = re.compile(r"\s+")
_SPAM_TAG = re.compile(r"^\s*(?:\[\s*spam\s*\??\]|\*+\s*spam\s*\*+|spam:)\s*", re.IGNORECASE)

# The common shapes of the header fields read on every message, parsed here
# without ``email``'s pure-Python tokenisers. Each fast path accepts only text
# on which it gives exactly what the general parser gives (tests compare the
# two); anything else takes the general path.
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_PLAIN_DATE = re.compile(
    r"[ \t]*(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),[ \t]*)?([0-9]{1,2})[ \t]+(" + "|".join(_MONTHS)
    + r")[ \t]+([12][0-9]{3})[ \t]+([0-9]{2}):([0-9]{2}):([0-9]{2})[ \t]+([+-])([0-9]{2})([0-9]{2})"
    r"(?:[ \t].*)?", re.DOTALL)
_MONTH_NUMBER = {name: number for number, name in enumerate(_MONTHS, 1)}
_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
# A phrase may hold 8-bit text ("Jörg Müller" unencoded, common in real mail):
# the general parser takes any character beyond ASCII as part of an atom.
_PLAIN_FROM = re.compile(   # addr, addr (comment), phrase <addr>, "quoted" <addr>
    rf"[ \t]*(?:({_ADDR_SPEC})(?:[ \t]*\([^()\\\"\r\n]*\))?"
    rf"|(?:\"[^\"\\\r\n]*\"[ \t]*|[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~. \t\x80-\U0010ffff-]*)"
    rf"<({_ADDR_SPEC})>)[ \t]*")
# A header line the fast header scan understands: a continuation, or a
# printable ASCII name of at most 200 bytes before the colon. One line of any
# other shape sends the whole header block to the line-by-line parser, whose
# rules for odd names and stray lines it does not repeat.
_ODD_HEADER_LINE = re.compile(
    rb"\n(?![ \t]|\Z|[!-9;-~]{1,200}:|(?=[^\n:]{1,200}:)[!-9;-~]+[ \t]+:)")
_FIELD_NAME = re.compile(r"[!-9;-~]+")
# After a field's name: its value and continuation lines, in the block.
_FIELD_VALUE = rb"[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)"
_RECEIVED = re.compile(rb"\nreceived" + _FIELD_VALUE, re.IGNORECASE)
# Read on every message; the rest of ORIGIN_HEADERS only for one without Message-ID.
_KEY_HEADERS = frozenset({"message-id", "date", "from"})
_ORIGIN_NAMES = frozenset(ORIGIN_HEADERS)



class Facts(NamedTuple):
    """What identity and the timeline need of one message, a few hundred bytes.

    A NamedTuple for the reason ``stores.base.Unit`` is one: one is made per message scanned.
    """

    message_id: str | None
    key: str                     # --match auto: Message-ID + Date + From (or digest)
    strict_key: str              # --match strict: auto + body
    received: float | None       # date of the topmost Received: header
    date: float | None           # Date: header
    size: int
    envelope: dict[str, list[str]]

    @property
    def mid_key(self) -> str:
        """--match message-id: the Message-ID, else the key (the catalog's column is the same)."""
        return self.message_id or self.key


def _digest(*parts: str) -> str:
    """Each part followed by a NUL, hashed in one call."""
    # Encoding the joined text gives the bytes that joining each part's encoding would.
    joined = "\0".join(parts) + "\0"
    return _blake2b(joined.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


def _body_digest(compared_body: bytes) -> str:
    """``_digest`` of a body already normalised (``normalize_body``), without copying it."""
    digest = _blake2b(compared_body, digest_size=16)
    digest.update(b"\0")
    return digest.hexdigest()


def _strict_digest(key: str, compared_body: bytes) -> str:
    """The strict key: ``key`` and the body, in one pass over the body."""
    digest = _blake2b(f"s-body\0{key}\0".encode("ascii"), digest_size=16)
    digest.update(compared_body)
    digest.update(b"\0")
    return digest.hexdigest()


def normalize_newlines(data: bytes) -> bytes:
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data


def split_message(data: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Headers as (lower-case name, unfolded value) in order, and the body.

    Lines that are neither a header nor a continuation are skipped; a message
    with no blank line is all headers.
    """
    block, body = _header_block(data)
    return _parse_header_block(block), body


def _header_block(data: bytes) -> tuple[bytes, bytes]:
    """The header block and the body, with LF line endings and a leading From_ line dropped."""
    data = normalize_newlines(data)
    if data.startswith(b"From "):            # a stray mbox From_ line
        data = data.partition(b"\n")[2]
    if data.startswith(b"\n"):
        return b"", data[1:]
    blank = _BLANK_LINE.search(data)
    return (data[:blank.start()], data[blank.end():]) if blank else (data, b"")


def _parse_header_block(block: bytes) -> list[tuple[str, str]]:
    if not block:
        return []
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
    return [(_text(name).strip().lower(), _text(b" ".join(parts)).strip())
            for name, parts in fields]


# What facts_of reads of a message: the first value of each header field named
# (the key headers, the origin headers and the envelope headers), every value
# of the envelope headers, the topmost Received: header (its value, or None),
# and the body as compared (``normalize_body``).
Scanned = tuple[dict[str, str], dict[str, list[str]], str | None, bytes]


def scan_headers_py(data: bytes, names: tuple[str, ...], envelope_count: int) -> Scanned | None:
    """The fast header scan; None when the block has a line it does not accept.

    ``names`` are the lower-case field names to read, the first
    ``envelope_count`` of them envelope headers (every value kept). The
    reference for ``restore._headerscan.scan_headers``, which does the same in C.
    """
    block, body = _header_block(data)
    if not block:
        return {}, {}, None, normalize_body(body)
    text = b"\n" + block
    if _ODD_HEADER_LINE.search(text):
        return None
    first: dict[str, str] = {}
    envelope: dict[str, list[str]] = {}
    envelope_names = names[:envelope_count]
    for raw_name, raw_value in _header_pattern(names).findall(text):
        name = _FOLDED_NAMES.get(raw_name)
        if name is None:
            name = raw_name.lower().decode("ascii")   # the pattern's names are ASCII
            if len(_FOLDED_NAMES) < 1024:
                _FOLDED_NAMES[raw_name] = name
        if name in envelope_names:
            value = _unfold(raw_value)
            envelope.setdefault(name, []).append(value)
            first.setdefault(name, value)
        elif name not in first:
            first[name] = _unfold(raw_value)
    received = _RECEIVED.search(text)
    return first, envelope, _unfold(received.group(1)) if received else None, normalize_body(body)


def _scan_by_line(data: bytes, names: tuple[str, ...], envelope_count: int) -> Scanned:
    """The general path: every header line parsed, those named kept."""
    block, body = _header_block(data)
    first: dict[str, str] = {}
    envelope: dict[str, list[str]] = {}
    envelope_names = names[:envelope_count]
    wanted = frozenset(names)
    received: str | None = None
    topmost_seen = False
    for name, value in _parse_header_block(block):
        if name == "received":
            if not topmost_seen:    # only the topmost counts, even when its date is garbage
                received, topmost_seen = value, True
            continue
        if name in envelope_names:
            envelope.setdefault(name, []).append(value)
        if name in wanted:
            first.setdefault(name, value)
    return first, envelope, received, normalize_body(body)




# A field name as a message spells it -> lower-case (a few spellings per name in practice).
_FOLDED_NAMES: dict[bytes, str] = {}


def _unfold(raw: bytes) -> str:
    """A field's value and continuation lines as ``_parse_header_block`` joins them."""
    value = b" ".join([part.strip() for part in raw.split(b"\n")]) if b"\n" in raw else raw.strip()
    try:    # _text, inlined: this runs for every field read of every message
        return value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return value.decode("latin-1").strip()


@functools.lru_cache(maxsize=64)
def _header_pattern(names: tuple[str, ...]) -> re.Pattern[bytes]:
    """Finds the fields ``names`` (with their continuation lines) in ``"\\n" + block``."""
    # A name of any other shape is on no line the fast path accepts.
    alternatives = b"|".join(re.escape(name.encode("ascii"))
                             for name in sorted(names) if _FIELD_NAME.fullmatch(name))
    return re.compile(rb"\n(" + alternatives + rb")" + _FIELD_VALUE, re.IGNORECASE)


@functools.lru_cache(maxsize=64)
def _scan_names(envelope_headers: tuple[str, ...]) -> tuple[tuple[str, ...], int]:
    """The names a scan reads, envelope headers first, and how many of them are envelope headers.

    Received: is read apart (only its topmost value counts), never as a named field.
    """
    envelope = sorted({h.lower() for h in envelope_headers} - {"received"})
    others = sorted((_KEY_HEADERS | _ORIGIN_NAMES) - set(envelope))
    return tuple(envelope + others), len(envelope)


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
    ts = plain_date(value)
    if ts is None:
        ts = _general_date(value)
    return float(ts) if ts is not None and EARLIEST <= ts < LATEST else None


def plain_date_py(value: str) -> int | None:
    """Epoch seconds of a date of the plain shape; None for the general parser to decide.

    The reference for ``restore._headerscan.plain_date``.
    """
    plain = _PLAIN_DATE.fullmatch(value)
    return _plain_date(plain.groups()) if plain else None


# A number standing alone (not part of a time or a zone) and written with a
# leading zero: "0000" or "0099" as a year.
_ZERO_LED_NUMBER = re.compile(r"(?<![\w:+-])0[0-9]+(?![\w:])")


def _general_date(value: str) -> float | None:
    # Imported here, not at the top: few dates take this path, and a warm scan
    # (which reads few messages) would spend more on the import than on scanning.
    from email.utils import parsedate_tz

    try:
        parsed = parsedate_tz(value)
        if parsed is None:
            return None
        # parsedate_tz reads any year below 100 as 1970-2069, as RFC 5322 reads a
        # two-digit year; a year written with more digits ("0000") is what it says.
        if any(len(n) > 2 and int(n) == parsed[0] % 100 for n in _ZERO_LED_NUMBER.findall(value)):
            return None
        year, month, day, hour, minute, second = parsed[:6]
        # datetime refuses 31 Feb, 25:61 and zones beyond 24 h, which
        # timegm would silently roll over into another day. A leap second
        # (:60) is real, but datetime cannot hold it.
        zone = _zone(parsed[9] or 0)
        return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=zone).timestamp()
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def _plain_date(groups: tuple[str, ...]) -> int | None:
    """What ``_general_date`` gives for a ``_PLAIN_DATE`` match, by arithmetic (no datetime)."""
    day, month_name, year, hour, minute, second, sign, zone_h, zone_m = groups
    first_day, month_days = _month(int(year), _MONTH_NUMBER[month_name])
    d, h, m = int(day), int(hour), int(minute)
    offset = int(zone_h) * 3600 + int(zone_m) * 60
    if not (1 <= d <= month_days and h < 24 and m < 60 and offset < 86400):
        return None    # what datetime and timezone refuse
    seconds = (first_day + d - 1) * 86400 + h * 3600 + m * 60 + min(int(second), 59)
    return seconds + offset if sign == "-" else seconds - offset


@functools.lru_cache(maxsize=4096)
def _month(year: int, month: int) -> tuple[int, int]:
    """Days from 1970-01-01 to the month's first day, and the month's length."""
    first = datetime(year, month, 1).toordinal()
    following = datetime(year + month // 12, month % 12 + 1, 1).toordinal()
    return first - _EPOCH_ORDINAL, following - first


@functools.lru_cache(maxsize=256)
def _zone(offset: int) -> timezone:
    """The zone ``offset`` seconds east of UTC; raises ValueError beyond 24 hours."""
    return timezone(timedelta(seconds=offset))


def received_date(value: str) -> float | None:
    """Date of a Received: header: what follows its last ';'."""
    _, semi, when = value.rpartition(";")
    return parse_date(when) if semi else None


def normalize_message_id(value: str | None) -> str | None:
    if not value:
        return None
    bracketed = bracketed_id(value)
    if bracketed is not None:
        return bracketed
    mid = value.strip().strip("<>").strip()
    if not mid or _SPACE.search(mid):
        return None
    return f"<{mid}>"


def normalize_from(value: str | None) -> str:
    if not value:
        return ""
    address = plain_address(value)
    if address is not None:
        return address
    from email.utils import parseaddr  # see _general_date

    try:
        addr = parseaddr(value)[1]
    except (ValueError, TypeError, IndexError):
        addr = ""
    return addr.lower() if addr else _SPACE.sub(" ", value).strip().lower()


def bracketed_id_py(value: str) -> str | None:
    """The first ``<id>`` in a Message-ID value (no space, no bracket inside), else None.

    The reference for ``restore._headerscan.bracketed_id``.
    """
    m = _MID.search(value)
    return f"<{m.group(1)}>" if m else None


def plain_address_py(value: str) -> str | None:
    """The lower-case address of a From: value of the plain shape, else None.

    The reference for ``restore._headerscan.plain_address``.
    """
    plain = _PLAIN_FROM.fullmatch(value)
    return (plain.group(1) or plain.group(2)).lower() if plain else None


# The fast paths in C, when restore._headerscan was built; the Python
# references above give the same results (tests compare them).
try:
    from restore._headerscan import bracketed_id, plain_address, plain_date, scan_headers
except ImportError:    # built without a C compiler: the same, slower
    bracketed_id, plain_address, plain_date, scan_headers = (
        bracketed_id_py, plain_address_py, plain_date_py, scan_headers_py)


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
    # most bodies hold no ">" at all: one byte is found fastest
    if b">" in body and b">From " in body:
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
    names, envelope_count = _scan_names(tuple(envelope_headers))
    scanned = (scan_headers(data, names, envelope_count)
               or _scan_by_line(data, names, envelope_count))
    first, envelope, topmost_received, body = scanned
    received = received_date(topmost_received) if topmost_received is not None else None

    message_id = normalize_message_id(first.get("message-id"))
    date_value = first.get("date")
    date = parse_date(date_value)
    date_norm = str(int(date)) if date is not None else _SPACE.sub(" ", date_value or "").strip()
    sender = normalize_from(first.get("from"))
    if message_id:
        key = _digest("m", message_id, date_norm, sender)
    else:
        origin = [
            date_norm if name == "date"
            else normalize_subject(first.get(name)) if name == "subject"
            else _SPACE.sub(" ", first.get(name, "")).strip()
            for name in ORIGIN_HEADERS
        ]
        key = _digest("d", *origin, "headers-only" if headers_only else _body_digest(body))
    return Facts(
        message_id=message_id,
        key=key,
        strict_key=headers_only_strict_key(key) if headers_only else _strict_digest(key, body),
        received=received,
        date=date,
        size=len(data),
        envelope=envelope,
    )


def received_time(facts: Facts, delivered: float | None) -> tuple[float | None, str]:
    """When a message was received, and how that was found.

    The topmost Received: header is the receiving server's own word; the
    store's delivery time (From_ line, file mtime, INTERNALDATE) is next
    best; the Date: header, set by the sender's clock, is the last resort.
    """
    if facts.received is not None:
        return facts.received, "received"
    if delivered is not None:
        return delivered, "delivered"
    return facts.date, "date"


def headers_only_strict_key(key: str) -> str:
    """The strict key of a message read without its body: it vouches for no body."""
    return _digest("s-headers", key)


def is_same_message(data: bytes, fingerprint: str, digest: str = "") -> bool:
    """Whether ``data`` is the message a plan line (or journal row) recorded.

    The fingerprint compares Message-ID, Date and From (or the whole
    message); the digest, when recorded, the body as well, so a body
    replaced under the same headers is told apart.
    """
    facts = facts_of(data)
    return facts.key == fingerprint and (not digest or facts.strict_key == digest)


def fingerprint_of(data: bytes) -> str:
    """The identity key (``auto``) a plan line's ``fingerprint`` holds."""
    return facts_of(data).key
