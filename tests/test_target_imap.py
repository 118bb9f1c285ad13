"""ImapTarget against a real Dovecot: what lands in the mailbox, and how failures read."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from dovecot import Dovecot, free_port
from imapclient import IMAPClient

from restore.errors import JournalError, TargetError, TransientError, UsageError
from restore.identity import fingerprint_of
from restore.targets.base import Message
from restore.targets.imap import ImapTarget
from restore.targets.imap_wire import keyword_refusal

RECEIVED = datetime(2017, 12, 8, 21, 13, 5, tzinfo=UTC).timestamp()
SECRET = "s3cret-Pa55word"


def make_message(
    number: int,
    *,
    message_id: str | None = "auto",
    sender: str = "alice@example.org",
    body_size: int = 200,
    minutes_later: int = 0,
    flags: tuple[str, ...] = (),
) -> Message:
    """A small LF-ended message, received ``minutes_later`` after RECEIVED."""
    if message_id == "auto":
        message_id = f"<msg-{number}@example.org>"
    header_mid = f"Message-ID: {message_id}\n" if message_id else ""
    data = (
        f"From: {sender}\nTo: bob@example.com\nSubject: message {number}\n{header_mid}"
        f"Date: Fri, 08 Dec 2017 21:{number % 60:02d}:00 +0000\n\n"
        + "line of body text\n" * (body_size // 18 + 1)
    ).encode()
    return Message(
        data=data,
        received=RECEIVED + 60 * minutes_later,
        message_id=message_id,
        fingerprint=fingerprint_of(data),
        flags=flags,
    )


def crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


@pytest.fixture(scope="module")
def master_target(dovecot_server: Dovecot) -> ImapTarget:
    """Acts for every user through the master user, as an admin would run it."""
    url = f"imap://{dovecot_server.master_user}@{dovecot_server.host}:{dovecot_server.port}"
    return ImapTarget(url, dovecot_server.master_pass)


@pytest.fixture
def reader(dovecot_server: Dovecot) -> Iterator[Callable[..., IMAPClient]]:
    """Open an independent IMAP connection as a user, to look at what the target did."""
    clients: list[IMAPClient] = []

    def open_as(user: str, folder: str = "INBOX") -> IMAPClient:
        client = IMAPClient(dovecot_server.host, port=dovecot_server.port, ssl=False, timeout=10)
        client.normalise_times = False
        client.login(user, dovecot_server.user_pass)
        client.select_folder(folder, readonly=True)
        clients.append(client)
        return client

    yield open_as
    for client in clients:
        client.logout()


# -- what lands in the mailbox -------------------------------------------------


def test_appended_mail_keeps_received_time_order_bytes_and_no_flags(
    master_target, dovecot_user, reader
):
    batch = [make_message(n, minutes_later=n) for n in range(5)]
    with master_target.session(dovecot_user) as session:
        outcomes = session.append("INBOX", batch)

    assert all(outcome.ok and not outcome.warning for outcome in outcomes)
    client = reader(dovecot_user)
    uids = [int(outcome.target_id.split()[2]) for outcome in outcomes]
    assert uids == sorted(uids)  # received order is UID order
    stored = client.fetch(uids, ["INTERNALDATE", "FLAGS", "BODY.PEEK[]"])
    for uid, message in zip(uids, batch, strict=True):
        assert stored[uid][b"INTERNALDATE"].timestamp() == message.received
        assert set(stored[uid][b"FLAGS"]) - {b"\\Recent"} == set()  # shows as unread
        assert stored[uid][b"BODY[]"] == crlf(message.data)


def test_ready_runs_after_the_batch_is_sent_and_before_the_server_holds_any_of_it(
    master_target, dovecot_user, reader
):
    """The journal syncs in ``ready`` while the batch is on its way; if it fails, nothing
    of the batch may be in the mailbox (a later run would not know to look for it)."""
    seen: list[int] = []

    def ready() -> None:
        seen.append(reader(dovecot_user).folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"])
        raise JournalError("journal sync failed")

    with master_target.session(dovecot_user) as session, pytest.raises(JournalError):
        session.append("INBOX", [make_message(n, minutes_later=n) for n in range(3)], ready)
    assert seen == [0]
    assert reader(dovecot_user).folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0

    calls: list[int] = []
    with master_target.session(dovecot_user) as session:
        outcomes = session.append("INBOX", [make_message(n, minutes_later=n) for n in range(3)],
                                  lambda: calls.append(1))
    assert calls == [1]
    assert all(outcome.ok for outcome in outcomes)
    assert reader(dovecot_user).folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 3


def test_target_id_names_the_uidvalidity_and_uid(master_target, dovecot_user, reader):
    with master_target.session(dovecot_user) as session:
        [outcome] = session.append("INBOX", [make_message(1)])
    uidvalidity = reader(dovecot_user).folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"]
    assert outcome.target_id == f"APPENDUID {uidvalidity} 1"


def test_given_flags_are_set(master_target, dovecot_user, reader):
    with master_target.session(dovecot_user) as session:
        [outcome] = session.append("INBOX", [make_message(1, flags=("\\Seen", "restored"))])
    uid = int(outcome.target_id.split()[2])
    flags = set(reader(dovecot_user).get_flags([uid])[uid])
    assert {b"\\Seen", b"restored"} <= flags


def test_a_keyword_the_folder_does_not_store_is_refused_before_writing():
    system = (b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Seen", b"\\Draft")
    assert keyword_refusal((*system, b"\\*"), ["$Restored"]) is None
    assert keyword_refusal((*system, b"$restored"), ["$Restored", "\\Seen"]) is None
    # EXAMINE (read-only) lists no PERMANENTFLAGS: that says nothing about keywords.
    assert keyword_refusal((), ["$Restored"]) is None
    refusal = keyword_refusal(system, ["$Restored", "\\Seen"])
    assert refusal is not None and "keyword $Restored" in refusal
    assert "\\Seen" not in refusal.split("(")[0]


def test_a_missing_folder_is_created_and_an_existing_one_keeps_its_uidvalidity(
    master_target, dovecot_server, dovecot_user, reader
):
    with master_target.session(dovecot_user) as session:
        session.append("Sent", [make_message(1)])
    before = reader(dovecot_user).folder_status("Sent", ["UIDVALIDITY", "MESSAGES"])

    with master_target.session(dovecot_user) as session:
        sent = session.append("Sent", [make_message(2), make_message(3)])
        archive = session.append("Archive/2017", [make_message(4)])

    client = reader(dovecot_user)
    after = client.folder_status("Sent", ["UIDVALIDITY", "MESSAGES"])
    assert after[b"UIDVALIDITY"] == before[b"UIDVALIDITY"]
    assert after[b"MESSAGES"] == 3
    assert all(outcome.ok for outcome in sent + archive)
    assert client.folder_status("Archive/2017", ["MESSAGES"])[b"MESSAGES"] == 1
    subscribed = {name for _flags, _sep, name in client.list_sub_folders()}
    assert "Archive/2017" in subscribed, "a folder created for restored mail is subscribed"


def test_over_quota_fails_only_the_messages_beyond_the_limit(
    master_target, new_dovecot_user, reader
):
    user = new_dovecot_user(quota="3K")
    batch = [make_message(n, body_size=900, minutes_later=n) for n in range(6)]
    with master_target.session(user) as session:
        outcomes = session.append("INBOX", batch)

    accepted = [outcome.ok for outcome in outcomes]
    assert accepted == sorted(accepted, reverse=True)  # the first ones fit, the rest do not
    assert 0 < sum(accepted) < len(batch)
    refused = [outcome for outcome in outcomes if not outcome.ok]
    assert all("OVERQUOTA" in outcome.reason for outcome in refused)
    assert all("secs)" not in outcome.reason for outcome in refused)
    client = reader(user)
    assert client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == sum(accepted)


def test_an_unsendable_message_fails_alone(master_target, dovecot_user, reader):
    batch = [make_message(1), make_message(2, flags=("bad flag",)), make_message(3)]
    with master_target.session(dovecot_user) as session:
        outcomes = session.append("INBOX", batch)
    assert [outcome.ok for outcome in outcomes] == [True, False, True]
    assert "flag" in outcomes[1].reason
    assert reader(dovecot_user).folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 2


def test_logging_in_as_the_user_itself(dovecot_server, dovecot_user, reader):
    target = ImapTarget(f"imap://{dovecot_server.host}:{dovecot_server.port}",
                        dovecot_server.user_pass)
    with target.session(dovecot_user) as session:
        [outcome] = session.append("INBOX", [make_message(1)])
    assert outcome.ok
    assert reader(dovecot_user).folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 1


def test_a_server_that_changes_internaldate_is_reported(master_target, dovecot_user, reader):
    # Dovecot keeps INTERNALDATE as a 32-bit file time: 1870 becomes 1901.
    long_ago = make_message(1, minutes_later=-150 * 365 * 24 * 60)
    with master_target.session(dovecot_user) as session:
        [outcome] = session.append("INBOX", [long_ago])
    assert outcome.ok
    assert "server ignored INTERNALDATE" in outcome.warning


# -- the in-doubt check after a crash ------------------------------------------------


def test_find_recognises_an_appended_message_but_not_another_with_its_message_id(
    master_target, dovecot_user
):
    original = make_message(1)
    impostor = make_message(1, sender="mallory@example.net")
    assert impostor.message_id == original.message_id
    with master_target.session(dovecot_user) as session:
        [outcome] = session.append("INBOX", [original])
        assert session.find("INBOX", original) == outcome.target_id
        assert session.find("INBOX", impostor) is None
        assert session.find("INBOX", make_message(2)) is None
        assert session.find("No such folder", original) is None


def test_find_without_message_id_uses_size_and_date(master_target, dovecot_user):
    original = make_message(1, message_id=None)
    same_size_other_text = make_message(2, message_id=None)
    assert len(original.data) == len(same_size_other_text.data)
    with master_target.session(dovecot_user) as session:
        [outcome] = session.append("Archive", [original])
        assert session.find("Archive", original) == outcome.target_id
        assert session.find("Archive", same_size_other_text) is None


# -- failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["imap://admin:hunter2@mail.example.com", "imaps://admin:hunter2@mail.example.com:99999999"]
)
def test_a_password_in_the_url_is_refused_and_not_echoed(url):
    with pytest.raises(UsageError) as failure:
        ImapTarget(url, SECRET)
    assert "hunter2" not in str(failure.value)


@pytest.mark.parametrize("url", ["imap://", "imap://host/INBOX", "imaps://host:port", "pop3://host"])
def test_a_malformed_url_is_a_usage_error(url):
    with pytest.raises(UsageError, match="imap://\\[LOGIN@\\]HOST"):
        ImapTarget(url, SECRET)



def test_wrong_password_is_a_target_error_without_the_password(dovecot_server, dovecot_user):
    url = f"imap://{dovecot_server.master_user}@{dovecot_server.host}:{dovecot_server.port}"
    with pytest.raises(TargetError) as failure:
        ImapTarget(url, SECRET).session(dovecot_user)
    message = str(failure.value)
    assert f"{dovecot_server.host}:{dovecot_server.port}" in message
    assert "refused" in message and dovecot_user in message
    assert SECRET not in message


def test_nothing_listening_is_a_target_error(dovecot_available):
    port = free_port()
    with pytest.raises(TargetError, match=rf"127\.0\.0\.1:{port}: connection refused"):
        ImapTarget(f"imap://admin@127.0.0.1:{port}", SECRET).session("bob")


def test_a_dropped_connection_is_transient(master_target, dovecot_server, dovecot_user):
    with master_target.session(dovecot_user) as session:
        session.append("INBOX", [make_message(1)])
        dovecot_server.doveadm("kick", dovecot_user)
        with pytest.raises(TransientError, match="lost"):
            session.append("INBOX", [make_message(2), make_message(3)])


def test_a_server_gone_after_the_first_session_is_transient(dovecot_server, dovecot_user):
    target = ImapTarget(f"imap://{dovecot_server.host}:{dovecot_server.port}", "pass")
    target.session(dovecot_user).close()
    dovecot_server.stop()
    try:
        with pytest.raises(TransientError, match="connection refused"):
            target.session(dovecot_user)
    finally:
        dovecot_server.start()
    with target.session(dovecot_user) as session:
        assert session.append("INBOX", [make_message(1)])[0].ok


# -- TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(dovecot_available) -> Iterator[Dovecot]:
    """A Dovecot whose self-signed certificate is for "localhost" only."""
    with Dovecot({"carol@example.com": "pass"}, ssl=True, cert_hostname="localhost") as server:
        yield server


@pytest.fixture
def trusting_tls_server(tls_server: Dovecot, monkeypatch) -> Dovecot:
    """Trust the server's certificate the way an admin would: SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.cert_path))
    return tls_server


