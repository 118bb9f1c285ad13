"""The exactly-once journal: states, persistence, one run at a time, one target."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from restore.errors import JournalError, LockedError, UsageError
from restore.journal import (
    Journal,
    Row,
    RunInfo,
    RunStatus,
    State,
    Written,
    entry_key,
)
from restore.journalfile import default_journal_path
from restore.plan import PlanEntry
from restore.targets import canonical_target
from restore.window import Window

TARGET = "maildir:/var/vmail/%d/%n/Maildir"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite"


def test_pending_then_done_is_kept_across_runs(path):
    with Journal(path, TARGET) as journal:
        journal.mark_pending(
            [Row("alice@x", "INBOX", "k1", "name1"), Row("alice@x", "INBOX", "k2", "name2")]
        )
        journal.mark_done([Row("alice@x", "INBOX", "k1", "name1")])
    with Journal(path, TARGET) as journal:
        status = journal.status("alice@x")
        assert journal.status("bob@x") == {}
    assert status[("INBOX", "k1")].state is State.DONE
    assert status[("INBOX", "k1")].target_id == "name1"
    assert status[("INBOX", "k2")].state is State.PENDING
    assert status[("INBOX", "k2")].planned_id == "name2"


def test_failed_is_retryable_but_never_undoes_done(path):
    with Journal(path, TARGET) as journal:
        journal.mark_done([Row("alice@x", "INBOX", "k1", "name1")])
        journal.mark_failed(
            [Row("alice@x", "INBOX", "k1", "quota"), Row("alice@x", "INBOX", "k2", "quota")]
        )
        status = journal.status("alice@x")
        assert status[("INBOX", "k1")].state is State.DONE
        assert status[("INBOX", "k2")].state is State.FAILED
        assert status[("INBOX", "k2")].reason == "quota"
        journal.mark_pending([Row("alice@x", "INBOX", "k2", "name2")])
        assert journal.status("alice@x")[("INBOX", "k2")].state is State.PENDING


def test_same_message_in_two_folders_is_two_rows(path):
    with Journal(path, TARGET) as journal:
        journal.mark_done([Row("alice@x", "INBOX", "k", "a"), Row("alice@x", "Restored", "k", "b")])
        assert len(journal.status("alice@x")) == 2


def test_a_second_run_on_the_same_journal_is_refused(path):
    with Journal(path, TARGET):
        with pytest.raises(LockedError):
            Journal(path, TARGET)
    Journal(path, TARGET).close()


def test_a_journal_belongs_to_one_target(path):
    Journal(path, TARGET).close()
    with pytest.raises(UsageError, match="belongs to target"):
        Journal(path, "imap://admin@mail.example.com")
    Journal(path, TARGET).close()  # the refused open left no lock behind


def test_readonly_open_creates_nothing(path):
    assert Journal.open_readonly(path, TARGET) is None
    assert not path.parent.exists()
    with Journal(path, TARGET) as journal:
        journal.mark_done([Row("alice@x", "INBOX", "k1", "name1")])
    before = sorted(p.name for p in path.parent.iterdir())
    journal = Journal.open_readonly(path, TARGET)
    assert journal is not None
    assert journal.status("alice@x")[("INBOX", "k1")].state is State.DONE
    with pytest.raises(RuntimeError):
        journal.mark_done([Row("alice@x", "INBOX", "k2", "x")])
    journal.close()
    assert sorted(p.name for p in path.parent.iterdir()) == before


def test_readonly_open_sees_what_a_killed_run_committed(path):
    journal = Journal(path, TARGET)
    journal.mark_pending([Row("alice@x", "INBOX", "k1", "name1")])
    # No close(): as after kill -9, the commits are in the WAL file only.
    reader = Journal.open_readonly(path, TARGET)
    assert reader is not None
    assert reader.status("alice@x")[("INBOX", "k1")].state is State.PENDING
    reader.close()
    journal.close()


def test_a_journal_a_killed_writer_left_mid_transaction_opens_at_its_last_commit(path):
    with Journal(path, TARGET) as journal:
        journal.mark_done([Row("alice@x", "INBOX", "k1", "name1")])
    # A writer killed inside a transaction in rollback-journal mode (as while a new
    # journal is being switched to WAL) leaves a hot -journal that only a writer may
    # roll back; a read-only look at the file then fails with SQLITE_READONLY_ROLLBACK.
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=DELETE")
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal, sqlite3
        db = sqlite3.connect({str(path)!r}, isolation_level=None)
        db.execute("PRAGMA cache_size=1")
        db.execute("BEGIN")
        db.execute("CREATE TABLE filler(x)")
        db.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,)] * 2000)
        os.kill(os.getpid(), signal.SIGKILL)
        """)])
    assert killed.returncode == -signal.SIGKILL
    assert path.with_name(path.name + "-journal").stat().st_size > 0

    for open_it in (lambda: Journal.open_readonly(path, TARGET), lambda: Journal(path, TARGET)):
        journal = open_it()
        assert journal is not None
        assert journal.status("alice@x")[("INBOX", "k1")].state is State.DONE
        journal.close()


