"""Incremental re-scan: bring the catalog's rows of one store in step with the store.

A second scan of an unchanged store re-reads no message: units (files, mbox
files, IMAP UIDs) whose stamp is unchanged keep their rows; a plain mbox that
only grew is read from its old end; what vanished is dropped. A store that
lists its units in stamped groups (``Store.unit_groups``: a Maildir's
``cur/`` and ``new/``) is not even listed where a group's stamp is
unchanged, and a group new to the catalog is listed by name alone
(``UnitGroup.unstamped``): reading its units stamps them.

This module compares listings with what the catalog holds and writes the
changes, one transaction per re-scan; ``restore.scanpool`` runs the
reading, in worker processes where the store allows; ``restore.catalog``
owns the tables and makes each message's row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from restore.scanpool import BatchReader, Read
from restore.stores.base import Item, Store, Unit, UnitGroup, Unreadable

READ_BATCH = 250
COMPARE_BATCH = 500    # bound parameters per query: well below SQLite's limit of 999

Progress = Callable[[int], None]
# Makes the catalog row of one message: (store id, item, envelope headers) -> row.
MessageRow = Callable[[int, Item, tuple[str, ...]], tuple]
# Writes a batch of such rows into the catalog.
WriteRows = Callable[[list[tuple]], None]


@dataclass
class ScanStats:
    units: int = 0
    listed: int = 0        # units whose stamp was looked at (the rest were in unchanged groups)
    read: int = 0          # units actually read this time
    reused: int = 0        # units whose catalogued rows were kept
    dropped: int = 0       # units gone from the store
    messages: int = 0
    unreadable: int = 0


class Change(IntEnum):
    """What reading a batch asks of the catalog, in order, each with its data."""

    FORGET = 0      # unit ref: the unit was rewritten, its earlier rows are stale
    PROBLEM = 1     # (store id, unit ref, where, reason)
    MESSAGE = 2     # a row of INSERT_MESSAGE
    # For a unit handed in without a stamp (``UnitGroup.unstamped``), one of:
    STAMPED = 3     # (unit ref, stamp): the stamp reading it found
    UNLISTED = 4    # (unit ref, where, reason): no message file; what a listing reports


Changes = list[tuple[Change, Any]]


def read_batch(store: Store, store_id: int, headers: tuple[str, ...], row: MessageRow,
               units: list[Unit]) -> Changes:
    """Read ``units`` and fingerprint every message: the changes to make to the catalog.

    ``row`` makes a message's catalog row. Runs in a scan worker process
    (``restore.scanpool``) or in this one.
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
            changes.append((Change.MESSAGE, row(store_id, got, headers)))
    return changes


def _offset(ref: str) -> int:
    """The byte offset an mbox ``PATH:OFFSET`` ref names."""
    _, colon, offset = ref.rpartition(":")
    return int(offset) if colon and offset.isdigit() else 0


def rescan(db: sqlite3.Connection, store: Store, store_id: int, read: Read[Changes],
           write: WriteRows,
           progress: Progress | None = None, workers: int | None = None) -> ScanStats:
    """Re-scan ``store`` (catalog id ``store_id``) in one transaction; what it found and did.

    ``read`` reads a batch of units (``read_batch`` with its store bound);
    ``write`` writes message rows.
    """
    return _Rescan(db, write).run(store, store_id, read, progress, workers)


