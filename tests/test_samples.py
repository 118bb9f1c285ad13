"""Real mail (fixtures/samples/, from the SpamAssassin public corpus): the readers keep
its bytes, and the identity rules hold on it as they do on generated messages."""

from __future__ import annotations

import hashlib
import re

import pytest
from crosscheck import assert_maildir_agrees, assert_mbox_agrees
from factory import SAMPLES, sample_messages

from restore.identity import facts_of
from restore.stores import Item, Unreadable, open_store
from restore.targets.maildir import maildir_bytes

MESSAGES = sample_messages()


def keys(data: bytes) -> tuple[str, str, str]:
    facts = facts_of(data)
    return facts.key, facts.mid_key, facts.strict_key


def test_the_samples_are_the_corpus_files_their_licence_note_names():
    note = (SAMPLES / "LICENSES" / "README.md").read_text(encoding="utf-8")
    named = dict(re.findall(r"^\| `([^`]+)` \| `[^`]*\.([0-9a-f]{32})\.txt` \|$", note, re.M))
    assert named and set(named) == set(MESSAGES)
    for name, md5 in named.items():
        assert hashlib.md5((SAMPLES / name).read_bytes()).hexdigest() == md5, name


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_a_real_message_keeps_its_keys_through_transport_and_delivery(name):
    data = MESSAGES[name]
    plain = keys(data)
    assert keys(re.sub(rb"(?<!\r)\n", b"\r\n", data)) == plain     # SMTP: bare LF to CRLF
    assert keys(b"From MAILER-DAEMON Fri Dec  8 21:13:05 2017\n" + data) == plain
    delivered = (b"Return-Path: <bounce@example.org>\nDelivered-To: alice@example.com\n"
                 b"Received: from gw.example.com by mail.example.com with LMTP;\n"
                 b"\tFri, 8 Dec 2017 21:13:05 +0000\nX-Spam-Status: Yes, score=9.1\n" + data)
    assert keys(delivered) == plain
    head, blank, body = data.partition(b"\n\n")
    tagged = re.sub(rb"(?m)^Subject: ", b"Subject: [SPAM] ", head, count=1) + blank + body
    assert keys(tagged) == plain


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_a_real_message_keeps_its_keys_when_restored_into_a_maildir(name):
    # Stray CRs included: CR CR CRLF is three line ends in the file as in the digest.
    data = MESSAGES[name]
    assert keys(maildir_bytes(data)) == keys(data)


def test_real_messages_read_back_byte_for_byte_from_every_store(tmp_path, mail_factory):
    messages = list(MESSAGES.values())
    maildir = tmp_path / "Maildir"
    mail_factory.write_maildir(maildir, {"INBOX": messages[:2], "Junk": messages[2:]}, flags="S")
    assert sorted(m.data for m in assert_maildir_agrees(maildir)) == sorted(messages)

    archive = tmp_path / "archive.mbox.zst"
    mail_factory.write_mbox(archive, messages, compress="zst")
    assert assert_mbox_agrees(archive) == messages

    mail_factory.write_eml_tree(tmp_path / "gateway", messages, compress="gz")
    store = open_store(f"eml:{tmp_path / 'gateway'}")
    got = list(store.read([u for u in store.units() if not isinstance(u, Unreadable)]))
    assert all(isinstance(g, Item) for g in got)
    assert sorted(g.data for g in got) == sorted(messages)
