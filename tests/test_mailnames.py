"""restore.mailnames: the text of file names that are not UTF-8."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from restore.mailnames import fs_name, invalid_mailbox_reason, name_text


@given(st.binary(max_size=40))
def test_any_file_name_has_a_text_that_leads_back_to_it(raw):
    name = os.fsdecode(raw)
    text = name_text(name)
    text.encode("utf-8")            # what SQLite, JSON and a terminal need
    assert fs_name(text) == name


@given(st.text(max_size=40))
def test_a_utf8_name_is_its_own_text_unless_a_backslash_would_read_as_an_escape(name):
    text = name_text(name)
    assert fs_name(text) == name
    if "\\x" not in name:
        assert text == name


def test_bytes_that_are_not_utf8_show_as_escapes():
    assert name_text(os.fsdecode(b"bad\xffname.eml")) == "bad\\xffname.eml"
    assert name_text("bad\\xffname.eml") == "bad\\x5cxffname.eml"     # a real backslash
    assert fs_name("bad\\x5cxffname.eml") == "bad\\xffname.eml"
    assert name_text("host\\057name") == "host\\057name"              # Maildir's own escapes stay


def test_a_user_whose_name_is_not_utf8_has_no_mailbox():
    assert invalid_mailbox_reason(os.fsdecode(b"b\xffob@example.com")) == "not UTF-8"
