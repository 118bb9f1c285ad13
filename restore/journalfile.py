"""The journal's SQLite file: where it lives, its schema, and who may open it.

It opens (or creates, or migrates from the first layout) the file, refuses
one that cannot be a journal before anything is written, records the one
target the journal belongs to, and holds the lock that lets one run at a
time use it. What the rows mean is ``restore.journal``'s.

One journal serves one run at a time: a second run on the same journal
would race the first into writing twice, so it is refused (``LockedError``).
A journal that cannot be used (corrupt, truncated, not a journal, a
directory, in a place that cannot be written) is a ``JournalError`` naming
the file and what to do, raised before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from platformdirs import user_state_dir

from restore import locks, private
from restore.errors import CannotRunError, JournalError, MailrestoreError, UsageError
from restore.memory import bound_sqlite

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


def default_journal_path(canonical_target: str) -> Path:
    """Per-target journal in the user state directory, keyed by the canonical target."""
    digest = hashlib.sha256(canonical_target.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Path(user_state_dir("mailrestore")) / f"journal-{digest}.sqlite"


class JournalFile:
    """The SQLite file of one target's journal, open for one run (or read-only).

    ``target`` is the canonical target (``restore.targets.canonical_target``):
    a journal records it on first use and refuses any other. Opened for
    writing, the file is locked for this run until ``close``.
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
    def open_readonly(cls, path: str | Path, target: str | None = None) -> Self | None:
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
            self.db.executescript(f"BEGIN; {_MIGRATE_V1.format(schema=SCHEMA)} INSERT OR REPLACE "
                                  f"INTO meta VALUES ('schema', '{SCHEMA_VERSION}'); COMMIT;")
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
    def _run_lock_held(self) -> bool:
        """Whether some process (this one included) holds the journal's run lock now."""
        return self._lock_fd >= 0 or locks.is_held(Path(f"{self.path}.lock"))

    def _writable(self) -> None:
        if self.readonly:
            raise RuntimeError("journal opened read-only")


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
        verdict, tables = _quick_check(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorname", "") not in NEEDS_A_WRITER:
            raise JournalError(f"journal {path} is damaged ({exc}); {WHAT_TO_DO}") from None
        # A run killed mid-transaction left a hot rollback journal (or a WAL
        # index to rebuild) that only a writer may recover: SQLite's own crash
        # recovery, back to the last commit, which any writable open does anyway.
        try:
            verdict, tables = _quick_check(str(path))
        except sqlite3.Error as again:
            raise JournalError(f"journal {path} is damaged ({again}); {WHAT_TO_DO}") from None
    if verdict is None or verdict[0] != "ok":
        raise JournalError(f"journal {path} is damaged "
                           f"({verdict[0] if verdict else 'unreadable'}); {WHAT_TO_DO}")
    if tables and not {"meta", "messages"} <= tables:
        raise JournalError(f"journal {path} is an SQLite database but not a mailrestore journal "
                           "(a catalog?); give --state a journal or a new file")


# Errors of a read-only connection to a file that a killed writer left for recovery.
NEEDS_A_WRITER = frozenset({"SQLITE_READONLY_ROLLBACK", "SQLITE_READONLY_RECOVERY",
                            "SQLITE_READONLY_CANTINIT"})


def _quick_check(database: str, uri: bool = False) -> tuple[tuple | None, set[str]]:
    db = sqlite3.connect(database, uri=uri)
    try:
        return db.execute("PRAGMA quick_check").fetchone(), _tables(db)
    finally:
        db.close()


def _connect(database: str, **kwargs: bool) -> sqlite3.Connection:
    # Worker threads share the connection; Journal._lock serialises its use.
    db = sqlite3.connect(database, check_same_thread=False, isolation_level="DEFERRED", **kwargs)
    bound_sqlite(db)
    return db
