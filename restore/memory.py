"""Keep a run's memory flat in its size: SQLite's caches bounded, freed heap handed back.

What grows with a run outside Python's objects is SQLite's: each connection's
page cache, and a cache of the same default size for every temporary table
a statement makes (GROUP BY, window functions, IN lists, sorters). Several
of them at once on a large diff hold megabytes the heap keeps after they are
freed, in pieces too scattered to hand back. One process-wide bound keeps
them all together small: SQLite then reuses its own pages instead of taking
more, and spills what does not fit to its temporary files (the page cache's
anyway), at no measurable cost in time.
"""

from __future__ import annotations

import sqlite3

# SQLite's memory in all (page caches, sorters), process-wide; SQLite's default
# is one 2 MB cache per connection and per temporary table, without a bound.
SQLITE_HEAP_BYTES = 4 * 1024 * 1024


def bound_sqlite(db: sqlite3.Connection) -> None:
    """Bound SQLite's memory in this process (it is one setting for every connection)."""
    db.execute(f"PRAGMA soft_heap_limit={SQLITE_HEAP_BYTES}")
