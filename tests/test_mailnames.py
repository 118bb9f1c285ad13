"""restore.mailnames: the text of file names that are not UTF-8."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restore.mailnames import fs_name, imap_login_name, invalid_mailbox_reason, name_text


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


def test_an_address_on_the_wire_is_itself_with_utf8_else_its_idna_form():
    assert imap_login_name("ida@exämple.com", utf8=True) == "ida@exämple.com"
    assert imap_login_name("ida@exämple.com", utf8=False) == "ida@xn--exmple-cua.com"
    assert imap_login_name("ida@example.com", utf8=False) == "ida@example.com"
    with pytest.raises(ValueError, match="UTF8=ACCEPT"):
        imap_login_name("jörg@example.com", utf8=False)
    with pytest.raises(ValueError, match="not a valid domain"):
        imap_login_name("ida@" + "ä" * 70 + ".com", utf8=False)
