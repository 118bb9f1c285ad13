"""The catalog: an SQLite cache of every store's fingerprints.

A second scan of an unchanged store re-reads no message: units (files, mbox
files, IMAP UIDs) whose stamp is unchanged keep their rows; a plain mbox that
only grew is read from its old end; what vanished is dropped. The diff then
runs inside SQLite, so memory stays flat however large the stores are.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from restore.errors import UsageError
from restore.identity import facts_of
from restore.recipients import DEFAULT_RECIPIENT_HEADERS
from restore.stores.base import Item, Store, Unit, Unreadable

# Bump when identity or the schema changes what a scan records: an older
# catalog is then emptied and rebuilt rather than trusted.
SCHEMA_VERSION = 2
READ_BATCH = 500

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
    mid_key TEXT NOT NULL,
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
"""


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

    def key_for(self, match: str) -> str:
        return self.mid_key if match == "message-id" else self.strict_key if match == "strict" else self.key


@dataclass
class ScanStats:
    units: int = 0
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


class Catalog:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_catalog_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last commit only costs a re-read
            self.db.execute("PRAGMA temp_store=FILE")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"catalog {self.path}: {exc}") from None
        row = self.db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        if row is None or row[0] != str(SCHEMA_VERSION):
            self.db.executescript(
                "DROP TABLE IF EXISTS stores; DROP TABLE IF EXISTS units;"
                " DROP TABLE IF EXISTS messages; DROP TABLE IF EXISTS problems;")
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
    ) -> tuple[int, ScanStats]:
        """Bring the catalog in step with ``store``; returns (store id, stats)."""
        headers = tuple(h.lower() for h in envelope_headers)
        sid = self.store_id(store.spec, headers)
        stats = ScanStats()
        db = self.db
        db.execute("CREATE TEMP TABLE IF NOT EXISTS seen (ref TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute("DELETE FROM seen")
        todo: list[Unit] = []
        listing_problems: list[Unreadable] = []
        db.execute("BEGIN")
        try:
            for unit in store.units():
                if isinstance(unit, Unreadable):
                    listing_problems.append(unit)
                    continue
                stats.units += 1
                db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (unit.ref,))
                row = db.execute(
                    "SELECT stamp, end_offset FROM units WHERE store=? AND ref=?", (sid, unit.ref)
                ).fetchone()
                if row and row[0] == unit.stamp:
                    stats.reused += 1
                    continue
                resume = _resume_offset(row, unit)
                if resume:
                    unit = replace(unit, resume=resume)
                else:
                    self._forget_unit(sid, unit.ref)
                todo.append(unit)
                if len(todo) >= READ_BATCH:
                    self._read_units(store, sid, todo, headers, stats, progress)
                    todo = []
            if todo:
                self._read_units(store, sid, todo, headers, stats, progress)
            gone = [r for (r,) in db.execute(
                "SELECT ref FROM units WHERE store=? AND ref NOT IN (SELECT ref FROM seen)", (sid,)
            )]
            for ref in gone:
                self._forget_unit(sid, ref)
                db.execute("DELETE FROM units WHERE store=? AND ref=?", (sid, ref))
            stats.dropped = len(gone)
            # listing problems belong to no unit: keep only this scan's
            db.execute("DELETE FROM problems WHERE store=? AND unit=''", (sid,))
            db.executemany(
                "INSERT INTO problems VALUES (?, '', ?, ?)",
                [(sid, p.where, p.reason) for p in listing_problems],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        stats.messages = self.count(sid)
        stats.unreadable = int(db.execute(
            "SELECT COUNT(*) FROM problems WHERE store=?", (sid,)).fetchone()[0])
        return sid, stats

    def _forget_unit(self, sid: int, ref: str) -> None:
        self.db.execute("DELETE FROM messages WHERE store=? AND unit=?", (sid, ref))
        self.db.execute("DELETE FROM problems WHERE store=? AND unit=?", (sid, ref))

    def _read_units(
        self,
        store: Store,
        sid: int,
        units: list[Unit],
        headers: tuple[str, ...],
        stats: ScanStats,
        progress: Progress | None,
    ) -> None:
        db = self.db
        rows = []
        restarted: set[str] = set()
        for got in store.read(units):
            unit = got.unit
            if (isinstance(got, Item) and unit.resume and unit.ref not in restarted
                    and _offset(got.ref) < unit.resume):
                # The file was rewritten, not appended to: its old rows are stale.
                self._forget_unit(sid, unit.ref)
                restarted.add(unit.ref)
            if isinstance(got, Unreadable):
                db.execute("INSERT INTO problems VALUES (?, ?, ?, ?)",
                           (sid, got.unit.ref, got.where, got.reason))
                continue
            rows.append(_row(sid, got, headers))
            if len(rows) >= READ_BATCH:
                db.executemany(INSERT_MESSAGE, rows)
                if progress:
                    progress(len(rows))
                rows = []
        if rows:
            db.executemany(INSERT_MESSAGE, rows)
            if progress:
                progress(len(rows))
        db.executemany(
            "INSERT OR REPLACE INTO units (store, ref, stamp, end_offset) VALUES (?, ?, ?, ?)",
            [(sid, unit.ref, unit.stamp, store.end_offset(unit)) for unit in units],
        )
        stats.read += len(units)

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
        """Counts per user and folder, and the span of received times, for ``scan``."""
        first, last = self.db.execute(
            "SELECT MIN(received), MAX(received) FROM messages WHERE store=?", (sid,)).fetchone()
        folders = self.db.execute(
            "SELECT user, folder, COUNT(*) FROM messages WHERE store=? GROUP BY user, folder"
            " ORDER BY user, folder", (sid,)).fetchall()
        return {"messages": self.count(sid), "first": first, "last": last, "folders": folders}

    def problems(self, sid: int) -> list[Problem]:
        return [Problem(w, r) for w, r in self.db.execute(
            "SELECT location, reason FROM problems WHERE store=? ORDER BY location", (sid,))]


INSERT_MESSAGE = (
    "INSERT INTO messages (store, unit, ref, folder, user, received, received_from, size,"
    " message_id, key, mid_key, strict_key, envelope) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _row(sid: int, item: Item, headers: tuple[str, ...]) -> tuple:
    facts = facts_of(item.data, headers, headers_only=item.headers_only)
    if facts.received is not None:
        received, source = facts.received, "received"
    elif item.delivered is not None:
        received, source = item.delivered, "delivered"
    else:
        received, source = facts.date, "date"
    return (
        sid, item.unit.ref, item.ref, item.unit.folder, item.unit.user, received, source,
        facts.size, facts.message_id, facts.key, facts.mid_key, facts.strict_key,
        json.dumps(facts.envelope, ensure_ascii=False),
    )


def _resume_offset(row: tuple | None, unit: Unit) -> int:
    """Read a changed unit from its old end when it only grew (append-only mbox)."""
    if row is None or row[1] is None:
        return 0
    old_size = row[0].split(":", 1)[0]
    return int(row[1]) if old_size.isdigit() and unit.size > int(old_size) else 0


def _offset(ref: str) -> int:
    """The byte offset an mbox ``PATH:OFFSET`` ref names."""
    _, colon, offset = ref.rpartition(":")
    return int(offset) if colon and offset.isdigit() else 0
