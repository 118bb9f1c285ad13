"""The IMAP store against a real Dovecot: a replica read over IMAP, and `scan imap://`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dovecot import Dovecot, free_port
from imapclient import IMAPClient

from restore.errors import StoreError
from restore.stores import StoreOptions, open_store
from restore.stores.base import Item

GAP_START = datetime(2017, 12, 8, 16, 0, tzinfo=UTC)
IN_GAP = GAP_START + timedelta(hours=2)
BEFORE_GAP = GAP_START - timedelta(hours=5)
WINDOW = ["--since", GAP_START.isoformat(), "--until", (GAP_START + timedelta(hours=7)).isoformat()]


# -- helpers ---------------------------------------------------------------------


def url(server: Dovecot) -> str:
    return f"imap://{server.master_user}@{server.host}:{server.port}"


def seed(server: Dovecot, user: str, folders: dict[str, list[bytes]]) -> None:
    """Put messages into ``user``'s folders over IMAP, as delivery and mail clients would."""
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=10)
    client.login(f"{user}*{server.master_user}", server.master_pass)
    try:
        for folder, messages in folders.items():
            if folder != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            for data in messages:
                client.append(folder, data)
    finally:
        client.logout()


def seen_flags(server: Dovecot, user: str, folder: str = "INBOX") -> list[tuple]:
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=10)
    client.login(f"{user}*{server.master_user}", server.master_pass)
    try:
        client.select_folder(folder, readonly=True)
        return [flags for flags in client.get_flags(client.search("ALL")).values()]
    finally:
        client.logout()


def cli_env(tmp_path: Path, password: str = Dovecot.master_pass) -> dict[str, str]:
    env = dict(os.environ, MAILRESTORE_PASSWORD=password)
    for name in ("CACHE", "STATE", "DATA", "CONFIG"):
        env[f"XDG_{name}_HOME"] = str(tmp_path / "xdg" / name.lower())
    return env


def mailrestore(tmp_path: Path, *args: str, password: str = Dovecot.master_pass,
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "restore", *args, "--catalog", str(tmp_path / "catalog.sqlite")],
        env=cli_env(tmp_path, password), capture_output=True, text=True, timeout=120)


def users_file(tmp_path: Path, *users: str) -> str:
    path = tmp_path / "users.txt"
    path.write_text("".join(f"{u}\n" for u in users))
    return str(path)


class FetchCounter:
    """Messages Dovecot sent headers or bodies of, from its logout lines (hdr_count, body_count)."""

    LOGOUT = re.compile(r"Logged out .*?hdr_count=(\d+) .*?body_count=(\d+)")

    def __init__(self, server: Dovecot):
        self.log = server.log
        self.start = self.log.stat().st_size

    def since_start(self, sessions: int) -> tuple[int, int]:
        """(headers, bodies) fetched in the sessions logged out since this counter began.

        Dovecot logs a logout a moment after the client leaves: wait for ``sessions`` of them.
        """
        deadline = time.monotonic() + 5
        while True:
            with self.log.open() as fh:
                fh.seek(self.start)
                found = self.LOGOUT.findall(fh.read())
            if len(found) >= sessions or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(found) >= sessions, f"only {len(found)} logouts logged"
        return sum(int(h) for h, _ in found), sum(int(b) for _, b in found)


# -- scan ----------------------------------------------------------------------------


