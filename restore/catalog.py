"""The catalog: an SQLite cache of every store's fingerprints, and the reads the diff makes.

It owns its tables: their schema and the row a message gets are defined in
``restore.catalogtables``, and every query that reads them lives here. A
scan brings a store's rows up to date incrementally (``restore.rescan``:
what changed since the last scan), reading in worker processes where it
can (``restore.scanpool``).
The diff then runs inside SQLite, so memory stays flat however large the
stores are.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial, wraps
from pathlib import Path
from typing import Any, TypeVar, cast

from restore import private
from restore.catalogtables import (
    KEY_COLUMN,
    SCHEMA,
    SCHEMA_VERSION,
    MessageWriter,
    message_row,
    pair_digest,
    stored_key,
)
from restore.errors import CatalogBusy, CatalogError, Problem, UsageError
from restore.memory import bound_sqlite
from restore.recipients import DEFAULT_RECIPIENT_HEADERS
from restore.rescan import Progress, ScanStats, read_batch, rescan
from restore.stores.base import DEFAULT_MAX_MESSAGE_SIZE, Store

log = logging.getLogger(__name__)


def default_catalog_path() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mailrestore")) / "catalog.sqlite"


# How long a command waits for another one using the same catalog: an hourly
# audit started during a long restore waits its turn rather than failing.
BUSY_SECONDS = 120.0


def _damaged(exc: sqlite3.Error) -> bool:
    """Whether SQLite found the file damaged, or no database at all."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite gave up waiting for another connection's lock."""
    code = getattr(exc, "sqlite_errorcode", None)   # the primary code is the low byte
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _full(exc: sqlite3.Error) -> bool:
    """Whether SQLite found no room to write (the disk, or the file's set limit)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


F = TypeVar("F", bound=Callable[..., Any])


def _guarded(method: F) -> F:
    """A Catalog method whose SQLite errors become CatalogBusy or CatalogError."""
    @wraps(method)
    def guarded(self: Catalog, *args: Any, **kwargs: Any) -> Any:
        with self.guard():
            return method(self, *args, **kwargs)

    return cast(F, guarded)


class Catalog:
    """The catalog database; SQLite errors leave it as CatalogBusy or CatalogError (exit 3).

    It is only a cache. One found damaged when opened is replaced, with a
    one-line notice, and the scans fill it again; one found damaged later is
    removed (CatalogError), so that the next command starts afresh. Created
    private (``restore.private``).
    """

    def __init__(self, path: str | Path | None = None):
        if path:
            self.path = Path(path)
            if not self.path.parent.is_dir():    # a typo must not leave directories behind
                raise UsageError(f"--catalog {path}: directory {self.path.parent} does not exist")
        else:
            self.path = default_catalog_path()
        # Threads that share the connection (inject's target check, the plan's cursor) take turns.
        self.lock = threading.RLock()
        try:
            try:
                self._open()
            except sqlite3.DatabaseError as exc:
                if not _damaged(exc):
                    raise
                self.db.close()
                self._remove()
                log.warning("mailrestore: catalog %s was damaged (%s); rebuilt: it is only a cache",
                            self.path, exc)
                self._open()
        except sqlite3.Error as exc:
            if _busy(exc):
                raise CatalogBusy(self.path, BUSY_SECONDS) from None
            raise UsageError(f"catalog {self.path}: {exc}") from None
        except OSError as exc:
            raise UsageError(f"catalog {self.path}: {exc.strerror or exc}") from None

    def _open(self) -> None:
        if self.path == default_catalog_path():
            private.make_dirs(self.path.parent)
        private.create_file(self.path)   # SQLite gives its journal the mode of the database
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                  timeout=BUSY_SECONDS)
        bound_sqlite(self.db)
        # A catalog is written by one scan at a time, most of it in bulk: a
        # rollback journal writes each page once, where a write-ahead log
        # writes it twice (the log, then the checkpoint).
        self.db.execute("PRAGMA page_size=16384")
        self.db.execute("PRAGMA journal_mode=DELETE")
        # a cache: losing the last commit only costs a re-read
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA temp_store=FILE")
        tables = {
            name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if tables and "meta" not in tables:     # someone else's data: never dropped
            raise UsageError(f"catalog {self.path} is not a mailrestore catalog (an SQLite "
                             "database with other tables); give --catalog a file of its own")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        row = self.db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        if row is None or row[0] != str(SCHEMA_VERSION):
            self.db.executescript(
                "DROP TABLE IF EXISTS stores; DROP TABLE IF EXISTS units;"
                " DROP TABLE IF EXISTS messages; DROP TABLE IF EXISTS problems;"
                " DROP TABLE IF EXISTS groups; DROP TABLE IF EXISTS summaries;"
                " DROP TABLE IF EXISTS delivered; DROP TABLE IF EXISTS envelopes;")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)",
                            (str(SCHEMA_VERSION),))
        self.db.executescript(SCHEMA)
        self.db.create_function("pair_digest", 3, pair_digest, deterministic=True)

    def _remove(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn an SQLite error into CatalogBusy or CatalogError, for the CLI to report.

        The diff holds it around its own statements and the cursors it reads.
        """
        try:
            yield
        except sqlite3.Error as exc:
            if _busy(exc):
                raise CatalogBusy(self.path, BUSY_SECONDS) from None
            if _full(exc):
                raise CatalogError(
                    f"catalog {self.path}: the disk is full ({exc}); free space there and in "
                    "the temporary directory (TMPDIR), or give --catalog a file on a larger "
                    "file system (it takes ~500 bytes a message), then run the same command "
                    "again: the catalog is only a cache") from None
            if _damaged(exc):
                self._remove()
                raise CatalogError(f"catalog {self.path} is damaged ({exc}); removed: it is only "
                                   "a cache, run the command again to rebuild it") from None
            raise CatalogError(f"catalog {self.path}: {exc}") from None

    # -- stores --------------------------------------------------------------

    @_guarded
    def register(self, spec: str, envelope_headers: Iterable[str],
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> int:
        """The catalog id of a store read with these settings, new on first sight.

        An item too large under one --max-message-size may be read under another.
        """
        headers = sorted({h.lower() for h in envelope_headers})
        settings = json.dumps(headers if max_message_size == DEFAULT_MAX_MESSAGE_SIZE
                              else {"headers": headers, "max_message_size": max_message_size})
        self.db.execute("INSERT OR IGNORE INTO stores (spec, settings) VALUES (?, ?)",
                        (spec, settings))
        row = self.db.execute(
            "SELECT id FROM stores WHERE spec=? AND settings=?", (spec, settings)
        ).fetchone()
        return int(row[0])

    @_guarded
    def refresh(
        self,
        store: Store,
        envelope_headers: Iterable[str] = DEFAULT_RECIPIENT_HEADERS,
        progress: Progress | None = None,
        workers: int | None = None,
    ) -> tuple[int, ScanStats]:
        """Bring the catalog in step with ``store``; returns (store id, stats).

        ``workers``: readers of a parallel-safe store, this process and
        ``workers - 1`` worker processes (default: one per CPU; 1 reads in-process).
        """
        headers = tuple(h.lower() for h in envelope_headers)
        store_id = self.register(store.spec, headers, store.max_message_size)
        if store.wants_known:
            store.known(self.users(store_id))
        read = partial(read_batch, store, store_id, headers, message_row)
        stats = rescan(self.db, store, store_id, read, MessageWriter(self.db).write, progress,
                       workers)
        if stats.dropped:   # messages gone may leave envelopes nothing uses
            self.db.execute("DELETE FROM envelopes WHERE id NOT IN (SELECT envelope FROM messages)")
        # Counted on the store's index: the per-user summary would sort every
        # message (4 MB of SQLite's memory at a million), for ``scan`` alone.
        stats.messages = int(self.db.execute(
            "SELECT COUNT(*) FROM messages WHERE store=?", (store_id,)).fetchone()[0])
        stats.unreadable = int(self.db.execute(
            "SELECT COUNT(*) FROM problems WHERE store=?", (store_id,)).fetchone()[0])
        return store_id, stats

    # -- reading back ----------------------------------------------------------

    @_guarded
    def summary(self, store_id: int) -> dict:
        """Counts per user and folder, and the span of received times, for ``scan``.

        Kept until a refresh changes the store's messages: a scan of an
        unchanged store of any size answers at once.
        """
        row = self.db.execute("SELECT summary FROM summaries WHERE store=?", (store_id,)).fetchone()
        if row:
            kept = json.loads(row[0])
            return {**kept, "folders": [tuple(f) for f in kept["folders"]]}
        rows = self.db.execute(
            "SELECT user, folder, COUNT(*), MIN(received), MAX(received) FROM messages"
            " WHERE store=? GROUP BY user, folder ORDER BY user, folder", (store_id,)).fetchall()
        firsts = [row[3] for row in rows if row[3] is not None]
        lasts = [row[4] for row in rows if row[4] is not None]
        summary = {"messages": sum(row[2] for row in rows),
                   "first": min(firsts, default=None), "last": max(lasts, default=None),
                   "folders": [row[:3] for row in rows]}
        self.db.execute("INSERT OR REPLACE INTO summaries VALUES (?, ?)",
                        (store_id, json.dumps(summary)))
        return summary

    @_guarded
    def problems(self, store_id: int) -> list[Problem]:
        """What could not be read in a store (or listed): ``where`` relative to the store."""
        return [Problem(w, r) for w, r in self.db.execute(
            "SELECT location, reason FROM problems WHERE store=? ORDER BY location", (store_id,))]


    # -- reads for the diff ------------------------------------------------------
    # The diff pairs archive messages with users in its temporary table
    # ``pairs`` (restore.diff: user, msg = messages.id, received, key, reason,
    # routable, present, class); what it reads of the messages is read here,
    # beside the schema.

    def users(self, store_id: int) -> set[str]:
        """The users a store's messages belong to (path variables, IMAP logins)."""
        return {u for (u,) in self.db.execute(
            "SELECT DISTINCT user FROM messages WHERE store = ? AND user IS NOT NULL", (store_id,))}

    def is_per_user(self, store_id: int) -> bool:
        """Whether a store is laid out per user: some message of it belongs to a user."""
        return self.db.execute(
            "SELECT 1 FROM messages WHERE store = ? AND user IS NOT NULL LIMIT 1",
            (store_id,)).fetchone() is not None

    def index_for_diff(self, match: str, by_received: bool) -> None:
        """Look-ups the diff makes, indexed once per catalog and kept up to date by later scans."""
        column = KEY_COLUMN[match]
        self.db.execute(
            f"CREATE INDEX IF NOT EXISTS messages_{column} ON messages (store, {column}, user)")
        if by_received:
            self.db.execute(
                "CREATE INDEX IF NOT EXISTS messages_received ON messages (store, received)")

    def to_pair(self, store_id: int, match: str, after: float | None) -> sqlite3.Cursor:
        """(id, user, received, identity key, envelope id) of a store's messages after ``after``."""
        # All of a store's messages are read in the table's own order: found
        # through an index on the store, they would first be sorted by id, all
        # of them (4 MB of SQLite's memory and temporary files at a million).
        # Only the recent ones (an audit) are found through the index.
        store, since, args = ("+store", "", (store_id,)) if after is None else (
            "store", " AND received > ?", (store_id, after))
        return self.db.execute(f"SELECT id, user, received, {KEY_COLUMN[match]}, envelope"
                               f" FROM messages WHERE {store} = ?{since} ORDER BY id", args)

    def envelopes(self, store_id: int) -> Iterator[tuple[str | None, dict[str, list[str]]]]:
        """Each distinct (user, envelope headers) of a store's messages."""
        for user, envelope in self.db.execute(
                "SELECT DISTINCT m.user, e.json"
                " FROM messages m JOIN envelopes e ON e.id = m.envelope WHERE m.store = ?",
                (store_id,)):
            yield user, json.loads(envelope)

    def envelope(self, envelope_id: int) -> dict[str, list[str]]:
        """The envelope headers (name -> values) an envelope id stands for."""
        row = self.db.execute("SELECT json FROM envelopes WHERE id = ?", (envelope_id,)).fetchone()
        return json.loads(row[0]) if row else {}

    def mark_present(self, store_id: int, match: str, routable: str, same_user: bool) -> None:
        """Mark the pairs matching ``routable`` routable; present where the store has their key."""
        column = KEY_COLUMN[match]
        user = " AND m.user = pairs.user" if same_user else ""
        self.db.execute(f"UPDATE pairs SET routable = 1, present = EXISTS (SELECT 1 FROM messages m"
                        f" WHERE m.store = ? AND m.{column} = pairs.key{user}) WHERE {routable}",
                        (store_id,))

    # -- the target check of inject --------------------------------------------------

    @_guarded
    def held(self, store_id: int, match: str, user: str | None, keys: list[str]) -> set[str]:
        """Those of ``keys`` (identity keys under ``match``) that a store holds for ``user``.

        ``user`` None: the store is one mailbox for everyone. At most a few
        hundred keys per call (one batch of one user); ``index_for_diff``
        makes each an index look-up.
        """
        if not keys:
            return set()
        column = KEY_COLUMN[match]
        stored = {stored_key(key): key for key in keys}
        marks = ",".join("?" * len(stored))
        mine, args = (" AND user = ?", [user]) if user is not None else ("", [])
        return {stored[key] for (key,) in self.db.execute(
            f"SELECT {column} FROM messages WHERE store = ? AND {column} IN ({marks}){mine}",
            [store_id, *stored, *args])}

    def record_delivered(self, store_id: int, match: str, seen: int, within: str = "1",
                         args: Sequence[object] = (), cls: str | None = None,
                         users: Sequence[str] = ()) -> None:
        """Remember pairs matching ``within`` as delivered to store ``store_id``, seen at ``seen``.

        The present pairs; or, with ``cls``, the pairs of that class of these
        ``users`` (a restore appended all of theirs).
        """
        where = "present AND routable AND copy = 1"
        if cls is not None:
            where = "class = ? AND user IN (SELECT value FROM json_each(?))"
            args = (cls, json.dumps(list(users)), *args)
        self.db.execute(
            "INSERT INTO delivered SELECT ?, pair_digest(?, user, key), ? FROM pairs"
            f" WHERE {where} AND ({within})"
            " ON CONFLICT (store, pair) DO UPDATE SET seen = excluded.seen",
            (store_id, match, seen, *args))

    def mark_deleted(self, store_id: int, match: str, within: str, args: Sequence[object],
                     seen_since: int, classes: tuple[str, str], dry_run: bool = False) -> int:
        """Reclass ``classes[0]`` pairs matching ``within`` that store ``store_id`` was seen to
        hold at ``seen_since`` or later as ``classes[1]``; returns how many (``dry_run``:
        whether any would be, and reclass none)."""
        seen = ("EXISTS (SELECT 1 FROM delivered d WHERE d.store = ?"
                " AND d.pair = pair_digest(?, pairs.user, pairs.key) AND d.seen >= ?)")
        if dry_run:
            return int(self.db.execute(
                f"SELECT EXISTS (SELECT 1 FROM pairs WHERE class = ? AND ({within}) AND {seen})",
                (classes[0], *args, store_id, match, seen_since)).fetchone()[0])
        return self.db.execute(
            f"UPDATE pairs SET class = ? WHERE class = ? AND ({within}) AND {seen}",
            (classes[1], classes[0], *args, store_id, match, seen_since)).rowcount

    def paired(self, cls: str, by_received: bool = True) -> sqlite3.Cursor:
        """(user, received, store, ref, size, Message-ID, key, strict key, reason) of ``cls``."""
        order = "p.user, p.received, m.ref" if by_received else "p.user, m.ref"
        return self.db.execute(
            "SELECT p.user, p.received, m.store, m.ref, m.size, m.message_id, m.key, m.strict_key,"
            " p.reason"
            f" FROM pairs p JOIN messages m ON m.id = p.msg WHERE p.class = ? ORDER BY {order}",
            (cls,))

    def first_message_ids(self, cls: str, user: str, limit: int) -> list[str]:
        """The Message-IDs (or refs) of ``user``'s first pairs of class ``cls``, oldest first."""
        return [mid for (mid,) in self.db.execute(
            "SELECT COALESCE(m.message_id, '(no Message-ID) ' || m.ref) FROM pairs p"
            " JOIN messages m ON m.id = p.msg WHERE p.class = ? AND p.user = ?"
            " ORDER BY p.received LIMIT ?", (cls, user, limit))]

    @_guarded
    def received_in(self, store_id: int, since: float, until: float) -> int:
        """How many of a store's messages were received in ``(since, until]``."""
        return int(self.db.execute(
            "SELECT COUNT(*) FROM messages WHERE store = ? AND received > ? AND received <= ?",
            (store_id, since, until)).fetchone()[0])

    def arrivals(self, store_id: int, bucket: int, user: str | None,
                 selected_only: bool = False) -> dict[int, int]:
        """Messages of a store per time bucket (received // bucket), for one user or all.

        ``selected_only``: only the users the diff's ``repusers`` table holds (a user filter).
        """
        where, args = ("AND user = ?", (user,)) if user else ("", ())
        if selected_only:
            where += " AND user IN (SELECT user FROM temp.repusers)"
        return dict(self.db.execute(
            f"SELECT CAST(received / ? AS INTEGER), COUNT(*) FROM messages WHERE store = ?"
            f" AND received IS NOT NULL {where} GROUP BY 1", (bucket, store_id, *args)))
