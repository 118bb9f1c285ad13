"""Who an archive message belongs to, and which recipients may never name a path."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restore.errors import UsageError
from restore.mailnames import MAX_ADDRESS, invalid_mailbox_reason, normalize_address
from restore.recipients import (
    DEFAULT_RECIPIENT_HEADERS,
    AliasMap,
    Rejected,
    header_addresses,
    resolve_users,
)

local_part = st.from_regex(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,20}", fullmatch=True).filter(
    lambda s: ".." not in s)
domain = st.from_regex(r"[A-Za-z0-9-]{1,10}(\.[A-Za-z0-9-]{1,10}){0,2}", fullmatch=True)


# -- normalize_address -----------------------------------------------------------


def test_normalize_strips_brackets_and_lowercases_only_the_domain():
    assert normalize_address("<Alice@Example.COM>") == "Alice@example.com"
    assert normalize_address("  <bob@EXAMPLE.com>  ") == "bob@example.com"
    assert normalize_address("User1") == "User1"


@settings(max_examples=200, deadline=None)
@given(local_part, domain)
def test_normalize_keeps_local_part_and_is_idempotent(local, dom):
    once = normalize_address(f"<{local}@{dom}>")
    assert once == f"{local}@{dom.lower()}"
    assert normalize_address(once) == once


# -- invalid_mailbox_reason --------------------------------------------------------


@pytest.mark.parametrize("user", [
    "alice@example.com", "Alice.Smith+tag@example.com", "user1", "o'brien@example.ie",
    "jürgen@example.de", "a@b@c.example",
])
def test_ordinary_addresses_and_bare_users_are_accepted(user):
    assert invalid_mailbox_reason(user) is None


@pytest.mark.parametrize("user, reason", [
    ("", "empty"),
    ("../etc@example.com", "path separator"),
    ("a/b@example.com", "path separator"),
    ("a\\b@example.com", "path separator"),
    ("a..b@example.com", "'..'"),
    ("alice@..", "'..'"),
    ("..", "'..'"),
    ("a\x00b@example.com", "NUL"),
    ("a\nb@example.com", "control character"),
    ("a\x1bb@example.com", "control character"),
    ("a\x7fb@example.com", "control character"),
    ("a\x9bb@example.com", "control character"),      # C1 CSI: a terminal escape
    ("@example.com", "empty local part or domain"),
    ("alice@", "empty local part or domain"),
    (".alice@example.com", "starts with '.'"),
    ("alice@.example.com", "starts with '.'"),
    (".hidden", "starts with '.'"),
    ("a b@example.com", "white space"),
    ("a" * (MAX_ADDRESS + 1), "longer than"),
])
def test_unsafe_mailbox_names_are_rejected_with_a_reason(user, reason):
    assert reason in (invalid_mailbox_reason(user) or "accepted")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_an_accepted_name_never_escapes_the_mail_root(user):
    """Whatever is accepted stays below the root as %u, %n or %d of a path template."""
    if invalid_mailbox_reason(user) is not None:
        return
    local, _, dom = user.rpartition("@")
    for part in {user, local or user, dom} - {""}:
        assert "/" not in part and "\0" not in part
        assert part not in (".", "..") and not part.startswith(".")
        assert ".." not in PurePosixPath("/root", part).parts


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=10), st.sampled_from(["/", "\\", "..", "\x00", "\x01", "\x85", "\t"]),
       st.text(max_size=10))
def test_a_name_with_a_dangerous_piece_is_always_rejected(before, piece, after):
    assert invalid_mailbox_reason(before + piece + after) is not None


# -- header_addresses ----------------------------------------------------------------


def test_header_addresses_reads_lists_brackets_and_comments():
    assert header_addresses(['"Smith, A" <a@Example.com>, b@EXAMPLE.org (Bob)', "", "<>"]) \
        == ["a@example.com", "b@example.org"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_header_addresses_never_raises(values):
    assert all(isinstance(a, str) for a in header_addresses(values))


# -- resolve_users ----------------------------------------------------------------------


def test_path_user_wins_over_envelope_headers():
    users, rejected = resolve_users("<Bob@Example.COM>", {"x-envelope-to": ["alice@example.com"]})
    assert (users, rejected) == (["Bob@example.com"], [])


def test_first_present_header_of_the_list_wins():
    envelope = {"delivered-to": ["dave@example.com"], "x-original-to": ["carol@example.com"]}
    assert resolve_users(None, envelope)[0] == ["carol@example.com"]
    assert resolve_users(None, envelope, headers=("Delivered-To", "X-Original-To"))[0] \
        == ["dave@example.com"]
    # A header that is there but names nobody does not hide the next one.
    assert resolve_users(None, {"x-envelope-to": ["<>"], **envelope})[0] == ["carol@example.com"]


def test_default_header_order_is_the_documented_one():
    assert [h.lower() for h in DEFAULT_RECIPIENT_HEADERS] == [
        "x-envelope-to", "envelope-to", "x-original-to", "delivered-to"]


def test_several_recipients_make_several_users_once_each():
    envelope = {"envelope-to": ["a@example.com, b@example.com", "<A@EXAMPLE.com>", "user1"]}
    assert resolve_users(None, envelope)[0] == ["a@example.com", "b@example.com",
                                                "A@example.com", "user1"]
    assert resolve_users(None, {"envelope-to": ["a@x.org", "a@X.org"]})[0] == ["a@x.org"]


def test_no_recipient_header_gives_no_user_and_no_rejection():
    assert resolve_users(None, {"to": ["alice@example.com"]}) == ([], [])


def test_alias_map_is_applied_once_without_chains():
    aliases = AliasMap({"a@example.com": "b@example.com", "b@example.com": "c@example.com"})
    assert resolve_users(None, {"x-original-to": ["a@example.com"]}, aliases=aliases)[0] \
        == ["b@example.com"]
    assert resolve_users("b@example.com", {}, aliases=aliases)[0] == ["c@example.com"]


def test_two_aliases_of_one_user_make_one_user():
    aliases = AliasMap({"info@example.com": "alice@example.com"})
    users, _ = resolve_users(None, {"delivered-to": ["info@example.com", "alice@example.com"]},
                             aliases=aliases)
    assert users == ["alice@example.com"]


def test_rejected_recipients_are_reported_with_reasons_and_the_rest_kept():
    envelope = {"x-envelope-to": ["alice@example.com, ../../etc@example.com, .x@example.com"]}
    users, rejected = resolve_users(None, envelope)
    assert users == ["alice@example.com"]
    assert [r.address for r in rejected] == ["../../etc@example.com", ".x@example.com"]
    assert all(isinstance(r, Rejected) and r.reason for r in rejected)


def test_an_alias_to_an_unsafe_name_is_rejected():
    aliases = AliasMap({"evil@example.com": "../root"})
    users, rejected = resolve_users(None, {"delivered-to": ["evil@example.com"]}, aliases=aliases)
    assert users == []
    assert rejected == [Rejected("../root", "contains a path separator")]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=20)),
       st.dictionaries(st.sampled_from(["x-envelope-to", "delivered-to", "envelope-to"]),
                       st.lists(st.text(max_size=30), max_size=3)))
def test_every_resolved_user_is_a_safe_mailbox_name(path_user, envelope):
    users, rejected = resolve_users(path_user, envelope)
    assert all(invalid_mailbox_reason(u) is None for u in users)
    # a rejected recipient is no safe mailbox name, or an envelope header naming nobody
    assert all(invalid_mailbox_reason(r.address) == r.reason
               or r.reason.endswith(" names no address")
               for r in rejected)


# -- AliasMap.load ---------------------------------------------------------------------------


def test_alias_map_file_with_comments(tmp_path):
    path = tmp_path / "aliases"
    path.write_text(
        "# gateway aliases\n"
        "\n"
        "<Info@Example.COM>   alice@example.com   # the shop\n"
        "postmaster@example.com\tbob@EXAMPLE.com\n"
        "   # indented comment\n"
    )
    aliases = AliasMap.load(path)
    assert aliases.mapping == {"Info@example.com": "alice@example.com",
                               "postmaster@example.com": "bob@example.com"}
    assert aliases("Info@example.com") == "alice@example.com"
    assert aliases("someone@example.com") == "someone@example.com"
    assert aliases and not AliasMap()


@pytest.mark.parametrize("bad_line", ["lonely@example.com", "a@x b@x c@x"])
def test_alias_map_bad_line_is_a_usage_error_with_its_line_number(tmp_path, bad_line):
    path = tmp_path / "aliases"
    path.write_text(f"# header\na@example.com b@example.com\n{bad_line}\n")
    with pytest.raises(UsageError, match=rf"{path}:3: expected"):
        AliasMap.load(path)


def test_missing_alias_map_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--alias-map"):
        AliasMap.load(tmp_path / "nope")


@pytest.mark.parametrize("value", [
    "alice@example.com", "<Alice@Example.COM>", "  bob@x.org  ", "info@example.com",
    "a.b+tag@sub.example.com", "x_y-z@example.com",
])
def test_plain_envelope_values_read_like_the_full_parser(value):
    from email.utils import getaddresses

    from restore.mailnames import normalize_address
    from restore.recipients import header_addresses

    assert header_addresses([value]) == [normalize_address(a) for _, a in getaddresses([value])]


# -- fuzz: raw header bytes, as the internet writes them --------------------------------------

HEADER_PIECES = [b"X-Envelope-To:", b"Delivered-To:", b"Envelope-To:", b"X-Original-To:", b"To:",
                 b"Received:", b"Date:", b" ", b"\t", b"\n", b"\r\n", b"\r", b"<", b">", b"<>",
                 b",", b";", b"@", b"..", b"/", b"\\", b"\x00", b"\x01", b"\xff", b"\xc3\xa4",
                 b"alice", b"example.com", b"ex\xc3\xa4mple.com", b"=?utf-8?q?x?=", b'"a b"',
                 b"(comment)", b"Fri, 08 Dec 0000 12:00:00 +0000",
                 b"Fri, 8 Dec 2017 25:61:00 +9999", b"\n\n"]


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(HEADER_PIECES), max_size=40).map(b"".join),
                 st.binary(max_size=400)))
def test_raw_header_bytes_never_raise_through_identity_recipients_and_received_time(data):
    from restore.identity import facts_of, received_time

    facts = facts_of(data, DEFAULT_RECIPIENT_HEADERS)
    received, source = received_time(facts, None)
    assert received is None or 0 <= received < 4102444800
    users, rejected = resolve_users(None, facts.envelope)
    assert all(invalid_mailbox_reason(u) is None for u in users)
    assert all(r.reason for r in rejected)
