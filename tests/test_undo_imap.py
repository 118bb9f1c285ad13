"""Exactly once and undo over IMAP, against the real Dovecot the tests start (issue #9).

A fresh journal or another spelling of the URL appends nothing; undo takes a
run back to the same message lists, UIDs and UIDVALIDITY in every folder,
leaving what the user moved; a second undo removes nothing; a dry run names
a user the server does not have.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from crashy import write_archive
from dovecot import Dovecot
from imapclient import IMAPClient
from test_exactly_once import cli_env

from restore.plan import PlanHeader, write_plan

Snapshot = dict[str, tuple[int, list[tuple[int, str]]]]


def mailrestore(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "restore", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def run_json(env: dict[str, str], *args: str) -> dict:
    done = mailrestore(env, *args, "--json")
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def connect(server: Dovecot, user: str) -> IMAPClient:
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=30)
    client.login(user, server.password_of(user))
    return client


def snapshot(server: Dovecot, user: str) -> Snapshot:
    """Every folder: its UIDVALIDITY and (UID, sha256 of the message) of each message."""
    client = connect(server, user)
    try:
        found = {}
        for _, _, name in client.list_folders():
            selected = client.select_folder(name, readonly=True)
            uids = client.search()
            bodies = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
            found[name] = (selected[b"UIDVALIDITY"], sorted(
                (uid, hashlib.sha256(item[b"BODY[]"]).hexdigest()) for uid, item in bodies.items()))
        return found
    finally:
        client.logout()


def url(server: Dovecot) -> str:
    return f"imap://{server.master_user}@{server.host}:{server.port}"


@pytest.fixture
def setup(tmp_path: Path, dovecot_server: Dovecot, new_dovecot_user: Callable[..., str]):
    """Two users with mail of their own, and a sealed plan of 6 archive messages each."""
    users = [new_dovecot_user(), new_dovecot_user()]
    for user in users:
        client = connect(dovecot_server, user)
        client.append("INBOX", f"Message-ID: <own.{user}>\r\nFrom: a@b\r\n\r\nmine\r\n".encode())
        client.create_folder("Archive")
        client.append("Archive", f"Message-ID: <arch.{user}>\r\nFrom: a@b\r\n\r\nold\r\n".encode())
        client.logout()
    entries = write_archive(tmp_path / "archive", users, 6)
    plan = tmp_path / "plan.jsonl"
    with plan.open("w", encoding="utf-8") as fh:
        write_plan(fh, entries, PlanHeader((f"eml:{tmp_path}/archive",)))
    env = {**cli_env(tmp_path), "MAILRESTORE_PASSWORD": dovecot_server.master_pass}
    return users, entries, plan, env


def test_a_fresh_journal_or_another_spelling_appends_nothing(tmp_path, dovecot_server, setup):
    users, entries, plan, env = setup
    target = url(dovecot_server)
    first = run_json(env, "inject", str(plan), "--to", target)
    assert first["appended"] == len(entries)
    before = {u: snapshot(dovecot_server, u) for u in users}
    for again_env, spelling, state in (
        (env, target, str(tmp_path / "fresh.sqlite")),
        (env, target + "/", None),
        (env, target.replace(f"{dovecot_server.host}", f"{dovecot_server.host}".upper()), None),
        (
            {
                **cli_env(tmp_path, "another-admin"),
                "MAILRESTORE_PASSWORD": env["MAILRESTORE_PASSWORD"],
            },
            target,
            None,
        ),
    ):
        args = ["inject", str(plan), "--to", spelling] + (["--state", state] if state else [])
        again = run_json(again_env, *args)
        assert (again["appended"], again["already_present"]) == (0, len(entries)), spelling
    assert {u: snapshot(dovecot_server, u) for u in users} == before


def test_undo_takes_a_run_back_to_the_same_uids_and_leaves_what_the_user_moved(
        tmp_path, dovecot_server, setup):
    users, entries, plan, env = setup
    target = url(dovecot_server)
    state = str(tmp_path / "j.sqlite")
    before = {u: snapshot(dovecot_server, u) for u in users}
    run = run_json(env, "inject", str(plan), "--to", target, "--state", state,
                   "--folder", "Restored")
    assert run["appended"] == len(entries)
    assert all("Restored" in snapshot(dovecot_server, u) for u in users)

    dry = run_json(env, "undo", str(run["run"]), "--state", state, "--dry-run")
    assert dry["removed"] == len(entries)
    undone = run_json(env, "undo", str(run["run"]), "--state", state, "--to", target + "/")
    assert (undone["removed"], undone["left"]) == (len(entries), 0)
    after = {u: snapshot(dovecot_server, u) for u in users}
    assert after == before      # every folder's UIDs and messages, UIDVALIDITY unchanged
    again = run_json(env, "undo", str(run["run"]), "--state", state)
    assert (again["removed"], again["left"]) == (0, 0)

    # injected again (into INBOX), then the user files one message away before the undo
    second = run_json(env, "inject", str(plan), "--to", target, "--state", state)
    assert second["appended"] == len(entries)
    user = users[0]
    client = connect(dovecot_server, user)
    client.select_folder("INBOX")
    moved_uid = max(client.search())
    client.move([moved_uid], "Archive")
    client.logout()
    undone = run_json(env, "undo", str(second["run"]), "--state", state)
    assert (undone["removed"], undone["left"]) == (len(entries) - 1, 1)
    [left] = undone["problems"]
    assert left["user"] == user and "moved or deleted" in left["reason"]
    now = snapshot(dovecot_server, user)
    assert now["INBOX"] == before[user]["INBOX"]
    assert len(now["Archive"][1]) == len(before[user]["Archive"][1]) + 1


def test_dry_run_names_a_user_the_server_does_not_have(tmp_path, dovecot_server, setup):
    users, entries, _, env = setup
    ghost = write_archive(tmp_path / "archive", ["ghost@example.com"], 2)
    plan = tmp_path / "ghost.jsonl"
    with plan.open("w", encoding="utf-8") as fh:
        write_plan(fh, entries + ghost, PlanHeader((f"eml:{tmp_path}/archive",)))
    before = {u: snapshot(dovecot_server, u) for u in users}
    dry = mailrestore(env, "inject", str(plan), "--to", url(dovecot_server), "--dry-run", "--json")
    assert dry.returncode == 1, dry.stderr
    report = json.loads(dry.stdout)
    assert (report["appended"], report["failed"]) == (len(entries), len(ghost))
    assert {p["user"] for p in report["problems"]} == {"ghost@example.com"}
    assert {u: snapshot(dovecot_server, u) for u in users} == before
    assert not list((tmp_path / "home").rglob("journal-*"))
