"""The catalog: an SQLite cache of every store's fingerprints.

A second scan of an unchanged store re-reads no message: units (files, mbox
files, IMAP UIDs) whose stamp is unchanged keep their rows; a plain mbox that
only grew is read from its old end; what vanished is dropped. A store that
lists its units in stamped groups (``Store.unit_groups``: a Maildir's
``cur/`` and ``new/``) is not even listed where a group's stamp is
unchanged, and a group new to the catalog is listed by name alone
(``UnitGroup.unstamped``): reading its units stamps them. The diff then runs inside SQLite, so memory stays flat however
large the stores are.

Reading and fingerprinting go through ``restore.scanpool`` (worker
processes for file stores); this module only compares listings with what it
holds and writes rows, one transaction per refresh.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from json.encoder import encode_basestring as _json_string
from pathlib import Path
from typing import Any

from restore.errors import CannotRunError, UsageError
from restore.identity import facts_of, received_time
from restore.recipients import DEFAULT_RECIPIENT_HEADERS
from restore.scanpool import BatchReader
from restore.stores.base import Item, Store, Unit, UnitGroup, Unreadable

# Bump when identity or the schema changes what a scan records: an older
# catalog is then emptied and rebuilt rather than trusted.
SCHEMA_VERSION = 4
READ_BATCH = 250
COMPARE_BATCH = 500    # bound parameters per query: well below SQLite's limit of 999
# The column holding each --match mode's identity key.
KEY_COLUMN = {"auto": "key", "message-id": "mid_key", "strict": "strict_key"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS stores (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL,
    settings TEXT NOT NULL,
    UNIQUE (spec, settings)
);
CREATE TABLE IF NOT EXISTS units (
    store INTEGER NOT NULL,
    ref TEXT NOT NULL,
    stamp TEXT NOT NULL,
    end_offset INTEGER,
    PRIMARY KEY (store, ref)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    store INTEGER NOT NULL,
    unit TEXT NOT NULL,
    ref TEXT NOT NULL,
    folder TEXT NOT NULL,
    user TEXT,
    received REAL,
    received_from TEXT NOT NULL,
    size INTEGER NOT NULL,
    message_id TEXT,
    key TEXT NOT NULL,
    -- identity.Facts.mid_key, computed rather than stored
    mid_key TEXT GENERATED ALWAYS AS (coalesce(message_id, key)) VIRTUAL,
    strict_key TEXT NOT NULL,
    envelope TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_unit ON messages (store, unit);
CREATE TABLE IF NOT EXISTS problems (
    store INTEGER NOT NULL,
    unit TEXT NOT NULL,
    location TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS problems_unit ON problems (store, unit);
CREATE TABLE IF NOT EXISTS groups (
    store INTEGER NOT NULL,
    key TEXT NOT NULL,
    stamp TEXT,
    units INTEGER NOT NULL,
    PRIMARY KEY (store, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS summaries (store INTEGER PRIMARY KEY, summary TEXT NOT NULL);
"""

