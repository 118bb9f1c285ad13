"""Through the command line: two failovers in one archive, clustered deletions, --gap.

The archive is an eml tree of seven users' mail over two days; the replica a
Maildir per user holding all of it except what the two failovers lost and
what users deleted: scattered messages, and one wave in which five of the
seven users each deleted a message within three minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

START = datetime(2017, 12, 6, tzinfo=UTC)
USERS = [f"{name}@example.com" for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace")]
FAILOVERS = [(START + timedelta(hours=14, minutes=1), START + timedelta(hours=17)),
             (START + timedelta(hours=30, minutes=1), START + timedelta(hours=32, minutes=30))]
WAVE = START + timedelta(hours=22, minutes=1)       # five users delete a message each, 3 minutes
SCATTERED = {(1, 10), (3, 40), (6, 70)}             # (user, message number): deleted long ago


def mailrestore(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name in ("CACHE", "STATE", "DATA", "CONFIG"):
        env[f"XDG_{name}_HOME"] = str(tmp_path / "xdg" / name.lower())
    return subprocess.run([sys.executable, "-m", "restore", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def incident(tmp_path, mail_factory):
    """(args for archive and replica, lost per failover, what the users deleted)."""
    archive, replica = [], {user: {"INBOX": []} for user in USERS}
    lost = [[], []]
    deleted = []
    for u, user in enumerate(USERS):
        for k in range(96):                          # every 30 minutes for two days
            received = START + timedelta(minutes=30 * k + 4 * u)
            data = mail_factory.make_message(to=user, envelope_to=user, received=received,
                                             subject=f"{user} {k}", date=received)
            archive.append(data)
            gap = next((n for n, (a, b) in enumerate(FAILOVERS) if a < received <= b), None)
            if gap is not None:
                lost[gap].append(data)
            elif (u, k) in SCATTERED:
                deleted.append(data)
            else:
                replica[user]["INBOX"].append(data)
    for u, user in enumerate(USERS):
        data = mail_factory.make_message(to=user, envelope_to=user, subject="wave",
                                         received=WAVE + timedelta(seconds=30 * u))
        archive.append(data)
        (deleted if u < 5 else replica[user]["INBOX"]).append(data)
    mail_factory.write_eml_tree(tmp_path / "gateway", archive)
    template = mail_factory.write_maildir_tree(tmp_path / "replica", replica)
    stores = ["--archive", f"eml:{tmp_path / 'gateway'}", "--replica", f"maildir:{template}",
              "--catalog", str(tmp_path / "catalog.sqlite")]
    return stores, lost, deleted


def iso(when: datetime) -> str:
    return when.isoformat()


def test_two_failovers_are_two_windows_and_only_their_mail_is_missing(tmp_path, incident):
    stores, lost, deleted = incident
    done = mailrestore(tmp_path, "diff", *stores, "--json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    windows = doc["windows"]
    assert len(windows) == 2 and doc["window"] == windows[0]
    schedule = [START + timedelta(minutes=30 * k + 4 * u) for k in range(96) for u in range(7)]
    for window, (start, end) in zip(windows, FAILOVERS, strict=True):
        # from the last replicated message to the last one lost
        assert window["since"] == iso(max(t for t in schedule if t <= start))
        assert window["until"] == iso(max(t for t in schedule if t <= end))
        assert window["source"] == "auto" and "for 7 of 7 users" in window["evidence"]
    assert doc["counts"]["missing"] == len(lost[0]) + len(lost[1])
    assert doc["counts"]["outside-window"] == len(deleted)


def test_the_report_prints_each_gap_with_its_evidence(tmp_path, incident):
    stores, _, _ = incident
    done = mailrestore(tmp_path, "diff", *stores)
    assert "Windows: 2 gaps, all restored" in done.stdout
    assert done.stdout.count("against background absence rates") == 2
    assert "1. 2017-12-06 " in done.stdout and "2. 2017-12-07 " in done.stdout


def test_gap_picks_one_failover(tmp_path, incident):
    stores, lost, deleted = incident
    doc = json.loads(mailrestore(tmp_path, "diff", *stores, "--json", "--gap", "2").stdout)
    [window] = doc["windows"]
    assert doc["window"] == window and window["evidence"].startswith("gap 2 of 2 (--gap 2)")
    assert doc["counts"]["missing"] == len(lost[1])
    assert doc["counts"]["outside-window"] == len(lost[0]) + len(deleted)
    done = mailrestore(tmp_path, "diff", *stores, "--gap", "3")
    assert done.returncode == 2
    assert "--gap 3: 2 gap(s) found" in done.stderr and "Traceback" not in done.stderr


def test_restore_then_restore_again_appends_nothing_more(tmp_path, incident):
    stores, lost, _ = incident
    target = stores[stores.index("--replica") + 1]
    restore = ["restore", *stores, "--to", target, "--state", str(tmp_path / "journal.sqlite"),
               "--json"]
    first = mailrestore(tmp_path, *restore)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["appended"] == len(lost[0]) + len(lost[1])
    # The gaps are filled: what is still absent is what users deleted, wave included.
    again = mailrestore(tmp_path, *restore)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["appended"] == 0 and doc["counts"]["missing"] == 0
    check = json.loads(mailrestore(tmp_path, "diff", *stores, "--json").stdout)
    assert check["windows"] == [] and "looks like deletions" in check["window"]["evidence"]
