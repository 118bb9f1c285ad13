"""Through the command line: two failovers in one archive, clustered deletions, --gap,
and the window the incident's journal remembers.

The archive is an eml tree of seven users' mail over two days; the replica a
Maildir per user holding all of it except what the two failovers lost and
what users deleted: scattered messages, and one wave in which five of the
seven users each deleted a message within three minutes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

START = datetime(2017, 12, 6, tzinfo=UTC)
USERS = [f"{name}@example.com"
         for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace")]
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
    done = mailrestore(tmp_path, "diff", *stores, "--gap", "3")
    assert done.returncode == 2
    assert "--gap 3: 2 gap(s) found" in done.stderr and "Traceback" not in done.stderr
    doc = json.loads(mailrestore(tmp_path, "diff", *stores, "--json", "--gap", "2").stdout)
    [window] = doc["windows"]
    assert doc["window"] == window and window["evidence"].startswith("gap 2 of 2 (--gap 2)")
    assert doc["counts"]["missing"] == len(lost[1])
    assert doc["counts"]["outside-window"] == len(lost[0]) + len(deleted)
    # The journal remembers the window that diff used, and only that one.
    again = json.loads(mailrestore(tmp_path, "diff", *stores, "--json").stdout)
    assert [w["since"] for w in again["windows"]] == [window["since"]]
    assert again["windows"][0]["source"] == "remembered" and again["journal"]["reused"]
    assert again["counts"] == doc["counts"]


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
    assert [w["source"] for w in doc["windows"]] == ["remembered", "remembered"]
    check = mailrestore(tmp_path, "diff", *stores, "--state", str(tmp_path / "journal.sqlite"),
                        "--fail-on", "missing", "--json")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["windows"] == doc["windows"]


# -- the incident remembers its windows ------------------------------------------------------


def message_id(data: bytes) -> bytes:
    [mid] = re.findall(rb"^Message-ID: (\S+)", data, re.MULTILINE)
    return mid


def replica_files(tmp_path: Path) -> dict[bytes, Path]:
    """The replica's message files by Message-ID."""
    return {message_id(p.read_bytes()): p for p in (tmp_path / "replica").rglob("*")
            if p.is_file() and p.parent.name in ("cur", "new")}


def test_both_failovers_are_restored_and_nothing_between_them(tmp_path, incident):
    stores, lost, deleted = incident
    target = stores[stores.index("--replica") + 1]
    done = mailrestore(tmp_path, "restore", *stores, "--to", target, "--json")
    assert done.returncode == 0, done.stderr
    held = replica_files(tmp_path)
    assert all(message_id(data) in held for gap in lost for data in gap)
    assert not any(message_id(data) in held for data in deleted)
    assert len(held) == 7 * 96 + 7 - len(deleted)


def test_restore_again_after_users_cleaned_up_appends_nothing(tmp_path, incident):
    """After the restore, five users delete a restored message each within minutes, and one
    user clears a whole day: the second restore appends nothing, and says why."""
    stores, lost, _ = incident
    target = stores[stores.index("--replica") + 1]
    restore = ["restore", *stores, "--to", target, "--json"]
    first = json.loads(mailrestore(tmp_path, *restore).stdout)
    assert first["appended"] == len(lost[0]) + len(lost[1])
    held = replica_files(tmp_path)
    wave = [next(d for d in lost[1] if f"To: {user}".encode() in d) for user in USERS[:5]]
    for data in wave:
        held[message_id(data)].unlink()
    day = START + timedelta(days=1)
    cleared = [p for p in held.values() if p.exists() and b"To: frank@" in p.read_bytes()
               and f"{day:%d %b %Y}".lstrip("0").encode() in p.read_bytes()]
    assert len(cleared) > 40
    for path in cleared:
        path.unlink()
    again = mailrestore(tmp_path, *restore)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["appended"] == 0 and doc["counts"]["missing"] == 0
    restored_and_cleared = sum(1 for gap in lost for d in gap if b"To: frank@" in d
                               and f"{day:%d %b %Y}".lstrip("0").encode() in d)
    assert doc["counts"]["deleted"] == len(wave) + restored_and_cleared
    assert doc["journal"]["reused"] and len(doc["journal"]["remembered"]) == 2
    check = mailrestore(tmp_path, "diff", *stores, "--fail-on", "missing")
    assert check.returncode == 0, check.stderr
    assert "deleted by their users" in check.stdout