def test_imaps_with_a_trusted_certificate_works(trusting_tls_server):
    if socket.gethostbyname("localhost") != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 here")
    target = ImapTarget(f"imaps://localhost:{trusting_tls_server.ssl_port}", "pass")
    with target.session("carol@example.com") as session:
        [outcome] = session.append("INBOX", [make_message(1)])
    assert outcome.ok


@pytest.mark.parametrize("scheme", ["imaps", "imap"])  # imap: STARTTLS
def test_a_certificate_for_another_host_is_refused(trusting_tls_server, scheme):
    port = trusting_tls_server.ssl_port if scheme == "imaps" else trusting_tls_server.port
    target = ImapTarget(f"{scheme}://127.0.0.1:{port}", SECRET)
    with pytest.raises(TargetError) as failure:
        target.session("carol@example.com")
    message = str(failure.value)
    assert f"127.0.0.1:{port}" in message
    assert "certificate" in message and "127.0.0.1" in message.split("certificate", 1)[1]
    assert SECRET not in message


def test_insecure_accepts_the_mismatched_certificate(trusting_tls_server):
    target = ImapTarget(f"imaps://127.0.0.1:{trusting_tls_server.ssl_port}", "pass", insecure=True)
    with target.session("carol@example.com") as session:
        assert session.append("INBOX", [make_message(2)])[0].ok
