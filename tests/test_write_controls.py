"""The operator's controls over writing (issue #13): --max-rate, --bad-item-limit, --keyword.

Each is run through the CLI as an administrator would, into Maildir and
into the real Dovecot, and what the target holds is read back.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest
from crashy import message_ids, write_archive
from dovecot import Dovecot
from imapclient import IMAPClient
from test_exactly_once import cli_env, mailrestore, tree_digest, write_plan_file
from test_inject import make_mailboxes
from test_inject_imap import assert_each_once, inject_command, master_url
from test_inject_imap import cli_env as imap_env

# -- --max-rate ------------------------------------------------------------------------

RATE = 100
MESSAGES = 400     # four users of a hundred: four seconds at RATE


def assert_rate_held(done: subprocess.CompletedProcess[str], seconds: float) -> dict:
    """The run took at least as long as the limit allows, and says so in its summary."""
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["appended"] == MESSAGES
    # Lower bounds only: a loaded machine is slower, never faster.
    assert seconds >= MESSAGES / RATE * 0.8, seconds
    assert report["seconds"] >= MESSAGES / RATE * 0.8, report
    assert 0 < report["rate"] <= RATE * 1.2, report
    # The effective rate is the appended count over the writing time, within the wall time.
    assert report["rate"] == pytest.approx(MESSAGES / report["seconds"], rel=0.01)
    assert report["seconds"] <= seconds
    return report


def test_max_rate_holds_across_jobs_into_maildir(tmp_path):
    users = [f"u{n}@example.com" for n in range(4)]
    entries = write_archive(tmp_path / "archive", users, MESSAGES // 4)
    target = f"maildir:{make_mailboxes(tmp_path / 'vmail', users)}"
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    command = inject_command(plan, target, tmp_path / "journal.sqlite", "--jobs", "4",
                             "--max-rate", str(RATE))

    started = time.monotonic()
    done = subprocess.run(command, env=cli_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert_rate_held(done, time.monotonic() - started)
    assert sum(message_ids(tmp_path / "vmail").values()) == MESSAGES


def test_max_rate_holds_across_jobs_into_dovecot(tmp_path, dovecot_server, new_dovecot_user):
    users = [new_dovecot_user() for _ in range(4)]
    entries = write_archive(tmp_path / "archive", users, MESSAGES // 4)
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    command = inject_command(plan, master_url(dovecot_server), tmp_path / "journal.sqlite",
                             "--jobs", "4", "--max-rate", str(RATE))

    started = time.monotonic()
    done = subprocess.run(command, env=imap_env(tmp_path, dovecot_server.master_pass),
                          capture_output=True, text=True, timeout=120)
    assert_rate_held(done, time.monotonic() - started)
    assert_each_once(dovecot_server, entries)


def test_the_summary_shows_the_effective_rate(tmp_path):
    users = ["alice@example.com"]
    entries = write_archive(tmp_path / "archive", users, 20)
    target = f"maildir:{make_mailboxes(tmp_path / 'vmail', users)}"
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    command = inject_command(plan, target, tmp_path / "journal.sqlite", "--max-rate", "40")
    command.remove("--json")

    done = subprocess.run(command, env=cli_env(tmp_path), capture_output=True, text=True,
                          timeout=120)

    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("Rate:")]
    rate = float(line.split()[1])
    assert 0 < rate <= 40 * 1.2, line
    assert "20 in " in line


def test_max_rate_must_be_a_positive_number(tmp_path):
    done = subprocess.run(inject_command(tmp_path / "plan.jsonl", "maildir:/nowhere",
                                         tmp_path / "j.sqlite", "--max-rate", "0"),
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--max-rate" in done.stderr


# -- --bad-item-limit ------------------------------------------------------------------


def stopped_then_resumed(command: list[str], env: dict[str, str], total: int, repair) -> dict:
    """Run ``command``; it stops on its limit. Repair, run the printed command: it completes."""
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert first.returncode == 1, first.stderr
    report = json.loads(first.stdout)
    stopped = report["stopped"]
    assert stopped and "bad-item limit" in stopped["reason"], report
    assert report["failed"] >= 3 and len(report["problems"]) == report["failed"]
    assert stopped["left"] > 0, "the limit did not stop anything"
    assert report["appended"] + report["already_present"] + report["failed"] + stopped["left"] \
        == total
    # The resume command is the command line as typed.
    resume = shlex.split(stopped["resume"])
    assert resume[0] == "mailrestore" and resume[1:] == command[3:]

    repair()
    second = subprocess.run([*command[:3], *resume[1:]], env=env, capture_output=True, text=True,
                            timeout=120)

    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["stopped"] is None and again["failed"] == 0
    assert again["appended"] == report["failed"] + stopped["left"]
    assert again["already_present"] == report["appended"] + report["already_present"]
    return report


def test_bad_item_limit_stops_on_unreadable_and_changed_items_and_the_resume_completes(tmp_path):
    users = ["alice@example.com", "bob@example.com", "carol@example.com"]
    entries = write_archive(tmp_path / "archive", users[:1], 30)
    entries += write_archive(tmp_path / "archive", users[1:], 20)
    target = f"maildir:{make_mailboxes(tmp_path / 'vmail', users)}"
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    # Users go in plan order, alice first: three of her items gone, two changed. One job,
    # so that bob and carol are still to do when her failures reach the limit.
    archive = tmp_path / "archive"
    gone = [archive / e.ref for e in entries[:3]]
    changed = [archive / e.ref for e in entries[3:5]]
    originals = {path: path.read_bytes() for path in gone + changed}
    for path in gone:
        path.rename(path.with_suffix(".away"))
    for path in changed:
        path.write_bytes(originals[path].replace(b"body", b"BODY"))

    def repair() -> None:
        for path, data in originals.items():
            path.with_suffix(".away").unlink(missing_ok=True)
            path.write_bytes(data)

    command = inject_command(plan, target, tmp_path / "journal.sqlite", "--jobs", "1",
                             "--bad-item-limit", "3")
    report = stopped_then_resumed(command, cli_env(tmp_path), len(entries), repair)

    reasons = " ".join(p["reason"] for p in report["problems"])
    assert "cannot read archive item" in reasons and "changed since the diff" in reasons
    assert message_ids(tmp_path / "vmail") == {e.message_id: 1 for e in entries}


def test_bad_item_limit_stops_on_server_refusals_and_the_resume_completes(
    tmp_path, dovecot_server, new_dovecot_user
):
    full = new_dovecot_user(quota="2K")
    others = [new_dovecot_user() for _ in range(3)]
    entries = write_archive(tmp_path / "archive", [full], 30)
    entries += write_archive(tmp_path / "archive", others, 20)
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    # One job: the others are still to do when the full mailbox's refusals reach the limit.
    command = inject_command(plan, master_url(dovecot_server), tmp_path / "journal.sqlite",
                             "--jobs", "1", "--bad-item-limit", "3")

    report = stopped_then_resumed(command, imap_env(tmp_path, dovecot_server.master_pass),
                                  len(entries), lambda: dovecot_server.set_quota(full, "0"))

    assert {p["user"] for p in report["problems"]} == {full}
    assert all("quota" in p["reason"].lower() for p in report["problems"])
    assert_each_once(dovecot_server, entries)


def test_a_stopped_run_prints_its_failures_and_the_command_that_resumes(tmp_path):
    users = ["alice@example.com", "bob@example.com"]
    entries = write_archive(tmp_path / "archive", users, 10)
    target = f"maildir:{make_mailboxes(tmp_path / 'vmail', users)}"
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    (tmp_path / "archive" / entries[0].ref).unlink()
    command = inject_command(plan, target, tmp_path / "journal.sqlite", "--jobs", "1",
                             "--bad-item-limit", "1")
    command.remove("--json")

    done = subprocess.run(command, env=cli_env(tmp_path), capture_output=True, text=True,
                          timeout=120)

    assert done.returncode == 1, done.stderr
    assert entries[0].ref in done.stdout
    assert "bad-item limit reached: --bad-item-limit 1, 1 failed" in done.stdout
    assert "10 messages not attempted" in done.stdout    # the other user's
    assert f"  mailrestore {shlex.join(command[3:])}\n" in done.stdout


# -- --keyword ---------------------------------------------------------------------------


def flags_by_message_id(server: Dovecot, user: str) -> dict[str, set[bytes]]:
    """FLAGS of every message in ``user``'s INBOX as Dovecot serves them, by Message-ID."""
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=30)
    try:
        client.login(user, server.password_of(user))
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search(), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    finally:
        client.logout()
    found = {}
    for item in fetched.values():
        header = item[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().strip()
        # \Recent is the session's, not the message's: left out.
        found[header.split(":", 1)[1].strip()] = set(item[b"FLAGS"]) - {b"\\Recent"}
    return found


def test_keyword_is_an_imap_keyword_of_mail_appended_to_dovecot(
    tmp_path, dovecot_server, new_dovecot_user
):
    user = new_dovecot_user()
    entries = write_archive(tmp_path / "archive", [user], 5)
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    done = subprocess.run(
        inject_command(plan, master_url(dovecot_server), tmp_path / "journal.sqlite",
                       "--keyword", "$Restored"),
        env=imap_env(tmp_path, dovecot_server.master_pass), capture_output=True, text=True,
        timeout=120)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["appended"] == 5 and report["warnings"] == []
    flags = flags_by_message_id(dovecot_server, user)
    assert flags == {e.message_id: {b"$Restored"} for e in entries}


def test_keyword_written_into_maildir_is_read_by_dovecot_as_that_keyword(
    tmp_path, dovecot_server, new_dovecot_user
):
    user = new_dovecot_user()
    # The user's own keyword, set over IMAP: Dovecot writes dovecot-keywords itself.
    client = IMAPClient(dovecot_server.host, port=dovecot_server.port, ssl=False, timeout=30)
    client.login(user, dovecot_server.password_of(user))
    client.append("INBOX", b"Message-ID: <own@test>\r\nSubject: mine\r\n\r\nmine\r\n",
                  flags=("$Label1", "NonJunk"))
    client.logout()
    keywords = dovecot_server.maildir(user) / "dovecot-keywords"
    assert keywords.read_bytes() == b"0 $Label1\n1 NonJunk\n"

    entries = write_archive(tmp_path / "archive", [user], 5)
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    target = f"maildir:{dovecot_server.base}/mail/%u/Maildir"
    done = subprocess.run(
        inject_command(plan, target, tmp_path / "journal.sqlite", "--keyword", "$Restored",
                       "--flags", "\\Seen"),
        env=cli_env(tmp_path), capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["appended"] == 5
    assert keywords.read_bytes() == b"0 $Label1\n1 NonJunk\n2 $Restored\n"
    names = [p.name for p in (dovecot_server.maildir(user) / "cur").iterdir()]
    assert sum(name.endswith(":2,Sc") for name in names) == 5, names
    flags = flags_by_message_id(dovecot_server, user)
    assert flags.pop("<own@test>") == {b"$Label1", b"NonJunk"}
    assert flags == {e.message_id: {b"$Restored", b"\\Seen"} for e in entries}


def test_undo_removes_mail_written_with_a_keyword_and_the_keywords_file_it_made(tmp_path):
    users = ["alice@example.com", "bob@example.com"]
    entries = write_archive(tmp_path / "archive", users, 5)
    target = f"maildir:{make_mailboxes(tmp_path / 'vmail', users)}"
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    env = cli_env(tmp_path)
    before = tree_digest(tmp_path / "vmail")
    done = subprocess.run(inject_command(plan, target, tmp_path / "j.sqlite", "--keyword",
                                         "$Restored", "--folder", "Restored"),
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cur = list((tmp_path / "vmail").glob("*/*/Maildir/.Restored/cur/*:2,a"))
    assert len(cur) == 10

    undone = mailrestore(env, "undo", "1", "--state", str(tmp_path / "j.sqlite"), "--json")

    assert undone.returncode == 0, undone.stderr
    assert json.loads(undone.stdout)["removed"] == 10
    assert tree_digest(tmp_path / "vmail") == before


@pytest.mark.parametrize("keyword", ["two words", "\\Seen", "(x)", "ünï", "a]b", ""])
def test_a_keyword_that_is_not_an_imap_atom_is_refused_in_one_line(tmp_path, keyword):
    done = mailrestore(cli_env(tmp_path), "inject", str(tmp_path / "plan.jsonl"), "--to",
                       f"maildir:{tmp_path}", "--keyword", keyword)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "is not an IMAP keyword" in done.stderr
    assert not (tmp_path / "plan.jsonl").exists()
