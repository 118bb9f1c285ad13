"""The runbook before promoting the original storage back: compare, restore, compare again.

While the original primary was out of service the promoted replica took new
mail; the original has mail the replica never got (replication lag) and the
users deleted a message there before the failover. The operator compares
(replica as the archive, original as the replica), restores into the
original what it lacks inside the window, and compares again: exit 0 and
nothing missing means the original can be promoted back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crosscheck import assert_maildir_agrees, assert_mbox_agrees
from dovecot import Dovecot
from imapclient import IMAPClient

FAILOVER = datetime(2017, 12, 8, 16, 0, tzinfo=UTC)
BACK = datetime(2017, 12, 9, 8, 0, tzinfo=UTC)   # the original is ready again
WINDOW = ["--since", FAILOVER.isoformat(), "--until", BACK.isoformat()]
USERS = ("alice@example.com", "bob@example.org")


def mailrestore(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAILRESTORE_PASSWORD=Dovecot.master_pass)
    for name in ("CACHE", "STATE", "DATA", "CONFIG"):
        env[f"XDG_{name}_HOME"] = str(tmp_path / "xdg" / name.lower())
    return subprocess.run([sys.executable, "-m", "restore", *args], env=env, capture_output=True,
                          text=True, timeout=120)


class Divergence:
    """Per user: what both stores have, what only one has, and what the user deleted."""

    def __init__(self, mail_factory, users=USERS):
        make = mail_factory.make_message
        self.both, self.replica_only, self.original_only, self.deleted = {}, {}, {}, {}
        for n, user in enumerate(users):
            def msg(received: datetime, user=user, **kw) -> bytes:
                return make(to=user, envelope_to=user, received=received, **kw)
            self.both[user] = [msg(FAILOVER - timedelta(days=2)),
                               msg(FAILOVER - timedelta(hours=3))]
            # arrived on the replica after the failover; one without Message-ID
            self.replica_only[user] = [msg(FAILOVER + timedelta(hours=2 + n)),
                                       msg(BACK - timedelta(hours=1), message_id=None)]
            self.original_only[user] = [msg(FAILOVER - timedelta(minutes=10))]
            self.deleted[user] = [msg(FAILOVER - timedelta(days=1))]

    def replica(self, user: str) -> dict[str, list[bytes]]:
        return {"INBOX": self.both[user][:1] + self.replica_only[user] + self.deleted[user],
                "Archive/2017": self.both[user][1:]}

    def original(self, user: str) -> dict[str, list[bytes]]:
        # the user filed one message elsewhere on the original: still present
        return {"INBOX": self.both[user][1:] + self.original_only[user],
                "Ärger": self.both[user][:1]}

    def missing(self) -> int:
        return sum(len(m) for m in self.replica_only.values())


def run_the_runbook(tmp_path: Path, replica: str, original: str) -> list[dict]:
    """compare, restore, compare again; the three JSON documents."""
    catalog = ["--catalog", str(tmp_path / "catalog.sqlite")]
    compare = ["diff", "--archive", replica, "--replica", original, *WINDOW, *catalog, "--json"]
    before = mailrestore(tmp_path, *compare)
    assert before.returncode == 1, before.stderr
    restored = mailrestore(tmp_path, "restore", "--archive", replica, "--replica", original,
                           "--to", original, *WINDOW, *catalog,
                           "--state", str(tmp_path / "journal.sqlite"), "--json")
    assert restored.returncode == 0, restored.stderr
    after = mailrestore(tmp_path, *compare)
    assert after.returncode == 0, after.stderr + after.stdout
    return [json.loads(r.stdout) for r in (before, restored, after)]


def test_maildir_tree_against_maildir_tree(tmp_path, mail_factory):
    story = Divergence(mail_factory)
    replica = mail_factory.write_maildir_tree(tmp_path / "replica",
                                              {u: story.replica(u) for u in USERS})
    original = mail_factory.write_maildir_tree(tmp_path / "original",
                                               {u: story.original(u) for u in USERS})

    before, restored, after = run_the_runbook(tmp_path, f"maildir:{replica}", f"maildir:{original}")

    assert before["counts"]["missing"] == story.missing() == restored["appended"]
    assert before["counts"]["outside-window"] == len(USERS)  # deleted by the user: stays deleted
    assert after["counts"]["missing"] == 0
    assert after["counts"]["present"] == before["counts"]["present"] + story.missing()
    # append only: the original keeps the mail the replica never had
    for user in USERS:
        local, _, domain = user.partition("@")
        inbox = tmp_path / "original" / domain / local / "Maildir"
        assert len(list((inbox / "new").iterdir())) == 2 + len(story.replica_only[user])
        assert sorted(m.data for m in assert_maildir_agrees(inbox) if m.folder == "") == sorted(
            story.both[user][1:] + story.original_only[user] + story.replica_only[user])


def test_an_mbox_export_against_one_maildir(tmp_path, mail_factory):
    user = "alice@example.com"
    story = Divergence(mail_factory, users=(user,))
    exported = [m for folder in story.replica(user).values() for m in folder]
    mail_factory.write_mbox(tmp_path / "replica-alice.mbox", exported)
    assert assert_mbox_agrees(tmp_path / "replica-alice.mbox") == exported
    mail_factory.write_maildir(tmp_path / "original", story.original(user))

    before, restored, after = run_the_runbook(
        tmp_path, f"mbox:{tmp_path / 'replica-alice.mbox'}", f"maildir:{tmp_path / 'original'}")

    assert before["counts"]["missing"] == story.missing() == restored["appended"] == 2
    assert after["counts"]["missing"] == 0 and after["counts"]["unroutable"] == 0
    inbox = [m.data for m in assert_maildir_agrees(tmp_path / "original") if m.folder == ""]
    assert set(story.replica_only[user]) <= set(inbox)


def test_maildir_tree_against_the_original_served_by_dovecot(
        tmp_path, mail_factory, dovecot_server, new_dovecot_user):
    users = (new_dovecot_user(), new_dovecot_user())
    story = Divergence(mail_factory, users=users)
    replica = mail_factory.write_maildir_tree(tmp_path / "replica",
                                              {u: story.replica(u) for u in users})
    for user in users:
        seed(dovecot_server, user, story.original(user))
    original = f"imap://{dovecot_server.master_user}@{dovecot_server.host}:{dovecot_server.port}"

    before, restored, after = run_the_runbook(tmp_path, f"maildir:{replica}", original)

    assert before["counts"]["missing"] == story.missing() == restored["appended"]
    assert after["counts"]["missing"] == 0


def seed(server: Dovecot, user: str, folders: dict[str, list[bytes]]) -> None:
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=10)
    client.login(f"{user}*{server.master_user}", server.master_pass)
    try:
        for folder, messages in folders.items():
            if folder != "INBOX":
                client.create_folder(folder)
            for data in messages:
                client.append(folder, data)
    finally:
        client.logout()
