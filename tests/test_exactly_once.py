"""Exactly once, whatever is typed (issue #9), into Maildir targets, through the CLI.

A fresh journal, another spelling of the target, another account's default
journal: nothing is appended twice, because the target is looked up first.
Plan lines edited to read elsewhere are refused. A run can be listed and
taken back to the byte. A dry run says what would fail. A journal that
cannot be used is one line and exit 3.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from crashy import message_ids, write_archive
from test_inject import maildir_of, make_mailboxes

from restore.plan import PlanEntry, PlanHeader, write_plan

USERS = ["alice@example.com", "bob@example.com"]
PER_USER = 5


def cli_env(tmp_path: Path, account: str = "admin") -> dict[str, str]:
    """The CLI's environment; each ``account`` has its own catalog and state directories."""
    env = dict(os.environ)
    for name in ("CACHE", "STATE", "DATA", "CONFIG"):
        env[f"XDG_{name}_HOME"] = str(tmp_path / "home" / account / name.lower())
    return env


def mailrestore(env: dict[str, str], *args: str, cwd: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "restore", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def write_plan_file(path: Path, entries: list[PlanEntry], archives: tuple[str, ...] | None = None,
                    header: bool = True) -> Path:
    archives = archives or tuple(dict.fromkeys(e.source for e in entries))
    with path.open("w", encoding="utf-8") as fh:
        write_plan(fh, entries, PlanHeader(archives) if header else None)
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and directory under ``root``: each file's sha256, 'dir' for a directory."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        found[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def incident(tmp_path: Path):
    """An eml archive, Maildirs with older mail of their own, and a sealed plan of the archive."""
    entries = write_archive(tmp_path / "archive", USERS, PER_USER)
    spec = make_mailboxes(tmp_path / "vmail", USERS)
    for user in USERS:    # mail the users had before the incident: never to be touched
        (maildir_of(tmp_path / "vmail", user) / "cur" / "1500000000.1.old:2,S").write_bytes(
            f"Message-ID: <old.{user}@test>\nFrom: x@example.org\n\nold\n".encode())
    plan = write_plan_file(tmp_path / "plan.jsonl", entries)
    return entries, f"maildir:{spec}", plan


def inject(env: dict[str, str], plan: Path, target: str, *extra: str, cwd: Path | None = None
           ) -> dict:
    done = mailrestore(env, "inject", str(plan), "--to", target, "--json", *extra, cwd=cwd)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


# -- 1. the target decides -----------------------------------------------------------


def test_reinjecting_with_a_fresh_journal_appends_nothing(tmp_path, incident):
    entries, target, plan = incident
    env = cli_env(tmp_path)
    first = inject(env, plan, target, "--state", str(tmp_path / "j1.sqlite"))
    assert (first["appended"], first["already_present"]) == (len(entries), 0)
    second = inject(env, plan, target, "--state", str(tmp_path / "j2.sqlite"))
    assert (second["appended"], second["already_present"], second["failed"]) == (0, len(entries), 0)
    assert set(message_ids(tmp_path / "vmail").values()) == {1}
    # the journal knows them as found present, so a third run trusts it
    third = inject(env, plan, target, "--state", str(tmp_path / "j2.sqlite"))
    assert (third["appended"], third["already_present"]) == (0, len(entries))


def test_every_spelling_of_the_target_appends_nothing(tmp_path, incident):
    entries, target, plan = incident
    root = str(tmp_path / "vmail")
    first = inject(cli_env(tmp_path), plan, target)
    assert first["appended"] == len(entries)
    spellings = [
        (cli_env(tmp_path), target + "/", None),
        (cli_env(tmp_path), target.replace(root, root.replace("/vmail", "//vmail")), None),
        (cli_env(tmp_path), "maildir:vmail/%d/%n/Maildir", tmp_path),   # relative
        (cli_env(tmp_path, "another-admin"), target, None),             # another account
    ]
    journals = set()
    for env, spelling, cwd in spellings:
        again = inject(env, plan, spelling, cwd=cwd)
        assert (again["appended"], again["already_present"]) == (0, len(entries)), spelling
        journals.add((env["XDG_STATE_HOME"], again["journal"]))
    # one default journal per real target, per account
    assert {j for state, j in journals if "/admin/" in state} == {first["journal"]}
    assert set(message_ids(tmp_path / "vmail").values()) == {1}


def test_a_journal_of_another_target_is_refused_in_any_spelling(tmp_path, incident):
    _, target, plan = incident
    env = cli_env(tmp_path)
    state = str(tmp_path / "j.sqlite")
    inject(env, plan, target, "--state", state)
    (tmp_path / "other").mkdir()
    other = mailrestore(env, "inject", str(plan), "--to", f"maildir:{tmp_path}/other/%d/%n/Maildir",
                        "--state", state)
    assert other.returncode == 2 and "belongs to target" in other.stderr
    same = mailrestore(env, "inject", str(plan), "--to", target + "//", "--state", state)
    assert same.returncode == 0, same.stderr


# -- 2. sealed plans --------------------------------------------------------------------


def test_edited_plan_lines_are_refused_and_nothing_of_them_is_written(tmp_path, incident):
    entries, target, plan = incident
    archive = tmp_path / "archive"
    secret = b"Message-ID: <secret@test>\nFrom: root@example.org\n\nthe secret\n"
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "shadow").write_bytes(secret)
    (archive / "alice@example.com" / "link.eml").symlink_to(elsewhere / "shadow")
    from restore.identity import fingerprint_of

    fingerprint = fingerprint_of(secret)
    alice = [e for e in entries if e.user == "alice@example.com"]
    changed = alice[0]
    (archive / changed.ref).write_bytes((archive / changed.ref).read_bytes() + b"edited\r\n")
    edited = [
        PlanEntry("alice@example.com", "INBOX", f"eml:{elsewhere}", "shadow", changed.received,
                  1, None, fingerprint),
        PlanEntry("alice@example.com", "INBOX", f"eml:{archive}", "../etc/shadow",
                  changed.received, 1, None, fingerprint[::-1]),
        PlanEntry("alice@example.com", "INBOX", f"eml:{archive}", "alice@example.com/link.eml",
                  changed.received, 1, None, fingerprint[1:] + "0"),
    ]
    plan = write_plan_file(tmp_path / "edited.jsonl", edited + entries, (f"eml:{archive}",))
    report = inject(cli_env(tmp_path), plan, target)
    reasons = {p["ref"]: p["reason"] for p in report["problems"]}
    assert reasons == {
        "shadow": f"source 'eml:{elsewhere}' is not one of the plan's archives",
        "../etc/shadow": f"ref '../etc/shadow' resolves outside the archive eml:{archive}",
        "alice@example.com/link.eml":
            f"ref 'alice@example.com/link.eml' resolves outside the archive eml:{archive}",
        changed.ref: "archive item changed since the diff: run diff again",
    }
    assert (report["appended"], report["failed"]) == (len(entries) - 1, 4)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "vmail").rglob("*") if p.is_file())
    assert b"the secret" not in stored and b"edited" not in stored
    assert changed.message_id not in message_ids(tmp_path / "vmail")


