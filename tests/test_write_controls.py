"""The operator's controls over writing (issue #13): --max-rate, --bad-item-limit, --keyword.

Each is run through the CLI as an administrator would, into Maildir and
into the real Dovecot, and what the target holds is read back.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from crashy import message_ids, write_archive
from test_exactly_once import cli_env, write_plan_file
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