INSERT_MESSAGE = (
    "INSERT INTO messages (store, unit, ref, folder, user, received, received_from, size,"
    " message_id, key, strict_key, envelope) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)


def message_row(store_id: int, item: Item, headers: tuple[str, ...]) -> tuple:
    """The ``INSERT_MESSAGE`` row of one message read from a store."""
    facts = facts_of(item.data, headers, headers_only=item.headers_only)
    received, source = received_time(facts, item.delivered)
    return (
        store_id, item.unit.ref, item.ref, item.unit.folder, item.unit.user, received, source,
        facts.size, facts.message_id, facts.key, facts.strict_key,    # mid_key: computed by SQLite
        _envelope_json(facts.envelope) if facts.envelope else "{}",
    )


def _envelope_json(envelope: dict[str, list[str]]) -> str:
    """What ``json.dumps(envelope, ensure_ascii=False)`` gives, without its generic encoder."""
    return "{" + ", ".join(f"{_json_string(name)}: [{', '.join(map(_json_string, values))}]"
                           for name, values in envelope.items()) + "}"


class Change(IntEnum):
    """What reading a batch asks of the catalog, in order, each with its data."""

    FORGET = 0      # unit ref: the unit was rewritten, its earlier rows are stale
    PROBLEM = 1     # (store id, unit ref, where, reason)
    MESSAGE = 2     # a row of INSERT_MESSAGE
    # For a unit handed in without a stamp (``UnitGroup.unstamped``), one of:
    STAMPED = 3     # (unit ref, stamp): the stamp reading it found
    UNLISTED = 4    # (unit ref, where, reason): no message file; what a listing reports


Changes = list[tuple[Change, Any]]


def read_batch(store: Store, store_id: int, headers: tuple[str, ...], units: list[Unit]) -> Changes:
    """Read ``units`` and fingerprint every message: the changes to make to the catalog.

    Runs in a scan worker process (``restore.scanpool``) or in this one.
    """
    changes: Changes = []
    restarted: set[str] = set()
    unstamped = {unit.ref for unit in units if not unit.stamp}
    for got in store.read(units):
        unit = got.unit
        if unstamped and unit.ref in unstamped:
            unstamped.discard(unit.ref)
            if isinstance(got, Unreadable) and not unit.stamp:
                changes.append((Change.UNLISTED, (unit.ref, got.where, got.reason)))
                continue
            changes.append((Change.STAMPED, (unit.ref, unit.stamp)))
        if (isinstance(got, Item) and unit.resume and unit.ref not in restarted
                and _offset(got.ref) < unit.resume):
            # The file was rewritten, not appended to: its old rows are stale.
            changes.append((Change.FORGET, unit.ref))
            restarted.add(unit.ref)
        if isinstance(got, Unreadable):
            changes.append((Change.PROBLEM, (store_id, unit.ref, got.where, got.reason)))
        else:
            changes.append((Change.MESSAGE, message_row(store_id, got, headers)))
    return changes


def _offset(ref: str) -> int:
    """The byte offset an mbox ``PATH:OFFSET`` ref names."""
    _, colon, offset = ref.rpartition(":")
    return int(offset) if colon and offset.isdigit() else 0


def default_catalog_path() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mailrestore")) / "catalog.sqlite"


@dataclass(frozen=True, slots=True)
class Record:
    """One message as the catalog holds it."""

    store: str
    ref: str
    folder: str
    user: str | None          # from path variables or the IMAP login
    received: float | None
    received_from: str        # "received", "delivered" or "date": how the time was found
    size: int
    message_id: str | None
    key: str
    mid_key: str
    strict_key: str
    envelope: dict[str, list[str]]


@dataclass
class ScanStats:
    units: int = 0
    listed: int = 0        # units whose stamp was looked at (the rest were in unchanged groups)
    read: int = 0          # units actually read this time
    reused: int = 0        # units whose catalogued rows were kept
    dropped: int = 0       # units gone from the store
    messages: int = 0
    unreadable: int = 0


@dataclass(frozen=True, slots=True)
class Problem:
    where: str
    reason: str


Progress = Callable[[int], None]


# How long a command waits for another one using the same catalog: an hourly
# audit started during a long restore waits its turn rather than failing.
BUSY_SECONDS = 120.0


class CatalogBusy(CannotRunError):
    def __init__(self, path: Path):
        super().__init__(
            f"catalog {path} is in use by another mailrestore command (waited {BUSY_SECONDS:.0f} s);"
            " let it finish, or give this one its own --catalog")


class Catalog:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_catalog_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                      timeout=BUSY_SECONDS)
            # A catalog is written by one scan at a time, most of it in bulk: a
            # rollback journal writes each page once, where a write-ahead log
            # writes it twice (the log, then the checkpoint: ~60 ms at the end
            # of a 100k-message cold scan, in a process that does nothing else).
            self.db.execute("PRAGMA page_size=16384")
            self.db.execute("PRAGMA journal_mode=DELETE")
            self.db.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last commit only costs a re-read
            self.db.execute("PRAGMA temp_store=FILE")
            self.db.executescript(SCHEMA)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise CatalogBusy(self.path) from None
            raise UsageError(f"catalog {self.path}: {exc}") from None
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"catalog {self.path}: {exc}") from None
        row = self.db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        if row is None or row[0] != str(SCHEMA_VERSION):
            self.db.executescript(
                "DROP TABLE IF EXISTS stores; DROP TABLE IF EXISTS units;"
                " DROP TABLE IF EXISTS messages; DROP TABLE IF EXISTS problems;"
                " DROP TABLE IF EXISTS groups; DROP TABLE IF EXISTS summaries;")
            self.db.executescript(SCHEMA)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    # -- stores --------------------------------------------------------------

    def store_id(self, spec: str, envelope_headers: Iterable[str]) -> int:
        settings = json.dumps(sorted({h.lower() for h in envelope_headers}))
        self.db.execute("INSERT OR IGNORE INTO stores (spec, settings) VALUES (?, ?)", (spec, settings))
        row = self.db.execute(
            "SELECT id FROM stores WHERE spec=? AND settings=?", (spec, settings)
        ).fetchone()
        return int(row[0])

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
        sid = self.store_id(store.spec, headers)
        stats = ScanStats()
        db = self.db
        db.execute("CREATE TEMP TABLE IF NOT EXISTS seen (ref TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute("CREATE TEMP TABLE IF NOT EXISTS seen_groups (key TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute("DELETE FROM seen_groups")
        listing_problems: list[Unreadable] = []

        recount: set[str] = set()    # groups some of whose listed entries proved no message file

        def apply(units: list[Unit], changes: Changes) -> None:
            self._apply(sid, store, units, changes, stats, progress, recount)

        db.execute("BEGIN")
        try:
            with BatchReader(partial(read_batch, store, sid, headers), apply, READ_BATCH, workers,
                             parallel=store.parallel_safe) as reader:
                grouping_checked = False
                recorded = dict(db.execute(
                    "SELECT key, stamp FROM groups WHERE store=? AND stamp IS NOT NULL", (sid,)))
                for group in store.unit_groups(recorded):
                    if isinstance(group, Unreadable):
                        listing_problems.append(group)
                        continue
                    if not grouping_checked:
                        self._forget_if_regrouped(sid, keyed=group.key is not None)
                        grouping_checked = True
                    self._refresh_group(sid, group, reader, stats)
                reader.finish()
            for key in recount:
                in_group, bounds = _in_group("ref", key)
                db.execute(f"UPDATE groups SET units=(SELECT COUNT(*) FROM units WHERE store=?{in_group})"
                           " WHERE store=? AND key=?", (sid, *bounds, sid, key))
            self._drop_gone_groups(sid, stats)
            # listing problems outside any group are re-found by every scan
            db.execute("DELETE FROM problems WHERE store=? AND unit=''", (sid,))
            db.executemany(
                "INSERT INTO problems VALUES (?, '', ?, ?)",
                [(sid, p.where, p.reason) for p in listing_problems],
            )
            if stats.read or stats.dropped:
                db.execute("DELETE FROM summaries WHERE store=?", (sid,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        stats.messages = self.summary(sid)["messages"]
        stats.unreadable = int(db.execute(
            "SELECT COUNT(*) FROM problems WHERE store=?", (sid,)).fetchone()[0])
        return sid, stats

    def _refresh_group(self, sid: int, group: UnitGroup, reader: BatchReader[Changes],
                       stats: ScanStats) -> None:
        """Reuse an unchanged group whole; else compare its listing unit by unit."""
        db = self.db
        in_group, bounds = _in_group("ref", group.key)
        key = "" if group.key is None else group.key
        db.execute("INSERT OR IGNORE INTO seen_groups VALUES (?)", (key,))
        recorded = db.execute(
            "SELECT stamp, units FROM groups WHERE store=? AND key=?", (sid, key)).fetchone()
        if group.stamp is not None and recorded is not None and recorded[0] == group.stamp:
            stats.units += recorded[1]
            stats.reused += recorded[1]
            return
        known = db.execute(
            f"SELECT 1 FROM units WHERE store=?{in_group} LIMIT 1", (sid, *bounds)
        ).fetchone() is not None
        listing_unit = "" if group.key is None else group.key + "/"
        if listing_unit:    # '' is the store-wide listing problems, replaced at the end
            db.execute("DELETE FROM problems WHERE store=? AND unit=?", (sid, listing_unit))
        if known:
            db.execute("DELETE FROM seen")
        listed = 0
        to_compare: list[Unit] = []
        # A cold group is read whole: no need to stat each entry while listing it.
        listing = group.unstamped if not known and group.unstamped is not None else group.units
        for unit in listing():
            if isinstance(unit, Unreadable):
                db.execute("INSERT INTO problems VALUES (?, ?, ?, ?)",
                           (sid, listing_unit, unit.where, unit.reason))
                continue
            listed += 1
            if not known:   # a cold group has nothing to compare with
                reader.add(unit)
                continue
            to_compare.append(unit)
            if len(to_compare) >= COMPARE_BATCH:
                self._compare(sid, to_compare, reader, stats)
                to_compare = []
        if to_compare:
            self._compare(sid, to_compare, reader, stats)
        if known:
            gone = [r for (r,) in db.execute(
                f"SELECT ref FROM units WHERE store=?{in_group} AND ref NOT IN (SELECT ref FROM seen)",
                (sid, *bounds))]
            for ref in gone:
                self._forget_unit(sid, ref)
                db.execute("DELETE FROM units WHERE store=? AND ref=?", (sid, ref))
            stats.dropped += len(gone)
        stats.units += listed
        stats.listed += listed
        # Every listed unit is in the units table once the batches in flight are written.
        db.execute("INSERT OR REPLACE INTO groups VALUES (?, ?, ?, ?)",
                   (sid, key, group.stamp, listed))

    def _compare(self, sid: int, units: list[Unit], reader: BatchReader[Changes],
                 stats: ScanStats) -> None:
        """Reuse the listed units whose stamp is unchanged; hand the rest to the reader.

        A batch at a time: one query for the batch's recorded stamps, not one per unit.
        """
        db = self.db
        db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", [(unit.ref,) for unit in units])
        recorded = {ref: (stamp, end) for ref, stamp, end in db.execute(
            "SELECT ref, stamp, end_offset FROM units WHERE store=? AND ref IN"
            f" ({','.join('?' * len(units))})", (sid, *(unit.ref for unit in units)))}
        for unit in units:
            row = recorded.get(unit.ref)
            if row and row[0] == unit.stamp:
                stats.reused += 1
                continue
            resume = _resume_offset(row, unit)
            if resume:
                unit = unit._replace(resume=resume)
            else:
                self._forget_unit(sid, unit.ref)
            reader.add(unit)

    def _forget_if_regrouped(self, sid: int, keyed: bool) -> None:
        """Start the store afresh if its units were recorded under the other kind of grouping.

        The whole-store group's range covers every keyed group's: the two
        must never be recorded side by side (a store that starts or stops
        grouping its units, from one version to the next).
        """
        other = "key=''" if keyed else "key<>''"
        if self.db.execute(f"SELECT 1 FROM groups WHERE store=? AND {other} LIMIT 1",
                           (sid,)).fetchone():
            for table in ("messages", "problems", "units", "groups"):
                self.db.execute(f"DELETE FROM {table} WHERE store=?", (sid,))

    def _drop_gone_groups(self, sid: int, stats: ScanStats) -> None:
        """Forget every unit of a group the store no longer lists (a folder removed)."""
        db = self.db
        gone = [k for (k,) in db.execute(
            "SELECT key FROM groups WHERE store=? AND key NOT IN (SELECT key FROM seen_groups)",
            (sid,))]
        for key in gone:
            in_group, bounds = _in_group("ref", key or None)
            stats.dropped += int(db.execute(
                f"SELECT COUNT(*) FROM units WHERE store=?{in_group}", (sid, *bounds)).fetchone()[0])
            for table, column in (("messages", "unit"), ("problems", "unit"), ("units", "ref")):
                in_group, bounds = _in_group(column, key or None)
                db.execute(f"DELETE FROM {table} WHERE store=?{in_group}", (sid, *bounds))
            db.execute("DELETE FROM groups WHERE store=? AND key=?", (sid, key))

    def _unlist(self, sid: int, ref: str, where: str, reason: str, recount: set[str]) -> None:
        """Record a listed entry that reading found to be no message file, as listing it would have."""
        prefixes = [ref[:i] for i, char in enumerate(ref) if char == "/"]
        keys = {k for (k,) in self.db.execute(
            f"SELECT key FROM seen_groups WHERE key IN ({','.join('?' * len(prefixes))})", prefixes)}
        # Only a keyed group lists its units unstamped: the longest key is the ref's group.
        key = max(keys, key=len, default="")
        self.db.execute("INSERT INTO problems VALUES (?, ?, ?, ?)", (sid, key + "/", where, reason))
        recount.add(key)

    def _forget_unit(self, sid: int, ref: str) -> None:
        self.db.execute("DELETE FROM messages WHERE store=? AND unit=?", (sid, ref))
        self.db.execute("DELETE FROM problems WHERE store=? AND unit=?", (sid, ref))

    def _apply(
        self,
        sid: int,
        store: Store,
        units: list[Unit],
        changes: Changes,
        stats: ScanStats,
        progress: Progress | None,
        recount: set[str],
    ) -> None:
        """Write what reading one batch found, and the batch's stamps."""
        db = self.db
        rows = []
        found_stamps: dict[str, str] = {}
        unlisted: set[str] = set()
        for kind, change in changes:
            if kind == Change.MESSAGE:
                rows.append(change)
                continue
            if kind == Change.STAMPED:
                found_stamps[change[0]] = change[1]
                continue
            if rows:
                db.executemany(INSERT_MESSAGE, rows)
                rows = []
            if kind == Change.FORGET:
                self._forget_unit(sid, change)
            elif kind == Change.UNLISTED:
                ref, where, reason = change
                self._unlist(sid, ref, where, reason, recount)
                unlisted.add(ref)
            else:
                db.execute("INSERT INTO problems VALUES (?, ?, ?, ?)", change)
        if rows:
            db.executemany(INSERT_MESSAGE, rows)
        db.executemany(
            "INSERT OR REPLACE INTO units (store, ref, stamp, end_offset) VALUES (?, ?, ?, ?)",
            [(sid, unit.ref, unit.stamp or found_stamps.get(unit.ref, ""), store.end_offset(unit))
             for unit in units if unit.ref not in unlisted],
        )
        stats.units -= len(unlisted)
        stats.listed -= len(unlisted)
        stats.read += len(units) - len(unlisted)
        if progress:
            progress(sum(1 for kind, _ in changes if kind == Change.MESSAGE))

    # -- reading back ----------------------------------------------------------

    def count(self, sid: int) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM messages WHERE store=?", (sid,)).fetchone()[0])

    def records(self, sid: int, spec: str) -> Iterator[Record]:
        for row in self.db.execute(
            "SELECT ref, folder, user, received, received_from, size, message_id, key, mid_key,"
            " strict_key, envelope FROM messages WHERE store=? ORDER BY id",
            (sid,),
        ):
            yield Record(spec, row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                         row[8], row[9], json.loads(row[10]))

    def summary(self, sid: int) -> dict:
        """Counts per user and folder, and the span of received times, for ``scan``.

        Kept until a refresh changes the store's messages: a scan of an
        unchanged store of any size answers at once.
        """
        row = self.db.execute("SELECT summary FROM summaries WHERE store=?", (sid,)).fetchone()
        if row:
            kept = json.loads(row[0])
            return {**kept, "folders": [tuple(f) for f in kept["folders"]]}
        rows = self.db.execute(
            "SELECT user, folder, COUNT(*), MIN(received), MAX(received) FROM messages"
            " WHERE store=? GROUP BY user, folder ORDER BY user, folder", (sid,)).fetchall()
        firsts = [row[3] for row in rows if row[3] is not None]
        lasts = [row[4] for row in rows if row[4] is not None]
        summary = {"messages": sum(row[2] for row in rows),
                   "first": min(firsts, default=None), "last": max(lasts, default=None),
                   "folders": [row[:3] for row in rows]}
        self.db.execute("INSERT OR REPLACE INTO summaries VALUES (?, ?)", (sid, json.dumps(summary)))
        return summary

    def problems(self, sid: int) -> list[Problem]:
        return [Problem(w, r) for w, r in self.db.execute(
            "SELECT location, reason FROM problems WHERE store=? ORDER BY location", (sid,))]


    # -- reads for the diff ------------------------------------------------------
    # The diff pairs archive messages with users in its temporary table
    # ``pairs`` (restore.diff: user, msg = messages.id, received, key, reason,
    # routable, present, class); what it reads of the messages is read here,
    # beside the schema.

    def users(self, sid: int) -> set[str]:
        """The users a store's messages belong to (path variables, IMAP logins)."""
        return {u for (u,) in self.db.execute(
            "SELECT DISTINCT user FROM messages WHERE store = ? AND user IS NOT NULL", (sid,))}

    def is_per_user(self, sid: int) -> bool:
        """Whether a store is laid out per user: some message of it belongs to a user."""
        return self.db.execute("SELECT 1 FROM messages WHERE store = ? AND user IS NOT NULL LIMIT 1",
                               (sid,)).fetchone() is not None

    def index_for_diff(self, match: str, by_received: bool) -> None:
        """Look-ups the diff makes, indexed once per catalog and kept up to date by later scans."""
        column = KEY_COLUMN[match]
        self.db.execute(
            f"CREATE INDEX IF NOT EXISTS messages_{column} ON messages (store, {column}, user)")
        if by_received:
            self.db.execute("CREATE INDEX IF NOT EXISTS messages_received ON messages (store, received)")

    def to_pair(self, sid: int, match: str, after: float | None) -> sqlite3.Cursor:
        """(id, user, received, identity key, envelope JSON) of a store's messages received after ``after``."""
        since, args = ("", (sid,)) if after is None else (" AND received > ?", (sid, after))
        return self.db.execute(f"SELECT id, user, received, {KEY_COLUMN[match]}, envelope"
                               f" FROM messages WHERE store = ?{since} ORDER BY id", args)

    def envelopes(self, sid: int) -> Iterator[tuple[str | None, dict[str, list[str]]]]:
        """Each distinct (user, envelope headers) of a store's messages."""
        for user, envelope in self.db.execute(
                "SELECT DISTINCT user, envelope FROM messages WHERE store = ?", (sid,)):
            yield user, json.loads(envelope)

    def mark_present(self, sid: int, match: str, routable: str, same_user: bool) -> None:
        """Mark the pairs matching ``routable`` routable, and present when store ``sid`` has their key."""
        column = KEY_COLUMN[match]
        user = " AND m.user = pairs.user" if same_user else ""
        self.db.execute(f"UPDATE pairs SET routable = 1, present = EXISTS (SELECT 1 FROM messages m"
                        f" WHERE m.store = ? AND m.{column} = pairs.key{user}) WHERE {routable}",
                        (sid,))

    def paired(self, cls: str, by_received: bool = True) -> sqlite3.Cursor:
        """(user, received, store, ref, size, Message-ID, key, reason) of the pairs of class ``cls``."""
        order = "p.user, p.received, m.ref" if by_received else "p.user, m.ref"
        return self.db.execute(
            "SELECT p.user, p.received, m.store, m.ref, m.size, m.message_id, m.key, p.reason"
            f" FROM pairs p JOIN messages m ON m.id = p.msg WHERE p.class = ? ORDER BY {order}",
            (cls,))

    def first_message_ids(self, cls: str, user: str, limit: int) -> list[str]:
        """The Message-IDs (or refs) of ``user``'s first pairs of class ``cls``, by received time."""
        return [mid for (mid,) in self.db.execute(
            "SELECT COALESCE(m.message_id, '(no Message-ID) ' || m.ref) FROM pairs p"
            " JOIN messages m ON m.id = p.msg WHERE p.class = ? AND p.user = ?"
            " ORDER BY p.received LIMIT ?", (cls, user, limit))]

    def arrivals(self, sid: int, bucket: int, user: str | None) -> dict[int, int]:
        """Messages of a store per time bucket (received // bucket), for one user or all."""
        where, args = ("AND user = ?", (user,)) if user else ("", ())
        return dict(self.db.execute(
            f"SELECT CAST(received / ? AS INTEGER), COUNT(*) FROM messages WHERE store = ?"
            f" AND received IS NOT NULL {where} GROUP BY 1", (bucket, sid, *args)))


def _in_group(column: str, key: str | None) -> tuple[str, tuple[str, ...]]:
    """SQL (to follow ``store=?``) and parameters picking the refs starting with ``key + "/"``.

    A range, so that the primary key or index on (store, ref) serves it;
    ``key`` None is the whole store.
    """
    if key is None:
        return "", ()
    return f" AND {column}>=? AND {column}<?", (key + "/", key + "0")    # "0" follows "/"


def _resume_offset(row: tuple | None, unit: Unit) -> int:
    """Read a changed unit from its old end when it only grew (append-only mbox)."""
    if row is None or row[1] is None:
        return 0
    old_size = row[0].split(":", 1)[0]
    return int(row[1]) if old_size.isdigit() and unit.size > int(old_size) else 0
