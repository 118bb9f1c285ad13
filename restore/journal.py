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

One journal serves one run at a time: a second run on the same journal
would race the first into writing twice, so it is refused (``LockedError``).
A journal that cannot be used (corrupt, truncated, not a journal, a
directory, in a place that cannot be written) is a ``JournalError`` naming
the file and what to do, raised before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from platformdirs import user_state_dir

from restore import locks, private
from restore.errors import CannotRunError, JournalError, MailrestoreError, UsageError
from restore.plan import PlanEntry
from restore.times import human, iso, parse_iso
from restore.window import Window

SCHEMA_VERSION = "2"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id              INTEGER PRIMARY KEY,
    command         TEXT NOT NULL,
    argv            TEXT NOT NULL DEFAULT '[]',
    plan            TEXT NOT NULL DEFAULT '',
    plan_sha256     TEXT NOT NULL DEFAULT '',
    target          TEXT NOT NULL,
    undoes          INTEGER,
    started         REAL NOT NULL,
    ended           REAL,
    appended        INTEGER NOT NULL DEFAULT 0,
    already_present INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    removed         INTEGER NOT NULL DEFAULT 0,
    left_alone      INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    exit_code       INTEGER
);
CREATE TABLE IF NOT EXISTS messages (
    user       TEXT NOT NULL,
    folder     TEXT NOT NULL,
    key        TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed', 'present', 'undone')),
    planned_id TEXT NOT NULL DEFAULT '',
    target_id  TEXT NOT NULL DEFAULT '',
    reason     TEXT NOT NULL DEFAULT '',
    ref        TEXT NOT NULL DEFAULT '',
    updated    REAL NOT NULL,
    run        INTEGER,
    digest     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user, folder, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_run ON messages (run, user);
CREATE TABLE IF NOT EXISTS created (
    seq    INTEGER PRIMARY KEY,
    run    INTEGER NOT NULL,
    user   TEXT NOT NULL,
    path   TEXT NOT NULL
);
"""

# The first journals had no schema version, no runs and no run per row.
_V1_COLUMNS = ["user", "folder", "key", "state", "planned_id", "target_id", "reason", "ref",
               "updated"]
_MIGRATE_V1 = """
ALTER TABLE messages RENAME TO messages_v1;
{schema}
INSERT INTO messages (user, folder, key, state, planned_id, target_id, reason, ref, updated)
    SELECT user, folder, key, state, planned_id, target_id, reason, ref, updated FROM messages_v1;
DROP TABLE messages_v1;
"""
SQLITE_MAGIC = b"SQLite format 3\x00"
WHAT_TO_DO = ("move it aside and run again (the target check keeps a fresh journal from "
              "writing anything twice), or give another --state")


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
        from restore.times import iso

        return {"id": self.id, "command": self.command, "argv": self.argv,
                "started": iso(self.started), "ended": iso(self.ended), "target": self.target,
                "plan": self.plan, "plan_sha256": self.plan_sha256, "undoes": self.undoes,
                "appended": self.appended, "already_present": self.already_present,
                "failed": self.failed, "removed": self.removed, "left": self.left_alone,
                "status": self.status.value, "exit_code": self.exit_code}


def entry_key(entry: PlanEntry) -> str:
    """The identity a journal row is keyed by."""
    return entry.fingerprint or f"{entry.source}\0{entry.ref}"


def default_journal_path(canonical_target: str) -> Path:
    """Per-target journal in the user state directory, keyed by the canonical target."""
    digest = hashlib.sha256(canonical_target.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Path(user_state_dir("mailrestore")) / f"journal-{digest}.sqlite"


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in pieces (a plan of a million lines is a few hundred MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Journal:
    """The exactly-once journal of one target. Safe to share between worker threads.

    ``target`` is the canonical target (``restore.targets.canonical_target``):
    a journal records it on first use and refuses any other.
    """

    def __init__(self, path: str | Path, target: str | None = None, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        self._lock_fd = -1
        self._wal_fd = -1
        self._first_generation = False   # read-only on a journal from before runs were recorded
        _check_is_journal(self.path)
        if readonly:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            with self._guard():
                self.db = _connect(uri, uri=True)
                self._check_schema()
        else:
            self._take_run_lock()
            try:
                with self._guard():
                    private.create_file(self.path)     # SQLite gives its -wal and -shm its mode
                    self.db = _connect(str(self.path))
                    self.db.execute("PRAGMA journal_mode=WAL")
                    self._create_or_migrate()
            except MailrestoreError:
                self._release_run_lock()
                raise
        if target is not None:
            try:
                with self._guard():
                    self._check_target(target)
            except MailrestoreError:
                self.close()
                raise

    @classmethod
    def open_readonly(cls, path: str | Path, target: str | None = None) -> Journal | None:
        """The journal for a dry run or a listing: read-only, and None when there is none yet.

        When there is none, JournalError if a run could not create it either.
        """
        path = Path(path)
        if not path.exists():
            _check_can_create(path)
            return None
        return cls(path, target, readonly=True)

    def _take_run_lock(self) -> None:
        try:
            private.make_dirs(self.path.parent)
        except OSError as exc:
            raise JournalError(f"journal {self.path}: cannot create its directory: "
                               f"{exc.strerror or exc}; give --state a writable place") from None
        try:
            self._lock_fd = locks.take(
                Path(f"{self.path}.lock"), "the journal's lock",
                lambda holder: f"{self.path}: another run (pid {holder}) is using this journal")
        except CannotRunError as exc:
            if type(exc) is CannotRunError:   # the lock file could not be made
                raise JournalError(f"journal {self.path}: {exc}") from None
            raise

    def _release_run_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _create_or_migrate(self) -> None:
        tables = _tables(self.db)
        if "messages" in tables and "runs" not in tables:
            columns = [row[1] for row in self.db.execute("PRAGMA table_info(messages)")]
            if columns != _V1_COLUMNS:
                raise JournalError(f"journal {self.path} has an unknown layout; {WHAT_TO_DO}")
            self.db.executescript(f"BEGIN; {_MIGRATE_V1.format(schema=SCHEMA)}"
                                  f" INSERT OR REPLACE INTO meta VALUES ('schema', '{SCHEMA_VERSION}');"
                                  " COMMIT;")
            return
        self._check_schema(tables)
        # One transaction: executescript commits each statement on its own, and a crash
        # between the tables and the version left a journal every later run refused.
        self.db.executescript(f"BEGIN; {SCHEMA} INSERT OR IGNORE INTO meta VALUES ('schema', "
                              f"'{SCHEMA_VERSION}'); COMMIT;")

    def _check_schema(self, tables: set[str] | None = None) -> None:
        tables = _tables(self.db) if tables is None else tables
        if not tables:
            return
        if "runs" not in tables:
            self._first_generation = True   # migrated when opened for writing
            return
        row = self.db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if row is None or row[0] != SCHEMA_VERSION:
            version = row[0] if row else "unknown"
            raise JournalError(f"journal {self.path} has schema {version}, this mailrestore "
                               f"reads {SCHEMA_VERSION}: use the mailrestore that wrote it")

    def _check_target(self, target: str) -> None:
        """A journal belongs to one target: reusing it elsewhere would skip messages."""
        from restore.targets import canonical_target

        row = self.db.execute("SELECT value FROM meta WHERE name = 'target'").fetchone()
        if row is None and not self.readonly:
            with self.db:
                self.db.execute("INSERT INTO meta VALUES ('target', ?)", (target,))
            return
        if row is None:
            return
        recorded = row[0]
        try:
            recorded_canonical = canonical_target(recorded)
        except UsageError:
            recorded_canonical = recorded
        if recorded_canonical != target:
            raise UsageError(f"journal {self.path} belongs to target {recorded!r}, not {target!r}")
        if recorded != target and not self.readonly:   # a journal from before canonical targets
            with self.db:
                self.db.execute("UPDATE meta SET value = ? WHERE name = 'target'", (target,))

    @property
    def target(self) -> str | None:
        """The canonical target this journal belongs to (None for a journal never used)."""
        with self._lock, self._guard():
            row = self.db.execute("SELECT value FROM meta WHERE name = 'target'").fetchone()
        return row[0] if row else None

    def close(self) -> None:
        try:
            if not self.readonly:
                # Back to a rollback journal: a later read-only (dry-run) open then
                # needs no -wal/-shm files, so it creates none.
                with self._lock, self._guard():
                    self.db.execute("PRAGMA journal_mode=DELETE")
        finally:
            self.db.close()
            if self._wal_fd >= 0:
                os.close(self._wal_fd)
                self._wal_fd = -1
            self._release_run_lock()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """An SQLite error leaves as JournalError (exit 3): exactly-once needs the journal."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise JournalError(f"journal {self.path}: {reason}; {WHAT_TO_DO}") from None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------

    def begin_run(self, info: RunInfo) -> int:
        """Record a run starting now; a run left ``running`` by a killed process is interrupted."""
        self._writable()
        with self._lock, self._guard(), self.db:
            # This process holds the journal's lock: no other run is running.
            self.db.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
            cursor = self.db.execute(
                "INSERT INTO runs (command, argv, plan, plan_sha256, target, undoes, started, status)"
                " VALUES (?, ?, ?, ?, (SELECT value FROM meta WHERE name = 'target'), ?, ?, 'running')",
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
            out.append(RunRecord(run_id, command, json.loads(argv), plan, plan_sha256, target, undoes,
                                 started, ended, appended, already_present, failed, removed,
                                 left_alone, state, exit_code))
        return out

    def run(self, run_id: int) -> RunRecord | None:
        return next((r for r in self.runs() if r.id == run_id), None)

    def _run_lock_held(self) -> bool:
        """Whether some process (this one included) holds the journal's run lock now."""
        if self._lock_fd >= 0:
            return True
        import fcntl

        try:
            fd = os.open(f"{self.path}.lock", os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

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
        os.fsync(fd)

    def mark_pending(self, rows: Iterable[Row], run: int | None = None, durable: bool = True) -> None:
        """About to write: ``detail`` is the id the target promised (may be empty).

        ``durable=False``: the caller calls ``flush`` before the target shows any of them.
        """
        self._upsert(
            "INSERT INTO messages (user, folder, key, state, planned_id, ref, updated, run, digest) "
            "VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?) ON CONFLICT (user, folder, key) DO UPDATE SET "
            "state = 'pending', planned_id = excluded.planned_id, reason = '', target_id = '', "
            "ref = excluded.ref, updated = excluded.updated, run = excluded.run, "
            "digest = excluded.digest",
            rows, run, durable=durable,
        )

    def mark_done(self, rows: Iterable[Row], run: int | None = None) -> None:
        """Written and durable: ``detail`` is where (the target id).

        A row left pending keeps the run that promised it: a message found
        after a crash was written by the run that crashed.
        """
        self._upsert(
            "INSERT INTO messages (user, folder, key, state, target_id, ref, updated, run, digest) "
            "VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?) ON CONFLICT (user, folder, key) DO UPDATE SET "
            "state = 'done', target_id = excluded.target_id, reason = '', updated = excluded.updated, "
            "run = coalesce(messages.run, excluded.run), digest = excluded.digest",
            rows, run,
        )

    def mark_present(self, rows: Iterable[Row], run: int | None = None) -> None:
        """The target held the message before this run wrote it: never to be written, nor undone."""
        self._upsert(
            "INSERT INTO messages (user, folder, key, state, target_id, ref, updated, run, digest) "
            "VALUES (?, ?, ?, 'present', ?, ?, ?, ?, ?) ON CONFLICT (user, folder, key) DO UPDATE SET "
            "state = 'present', target_id = excluded.target_id, reason = '', "
            "updated = excluded.updated, run = excluded.run WHERE state != 'done'",
            rows, run,
        )

    def mark_failed(self, rows: Iterable[Row], run: int | None = None) -> None:
        """Not written, known for sure: ``detail`` is the reason. Never overrides done or present."""
        self._upsert(
            "INSERT INTO messages (user, folder, key, state, reason, ref, updated, run, digest) "
            "VALUES (?, ?, ?, 'failed', ?, ?, ?, ?, ?) ON CONFLICT (user, folder, key) DO UPDATE SET "
            "state = 'failed', reason = excluded.reason, updated = excluded.updated, "
            "run = excluded.run WHERE state NOT IN ('done', 'present')",
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

    def _upsert(self, sql: str, rows: Iterable[Row], run: int | None, durable: bool = False) -> None:
        self._writable()
        now = time.time()
        params = [(r.user, r.folder, r.key, r.detail, r.ref, now, run, r.digest) for r in rows]
        if not params:
            return
        with self._lock, self._guard():
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            with self.db:  # one transaction per batch
                self.db.executemany(sql, params)

    def _writable(self) -> None:
        if self.readonly:
            raise RuntimeError("journal opened read-only")

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
                self.db.executemany("INSERT INTO created (run, user, path) VALUES (?, ?, ?)", params)

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
                           f"remembered from the {w['by']} of {human(parse_iso(w['at']))}, journal "
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


def _tables(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _check_can_create(path: Path) -> None:
    """What a dry run checks of a journal still to be made: that a run could make it."""
    if path.is_symlink():
        return      # dangling: whatever it points to decides, at the run
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise JournalError(f"journal {path}: cannot be created ({parent} is not a writable "
                           "directory); give --state a writable place")


def _check_is_journal(path: Path) -> None:
    """Refuse, before anything is written, a path that cannot hold a journal.

    A directory, a file that is no SQLite database, or one SQLite cannot
    read through (truncated, damaged) each give one line naming the file.
    """
    if path.is_dir():
        raise JournalError(f"journal {path} is a directory; give --state a file name")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JournalError(f"journal {path}: {exc.strerror or exc}") from None
    if not head:
        return      # an empty file: a new journal
    if head != SQLITE_MAGIC:
        raise JournalError(f"journal {path} is not a mailrestore journal (not an SQLite "
                           f"database); give --state a journal or a new file")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            verdict = db.execute("PRAGMA quick_check").fetchone()
            tables = _tables(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise JournalError(f"journal {path} is damaged ({exc}); {WHAT_TO_DO}") from None
    if verdict is None or verdict[0] != "ok":
        raise JournalError(f"journal {path} is damaged ({verdict[0] if verdict else 'unreadable'}); "
                           f"{WHAT_TO_DO}")
    if tables and not {"meta", "messages"} <= tables:
        raise JournalError(f"journal {path} is an SQLite database but not a mailrestore journal "
                           "(a catalog?); give --state a journal or a new file")


def _connect(database: str, **kwargs: bool) -> sqlite3.Connection:
    # Worker threads share the connection; Journal._lock serialises its use.
    return sqlite3.connect(database, check_same_thread=False, isolation_level="DEFERRED", **kwargs)