def test_entry_key_is_the_fingerprint_else_source_and_ref():
    entry = PlanEntry("alice@x", "INBOX", "eml:/gw", "a/1.eml", "2017-12-08T21:13:05+00:00",
                      10, None, "f00")
    assert entry_key(entry) == "f00"
    assert entry_key(replace(entry, fingerprint="")) == "eml:/gw\0a/1.eml"


def test_default_path_is_one_journal_per_target():
    a, b = default_journal_path(TARGET), default_journal_path("imap://mail.example.com")
    assert a != b and a.parent == b.parent
    assert a == default_journal_path(TARGET)
    assert "mailrestore" in str(a.parent)


# -- one journal per real target, runs, windows ------------------------------------


@pytest.mark.parametrize("spelling", [
    "imap://admin@mail.example.com:143", "imap://admin@mail.example.com/",
    "imap://admin@MAIL.Example.COM", "imap://admin@mail.example.com:143/",
])
def test_every_spelling_of_an_imap_target_is_one_canonical_target(spelling):
    assert canonical_target(spelling) == "imap://admin@mail.example.com:143"
    assert default_journal_path(canonical_target(spelling)) == default_journal_path(
        canonical_target("imap://admin@mail.example.com"))


def test_imap_targets_differ_by_scheme_port_and_login():
    seen = {canonical_target(s) for s in (
        "imap://admin@h", "imaps://admin@h", "imap://admin@h:1143", "imap://other@h", "imap://h")}
    assert len(seen) == 5
    assert canonical_target("imaps://admin@h/") == "imaps://admin@h:993"


def test_maildir_spellings_are_one_canonical_target(tmp_path, monkeypatch):
    (tmp_path / "real" / "vmail").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    want = f"maildir:{tmp_path}/real/vmail/%d/%n/Maildir"
    for spelling in (f"maildir:{tmp_path}/real/vmail/%d/%n/Maildir/",
                     f"maildir:{tmp_path}//real/vmail//%d/%n/Maildir",
                     "maildir:real/vmail/%d/%n/Maildir", "maildir:link/vmail/%d/%n/Maildir"):
        assert canonical_target(spelling) == want, spelling
    assert canonical_target("maildir:link/one") == f"maildir:{tmp_path}/real/one"


def test_runs_are_recorded_and_a_killed_one_shows_interrupted(path):
    with Journal(path, TARGET) as journal:
        first = journal.begin_run(RunInfo("inject", ["inject", "p"], "/p", "ab"))
        journal.mark_done([Row("alice@x", "INBOX", "k1", "name1")], first)
        journal.end_run(first, RunStatus.DONE, 0, appended=1)
        journal.begin_run(RunInfo("inject"))   # then the process dies
    with Journal.open_readonly(path, TARGET) as journal:
        done, killed = journal.runs()
        assert journal.written(first, "alice@x") == [
            Written("alice@x", "INBOX", "k1", "name1", "", "")
        ]
    assert ((done.status, done.appended, done.exit_code, done.target)
            == (RunStatus.DONE, 1, 0, TARGET))
    assert killed.status is RunStatus.INTERRUPTED


# -- the incident's remembered window(s) -----------------------------------------------------

GAP = Window(1512750779.0, 1512771228.0, "auto", "auto: 35 of 37 absent")
OTHER = Window(1512800000.0, 1512810000.0, "given", "given with --since and --until")


def test_a_journal_remembers_the_windows_a_run_used(path):
    with Journal(path, TARGET) as journal:
        assert journal.remembered_windows() == []
        journal.remember_windows([GAP, Window(None, None, "auto", "no gap")], by="diff",
                                 at=1512900000.0)
    with Journal.open_readonly(path, TARGET) as journal:
        [window] = journal.remembered_windows()
    assert (window.since, window.until, window.source) == (GAP.since, GAP.until, "remembered")
    assert window.remembered_at == 1512900000.0
    assert window.evidence.startswith(
        f"remembered from the diff of 2017-12-10 10:00:00 UTC, journal {path}; give "
        "--since/--until to override (as first found: auto: 35 of 37 absent)")


def test_remembering_again_replaces_but_a_window_kept_keeps_its_first_record(path):
    with Journal(path, TARGET) as journal:
        journal.remember_windows([GAP], by="diff", at=1512900000.0)
        journal.remember_windows([GAP, OTHER], by="restore", at=1513000000.0)
        assert [(w.since, w.remembered_at) for w in journal.remembered_windows()] == [
            (GAP.since, 1512900000.0), (OTHER.since, 1513000000.0)]
        journal.remember_windows([OTHER], by="restore", at=1513100000.0)
        assert [(w.since, w.remembered_at) for w in journal.remembered_windows()] == [
            (OTHER.since, 1513000000.0)]


def test_an_unreadable_remembered_window_is_a_journal_error(path):
    with Journal(path, TARGET) as journal:
        journal.db.execute("INSERT INTO meta VALUES ('windows', '[{\"since\": 1}]')")
        journal.db.commit()
        with pytest.raises(JournalError, match="unreadable remembered window"):
            journal.remembered_windows()
