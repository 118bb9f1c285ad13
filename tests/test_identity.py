"""Message identity: what must not change a key, what must, and hostile input.

The keys decide whether a message is restored: a key that changes with a
delivery detail restores a double, a key shared by two messages loses one.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime, parseaddr, parsedate_tz

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from restore import identity
from restore.identity import (
    Facts,
    _body_digest,
    _scan_names,
    bracketed_id_py,
    facts_of,
    fingerprint_of,
    normalize_body,
    normalize_from,
    parse_date,
    plain_address_py,
    plain_date_py,
    scan_headers_py,
)

try:
    from restore import _headerscan
except ImportError:
    _headerscan = None

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DELIVERY_HEADERS = (
    "Received", "Return-Path", "Delivered-To", "X-Original-To", "Envelope-To",
    "X-Envelope-From", "X-Envelope-To", "Status", "X-Status", "X-UID", "X-Keywords",
    "Content-Length", "X-Spam-Status", "X-Spam-Flag", "X-Spam-Score", "X-Spam-Level",
)


# -- building messages ---------------------------------------------------------

# Header text: any printable character (8-bit UTF-8 on the wire), no line breaks.
header_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40
)
word = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=12)
ascii_word = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
dates = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5)),
                               timezone(timedelta(hours=5, minutes=30))]),
)
body_line = st.one_of(
    header_text,
    header_text.map(lambda s: "From " + s),          # what mbox quoting touches
    header_text.map(lambda s: ">From " + s),
    header_text.map(lambda s: ">>From " + s),
    st.just(""),
)


@st.composite
def messages(draw, with_message_id: bool | None = None) -> dict:
    """The parts of a message (origin headers and body lines), before serialising."""
    if with_message_id is None:
        with_message_id = draw(st.booleans())
    headers = []
    if with_message_id:
        headers.append(
            ("Message-ID", f"<{draw(ascii_word)}.{draw(ascii_word)}@{draw(ascii_word)}.test>"))
    headers += [
        ("Date", format_datetime(draw(dates))),
        ("From", f"{draw(word)} {draw(word)} <{draw(ascii_word)}@{draw(ascii_word)}.example>"),
        ("To", f"{draw(ascii_word)}@example.com, {draw(word)} <{draw(ascii_word)}@example.org>"),
        ("Subject", draw(header_text)),
    ]
    if draw(st.booleans()):
        headers.append(("In-Reply-To", f"<{draw(ascii_word)}@{draw(ascii_word)}.test>"))
    return {"headers": headers, "body": draw(st.lists(body_line, max_size=8))}


def serialise(headers: list[tuple[str, str]], body: list[str]) -> bytes:
    head = "".join(f"{name}: {value}\n" for name, value in headers)
    return (head + "\n" + "".join(line + "\n" for line in body)).encode("utf-8")


def keys(data: bytes) -> tuple[str, str, str]:
    facts = facts_of(data)
    return facts.key, facts.mid_key, facts.strict_key


def delivery_header(draw) -> tuple[str, str]:
    return draw(st.sampled_from(DELIVERY_HEADERS)), draw(header_text)


# -- what must not change the keys ---------------------------------------------


@FAST
@given(messages(), st.sampled_from([b"\r\n", b"\r"]))
def test_line_endings_do_not_change_keys(msg, newline):
    data = serialise(msg["headers"], msg["body"])
    assert keys(data.replace(b"\n", newline)) == keys(data)


@FAST
@given(messages(), st.data())
def test_header_folding_does_not_change_keys(msg, data):
    folded = []
    for name, value in msg["headers"]:
        line = f"{name}: {value}"
        # RFC 5322 folding: a line break before any white space after the colon.
        spaces = [m.start() for m in re.finditer(r"[ \t]", line) if m.start() > len(name)]
        for pos in sorted(data.draw(st.sets(st.sampled_from(spaces))) if spaces else [],
                          reverse=True):
            line = line[:pos] + "\n" + line[pos:]
        folded.append(line)
    original = serialise(msg["headers"], msg["body"])
    folded_data = ("".join(line + "\n" for line in folded) + "\n"
                   + "".join(line + "\n" for line in msg["body"])).encode("utf-8")
    assert keys(folded_data) == keys(original)


def test_folding_where_lines_differ_in_charset_does_not_change_keys():
    one_line = b"From: a@example.org\nSubject: caf\xe9 \xc3\xa9t\xc3\xa9\n\nbody\n"
    folded = b"From: a@example.org\nSubject: caf\xe9\n \xc3\xa9t\xc3\xa9\n\nbody\n"
    assert keys(folded) == keys(one_line)


@FAST
@given(messages(), st.data())
def test_delivery_headers_added_removed_or_reordered_do_not_change_keys(msg, data):
    def with_delivery_headers() -> list[tuple[str, str]]:
        headers = list(msg["headers"])
        for _ in range(data.draw(st.integers(0, 6))):
            at = data.draw(st.integers(0, len(headers)))
            headers.insert(at, delivery_header(data.draw))
        return headers

    plain = serialise(msg["headers"], msg["body"])
    one, other = with_delivery_headers(), with_delivery_headers()
    reordered = data.draw(st.permutations(one))
    assert keys(serialise(one, msg["body"])) == keys(plain)
    assert keys(serialise(other, msg["body"])) == keys(plain)
    # Reordering moves origin headers too; each name still appears once.
    assert keys(serialise(reordered, msg["body"])) == keys(plain)


@FAST
@given(messages())
def test_mboxrd_from_quoting_does_not_change_keys(msg):
    quoted = [">" + line if re.match(r">*From ", line) else line for line in msg["body"]]
    assert keys(serialise(msg["headers"], quoted)) == keys(serialise(msg["headers"], msg["body"]))


@FAST
@given(messages(),
       st.sampled_from(["[SPAM] ", "[SPAM]", "***SPAM*** ", "SPAM: ", "[spam] [SPAM] "]))
def test_spam_tag_in_subject_does_not_change_keys(msg, tag):
    tagged = [(n, tag + v if n == "Subject" else v) for n, v in msg["headers"]]
    assert keys(serialise(tagged, msg["body"])) == keys(serialise(msg["headers"], msg["body"]))


def test_mbox_from_line_in_front_does_not_change_keys():
    msg = b"Message-ID: <a@b>\nDate: Fri, 8 Dec 2017 12:00:00 +0000\nFrom: x@y\n\nHi\n"
    assert keys(b"From x@y Fri Dec  8 12:00:00 2017\n" + msg) == keys(msg)


# -- what must change them -----------------------------------------------------


def _with(msg: dict, **values: str) -> list[tuple[str, str]]:
    return [(n, values.get(n, v)) for n, v in msg["headers"]]


@FAST
@given(messages(with_message_id=True), dates)
def test_same_message_id_other_date_is_another_message(msg, other_date):
    date = dict(msg["headers"])["Date"]
    if parse_date(format_datetime(other_date)) == parse_date(date):
        return
    one = facts_of(serialise(msg["headers"], msg["body"]))
    two = facts_of(serialise(_with(msg, Date=format_datetime(other_date)), msg["body"]))
    assert one.key != two.key
    assert one.strict_key != two.strict_key
    assert one.mid_key == two.mid_key      # --match message-id only looks at the Message-ID


@FAST
@given(messages(with_message_id=True), ascii_word)
def test_same_message_id_other_sender_is_another_message(msg, local):
    other = _with(msg, From=f"Someone <{local}@elsewhere.example>")
    assert facts_of(serialise(other, msg["body"])).key != facts_of(
        serialise(msg["headers"], msg["body"])).key


def test_sender_display_name_and_domain_case_do_not_matter():
    base = b"Message-ID: <a@b>\nDate: Fri, 8 Dec 2017 12:00:00 +0000\nFrom: %s\n\nHi\n"
    plain = facts_of(base % b"alice@example.com").key
    assert facts_of(base % b"Alice Smith <alice@EXAMPLE.com>").key == plain
    assert facts_of(base % b"bob@example.com").key != plain


@FAST
@given(messages(with_message_id=True), word, word)
def test_other_body_same_headers_same_key_but_not_strict(msg, one, two):
    if one == two:
        return
    a = facts_of(serialise(msg["headers"], [one]))
    b = facts_of(serialise(msg["headers"], [two]))
    assert a.key == b.key
    assert a.strict_key != b.strict_key


@FAST
@given(messages(with_message_id=False), word, word)
def test_without_message_id_other_body_is_another_message(msg, one, two):
    if one == two:
        return
    a = facts_of(serialise(msg["headers"], [one]))
    b = facts_of(serialise(msg["headers"], [two]))
    assert a.message_id is None
    assert a.key != b.key
    assert a.mid_key != b.mid_key


def test_without_message_id_other_subject_is_another_message():
    base = b"Date: Fri, 8 Dec 2017 12:00:00 +0000\nFrom: x@y\nSubject: %s\n\nHi\n"
    assert facts_of(base % b"one").key != facts_of(base % b"two").key


def test_headers_only_keeps_message_id_key_and_never_matches_a_strict_key():
    msg = b"Message-ID: <a@b>\nDate: Fri, 8 Dec 2017 12:00:00 +0000\nFrom: x@y\n\nHi\n"
    head = msg.partition(b"\n\n")[0] + b"\n\n"
    assert facts_of(head, headers_only=True).key == facts_of(msg).key
    assert facts_of(head, headers_only=True).strict_key != facts_of(msg).strict_key
    assert facts_of(head, headers_only=True).strict_key != facts_of(head).strict_key


def test_message_id_is_normalised():
    base = b"Message-ID: %s\nDate: Fri, 8 Dec 2017 12:00:00 +0000\nFrom: x@y\n\nHi\n"
    plain = facts_of(base % b"<abc@example.org>")
    assert plain.message_id == "<abc@example.org>"
    assert facts_of(base % b"  <abc@example.org> (comment)").key == plain.key
    assert facts_of(base % b"abc@example.org").key == plain.key


def test_envelope_headers_are_kept_for_recipient_lookup():
    msg = (b"Received: from a by b; Fri, 8 Dec 2017 12:00:00 +0000\n"
           b"X-Envelope-To: <alice@example.com>\nDelivered-To: a@x\nDelivered-To: b@x\n"
           b"From: x@y\n\nHi\n")
    facts = facts_of(msg, envelope_headers=("X-Envelope-To", "delivered-to"))
    assert facts.envelope == {"x-envelope-to": ["<alice@example.com>"],
                              "delivered-to": ["a@x", "b@x"]}
    assert fingerprint_of(msg) == facts.key


# -- hostile input never raises --------------------------------------------------

HOSTILE = {
    "empty": b"",
    "blank line only": b"\n",
    "unknown-8bit encoded word": b"Subject: =?unknown-8bit?Q?caf=E9?=\nFrom: "
                                 b"=?X-UNKNOWN?B?w6k=?=\n\nx",
    "DEFAULT charset": b"Subject: =?DEFAULT?Q?=E9t=E9?=\nContent-Type: text/plain; "
                       b"charset=DEFAULT\n\n\xe9",
    "8-bit header": b"From: J\xfcrgen <j\xfc@ex\xe4mple.org>\nSubject: \xff\xfe\x80\n\nbody",
    "continuation first": b" folded without a header\n\tmore\nFrom: a@b\n\nbody",
    "200 KB header line": b"Subject: " + b"x" * 200_000 + b"\nFrom: a@b\n\nbody",
    "200 KB of folded lines": b"References:" + b"\n <a@b>" * 30_000 + b"\n\nbody",
    "200 KB brackets": b"Message-ID: " + b"<" * 200_000 + b"\nFrom: " + b"<a" * 100_000 + b"\n\n",
    "header only": b"Message-ID: <a@b>\nFrom: a@b\nSubject: no body",
    "NUL bytes": b"From: a\x00@b\nMessage-ID: <\x00@\x00>\nSubject: \x00\n\n\x00\x00",
    "bad dates": b"Date: Fri, 31 Feb 2017 25:61:00 +9999\nReceived: by x; yesterday\n\n",
    "colon-less lines": b"garbage\nmore garbage\n\nbody",
    "header name with spaces": b"Not A Header: value\nFrom: a@b\n\nbody",
    "only CR": b"\r\r\r",
    "mbox From line only": b"From MAILER-DAEMON Fri Dec  8 12:00:00 2017\n",
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_message_never_raises(data):
    for headers_only in (False, True):
        facts = facts_of(data, envelope_headers=("X-Envelope-To", "Delivered-To"),
                         headers_only=headers_only)
        assert isinstance(facts, Facts)
        assert facts.size == len(data)
    assert fingerprint_of(data) == facts_of(data).key


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data):
    facts = facts_of(data, envelope_headers=("Delivered-To",))
    assert facts.key and facts.mid_key and facts.strict_key


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    b"From: ", b"Message-ID: ", b"Date: ", b"Received: ", b"Subject: ", b";", b"<", b">",
    b"\n", b"\r\n", b"\n ", b"\n\n", b"\xe9", b"\x00", b"=?utf-8?q?", b"?=", b"From ", b">From ",
    b"Fri, 8 Dec 2017 12:00:00 +0100", b"a@b", b",", b"(", b")", b'"',
]), max_size=60))
def test_mail_shaped_garbage_never_raises(parts):
    facts_of(b"".join(parts))


# -- received time and dates -----------------------------------------------------


def received_of(*received: str) -> float | None:
    head = "".join(f"Received: from mx.example.org by mail.example.com; {r}\n" for r in received)
    return facts_of(f"{head}From: a@b\nDate: Fri, 1 Dec 2017 00:00:00 +0000\n\nx".encode()).received


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_topmost_received_header_wins():
    assert received_of("Fri, 8 Dec 2017 21:13:05 +0000", "Fri, 8 Dec 2017 21:13:01 +0000") \
        == ts(2017, 12, 8, 21, 13, 5)
    # Even when a lower hop claims a later time (clock skew on the sender's side).
    assert received_of("Fri, 8 Dec 2017 21:13:05 +0000", "Fri, 8 Dec 2017 23:00:00 +0000") \
        == ts(2017, 12, 8, 21, 13, 5)


def test_received_time_zones_give_the_utc_instant():
    assert received_of("Fri, 8 Dec 2017 22:13:05 +0100") == ts(2017, 12, 8, 21, 13, 5)
    assert received_of("Fri, 8 Dec 2017 16:13:05 -0500") == ts(2017, 12, 8, 21, 13, 5)
    assert received_of("Fri, 8 Dec 2017 16:13:05 EST") == ts(2017, 12, 8, 21, 13, 5)


def test_received_date_without_zone_is_utc():
    assert received_of("Fri, 8 Dec 2017 21:13:05") == ts(2017, 12, 8, 21, 13, 5)
    assert received_of("Fri, 8 Dec 2017 21:13:05 -0000") == ts(2017, 12, 8, 21, 13, 5)


def test_message_without_received_header_has_no_received_time():
    facts = facts_of(b"From: a@b\nDate: Fri, 8 Dec 2017 21:13:05 +0000\n\nx")
    assert facts.received is None
    assert facts.date == ts(2017, 12, 8, 21, 13, 5)


@pytest.mark.parametrize("value", [
    "yesterday", "", "Fri, 31 Feb 2017 12:00:00 +0000", "Fri, 8 Dec 2017 25:00:00 +0000",
    "Fri, 8 Dec 2017 12:61:00 +0000", "Fri, 8 Dec 2017 12:00:00 +9999", "8 Dec 99999 12:00 +0000",
    "8 Dec 1969 12:00 +0000", "8 Dec 2150 12:00 +0000", "0 0 0 0 0", "Fri, 8 Foo 2017 12:00",
])
def test_garbage_or_out_of_range_dates_are_none(value):
    assert parse_date(value) is None
    assert received_of(value) is None


@pytest.mark.parametrize("year", ["0000", "0099", "099", "0070"])
def test_a_year_written_with_leading_zeros_is_read_as_written_never_as_19xx_or_20xx(year):
    # email.utils reads any year below 100 as 1970-2069; only a two-digit year means that.
    value = f"Fri, 08 Dec {year} 12:00:00 +0000"
    assert parse_date(value) is None        # year 0 to 99: before any mail
    assert received_of(value) is None
    assert parse_date("Fri, 08 Dec 99 12:00:00 +0000") == ts(1999, 12, 8, 12, 0, 0)


@FAST
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 1, 1),
                    timezones=st.builds(lambda m: timezone(timedelta(minutes=m)),
                                        st.integers(-14 * 60, 14 * 60))))
def test_any_rfc5322_date_parses_to_its_instant(when):
    when = when.replace(microsecond=0)
    assert parse_date(format_datetime(when)) == when.timestamp()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_parse_date_never_raises(value):
    result = parse_date(value)
    assert result is None or isinstance(result, float)


# -- the fast paths give what the general parsers give ---------------------------------

# Header lines of every shape the fast header scan must either read exactly as
# the line parser does or hand over to it.
header_line = st.one_of(
    st.tuples(st.sampled_from(["Message-ID", "message-id", "DATE", "From", "To", "Cc", "Subject",
                               "Received", "In-Reply-To", "References", "Delivered-To",
                               "X-Envelope-To", "X-Other", "From\t", "Date  ", "\x0cFrom",
                               "Fr\xf6m", "\u212aey", "Not A Header", "x" * 201, "Subject"
                               + " " * 199]),
              st.sampled_from([":", ": ", ":\t"]),
              st.one_of(header_text, st.sampled_from([
                  "<a@b.test>", "Fri, 8 Dec 2017 21:13:05 +0100", "from x by y; Fri, 8 Dec 2017 "
                  "21:13:05 -0000", "Alice <a@b.test>", "\xe9t\xe9"]))
              ).map(lambda t: (t[0] + t[1] + t[2]).encode("utf-8")),
    header_text.map(lambda s: (" " + s).encode("utf-8")),              # continuation
    header_text.map(lambda s: ("\t" + s).encode("utf-8")),
    st.sampled_from([b"garbage without colon", b"From mbox-ish line", b"\xff\xfe: binary name",
                     b"Message-ID:", b" ", b"\t\t"]),
)


def c_fast_paths():
    """restore._headerscan, or a skip (a failure under CI=true) when it was not built."""
    if _headerscan is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("restore._headerscan was not built: CI must test the C fast paths")
        pytest.skip("restore._headerscan not built (no C compiler at install time)")
    return _headerscan


@pytest.fixture(params=["python", "c"])
def fast_paths(request, monkeypatch):
    """identity with each set of fast paths: the Python references, then the C ones."""
    if request.param == "c":
        module = c_fast_paths()
        for name in ("scan_headers", "plain_date", "plain_address", "bracketed_id"):
            monkeypatch.setattr(identity, name, getattr(module, name))
    else:
        monkeypatch.setattr(identity, "bracketed_id", bracketed_id_py)
        monkeypatch.setattr(identity, "scan_headers", scan_headers_py)
        monkeypatch.setattr(identity, "plain_date", plain_date_py)
        monkeypatch.setattr(identity, "plain_address", plain_address_py)
    return request.param


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(header_line, min_size=1, max_size=14), st.booleans(), st.booleans())
def test_fast_header_scan_reads_what_the_line_parser_reads(fast_paths, lines, with_body, crlf):
    # A stray line at the end of the header block changes nothing by the
    # line parser's rules, and it sends the block to the line parser.
    block = b"\n".join(lines)
    body = b"\n\nHello\n>From me\n" if with_body else b""
    newline = b"\r\n" if crlf else b"\n"
    headers = ("X-Envelope-To", "delivered-to", "to", "Received")
    fast = facts_of((block + body).replace(b"\n", newline), headers)
    general = facts_of((block + b"\nstray line" + body).replace(b"\n", newline), headers)
    assert fast._replace(size=0) == general._replace(size=0)


SCAN_PIECES = [
    b"From: ", b"FROM:", b"Message-ID: ", b"Date:", b"Received: ", b"received\t:", b"Subject: ",
    b"To:", b"Delivered-To: ", b"X-Envelope-To :", b";", b"<a@b>", b"\n", b"\r\n", b"\r", b"\n ",
    b"\n\t", b"\n\n", b"\r\n\r\n", b"\xe9", b"\xc3\xa9", b"\x00", b"\x1c", b"\xa0", b"\x0b",
    b"From ", b"x" * 199, b"y" * 2, b" ", b":", b"\xe2\x80\x83", b"Fri, 8 Dec 2017 12:00:00 +0100",
    b">", b">From ", b"\n>>From x", b"\n\n\n",
]


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(SCAN_PIECES), max_size=40).map(b"".join),
                 st.binary(max_size=300)),
       st.sampled_from([(), ("Delivered-To",), ("to", "X-Envelope-To", "received", "from")]))
def test_c_header_scan_gives_what_the_python_scan_gives(data, envelope_headers):
    # The C scan is an accelerator only: byte for byte the Python reference's
    # results, including when it hands a block over to the line parser (None).
    names, envelope_count = _scan_names(envelope_headers)
    assert (c_fast_paths().scan_headers(data, names, envelope_count)
            == scan_headers_py(data, names, envelope_count))


def general_parse_date(value: str) -> float | None:
    """The rule as email.utils states it, but for years of more than two digits read as
    written: what the fast path must agree with."""
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    if any(len(t) > 2
           and int(t) == parsed[0] % 100 for t in re.findall(r"(?<![\w:+-])0\d+(?![\w:])", value)):
        return None
    try:
        zone = timezone(timedelta(seconds=parsed[9] or 0))
        ts = datetime(*parsed[:5], min(parsed[5], 59), tzinfo=zone).timestamp()
    except (ValueError, OverflowError):
        return None
    return ts if 0 <= ts < datetime(2100, 1, 1, tzinfo=UTC).timestamp() else None


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.tuples(
    st.sampled_from(["", "Fri, ", "Mon,", "  Sun,  "]), st.integers(0, 39),
    st.sampled_from(["Jan", "Feb", "Dec", "dec", "Foo"]), st.integers(0, 3100),
    st.sampled_from([2, 4]),
    st.integers(0, 29), st.integers(0, 65), st.integers(0, 65),
    st.sampled_from(["+", "-"]), st.integers(0, 30), st.integers(0, 99),
    st.sampled_from(["", " (CET)", " garbage", "\xa0x", "(UTC)"]),
))
def test_fast_date_parse_agrees_with_email_utils(fast_paths, parts):
    weekday, day, month, year, digits, hour, minute, second, sign, zh, zm, tail = parts
    value = (f"{weekday}{day} {month} {year:0{digits}d} {hour:02d}:{minute:02d}:{second:02d}"
             f" {sign}{zh:02d}{zm:02d}{tail}")
    assert parse_date(value) == general_parse_date(value)


def pieces_or_text(pieces: list[str], most: int, text_size: int) -> st.SearchStrategy[str]:
    """Strings glued from ``pieces`` (at most ``most`` of them), or any text."""
    return st.one_of(st.lists(st.sampled_from(pieces), max_size=most).map("".join),
                     st.text(max_size=text_size))


DATE_PIECES = ["Fri", "Mon", ",", " ", "\t", "8", "08", "123", "Dec", "dec", "Feb", "2017", "1999",
               "3000", "21", ":", "13", "05", "60", "+", "-", "0100", "2400", "0099", "(CET)",
               "\xe9", "\u2003", "x"]


@settings(max_examples=1500, deadline=None)
@given(pieces_or_text(DATE_PIECES, 16, 40))
def test_c_date_parse_gives_what_the_python_one_gives(value):
    assert c_fast_paths().plain_date(value) == plain_date_py(value)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.tuples(
    st.sampled_from(["", "Alice", "Alice Smith", '"Smith, Alice"', "J. Q. Public",
                     "=?utf-8?q?J=C3=BC?=", "Bob (x)", "a,b", "<", '"un"closed',
                     "J\xf6rg M\xfcller", "\u738b\u5c0f\u660e", "Z\xf6e\u2003O.", "\xa0\x85x",
                     "\u00c5 <b>"]),
    st.sampled_from(["", " ", "\t"]), st.booleans(),
    st.sampled_from(["a", "A.b", "a..b", "a+tag", "x y", "\"q\"", "a@", ""]),
    st.sampled_from(["example.ORG", "b", "b.c.d", "[1.2.3.4]", "b..c", "-x.y", ""]),
    st.sampled_from(["", " ", " (comment)", "(Robert Harley)", " (x, <y@z>)", " (a) (b)", " ()",
                     " (\u2003)", ">", ","]),
))
def test_fast_sender_parse_agrees_with_email_utils(fast_paths, parts):
    name, space, angle, local, domain, tail = parts
    addr = f"{local}@{domain}" if domain else local
    value = f"{name}{space}<{addr}>{tail}" if angle else f"{addr}{tail}"
    expected = parseaddr(value)[1].lower() or re.sub(r"\s+", " ", value).strip().lower()
    assert normalize_from(value) == expected


FROM_PIECES = ["Alice", " ", "\t", '"', "\\", "<", ">", "@", ".", "a", "B", "x-y",
               "!#$%&'*+/=?^_`{|}~",
               "\xe9", "J\xfcrgen", "\r", "\n", ",", "(c)", "[1.2.3.4]", "\u2003", "example.ORG",
               "(", ")", " (Robert Harley)", "a@b.test"]


@settings(max_examples=1500, deadline=None)
@given(pieces_or_text(FROM_PIECES, 14, 40))
def test_c_sender_parse_gives_what_the_python_one_gives(value):
    assert c_fast_paths().plain_address(value) == plain_address_py(value)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from([b"Hello", b" world", b"\n", b"\r\n", b"\r", b">From me",
                                 b">>From ", b"From x", b">", b"\x00", b"\xff", b">From",
                                 b"From "]),
                max_size=12).map(b"".join))
def test_body_digest_is_the_digest_of_the_normalised_body(fast_paths, body):
    # The header scans hand over the body as compared: it must hash exactly
    # what normalize_body gives, NUL-terminated as every digest part is.
    message = b"Message-ID: <m@b.test>\nFrom: a@b.test\n\n" + body
    key = facts_of(message).key
    expected = hashlib.blake2b(b"s-body\0" + key.encode() + b"\0" + normalize_body(body) + b"\0",
                               digest_size=16).hexdigest()
    assert facts_of(message).strict_key == expected
    anonymous = facts_of(b"From: a@b.test\n\n" + body)     # no Message-ID: the body is in the key
    body_digest = hashlib.blake2b(normalize_body(body) + b"\0", digest_size=16).hexdigest()
    assert _body_digest(normalize_body(body)) == body_digest
    assert anonymous.key == identity._digest("d", "a@b.test", "", "", "", "", "", "", body_digest)


def test_trailing_blank_lines_of_the_body_do_not_change_the_strict_key():
    msg = b"Message-ID: <t@b.test>\nFrom: a@b.test\n\nHello\n"
    assert facts_of(msg + b"\n\n\n").strict_key == facts_of(msg).strict_key
    assert facts_of(msg + b"more\n").strict_key != facts_of(msg).strict_key


MID_PIECES = ["<", ">", "a", "@", "b.test", " ", "\t", "\u2003", "\xa0", "\x1c", "<>", "x.y",
              "\xe9", '"']


@settings(max_examples=1500, deadline=None)
@given(pieces_or_text(MID_PIECES, 14, 30))
def test_c_message_id_search_gives_what_the_python_one_gives(value):
    assert c_fast_paths().bracketed_id(value) == bracketed_id_py(value)