def test_scan_counts_every_folder_including_a_non_ascii_one(
        dovecot_server, new_dovecot_user, mail_factory, tmp_path):
    user = new_dovecot_user()
    make = mail_factory.make_message
    seed(dovecot_server, user, {
        "INBOX": [make(to=user), make(to=user)],
        "Sent": [make(to=user)],
        "Ärger": [make(to=user), make(to=user), make(to=user)],
        "Archive/2017": [make(to=user)],
    })
    result = mailrestore(tmp_path, "scan", url(dovecot_server), "--users",
                         users_file(tmp_path, user),
                         "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    folders = {(f["user"], f["folder"]): f["messages"] for f in doc["folders"]}
    assert folders == {(user, "INBOX"): 2, (user, "Sent"): 1, (user, "Ärger"): 3,
                       (user, "Archive/2017"): 1}
    assert doc["messages"] == 7 and doc["problems"] == []


def test_a_rescan_fetches_only_new_messages(dovecot_server, new_dovecot_user, mail_factory,
                                            tmp_path):
    user = new_dovecot_user()
    seed(dovecot_server, user, {"INBOX": [mail_factory.make_message(to=user) for _ in range(3)]})
    args = ("scan", url(dovecot_server), "--users", users_file(tmp_path, user), "--json")
    first = json.loads(mailrestore(tmp_path, *args).stdout)
    again = json.loads(mailrestore(tmp_path, *args).stdout)
    seed(dovecot_server, user, {"INBOX": [mail_factory.make_message(to=user)]})
    grown = json.loads(mailrestore(tmp_path, *args).stdout)
    assert (first["catalog"]["units_read"], first["messages"]) == (3, 3)
    assert (again["catalog"]["units_read"], again["messages"]) == (0, 3)
    assert (grown["catalog"]["units_read"], grown["messages"]) == (1, 4)


def test_scanning_the_login_own_mailbox_without_a_user_list(
        dovecot_server, new_dovecot_user, mail_factory, tmp_path):
    user = new_dovecot_user()
    seed(dovecot_server, user, {"INBOX": [mail_factory.make_message(to=user)]})
    spec = f"imap://{user}@{dovecot_server.host}:{dovecot_server.port}"
    result = mailrestore(tmp_path, "scan", spec, "--json", password=dovecot_server.user_pass)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[
        "folders"] == [{"user": user, "folder": "INBOX", "messages": 1}]


# -- the replica read over IMAP ----------------------------------------------------------


def test_diff_against_dovecot_finds_exactly_the_missing_mail(
        dovecot_server, new_dovecot_user, mail_factory, tmp_path):
    alice, bob = new_dovecot_user(), new_dovecot_user()
    nobody = "nobody@example.com"  # no mailbox on the server
    make = mail_factory.make_message

    def gateway_copy(user: str, **kw) -> bytes:
        return make(to=user, envelope_to=user, received=IN_GAP, **kw)

    kept = gateway_copy(alice)
    moved = gateway_copy(alice)                     # the user filed it away
    no_mid_kept = gateway_copy(bob, message_id=None, subject="no id, delivered")
    lost = [gateway_copy(alice), gateway_copy(bob)]
    no_mid_lost = gateway_copy(bob, message_id=None, subject="no id, lost")
    unroutable = gateway_copy(nobody)
    seed(dovecot_server, alice, {"INBOX": [kept], "Ärger": [moved]})
    seed(dovecot_server, bob, {"INBOX": [no_mid_kept]})
    archive = tmp_path / "gateway"
    mail_factory.write_eml_tree(archive, [kept, moved, no_mid_kept, *lost, no_mid_lost, unroutable])
    plan = tmp_path / "gap.jsonl"
    args = ("diff", "--archive", f"eml:{archive}", "--replica", url(dovecot_server), *WINDOW,
            "--json")

    counter = FetchCounter(dovecot_server)
    result = mailrestore(tmp_path, *args, "--plan", str(plan))
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["counts"] == {"present": 3, "missing": 3, "outside-window": 0, "duplicate": 0,
                             "unroutable": 1, "unreadable": 0, "deleted": 0}
    planned = Counter(json.loads(line)["user"] for line in plan.read_text().splitlines()[1:])
    assert planned == {alice: 1, bob: 2}
    [problem] = doc["problems"]
    assert problem["class"] == "unroutable" and problem["user"] == nobody
    # headers for the three messages, the body only for the one without Message-ID
    assert counter.since_start(sessions=2) == (3, 1)
    # read-only: nothing was marked as read
    assert all(b"\\Seen" not in flags for flags in seen_flags(dovecot_server, alice, "Ärger"))

    counter = FetchCounter(dovecot_server)
    again = mailrestore(tmp_path, *args)
    assert json.loads(again.stdout)["counts"] == doc["counts"]
    assert counter.since_start(sessions=2) == (0, 0)


def test_a_wrong_admin_password_exits_3_with_a_clear_message(
        dovecot_server, new_dovecot_user, mail_factory, tmp_path):
    user = new_dovecot_user()
    archive = tmp_path / "gateway"
    mail_factory.write_eml_tree(archive, [mail_factory.make_message(envelope_to=user)])
    result = mailrestore(tmp_path, "diff", "--archive", f"eml:{archive}",
                         "--replica", url(dovecot_server), password="wrong-Secret")
    assert result.returncode == 3
    assert f"IMAP login to {dovecot_server.host}:{dovecot_server.port} refused" in result.stderr
    assert "(as admin)" in result.stderr and "password" in result.stderr
    assert "wrong-Secret" not in result.stderr


def test_no_server_listening_is_a_store_error(dovecot_available):
    store = open_store(f"imap://admin@127.0.0.1:{free_port()}",
                       StoreOptions(password="x", users=["alice@example.com"]))
    with pytest.raises(StoreError, match="connection refused"):
        list(store.units())


# -- the store API ----------------------------------------------------------------------


def open_imap(server: Dovecot, user: str, **options) -> object:
    return open_store(url(server),
                      StoreOptions(password=server.master_pass, users=[user], **options))


def test_units_and_reads_name_user_folder_and_fetch_headers_only(
        dovecot_server, new_dovecot_user, mail_factory):
    user = new_dovecot_user()
    message = mail_factory.make_message(to=user, body="secret body\n")
    seed(dovecot_server, user, {"Ärger": [message]})
    store = open_imap(dovecot_server, user)
    try:
        [unit] = list(store.units())
        [item] = list(store.read([unit]))
        assert store.users() == {user}
        whole = store.open_ref(item.ref)
    finally:
        store.close()
    assert (unit.user, unit.folder) == (user, "Ärger")
    assert isinstance(item, Item) and item.headers_only and b"secret body" not in item.data
    assert item.delivered is not None
    assert whole.replace(b"\r\n", b"\n") == message


def test_strict_matching_fetches_whole_messages(dovecot_server, new_dovecot_user, mail_factory):
    user = new_dovecot_user()
    seed(dovecot_server, user, {"INBOX": [mail_factory.make_message(to=user, body="the body\n")]})
    store = open_imap(dovecot_server, user, match="strict")
    try:
        [item] = list(store.read([u for u in store.units()]))
    finally:
        store.close()
    assert not item.headers_only and b"the body" in item.data


def test_a_user_without_mailbox_is_not_a_user(dovecot_server, new_dovecot_user):
    user = new_dovecot_user()
    store = open_store(url(dovecot_server), StoreOptions(
        password=dovecot_server.master_pass, users=[user, "ghost@example.com", "../escape"]))
    try:
        assert list(store.units()) == []
        assert store.users() == {user}
    finally:
        store.close()


def test_a_dropped_connection_is_reopened(dovecot_server, new_dovecot_user, mail_factory):
    user = new_dovecot_user()
    seed(dovecot_server, user, {"INBOX": [mail_factory.make_message(to=user) for _ in range(3)]})
    store = open_imap(dovecot_server, user)
    try:
        units = list(store.units())
        dovecot_server.doveadm("kick", user)
        items = list(store.read(units))
    finally:
        store.close()
    assert len(items) == 3 and all(isinstance(i, Item) for i in items)
