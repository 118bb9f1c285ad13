"""The catalog's tables: the schema, the row a message gets, keys and envelopes as stored.

``restore.catalog`` opens the file and makes every query; the rows it reads
are made here, in the scan workers too (``message_row``), so that what a
worker writes and what the catalog reads have one definition.
"""

from __future__ import annotations

import hashlib
import sqlite3
from json.encoder import encode_basestring as _json_string

from restore.identity import facts_of, received_time
from restore.stores.base import Item

# Bump when identity or the schema changes what a scan records: an older
# catalog is then emptied and rebuilt rather than trusted.
SCHEMA_VERSION = 5
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
-- A catalog row per message of a million-message archive: kept small.
-- What most rows share is stored once or computed: the unit's ref is the
-- item's (mbox aside), the envelope a few recipients' (``envelopes``);
-- identity keys are the digests' bytes, not their hex.
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    store INTEGER NOT NULL,
    unit TEXT NOT NULL,
    item_ref TEXT,              -- NULL: the unit's ref
    ref TEXT GENERATED ALWAYS AS (coalesce(item_ref, unit)) VIRTUAL,
    folder TEXT NOT NULL,
    user TEXT,
    received REAL,
    received_how INTEGER,       -- NULL: the Received: header; see RECEIVED_FROM
    received_from TEXT GENERATED ALWAYS AS
        (CASE received_how WHEN 1 THEN 'delivered' WHEN 2 THEN 'date' ELSE 'received' END) VIRTUAL,
    size INTEGER NOT NULL,
    message_id TEXT,
    key BLOB NOT NULL,
    -- identity.Facts.mid_key, computed rather than stored
    mid_key GENERATED ALWAYS AS (coalesce(message_id, key)) VIRTUAL,
    strict_key BLOB NOT NULL,
    envelope INTEGER NOT NULL   -- envelopes.id
);
CREATE TABLE IF NOT EXISTS envelopes (id INTEGER PRIMARY KEY, json TEXT NOT NULL UNIQUE);
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
-- The archive messages each replica was seen to hold: one that is gone later was
-- deleted by its user. 64 bits of a digest of (--match mode, user, identity key)
-- keep a row near 20 bytes; a collision could only call one lost message deleted.
CREATE TABLE IF NOT EXISTS delivered (
    store INTEGER NOT NULL,
    pair INTEGER NOT NULL,
    seen INTEGER NOT NULL,      -- the start of the last run that found it there
    PRIMARY KEY (store, pair)
) WITHOUT ROWID;
"""

INSERT_MESSAGE = (
    "INSERT INTO messages (store, unit, item_ref, folder, user, received, received_how, size,"
    " message_id, key, strict_key, envelope) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
# received_how of each of identity.received_time's sources (the column received_from decodes it).
RECEIVED_FROM = {"received": None, "delivered": 1, "date": 2}


def message_row(store_id: int, item: Item, headers: tuple[str, ...]) -> tuple:
    """The ``INSERT_MESSAGE`` row of one message read from a store, its envelope as JSON.

    Made where the message is read (a scan worker); the catalog swaps the
    envelope for its id when it writes the row.
    """
    facts = facts_of(item.data, headers, headers_only=item.headers_only)
    received, source = received_time(facts, item.delivered)
    return (
        store_id, item.unit.ref, None if item.ref == item.unit.ref else item.ref, item.unit.folder,
        item.unit.user, received, RECEIVED_FROM[source], facts.size, facts.message_id,
        stored_key(facts.key), stored_key(facts.strict_key),    # mid_key: computed by SQLite
        envelope_json(facts.envelope) if facts.envelope else "{}",
    )


def stored_key(key: str) -> str | bytes:
    """An identity key (``identity.Facts``) as a row holds it.

    A digest is stored as its bytes, a Message-ID as text.
    """
    if key.startswith("<"):
        return key
    try:
        return bytes.fromhex(key)
    except ValueError:
        return key      # no digest: matches nothing


def envelope_json(envelope: dict[str, list[str]]) -> str:
    """What ``json.dumps(envelope, ensure_ascii=False)`` gives, without its generic encoder."""
    return "{" + ", ".join(f"{_json_string(name)}: [{', '.join(map(_json_string, values))}]"
                           for name, values in envelope.items()) + "}"


def pair_digest(match: str, user: str, key: str | bytes) -> int:
    """The ``delivered`` table's 64-bit name of one (user, identity key) under a --match mode."""
    if isinstance(key, bytes):      # a digest, as a row holds it
        key = key.hex()
    digest = hashlib.blake2b(f"{match}\0{user}\0{key}".encode("utf-8", "surrogateescape"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class MessageWriter:
    """Writes one scan's message rows, each envelope stored once.

    The ids it knows are those of this scan's transaction: a scan that
    fails rolls back the envelopes it added with the rest.
    """

    KNOWN = 100_000     # envelopes remembered; one per recipient (set) in practice

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.ids: dict[str, int] = {}

    def write(self, rows: list[tuple]) -> None:
        """Insert ``message_row`` rows."""
        ids = self.ids
        self.db.executemany(INSERT_MESSAGE, [
            (*row[:-1], ids.get(row[-1]) or self._id(row[-1])) for row in rows])

    def _id(self, envelope: str) -> int:
        if len(self.ids) >= self.KNOWN:
            self.ids.clear()
        self.db.execute("INSERT OR IGNORE INTO envelopes (json) VALUES (?)", (envelope,))
        found = self.ids[envelope] = int(self.db.execute(
            "SELECT id FROM envelopes WHERE json = ?", (envelope,)).fetchone()[0])
        return found
