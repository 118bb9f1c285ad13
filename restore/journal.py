"""Exactly-once bookkeeping for inject: what each run wrote, and where (SQLite).

One journal per real target (``restore.targets.canonical_target``). It holds:

``runs``      one row per inject, restore or undo: when, the command line,
              the plan and its sha256, the counts, how it ended;
``messages``  one row per (user, folder, key), ``key`` being the plan
              entry's fingerprint (and ``digest`` its digest with the body):
              its state, the run that wrote it (or found it already there)
              and where the target put it (Maildir: the file name; IMAP:
              ``APPENDUID UIDVALIDITY UID``);
``created``   the folders (and Maildir directories) a run created, so that
              undo can remove them again once empty;
``meta``      the target, the schema version, the remembered windows.

The protocol, per batch:

1. ``mark_pending`` with the id the target promised (Maildir file name),
   committed *before* the target is written;
2. the target writes (and makes it durable);
3. ``mark_done`` with the id the target reports.

A row left ``pending`` is in doubt: the next run asks the target whether the
message is there (``TargetSession.find``) before writing it again. A row
``done`` is never written again, nor is one ``present`` (the target held the
message before the run: ``restore.inject``'s target check). ``failed`` rows
were refused by the target (nothing written) and are retried by the next
run. ``undone`` rows were taken back by ``mailrestore undo``.

``pending`` commits are fsynced (``synchronous=FULL``), or, when the
target makes a group of batches durable at once (Maildir), committed
without an fsync and made durable by one ``flush`` (an fsync of the
write-ahead log) for the whole group, before any of its files is linked
into place. A kill -9 loses no
commit, fsynced or not (WAL frames are in the OS cache), but after a power cut
an unsynced ``pending`` commit may be lost while the target (another
machine, for IMAP) kept the message: the next run would then see no row, and
its target check finds the message. ``done`` and ``failed`` commits are not
fsynced: losing one only leaves its rows ``pending`` (or absent, for a
message never written), which the next run checks, and the WAL being written
in order, the next ``pending`` fsync makes them durable too. One fsync per
batch, not two.

The meta table also remembers the incident's window(s): the first diff or
restore that uses the journal records those it used, and later runs reuse
them (``remembered_windows``).

The file itself (schema, migration, the checks that refuse a file that
cannot be a journal, one run at a time) is ``restore.journalfile``'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from restore.errors import JournalError
from restore.journalfile import WHAT_TO_DO, JournalFile
from restore.plan import PlanEntry
from restore.times import iso, parse_iso, to_the_second
from restore.window import Window


class State(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    PRESENT = "present"
    UNDONE = "undone"


class RunStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class Record:
    state: State
    planned_id: str
    target_id: str
    reason: str
    run: int | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One journal update: ``detail`` is the planned id, the target id or the reason."""

    user: str
    folder: str
    key: str
    detail: str = ""
    ref: str = ""
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Written:
    """A message a run appended, as undo needs it."""

    user: str
    folder: str
    key: str
    target_id: str
    ref: str
    digest: str


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a run row records of the command that started it (never a secret)."""

    command: str
    argv: Sequence[str] = ()
    plan: str = ""
    plan_sha256: str = ""
    undoes: int | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: int
    command: str
    argv: list[str]
    plan: str
    plan_sha256: str
    target: str
    undoes: int | None
    started: float
    ended: float | None
    appended: int
    already_present: int
    failed: int
    removed: int
    left_alone: int
    status: RunStatus
    exit_code: int | None

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "command": self.command, "argv": self.argv,
                "started": iso(self.started), "ended": iso(self.ended), "target": self.target,
                "plan": self.plan, "plan_sha256": self.plan_sha256, "undoes": self.undoes,
                "appended": self.appended, "already_present": self.already_present,
                "failed": self.failed, "removed": self.removed, "left": self.left_alone,
                "status": self.status.value, "exit_code": self.exit_code}


def entry_key(entry: PlanEntry) -> str:
    """The identity a journal row is keyed by."""
    return entry.fingerprint or f"{entry.source}\0{entry.ref}"


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in pieces (a plan of a million lines is a few hundred MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Journal(JournalFile):
    """The exactly-once journal of one target. Safe to share between worker threads."""

    # -- runs ----------------------------------------------------------------------

    def begin_run(self, info: RunInfo) -> int:
        """Record a run starting now; a run left ``running`` by a killed process is interrupted."""
        self._writable()
        with self._lock, self._guard(), self.db:
            # This process holds the journal's lock: no other run is running.
            self.db.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
            cursor = self.db.execute(
                "INSERT INTO runs"
                " (command, argv, plan, plan_sha256, target, undoes, started, status)"
                " VALUES (?, ?, ?, ?, (SELECT value FROM meta WHERE name = 'target'), ?, ?,"
                " 'running')",
                (info.command, json.dumps(list(info.argv), ensure_ascii=False), info.plan,
                 info.plan_sha256, info.undoes, time.time()))
        return int(cursor.lastrowid or 0)

    def end_run(self, run: int, status: RunStatus, exit_code: int, *, appended: int = 0,
                already_present: int = 0, failed: int = 0, removed: int = 0,
                left_alone: int = 0) -> None:
        self._writable()
        with self._lock, self._guard(), self.db:
            self.db.execute(
                "UPDATE runs SET ended = ?, status = ?, exit_code = ?, appended = ?,"
                " already_present = ?, failed = ?, removed = ?, left_alone = ? WHERE id = ?",
                (time.time(), status.value, exit_code, appended, already_present, failed,
                 removed, left_alone, run))

    def runs(self) -> list[RunRecord]:
        """Every run, oldest first; one left ``running`` by a process now gone shows interrupted."""
        if self._first_generation:
            return []
        with self._lock, self._guard():
            rows = self.db.execute(
                "SELECT id, command, argv, plan, plan_sha256, target, undoes, started, ended,"
                " appended, already_present, failed, removed, left_alone, status, exit_code"
                " FROM runs ORDER BY id").fetchall()
        running = self._run_lock_held()
        out = []
        for (run_id, command, argv, plan, plan_sha256, target, undoes, started, ended, appended,
             already_present, failed, removed, left_alone, status, exit_code) in rows:
            state = RunStatus(status)
            if state is RunStatus.RUNNING and not running:
                state = RunStatus.INTERRUPTED
            out.append(RunRecord(run_id, command, json.loads(argv), plan, plan_sha256, target,
                                 undoes, started, ended, appended, already_present, failed,
                                 removed, left_alone, state, exit_code))
        return out

    def run(self, run_id: int) -> RunRecord | None:
        return next((r for r in self.runs() if r.id == run_id), None)


    # -- messages -------------------------------------------------------------------

    def status(self, user: str) -> dict[tuple[str, str], Record]:
        """Every row of ``user``, by (folder, key)."""
        run = "NULL" if self._first_generation else "run"
        with self._lock, self._guard():
            rows = self.db.execute(
                f"SELECT folder, key, state, planned_id, target_id, reason, {run} FROM messages"
                " WHERE user = ?", (user,)).fetchall()
        return {(f, k): Record(State(s), p, t, r, n) for f, k, s, p, t, r, n in rows}

    def mark(self, state: State, rows: Iterable[Row], run: int | None = None) -> None:
        """``mark_pending``, ``mark_done``, ``mark_present`` or ``mark_failed``, by ``state``."""
        marks = {State.PENDING: self.mark_pending, State.DONE: self.mark_done,
                 State.PRESENT: self.mark_present, State.FAILED: self.mark_failed}
        marks[state](rows, run)

    def flush(self) -> None:
        """Make every commit so far durable: one fsync of the write-ahead log.

        Commits are in the log until a checkpoint copies them into the
        database, and SQLite syncs the log before each checkpoint: so what the
        log holds now, synced, is every commit.
        """
        self._writable()
        with self._lock:
            if self._wal_fd < 0:
                try:
                    self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return      # nothing committed in WAL mode yet
            fd = self._wal_fd
        # Outside the lock: other threads' commits go on meanwhile; it syncs at least every
        # commit made before it started.
        with self._guard():
            os.fsync(fd)

    def mark_pending(self, rows: Iterable[Row], run: int | None = None,
                     durable: bool = True) -> None:
        """About to write: ``detail`` is the id the target promised (may be empty).

        ``durable=False``: the caller calls ``flush`` before the target shows any of them.
        """
        self._upsert(
            "INSERT INTO messages"
            " (user, folder, key, state, planned_id, ref, updated, run, digest)"
            " VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?)"
            " ON CONFLICT (user, folder, key) DO UPDATE SET"
            " state = 'pending', planned_id = excluded.planned_id, reason = '', target_id = '',"
            " ref = excluded.ref, updated = excluded.updated, run = excluded.run,"
            " digest = excluded.digest",
            rows, run, durable=durable,
        )

    def mark_done(self, rows: Iterable[Row], run: int | None = None) -> None:
        """Written and durable: ``detail`` is where (the target id).

        A row left pending keeps the run that promised it: a message found
        after a crash was written by the run that crashed.
        """
        self._upsert(
            "INSERT INTO messages"
            " (user, folder, key, state, target_id, ref, updated, run, digest)"
            " VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?)"
            " ON CONFLICT (user, folder, key) DO UPDATE SET"
            " state = 'done', target_id = excluded.target_id, reason = '',"
            " updated = excluded.updated, run = coalesce(messages.run, excluded.run),"
            " digest = excluded.digest",
            rows, run,
        )

    def mark_present(self, rows: Iterable[Row], run: int | None = None) -> None:
        """The target held the message before this run wrote it: never to be written, nor undone."""
        self._upsert(
            "INSERT INTO messages"
            " (user, folder, key, state, target_id, ref, updated, run, digest)"
            " VALUES (?, ?, ?, 'present', ?, ?, ?, ?, ?)"
            " ON CONFLICT (user, folder, key) DO UPDATE SET"
            " state = 'present', target_id = excluded.target_id, reason = '',"
            " updated = excluded.updated, run = excluded.run WHERE state != 'done'",
            rows, run,
        )

    def mark_failed(self, rows: Iterable[Row], run: int | None = None) -> None:
        """Surely not written: ``detail`` is the reason. Never overrides done or present."""
        self._upsert(
            "INSERT INTO messages"
            " (user, folder, key, state, reason, ref, updated, run, digest)"
            " VALUES (?, ?, ?, 'failed', ?, ?, ?, ?, ?)"
            " ON CONFLICT (user, folder, key) DO UPDATE SET"
            " state = 'failed', reason = excluded.reason, updated = excluded.updated,"
            " run = excluded.run WHERE state NOT IN ('done', 'present')",
            rows, run,
        )

    def mark_undone(self, rows: Iterable[Written], undo_run: int) -> None:
        """Removed from the target by ``undo_run``; the row remembers where it was."""
        self._writable()
        params = [(f"undone by run {undo_run}", time.time(), r.user, r.folder, r.key) for r in rows]
        if params:
            with self._lock, self._guard(), self.db:
                self.db.executemany(
                    "UPDATE messages SET state = 'undone', reason = ?, updated = ?"
                    " WHERE user = ? AND folder = ? AND key = ? AND state = 'done'", params)

    def _upsert(self, sql: str, rows: Iterable[Row], run: int | None,
                durable: bool = False) -> None:
        self._writable()
        now = time.time()
        params = [(r.user, r.folder, r.key, r.detail, r.ref, now, run, r.digest) for r in rows]
        if not params:
            return
        with self._lock, self._guard():
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            with self.db:  # one transaction per batch
                self.db.executemany(sql, params)


    # -- what a run wrote, for undo -------------------------------------------------------

    def users_written(self, run: int) -> list[str]:
        """The users a run appended to (still ``done``), sorted."""
        with self._lock, self._guard():
            return [u for (u,) in self.db.execute(
                "SELECT DISTINCT user FROM messages WHERE run = ? AND state = 'done' ORDER BY user",
                (run,))]

    def written(self, run: int, user: str) -> list[Written]:
        """What ``run`` appended to ``user``'s mailbox and nobody has undone."""
        with self._lock, self._guard():
            return [Written(user, *row) for row in self.db.execute(
                "SELECT folder, key, target_id, ref, digest FROM messages"
                " WHERE run = ? AND user = ? AND state = 'done' ORDER BY folder, target_id",
                (run, user))]

    def record_created(self, run: int, user: str, paths: Iterable[str]) -> None:
        """Folders (or directories, or marker files) the run created, in creation order."""
        self._writable()
        params = [(run, user, path) for path in paths]
        if params:
            with self._lock, self._guard(), self.db:
                self.db.executemany(
                    "INSERT INTO created (run, user, path) VALUES (?, ?, ?)", params
                )

    def created_by(self, run: int) -> list[tuple[str, str]]:
        """(user, path) of what ``run`` created, newest first: the order to remove them in."""
        with self._lock, self._guard():
            return list(self.db.execute(
                "SELECT user, path FROM created WHERE run = ? ORDER BY seq DESC", (run,)))

    def forget_created(self, run: int, paths: Iterable[tuple[str, str]]) -> None:
        """Removed again by undo."""
        self._writable()
        with self._lock, self._guard(), self.db:
            self.db.executemany("DELETE FROM created WHERE run = ? AND user = ? AND path = ?",
                                [(run, user, path) for user, path in paths])

    # -- the incident's windows ------------------------------------------------------------

    def remembered_windows(self) -> list[Window]:
        """The window(s) the incident was restored from, oldest first; [] if none."""
        try:
            return [Window(parse_iso(w["since"]), parse_iso(w["until"]), "remembered",
                           f"remembered from the {w['by']} of "
                           f"{to_the_second(parse_iso(w['at']))}, journal "
                           f"{self.path}; give --since/--until to override (as first found: "
                           f"{w['evidence']})", remembered_at=parse_iso(w["at"]))
                    for w in self._remembered()]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise JournalError(f"journal {self.path}: unreadable remembered window ({exc}); "
                               f"{WHAT_TO_DO}") from None

    def remember_windows(self, windows: list[Window], *, by: str = "restore",
                         at: float | None = None) -> None:
        """Remember ``windows``, used by a run (``by``: diff, restore) that started ``at``.

        They replace what was remembered; one already remembered (same
        bounds) keeps its first record.
        """
        self._writable()
        known = {(w["since"], w["until"]): w for w in self._remembered()}
        stamp = iso(time.time() if at is None else at)
        kept = [known.get((iso(w.since), iso(w.until))) or {
                    "since": iso(w.since), "until": iso(w.until), "source": w.source,
                    "evidence": w.evidence, "at": stamp, "by": by}
                for w in windows if not w.empty]
        with self._lock, self._guard(), self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('windows', ?)",
                            (json.dumps(kept),))

    def _remembered(self) -> list[dict]:
        with self._lock, self._guard():
            row = self.db.execute("SELECT value FROM meta WHERE name = 'windows'").fetchone()
        try:
            return json.loads(row[0]) if row else []
        except ValueError as exc:
            raise JournalError(f"journal {self.path}: unreadable remembered window ({exc}); "
                               f"{WHAT_TO_DO}") from None