class _Rescan:
    """One re-scan's work on the catalog's tables."""

    def __init__(self, db: sqlite3.Connection, write: WriteRows):
        self.db = db
        self.write = write

    def run(self, store: Store, store_id: int, read: Read[Changes], progress: Progress | None,
            workers: int | None) -> ScanStats:
        stats = ScanStats()
        db = self.db
        db.execute("CREATE TEMP TABLE IF NOT EXISTS seen (ref TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS seen_groups (key TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute("DELETE FROM seen_groups")
        listing_problems: list[Unreadable] = []

        recount: set[str] = set()    # groups some of whose listed entries proved no message file

        def apply(units: list[Unit], changes: Changes) -> None:
            self._apply(store_id, store, units, changes, stats, progress, recount)

        db.execute("BEGIN")
        try:
            # Listing problems outside any keyed group are found again by every scan.
            db.execute("DELETE FROM problems WHERE store=? AND unit=''", (store_id,))
            with BatchReader(read, apply, READ_BATCH, workers,
                             parallel=store.parallel_safe) as reader:
                grouping_checked = False
                recorded = dict(db.execute(
                    "SELECT key, stamp FROM groups WHERE store=? AND stamp IS NOT NULL",
                    (store_id,)))
                for group in store.unit_groups(recorded):
                    if isinstance(group, Unreadable):
                        listing_problems.append(group)
                        continue
                    if not grouping_checked:
                        self._forget_if_regrouped(store_id, keyed=group.key is not None)
                        grouping_checked = True
                    self._refresh_group(store_id, group, reader, stats)
                reader.finish()
            for key in recount:
                in_group, bounds = _in_group("ref", key)
                db.execute("UPDATE groups SET units="
                           f"(SELECT COUNT(*) FROM units WHERE store=?{in_group})"
                           " WHERE store=? AND key=?", (store_id, *bounds, store_id, key))
            self._drop_gone_groups(store, store_id, stats)
            db.executemany(
                "INSERT INTO problems VALUES (?, '', ?, ?)",
                [(store_id, p.where, p.reason) for p in listing_problems],
            )
            if stats.read or stats.dropped:
                db.execute("DELETE FROM summaries WHERE store=?", (store_id,))
            db.execute("COMMIT")
        except BaseException:
            # SQLite ends the transaction itself on some errors (a full disk):
            # a ROLLBACK then would fail, and hide the error that says why.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return stats

    def _refresh_group(self, store_id: int, group: UnitGroup, reader: BatchReader[Changes],
                       stats: ScanStats) -> None:
        """Reuse an unchanged group whole; else compare its listing unit by unit."""
        db = self.db
        in_group, bounds = _in_group("ref", group.key)
        key = "" if group.key is None else group.key
        db.execute("INSERT OR IGNORE INTO seen_groups VALUES (?)", (key,))
        recorded = db.execute(
            "SELECT stamp, units FROM groups WHERE store=? AND key=?", (store_id, key)).fetchone()
        if group.stamp is not None and recorded is not None and recorded[0] == group.stamp:
            stats.units += recorded[1]
            stats.reused += recorded[1]
            return
        known = db.execute(
            f"SELECT 1 FROM units WHERE store=?{in_group} LIMIT 1", (store_id, *bounds)
        ).fetchone() is not None
        listing_unit = "" if group.key is None else group.key + "/"
        if listing_unit:    # '' is the store-wide listing problems, replaced at the end
            db.execute("DELETE FROM problems WHERE store=? AND unit=?", (store_id, listing_unit))
        if known:
            db.execute("DELETE FROM seen")
        listed = 0
        to_compare: list[Unit] = []
        # A cold group is read whole: no need to stat each entry while listing it.
        listing = group.unstamped if not known and group.unstamped is not None else group.units
        for unit in listing():
            if isinstance(unit, Unreadable):
                db.execute("INSERT INTO problems VALUES (?, ?, ?, ?)",
                           (store_id, listing_unit, unit.where, unit.reason))
                continue
            listed += 1
            if not known:   # a cold group has nothing to compare with
                reader.add(unit)
                continue
            to_compare.append(unit)
            if len(to_compare) >= COMPARE_BATCH:
                self._compare(store_id, to_compare, reader, stats)
                to_compare = []
        if to_compare:
            self._compare(store_id, to_compare, reader, stats)
        if known:
            gone = [r for (r,) in db.execute(
                f"SELECT ref FROM units WHERE store=?{in_group}"
                " AND ref NOT IN (SELECT ref FROM seen)",
                (store_id, *bounds))]
            for ref in gone:
                self._forget_unit(store_id, ref)
                db.execute("DELETE FROM units WHERE store=? AND ref=?", (store_id, ref))
            stats.dropped += len(gone)
        stats.units += listed
        stats.listed += listed
        # Every listed unit is in the units table once the batches in flight are written.
        db.execute("INSERT OR REPLACE INTO groups VALUES (?, ?, ?, ?)",
                   (store_id, key, group.stamp, listed))

    def _compare(self, store_id: int, units: list[Unit], reader: BatchReader[Changes],
                 stats: ScanStats) -> None:
        """Reuse the listed units whose stamp is unchanged; hand the rest to the reader.

        A batch at a time: one query for the batch's recorded stamps, not one per unit.
        """
        db = self.db
        db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", [(unit.ref,) for unit in units])
        recorded = {ref: (stamp, end) for ref, stamp, end in db.execute(
            "SELECT ref, stamp, end_offset FROM units WHERE store=? AND ref IN"
            f" ({','.join('?' * len(units))})", (store_id, *(unit.ref for unit in units)))}
        for unit in units:
            row = recorded.get(unit.ref)
            if row and row[0] == unit.stamp:
                stats.reused += 1
                continue
            resume = _resume_offset(row, unit)
            if resume:
                unit = unit._replace(resume=resume)
            else:
                self._forget_unit(store_id, unit.ref)
            reader.add(unit)

    def _forget_if_regrouped(self, store_id: int, keyed: bool) -> None:
        """Start the store afresh if its units were recorded under the other kind of grouping.

        The whole-store group's range covers every keyed group's: the two
        must never be recorded side by side (a store that starts or stops
        grouping its units, from one version to the next).
        """
        other = "key=''" if keyed else "key<>''"
        if self.db.execute(f"SELECT 1 FROM groups WHERE store=? AND {other} LIMIT 1",
                           (store_id,)).fetchone():
            for table in ("messages", "problems", "units", "groups"):
                self.db.execute(f"DELETE FROM {table} WHERE store=?", (store_id,))

    def _drop_gone_groups(self, store: Store, store_id: int, stats: ScanStats) -> None:
        """Forget every unit of a group the store no longer lists (a folder removed).

        A group outside what the listing covers (another user's, when the
        store was opened for some users) is not gone, only not looked at.
        """
        db = self.db
        gone = [k for (k,) in db.execute(
            "SELECT key FROM groups WHERE store=? AND key NOT IN (SELECT key FROM seen_groups)",
            (store_id,)) if store.lists_group(k)]
        for key in gone:
            in_group, bounds = _in_group("ref", key or None)
            stats.dropped += int(db.execute(
                f"SELECT COUNT(*) FROM units WHERE store=?{in_group}",
                (store_id, *bounds)).fetchone()[0])
            for table, column in (("messages", "unit"), ("problems", "unit"), ("units", "ref")):
                in_group, bounds = _in_group(column, key or None)
                db.execute(f"DELETE FROM {table} WHERE store=?{in_group}", (store_id, *bounds))
            db.execute("DELETE FROM groups WHERE store=? AND key=?", (store_id, key))

    def _unlist(self, store_id: int, ref: str, where: str, reason: str, recount: set[str]) -> None:
        """Record a listed entry that reading found no message file, as listing it would have."""
        prefixes = [ref[:i] for i, char in enumerate(ref) if char == "/"]
        keys = {k for (k,) in self.db.execute(
            f"SELECT key FROM seen_groups WHERE key IN ({','.join('?' * len(prefixes))})",
            prefixes)}
        # Only a keyed group lists its units unstamped: the longest key is the ref's group.
        key = max(keys, key=len, default="")
        self.db.execute("INSERT INTO problems VALUES (?, ?, ?, ?)",
                        (store_id, key + "/", where, reason))
        recount.add(key)

    def _forget_unit(self, store_id: int, ref: str) -> None:
        self.db.execute("DELETE FROM messages WHERE store=? AND unit=?", (store_id, ref))
        self.db.execute("DELETE FROM problems WHERE store=? AND unit=?", (store_id, ref))

    def _apply(
        self,
        store_id: int,
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
                self.write(rows)
                rows = []
            if kind == Change.FORGET:
                self._forget_unit(store_id, change)
            elif kind == Change.UNLISTED:
                ref, where, reason = change
                self._unlist(store_id, ref, where, reason, recount)
                unlisted.add(ref)
            else:
                db.execute("INSERT INTO problems VALUES (?, ?, ?, ?)", change)
        if rows:
            self.write(rows)
        db.executemany(
            "INSERT OR REPLACE INTO units (store, ref, stamp, end_offset) VALUES (?, ?, ?, ?)",
            [(store_id, unit.ref, unit.stamp or found_stamps.get(unit.ref, ""),
              store.end_offset(unit))
             for unit in units if unit.ref not in unlisted],
        )
        stats.units -= len(unlisted)
        stats.listed -= len(unlisted)
        stats.read += len(units) - len(unlisted)
        if progress:
            progress(sum(1 for kind, _ in changes if kind == Change.MESSAGE))


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