def test_a_diff_remembers_and_restore_and_audit_reuse_it_saying_so(tmp_path, incident):
    stores, lost, _ = incident
    target = stores[stores.index("--replica") + 1]
    first = mailrestore(tmp_path, "diff", *stores)
    journal = re.search(r"Remembered in journal (\S+): later diff, restore and audit runs use "
                        r"these 2 windows", first.stdout)
    assert journal, first.stdout
    # The audit the day after: the second failover's mail is a restore not finished.
    audit = ["audit", *stores, "--now", (FAILOVERS[1][1] + timedelta(hours=1)).isoformat()]
    report = mailrestore(tmp_path, *audit)
    assert report.returncode == 1
    assert "that restore is not finished; run it again" in report.stdout
    assert "remembered from the diff of " in report.stdout
    doc = json.loads(mailrestore(tmp_path, *audit, "--format", "json").stdout)
    assert doc["remembered"]["journal"] == journal.group(1)
    assert doc["remembered"]["unfinished"] == len(lost[0]) + len(lost[1])
    # Beside them, the wave and one scattered deletion: no run saw them delivered.
    assert doc["counts"]["missing"] == len(lost[0]) + len(lost[1]) + 5 + 1
    # The restore reuses the windows the diff remembered, and says where they come from.
    done = mailrestore(tmp_path, "restore", *stores, "--to", target)
    assert done.returncode == 0, done.stderr
    assert "(remembered)" in done.stdout and "1. " in done.stdout
    assert "remembered from the diff of " in done.stdout and journal.group(1) in done.stdout
    assert "give --since/--until to override" in done.stdout
    after = mailrestore(tmp_path, *audit).stdout
    assert "6 archived message(s)" in after and "not finished" not in after


def test_which_journal_remembers(tmp_path, incident):
    stores, _, _ = incident
    target = stores[stores.index("--replica") + 1]
    state = str(tmp_path / "journal.sqlite")
    mailrestore(tmp_path, "diff", *stores, "--gap", "1", "--state", state)
    windows = {name: json.loads(mailrestore(tmp_path, "diff", *stores, *extra, "--json").stdout)
               for name, extra in (("state", ["--state", state]), ("replica", []),
                                   ("to", ["--to", target]), ("other", ["--to", "maildir:/x/%u"]))}
    assert [w["source"] for w in windows["state"]["windows"]] == ["remembered"]
    assert windows["state"]["journal"]["path"] == state
    # The replica's own journal: the first of these diffs remembered both gaps there.
    assert windows["replica"]["journal"]["recorded"] == 2
    assert windows["to"]["journal"]["path"] == windows["replica"]["journal"]["path"]
    assert [w["source"] for w in windows["to"]["windows"]] == ["remembered"] * 2
    assert windows["other"]["journal"]["path"] != windows["replica"]["journal"]["path"]
    assert [w["source"] for w in windows["other"]["windows"]] == ["auto"] * 2


def test_a_restore_given_a_window_remembers_it_instead(tmp_path, incident):
    stores, lost, _ = incident
    target = stores[stores.index("--replica") + 1]
    detected = json.loads(mailrestore(tmp_path, "diff", *stores, "--json").stdout)["windows"]
    since, until = detected[0]["since"], detected[0]["until"]
    given = mailrestore(tmp_path, "restore", *stores, "--to", target, "--since", since,
                        "--until", until)
    assert given.returncode == 0, given.stderr
    assert "It replaces 1 window remembered before" in given.stdout
    doc = json.loads(mailrestore(tmp_path, "diff", *stores, "--json").stdout)
    assert [(w["since"], w["until"], w["source"]) for w in doc["windows"]] == [
        (since, until, "remembered")]
    assert doc["counts"]["missing"] == 0 and doc["counts"]["outside-window"] >= len(lost[1])
