"""The JSONL plan: written by diff, edited by hand or scripts, read back by inject."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from restore.errors import RefusedItem, UsageError
from restore.identity import facts_of
from restore.mailnames import invalid_folder_reason
from restore.plan import (
    PlanEntry,
    PlanHeader,
    Seal,
    load_plan,
    parse_line,
    read_plan,
    save_plan,
    write_plan,
)

ENTRY = PlanEntry(
    user="alice@example.com", folder="INBOX", source="eml:/srv/gateway",
    ref="2017/12/08/4f1c.eml.zst",
    received=datetime(2017, 12, 8, 21, 13, 5, tzinfo=UTC).timestamp(),
    size=4123,
    message_id="<4f1c@example.org>", fingerprint="0123456789abcdef0123456789abcdef",
)


def line(**changes) -> str:
    obj = json.loads(ENTRY.to_json())
    obj.update(changes)
    return json.dumps({k: v for k, v in obj.items() if v is not DROP})


DROP = object()


# -- round trip --------------------------------------------------------------------------

safe_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
entries = st.builds(
    PlanEntry,
    user=st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}@[a-z0-9-]{1,10}\.(com|org|de)", fullmatch=True)
    .filter(lambda u: ".." not in u),
    folder=st.from_regex(r"INBOX|[A-Za-zÄö0-9 _-]{0,8}[A-Za-z](/[A-Za-z0-9]{1,6}){0,2}",
                         fullmatch=True).filter(lambda f: f.strip() == f),
    source=safe_text,
    ref=safe_text,
    received=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1),
                          timezones=st.sampled_from([UTC, timezone(timedelta(hours=1)),
                                                     timezone(timedelta(hours=-9, minutes=-30))]))
    .map(lambda d: d.timestamp()),
    size=st.integers(0, 2**40),
    message_id=st.one_of(st.none(), safe_text),
    fingerprint=st.text("0123456789abcdef", min_size=32, max_size=32),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(entries, max_size=5))
def test_write_then_read_gives_the_same_entries(plan):
    fh = io.StringIO()
    assert write_plan(fh, plan) == len(plan)
    assert fh.getvalue().count("\n") == len(plan)
    fh.seek(0)
    assert list(read_plan(fh)) == plan


def test_round_trip_through_a_file(tmp_path):
    path = tmp_path / "plan.jsonl"
    other = replace(ENTRY, user="bob@example.com", folder="Archive/2017", message_id=None,
                    ref="archive.mbox.zst:1048576")
    with path.open("w", encoding="utf-8") as fh:
        write_plan(fh, [ENTRY, other])
    with path.open(encoding="utf-8") as fh:
        assert list(read_plan(fh, str(path))) == [ENTRY, other]


def test_a_plan_line_has_the_documented_fields():
    assert json.loads(ENTRY.to_json()) == {
        "user": "alice@example.com", "folder": "INBOX", "source": "eml:/srv/gateway",
        "ref": "2017/12/08/4f1c.eml.zst", "received": "2017-12-08T21:13:05+00:00",
        "size": 4123, "message_id": "<4f1c@example.org>",
        "fingerprint": "0123456789abcdef0123456789abcdef",
    }


# -- hand-edited lines ---------------------------------------------------------------------


def test_optional_fields_take_their_defaults():
    entry = parse_line(line(folder=DROP, size=DROP, message_id=DROP, fingerprint=DROP))
    assert (entry.folder, entry.size, entry.message_id, entry.fingerprint) == ("INBOX", 0, None, "")


def test_received_in_another_zone_or_with_z_is_kept_as_the_same_instant():
    assert parse_line(line(received="2017-12-08T22:13:05+01:00")).received == ENTRY.received
    assert parse_line(line(received="2017-12-08T21:13:05Z")).received == ENTRY.received


BAD_LINES = {
    "not JSON": ('{"user": "alice@example.com",', "not JSON"),
    "not an object": ('["alice@example.com"]', "expected a JSON object"),
    "missing user and ref": (line(user=DROP, ref=""), "missing field(s) user, ref"),
    "missing received": (line(received=None), "missing field(s) received"),
    "user traversal": (line(user="../../etc/passwd"), "user '../../etc/passwd' rejected"),
    "user with NUL": (line(user="alice\x00@example.com"), "NUL"),
    "folder ..": (line(folder="Archive/../../x"), "folder 'Archive/../../x' rejected"),
    "folder absolute": (line(folder="/etc"), "rejected"),
    "folder control char": (line(folder="IN\x1bBOX"), "control character"),
    "folder C1 control char": (line(folder="IN\x9bBOX"), "control character"),
    "folder dot": (line(folder=".hidden"), "starts with '.'"),
    "naive received": (line(received="2017-12-08T21:13:05"), "has no UTC offset"),
    "garbage received": (line(received="yesterday"), "not an ISO 8601 time"),
    "size not a number": (line(size="big"), "size 'big' is not a number"),
    "size a list": (line(size=[1]), "is not a number"),
    "negative size": (line(size=-5), "size -5 is negative"),
}


@pytest.mark.parametrize("text, reason", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_bad_line_names_its_line_number_and_reason(text, reason):
    with pytest.raises(UsageError) as raised:
        parse_line(text, 7, "edited.jsonl")
    assert str(raised.value).startswith("edited.jsonl:7: ")
    assert reason in str(raised.value)


def test_reading_goes_on_after_a_bad_line():
    text = "\n".join([
        ENTRY.to_json(),
        "# a comment a script left",
        line(user="../root"),
        "",
        "{broken",
        line(user="bob@example.com"),
    ]) + "\n"
    results = list(read_plan(io.StringIO(text), "plan.jsonl"))
    assert [type(r) for r in results] == [PlanEntry, UsageError, UsageError, PlanEntry]
    assert str(results[1]).startswith("plan.jsonl:3: user '../root' rejected")
    assert str(results[2]).startswith("plan.jsonl:5: not JSON")
    assert results[3].user == "bob@example.com"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_line_is_an_entry_or_a_usage_error(text):
    results = list(read_plan(io.StringIO(text)))
    assert all(isinstance(r, PlanEntry | UsageError) for r in results)


@pytest.mark.parametrize("folder", ["INBOX", "Archive/2017", "Sent Items", "Entwürfe", "a.b"])
def test_ordinary_folders_are_accepted(folder):
    assert invalid_folder_reason(folder) is None
    assert parse_line(line(folder=folder)).folder == folder


@pytest.mark.parametrize("folder", ["", " INBOX", "INBOX/", "a//b", "..", "a/./b", "x\x00y"])
def test_unsafe_folders_are_rejected(folder):
    assert invalid_folder_reason(folder) is not None


# -- the header that seals a plan ------------------------------------------------------


def test_the_header_line_round_trips_and_is_not_an_entry(tmp_path):
    header = PlanHeader(("eml:/srv/gateway", "mbox:/srv/old"), "message-id", 1512764000.0)
    path = tmp_path / "plan.jsonl"
    save_plan(str(path), [ENTRY], header)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["mailrestore_plan"] == 2 and "user" not in first
    loaded = load_plan(str(path))
    assert (loaded.entries, loaded.bad, loaded.header) == ([ENTRY], [], header)


def test_concatenated_plans_add_up_their_archives(tmp_path):
    path = tmp_path / "plan.jsonl"
    with path.open("w") as fh:
        write_plan(fh, [ENTRY], PlanHeader(("eml:/a",)))
        write_plan(fh, [ENTRY], PlanHeader(("eml:/b",)))
    assert load_plan(str(path)).header.archives == ("eml:/a", "eml:/b")


def test_the_seal_knows_an_archive_however_spelled(tmp_path):
    (tmp_path / "gw").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "gw")
    seal = Seal([f"eml:{tmp_path}/gw"])
    for source in (f"eml:{tmp_path}/gw/", f"eml:{tmp_path}//gw", f"eml:{tmp_path}/link"):
        assert seal.archive_of(replace(ENTRY, source=source)) == f"eml:{tmp_path}/gw"
    for source in (f"mbox:{tmp_path}/gw", f"eml:{tmp_path}", "eml:/etc", "nonsense"):
        with pytest.raises(RefusedItem, match="not one of the plan's archives"):
            seal.archive_of(replace(ENTRY, source=source))
    with pytest.raises(RefusedItem, match="no fingerprint"):
        seal.archive_of(replace(ENTRY, source=f"eml:{tmp_path}/gw", fingerprint=""))


def test_the_seal_tells_a_changed_item_by_headers_or_body():
    data = b"Message-ID: <a@b>\nDate: Fri, 08 Dec 2017 21:13:05 +0000\nFrom: x@y\n\nbody\n"
    facts = facts_of(data)
    entry = replace(ENTRY, fingerprint=facts.key, digest=facts.strict_key)
    Seal.check(entry, data.replace(b"\n", b"\r\n"))   # line endings are not a change
    with pytest.raises(RefusedItem, match="changed since the diff"):
        Seal.check(entry, data.replace(b"body", b"other body"))
    with pytest.raises(RefusedItem, match="changed since the diff"):
        Seal.check(entry, data.replace(b"<a@b>", b"<c@d>"))
    # no digest: headers
    Seal.check(replace(entry, digest=""), data.replace(b"body", b"other body"))


# -- fuzz: plan lines as scripts and editors leave them ------------------------------------------

PLAN_PIECES = ["{", "}", '"mailrestore_plan": 1, ', '"archives": ', '"user": ', '"folder": ',
               '"source": ', '"ref": ', '"received": ', '"size": ', '"alice@example.com"', '"../x"',
               '"INBOX"', '"eml:/srv/gw"', '"a/b.eml"', '"2017-12-08T12:00:00+00:00"',
               '"2017-12-08T12:00:00"', '"0000-00-00"', "-1", "1e999", "null", "true", "[]", ", ",
               '"\\u0000"', '"\\ud800"', "\ufeff", "\x00", " ", "\n", "#"]


VALID = ('{"user": "alice@example.com", "source": "eml:/srv/gw", "ref": "a.eml", '
         '"received": "2017-12-08T12:00:00+00:00"')


@settings(max_examples=800, deadline=None)
@given(
    st.one_of(
        st.lists(st.sampled_from(PLAN_PIECES), max_size=30).map("".join),
        st.text(max_size=200),
        st.lists(st.sampled_from(PLAN_PIECES), max_size=4).map(lambda p: VALID + ", " + "".join(p)),
    )
)
@example(VALID + ', "size": 1e999}')
@example(VALID.replace('"a.eml"', '"a\\ud800.eml"') + "}")
@example(VALID.replace('"eml:/srv/gw"', '"eml:/srv/\\udcff"') + "}")
@example(VALID + ', "message_id": "<\\udc80@x>"}')
def test_any_plan_line_is_an_entry_or_a_usage_error(line):
    try:
        entry = parse_line(line, 1)
    except UsageError:
        return
    if isinstance(entry, PlanHeader):
        return
    assert invalid_folder_reason(entry.folder) is None
    assert entry.size >= 0
    entry.to_json().encode("utf-8")     # what the journal and the reports must be able to hold


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.lists(st.sampled_from(PLAN_PIECES), max_size=20).map("".join),
                          st.text(max_size=60)), max_size=8))
def test_reading_any_plan_never_raises(lines):
    for got in read_plan(io.StringIO("\n".join(lines))):
        assert isinstance(got, (PlanEntry, UsageError))
