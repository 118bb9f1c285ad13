"""`mailrestore inject` into a real Dovecot, through what goes wrong on a real night.

kill -9 at any moment, the server restarting under the run, one user over
quota, and the three ways a connection fails before anything is written.
Each runs the CLI as an administrator would and reads the result back over
IMAP.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from crashy import write_archive
from dovecot import Dovecot, free_port
from imapclient import IMAPClient

from restore.plan import PlanEntry, PlanHeader, write_plan

MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>]+>)", re.MULTILINE | re.IGNORECASE)


def cli_env(tmp_path: Path, password: str) -> dict[str, str]:
    env = dict(os.environ, MAILRESTORE_PASSWORD=password)
    for name in ("CACHE", "STATE", "DATA", "CONFIG"):
        env[f"XDG_{name}_HOME"] = str(tmp_path / "xdg" / name.lower())
    return env


def inject_command(plan: Path, target: str, journal: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "restore", "inject", str(plan), "--to", target,
            "--state", str(journal), "--json", *extra]


def master_url(server: Dovecot) -> str:
    return f"imap://{server.master_user}@{server.host}:{server.port}"


def write_plan_file(path: Path, entries: list[PlanEntry]) -> Path:
    """A sealed plan: its header names the archives its entries come from."""
    with path.open("w", encoding="utf-8") as fh:
        write_plan(fh, entries, PlanHeader(tuple(dict.fromkeys(e.source for e in entries))))
    return path


def message_ids(server: Dovecot, user: str) -> Counter[str]:
    """Message-IDs in ``user``'s INBOX, as Dovecot serves them."""
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=30)
    try:
        client.login(user, server.password_of(user))
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search(), ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    finally:
        client.logout()
    found: Counter[str] = Counter()
    for item in fetched.values():
        match = MESSAGE_ID.search(item[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"])
        found[match.group(1).decode() if match else "?"] += 1
    return found


def assert_each_once(server: Dovecot, entries: list[PlanEntry]) -> None:
    for user in {e.user for e in entries}:
        wanted = Counter(e.message_id for e in entries if e.user == user)
        assert message_ids(server, user) == wanted, user


@pytest.fixture
def mailboxes(tmp_path: Path, new_dovecot_user: Callable[..., str]):
    """``mailboxes(users, per_user)``: fresh Dovecot users and a plan of mail for them."""

    def make(users: int, per_user: int) -> tuple[list[PlanEntry], Path]:
        names = [new_dovecot_user() for _ in range(users)]
        entries = write_archive(tmp_path / "archive", names, per_user)
        return entries, write_plan_file(tmp_path / "plan.jsonl", entries)

    return make


# -- 2. kill -9 at random moments, then a clean run --------------------------------


def journaled_done(journal: Path) -> int:
    """Messages the journal has done (0 while it does not exist yet)."""
    try:
        with closing(sqlite3.connect(journal, timeout=1)) as db:
            return db.execute("SELECT COUNT(*) FROM messages WHERE state = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def kill_when(proc: subprocess.Popen[bytes], journal: Path, done: int, then: float) -> None:
    """SIGKILL ``proc`` ``then`` seconds after the journal reaches ``done`` messages."""
    while proc.poll() is None and journaled_done(journal) < done:
        time.sleep(0.005)
    time.sleep(then)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_kill_9_during_imap_inject_then_rerun_leaves_every_message_exactly_once(
    tmp_path, dovecot_server, mailboxes
):
    entries, plan = mailboxes(8, 100)
    users = sorted({e.user for e in entries})
    journal = tmp_path / "journal.sqlite"
    command = inject_command(plan, master_url(dovecot_server), journal, "--jobs", "2")
    env = cli_env(tmp_path, dovecot_server.master_pass)
    rng = random.Random(20171208)
    trials = 6
    stored = [0]
    for trial in range(trials):
        # Each trial gets further than the last, and dies at a random moment
        # after that point: inside a MULTIAPPEND, between it and the journal, ...
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        kill_when(proc, journal, len(entries) * (trial + rng.random()) // (trials + 1),
                  then=rng.uniform(0, 0.05))
        stored.append(sum(sum(message_ids(dovecot_server, u).values()) for u in users))
    mid_run = sum(0 < now < len(entries) and now > before
                  for before, now in itertools.pairwise(stored))
    assert mid_run >= trials // 2, f"kills did not land mid-run (messages after each: {stored[1:]})"

    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert final.returncode == 0, final.stderr
    report = json.loads(final.stdout)
    assert report["appended"] + report["already_present"] == len(entries)
    assert report["failed"] == 0
    assert_each_once(dovecot_server, entries)


# -- 3. Dovecot restarts in the middle of a run ------------------------------------


def test_a_server_restart_mid_run_is_ridden_out_without_doubles(
    tmp_path, dovecot_server, mailboxes
):
    # many small mailboxes: the restart catches sessions logging in, not only appending
    entries, plan = mailboxes(40, 30)
    journal = tmp_path / "journal.sqlite"
    command = inject_command(plan, master_url(dovecot_server), journal, "--jobs", "4")
    proc = subprocess.Popen(command, env=cli_env(tmp_path, dovecot_server.master_pass),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def restart_a_quarter_in() -> None:
        while proc.poll() is None and journaled_done(journal) < len(entries) // 4:
            time.sleep(0.005)
        dovecot_server.restart()

    restart = threading.Thread(target=restart_a_quarter_in)
    restart.start()
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        restart.join()

    assert proc.returncode == 0, stderr + stdout
    assert "retrying" in stderr, "the restart missed the run: it had ended"
    report = json.loads(stdout)
    assert (report["appended"], report["failed"]) == (len(entries), 0)
    assert_each_once(dovecot_server, entries)


# -- 4. one user over quota ---------------------------------------------------------


def test_a_user_over_quota_fails_alone_and_a_rerun_after_raising_it_completes(
    tmp_path, dovecot_server, new_dovecot_user, mailboxes
):
    entries, _ = mailboxes(3, 20)
    full = new_dovecot_user(quota="2K")
    entries += write_archive(tmp_path / "archive", [full], 20)
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    command = inject_command(plan, master_url(dovecot_server), tmp_path / "journal.sqlite",
                             "--jobs", "2")
    env = cli_env(tmp_path, dovecot_server.master_pass)

    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert first.returncode == 1, first.stderr
    report = json.loads(first.stdout)
    by_user = {u["user"]: u for u in report["users"]}
    assert all(by_user[u]["failed"] == 0 and by_user[u]["appended"] == 20
               for u in by_user if u != full)
    refused = by_user[full]["failed"]
    assert 0 < refused < 20 and by_user[full]["appended"] == 20 - refused
    assert {p["user"] for p in report["problems"]} == {full}
    assert all("quota" in p["reason"].lower() for p in report["problems"]), report["problems"]

    dovecot_server.set_quota(full, "0")
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert second.returncode == 0, second.stderr
    again = {u["user"]: u for u in json.loads(second.stdout)["users"]}
    assert again[full]["appended"] == refused
    assert all(again[u]["appended"] == 0 and again[u]["already_present"] == 20
               for u in again if u != full)
    assert_each_once(dovecot_server, entries)


# -- 5. the connection fails before anything is written -------------------------------


def assert_cannot_run(done: subprocess.CompletedProcess[str], password: str, says: str) -> None:
    assert done.returncode == 3, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mailrestore: "), done.stderr
    assert says in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    assert password not in done.stdout + done.stderr


@pytest.fixture
def one_message_plan(tmp_path: Path, dovecot_server: Dovecot, new_dovecot_user) -> Path:
    return write_plan_file(tmp_path / "plan.jsonl",
                           write_archive(tmp_path / "archive", [new_dovecot_user()], 1))


def test_bad_credentials_exit_3_with_one_line_and_no_password(
    tmp_path, dovecot_server, one_message_plan
):
    wrong = "not-the-Pa55word"
    done = subprocess.run(
        inject_command(one_message_plan, master_url(dovecot_server), tmp_path / "j.sqlite"),
        env=cli_env(tmp_path, wrong), capture_output=True, text=True, timeout=60)
    assert_cannot_run(done, wrong, "refused")


def test_nothing_listening_exits_3_with_one_line(tmp_path, dovecot_server, one_message_plan):
    target = f"imap://{dovecot_server.master_user}@127.0.0.1:{free_port()}"
    done = subprocess.run(inject_command(one_message_plan, target, tmp_path / "j.sqlite"),
                          env=cli_env(tmp_path, dovecot_server.master_pass),
                          capture_output=True, text=True, timeout=60)
    assert_cannot_run(done, dovecot_server.master_pass, "connection refused")


def test_a_certificate_for_another_host_exits_3(tmp_path, dovecot_available, one_message_plan):
    with Dovecot(["alice@example.com"], ssl=True, cert_hostname="mail.other.example") as server:
        # The certificate is trusted; only its name does not match the address dialled.
        env = {**cli_env(tmp_path, server.master_pass), "SSL_CERT_FILE": str(server.cert_path)}
        target = f"imaps://{server.master_user}@{server.host}:{server.ssl_port}"
        done = subprocess.run(inject_command(one_message_plan, target, tmp_path / "j.sqlite"),
                              env=env, capture_output=True, text=True, timeout=60)
    assert_cannot_run(done, server.master_pass, "certificate")
    assert "mismatch" in done.stderr.lower() or "127.0.0.1" in done.stderr


def test_a_user_without_a_mailbox_fails_alone_even_when_listed_first(
    tmp_path, dovecot_server, mailboxes
):
    entries, _ = mailboxes(2, 5)
    # With a master login a missing user is refused like a wrong password; with
    # more mail than anyone, this user's session is the very first one opened.
    entries += write_archive(tmp_path / "archive", ["nobody-here@example.com"], 9)
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    done = subprocess.run(
        inject_command(plan, master_url(dovecot_server), tmp_path / "journal.sqlite"),
        env=cli_env(tmp_path, dovecot_server.master_pass), capture_output=True, text=True,
        timeout=120)

    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["appended"] == 10 and report["failed"] == 9
    assert {p["user"] for p in report["problems"]} == {"nobody-here@example.com"}
    assert_each_once(dovecot_server, [e for e in entries if e.user != "nobody-here@example.com"])