def test_a_plan_without_its_header_is_refused_unless_archive_names_them(tmp_path, incident):
    entries, target, _ = incident
    env = cli_env(tmp_path)
    bare = write_plan_file(tmp_path / "bare.jsonl", entries, header=False)
    refused = mailrestore(env, "inject", str(bare), "--to", target)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "--archive" in refused.stderr
    assert sum(message_ids(tmp_path / "vmail").values()) == len(USERS)   # the old mail only
    named = inject(env, bare, target, "--archive", f"eml:{tmp_path}/archive/")
    assert named["appended"] == len(entries)


def test_a_plan_filtered_keeping_its_header_still_injects(tmp_path, incident):
    entries, target, plan = incident
    lines = plan.read_text(encoding="utf-8").splitlines()
    # what `jq -c 'select(.mailrestore_plan or .user == "bob@example.com")'` keeps
    kept = [line for line in lines
            if "mailrestore_plan" in json.loads(line)
            or json.loads(line)["user"] == "bob@example.com"]
    moved = [json.dumps({**json.loads(line), "folder": "Restored"}) if "user" in json.loads(line)
             else line for line in kept]
    filtered = tmp_path / "bob.jsonl"
    filtered.write_text("\n".join(moved) + "\n", encoding="utf-8")
    report = inject(cli_env(tmp_path), filtered, target)
    assert (report["appended"], report["failed"]) == (PER_USER, 0)
    restored = maildir_of(tmp_path / "vmail", "bob@example.com") / ".Restored" / "new"
    assert len(list(restored.iterdir())) == PER_USER


# -- 3. an honest dry run -------------------------------------------------------------


