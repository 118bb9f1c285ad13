"""Exactly-once bookkeeping for inject: what was written where (SQLite).

One row per (user, folder, key), ``key`` being the plan entry's fingerprint
(or its source and ref when it has none). The protocol, per batch:

1. ``mark_pending`` with the id the target promised (Maildir file name),
   committed *before* the target is written;
2. the target writes (and makes it durable);
3. ``mark_done`` with the id the target reports.

A row left ``pending`` is in doubt: the next run asks the target whether the
message is there (``TargetSession.find``) before writing it again. A row
``done`` is never written again. ``failed`` rows were refused by the target
(nothing written) and are retried by the next run.

``pending`` commits are fsynced (``synchronous=FULL``). A kill -9 loses no
commit, fsynced or not (WAL frames are in the OS cache), but after a power cut
an unsynced ``pending`` commit may be lost while the target (another
machine, for IMAP) kept the message: the next run would then see no row and
write it again. ``done`` and ``failed`` commits are not fsynced: losing one
only leaves its rows ``pending`` (or absent, for a message never written),
which the next run checks, and the WAL being written in order, the next
``pending`` fsync makes them durable too. One fsync per batch, not two.

One journal serves one run at a time: a second run on the same journal
would race the first into writing twice, so it is refused (``LockedError``).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from platformdirs import user_state_dir

from restore import locks
from restore.errors import JournalError, MailrestoreError, UsageError
from restore.plan import PlanEntry

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    user       TEXT NOT NULL,
    folder     TEXT NOT NULL,
    key        TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    planned_id TEXT NOT NULL DEFAULT '',
    target_id  TEXT NOT NULL DEFAULT '',
    reason     TEXT NOT NULL DEFAULT '',
    ref        TEXT NOT NULL DEFAULT '',
    updated    REAL NOT NULL,
    PRIMARY KEY (user, folder, key)
) WITHOUT ROWID;
"""


class State(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Record:
    state: State
    planned_id: str
    target_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Row:
    """One journal update: ``detail`` is the planned id, the target id or the reason."""

    user: str
    folder: str
    key: str
    detail: str = ""
    ref: str = ""


def entry_key(entry: PlanEntry) -> str:
    """The identity a journal row is keyed by."""
    return entry.fingerprint or f"{entry.source}\0{entry.ref}"


def default_journal_path(target_spec: str) -> Path:
    """Per-target journal in the user state directory."""
    digest = hashlib.sha256(target_spec.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Path(user_state_dir("mailrestore")) / f"journal-{digest}.sqlite"


class Journal:
    """The exactly-once journal of one target. Safe to share between worker threads."""

    def __init__(self, path: str | Path, target_spec: str | None = None, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        self._lock_fd = -1
        if readonly:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            with self._guard():
                self.db = _connect(uri, uri=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_run_lock()
            try:
                with self._guard():
                    self.db = _connect(str(self.path))
                    self.db.execute("PRAGMA journal_mode=WAL")
                    self.db.executescript(SCHEMA)
            except JournalError:
                self._release_run_lock()
                raise
        if target_spec is not None:
            try:
                with self._guard():
                    self._check_target(target_spec)
            except MailrestoreError:
                self.close()
                raise

    @classmethod
    def open_readonly(cls, path: str | Path, target_spec: str | None = None) -> Journal | None:
        """The journal for a dry run: read-only, and None when there is none yet."""
        if not Path(path).exists():
            return None
        return cls(path, target_spec, readonly=True)

    def _take_run_lock(self) -> None:
        self._lock_fd = locks.take(
            Path(f"{self.path}.lock"), "the journal's lock",
            lambda holder: f"{self.path}: another inject run (pid {holder}) is using this journal")

    def _release_run_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _check_target(self, target_spec: str) -> None:
        """A journal belongs to one target: reusing it elsewhere would skip messages."""
        row = self.db.execute("SELECT value FROM meta WHERE name = 'target'").fetchone()
        if row is None and not self.readonly:
            with self.db:
                self.db.execute("INSERT INTO meta VALUES ('target', ?)", (target_spec,))
        elif row is not None and row[0] != target_spec:
            raise UsageError(f"journal {self.path} belongs to target {row[0]!r}, not {target_spec!r}")

    def close(self) -> None:
        try:
            if not self.readonly:
                # Back to a rollback journal: a later read-only (dry-run) open then
                # needs no -wal/-shm files, so it creates none.
                with self._lock, self._guard():
                    self.db.execute("PRAGMA journal_mode=DELETE")
        finally:
            self.db.close()
            self._release_run_lock()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """An SQLite error leaves as JournalError (exit 3): exactly-once needs the journal."""
        try:
            yield
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {exc}") from None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self, user: str) -> dict[tuple[str, str], Record]:
        """Every row of ``user``, by (folder, key)."""
        with self._lock, self._guard():
            rows = self.db.execute(
                "SELECT folder, key, state, planned_id, target_id, reason FROM messages WHERE user = ?",
                (user,),
            ).fetchall()
        return {(f, k): Record(State(s), p, t, r) for f, k, s, p, t, r in rows}

    def mark_pending(self, rows: Iterable[Row]) -> None:
        """About to write: ``detail`` is the id the target promised (may be empty)."""
        self._upsert(
            "INSERT INTO messages (user, folder, key, state, planned_id, ref, updated) "
            "VALUES (?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT (user, folder, key) DO UPDATE SET "
            "state = 'pending', planned_id = excluded.planned_id, reason = '', "
            "ref = excluded.ref, updated = excluded.updated",
            rows,
            durable=True,
        )

    def mark_done(self, rows: Iterable[Row]) -> None:
        """Written and durable: ``detail`` is where (the target id)."""
        self._upsert(
            "INSERT INTO messages (user, folder, key, state, target_id, ref, updated) "
            "VALUES (?, ?, ?, 'done', ?, ?, ?) ON CONFLICT (user, folder, key) DO UPDATE SET "
            "state = 'done', target_id = excluded.target_id, reason = '', updated = excluded.updated",
            rows,
        )

    def mark_failed(self, rows: Iterable[Row]) -> None:
        """Not written, known for sure: ``detail`` is the reason. Never overrides ``done``."""
        self._upsert(
            "INSERT INTO messages (user, folder, key, state, reason, ref, updated) "
            "VALUES (?, ?, ?, 'failed', ?, ?, ?) ON CONFLICT (user, folder, key) DO UPDATE SET "
            "state = 'failed', reason = excluded.reason, updated = excluded.updated "
            "WHERE state != 'done'",
            rows,
        )

    def _upsert(self, sql: str, rows: Iterable[Row], durable: bool = False) -> None:
        if self.readonly:
            raise RuntimeError("journal opened read-only")
        now = time.time()
        params = [(r.user, r.folder, r.key, r.detail, r.ref, now) for r in rows]
        if not params:
            return
        with self._lock, self._guard():
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            with self.db:  # one transaction per batch
                self.db.executemany(sql, params)


def _connect(database: str, **kwargs: bool) -> sqlite3.Connection:
    # Worker threads share the connection; Journal._lock serialises its use.
    return sqlite3.connect(database, check_same_thread=False, isolation_level="DEFERRED", **kwargs)