def test_dry_run_reports_a_mailbox_the_target_lacks_and_writes_nothing(tmp_path, incident):
    entries, target, plan = incident
    env = cli_env(tmp_path)
    dave = write_archive(tmp_path / "archive", ["dave@example.com"], 2)
    plan = write_plan_file(tmp_path / "plan.jsonl", entries + dave)
    inject(env, plan, target, "--state", str(tmp_path / "j.sqlite"))   # all but dave's
    (tmp_path / "archive" / entries[0].ref).write_bytes(b"Subject: replaced\n\nreplaced\n")
    fresh = write_archive(tmp_path / "archive2", ["bob@example.com"], 1)
    plan = write_plan_file(tmp_path / "plan2.jsonl", entries + dave + fresh,
                           (f"eml:{tmp_path}/archive", f"eml:{tmp_path}/archive2"))
    def written() -> dict[str, str]:   # all but the catalog: a cache, which a dry run may refresh
        return {p: d for p, d in tree_digest(tmp_path).items() if "/cache/" not in f"/{p}"}

    before = written()

    dry = mailrestore(env, "inject", str(plan), "--to", target, "--state",
                      str(tmp_path / "j2.sqlite"), "--dry-run", "--json")
    assert dry.returncode == 1, dry.stderr
    report = json.loads(dry.stdout)
    # present: found in the target though this journal is new; the changed item is refused
    assert (report["appended"], report["already_present"], report["failed"]) == (
        1, len(entries) - 1, 3)
    reasons = sorted((p["user"], p["reason"]) for p in report["problems"])
    assert reasons == [("alice@example.com", "archive item changed since the diff: run diff again"),
                       ("dave@example.com", "no mailbox"), ("dave@example.com", "no mailbox")]
    assert written() == before, "a dry run wrote something"

    created = mailrestore(env, "inject", str(plan), "--to", target, "--create-missing",
                          "--dry-run", "--json")
    assert json.loads(created.stdout)["appended"] == 1 + len(dave)
    text = mailrestore(env, "inject", str(plan), "--to", target, "--dry-run")
    assert "would fail" in text.stdout and "no mailbox" in text.stdout


# -- 4. runs and undo -------------------------------------------------------------------


def test_undo_returns_the_target_to_its_state_before_the_run_byte_for_byte(tmp_path, incident):
    entries, target, plan = incident
    env = cli_env(tmp_path)
    state = str(tmp_path / "j.sqlite")
    gap = inject(env, plan, target, "--state", state)["appended"]   # run 1: the gap, into INBOX
    before = tree_digest(tmp_path / "vmail")
    # run 2, the wrong window: older mail, into a new folder, and a user the target lacked
    entries = write_archive(tmp_path / "older", USERS, 4, crlf=False)
    dave = write_archive(tmp_path / "older", ["dave@example.com"], 3)
    wrong = write_plan_file(tmp_path / "wrong.jsonl", entries + dave)
    run2 = inject(env, wrong, target, "--state", state, "--folder", "Restored/2017",
                  "--create-missing")
    assert run2["appended"] == len(entries) + len(dave) and run2["run"] == 2
    assert tree_digest(tmp_path / "vmail") != before

    listed = json.loads(mailrestore(env, "runs", "--state", state, "--json").stdout)
    assert [(r["id"], r["command"], r["appended"], r["status"], r["exit_code"])
            for r in listed["runs"]] == [(1, "inject", gap, "done", 0),
                                         (2, "inject", len(entries) + len(dave), "done", 0)]
    assert listed["runs"][1]["plan"] == str(wrong)
    assert listed["runs"][1]["plan_sha256"] == hashlib.sha256(wrong.read_bytes()).hexdigest()
    table = mailrestore(env, "runs", "--state", state).stdout
    # The runs' own start and end times, to the second: no microseconds in the table.
    assert re.search(r"\d\d:\d\d:\d\d UTC", table) and not re.search(r":\d\d\.\d+ UTC", table)

    dry = mailrestore(env, "undo", "2", "--state", state, "--dry-run", "--json")
    assert json.loads(dry.stdout)["removed"] == len(entries) + len(dave)
    assert tree_digest(tmp_path / "vmail") != before
    done = mailrestore(env, "undo", "2", "--state", state, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == len(entries) + len(dave)
    assert tree_digest(tmp_path / "vmail") == before

    again = mailrestore(env, "undo", "2", "--state", state, "--json")
    assert again.returncode == 0
    assert (json.loads(again.stdout)["removed"], json.loads(again.stdout)["left"]) == (0, 0)
    assert tree_digest(tmp_path / "vmail") == before
    runs = json.loads(mailrestore(env, "runs", "--to", target, "--state", state, "--json").stdout)
    assert [(r["command"], r["undoes"], r["removed"]) for r in runs["runs"][2:]] == [
        ("undo", 2, len(entries) + len(dave)), ("undo", 2, 0)]
    # the plan can be injected again after an undo
    redo = inject(env, wrong, target, "--state", state, "--folder", "Restored/2017",
                  "--create-missing")
    assert redo["appended"] == len(entries) + len(dave)


def test_undo_leaves_mail_the_user_touched_and_lists_it(tmp_path, incident):
    entries, target, plan = incident
    env = cli_env(tmp_path)
    state = str(tmp_path / "j.sqlite")
    inject(env, plan, target, "--state", state)
    inbox = maildir_of(tmp_path / "vmail", "alice@example.com")
    read, moved, changed, *_ = sorted((inbox / "new").iterdir())
    read.rename(inbox / "cur" / f"{read.name}:2,S")                  # read: still ours
    for sub in ("cur", "new", "tmp"):
        (inbox / ".Kept" / sub).mkdir(parents=True)
    moved.rename(inbox / ".Kept" / "cur" / f"{moved.name}:2,")       # moved to another folder
    changed.write_bytes(changed.read_bytes().replace(b"body", b"edited body"))

    done = mailrestore(env, "undo", "1", "--state", state, "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["removed"] == len(entries) - 2
    left = sorted((p["ref"].split("/")[-1], p["reason"].split(" (")[0].split(":")[0])
                  for p in report["problems"])
    assert left == sorted([(moved.name, "no longer where it was written"),
                           (changed.name, "changed since it was written")])
    assert (inbox / ".Kept" / "cur" / f"{moved.name}:2,").exists() and changed.exists()
    assert not (inbox / "cur" / f"{read.name}:2,S").exists()
    assert sum(message_ids(tmp_path / "vmail").values()) == len(USERS) + 2


def test_undo_of_a_run_that_does_not_exist_says_so(tmp_path, incident):
    _, target, plan = incident
    env = cli_env(tmp_path)
    inject(env, plan, target)
    missing = mailrestore(env, "undo", "7", "--to", target)
    assert missing.returncode == 2 and "no run 7" in missing.stderr


# -- 5. journal errors are one line -------------------------------------------------------


def journal_cases(tmp_path: Path, good: Path) -> dict[str, Path]:
    cases = tmp_path / "cases"
    cases.mkdir()
    corrupt = cases / "corrupt.sqlite"
    corrupt.write_bytes(good.read_bytes()[:100] + os.urandom(4096) * 8)
    truncated = cases / "truncated.sqlite"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = cases / "notes.txt"
    text.write_text("not a journal\n")
    other = cases / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE things (x)")
    blocker = cases / "file"
    blocker.write_text("")
    directory = cases / "dir.sqlite"
    directory.mkdir()
    return {"corrupt": corrupt, "truncated": truncated, "not a journal": text,
            "another database": other, "unwritable path": blocker / "j.sqlite",
            "a directory": directory}


def test_journal_errors_are_one_line_exit_3_and_write_nothing(tmp_path, incident):
    entries, target, plan = incident
    env = cli_env(tmp_path)
    good = tmp_path / "good.sqlite"
    small = write_plan_file(tmp_path / "one.jsonl", entries[:1])
    inject(env, small, target, "--state", str(good))
    shutil.copy(good, tmp_path / "good-copy.sqlite")
    before = tree_digest(tmp_path / "vmail")
    for name, path in journal_cases(tmp_path, good).items():
        files = tree_digest(tmp_path / "cases")
        for extra in ((), ("--dry-run",)):
            done = mailrestore(
                env, "inject", str(plan), "--to", target, "--state", str(path), *extra
            )
            assert done.returncode == 3, (name, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and str(path) in lines[0], (name, lines)
            assert "Traceback" not in done.stderr
        assert tree_digest(tmp_path / "vmail") == before, name
        assert tree_digest(tmp_path / "cases") == files, name
        listed = mailrestore(env, "runs", "--state", str(path))
        assert listed.returncode in (2, 3) and len(listed.stderr.strip().splitlines()) == 1, name


def test_a_first_generation_journal_is_migrated_in_place(tmp_path, incident):
    entries, target, plan = incident
    env = cli_env(tmp_path)
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.executescript("""
            CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE messages (user TEXT NOT NULL, folder TEXT NOT NULL, key TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
                planned_id TEXT NOT NULL DEFAULT '', target_id TEXT NOT NULL DEFAULT '',
                reason TEXT NOT NULL DEFAULT '', ref TEXT NOT NULL DEFAULT '',
                updated REAL NOT NULL, PRIMARY KEY (user, folder, key)) WITHOUT ROWID;""")
        db.execute("INSERT INTO meta VALUES ('target', ?)", (target + "/",))
        first = entries[0]
        db.execute("INSERT INTO messages (user, folder, key, state, updated) VALUES (?,?,?,?,0)",
                   (first.user, first.folder, first.fingerprint, "done"))
    report = inject(env, plan, target, "--state", str(old))
    # the old journal's done row is trusted; the rest is appended
    assert (report["appended"], report["already_present"]) == (len(entries) - 1, 1)
    runs = json.loads(mailrestore(env, "runs", "--state", str(old), "--json").stdout)
    assert runs["target"] == target and [r["id"] for r in runs["runs"]] == [1]
