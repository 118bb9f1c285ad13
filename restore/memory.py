"""Keep a run's memory flat in its size: SQLite's caches bounded, freed heap handed back.

What grows with a run outside Python's objects is SQLite's: each connection's
page cache, and a cache of the same default size for every temporary table
a statement makes (GROUP BY, window functions, IN lists, sorters). Several
of them at once on a large diff hold megabytes the heap keeps after they are
freed, in pieces too scattered to hand back. One process-wide bound keeps
them all together small: SQLite then reuses its own pages instead of taking
more, and spills what does not fit to its temporary files (the page cache's
anyway), at no measurable cost in time.

The C heap (glibc's malloc) keeps what is freed for reuse, and gives each
thread that allocates at once an arena of its own (up to eight a CPU):
inject's workers and read-ahead threads each leave one behind, holding the
freed buffers of their last batches. One arena for the whole process lets
every thread reuse what the others freed; between a run's phases (diff,
inject) what is free is handed back to the system. Both are glibc's; on
another C library they do nothing.
"""

from __future__ import annotations

import ctypes
import sqlite3

# SQLite's memory in all (page caches, sorters), process-wide; SQLite's default
# is one 2 MB cache per connection and per temporary table, without a bound.
SQLITE_HEAP_BYTES = 4 * 1024 * 1024
M_ARENA_MAX = -8    # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
# Blocks from this size up get a mapping of their own, unmapped when freed.
MAPPED_FROM = 128 * 1024     # glibc's default, which it then moves


def bound_sqlite(db: sqlite3.Connection) -> None:
    """Bound SQLite's memory in this process (it is one setting for every connection).

    Its sorters (an index built, a GROUP BY) take a block of megabytes each
    while they run. glibc maps such a block apart, but after freeing one it
    raises its threshold to that block's size, and the next sorter's block
    comes from the heap, which keeps it once freed: a fixed threshold hands
    each one back when its statement is done.
    """
    db.execute(f"PRAGMA soft_heap_limit={SQLITE_HEAP_BYTES}")
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MAPPED_FROM)


def one_heap_arena() -> None:
    """Let every thread started from now on allocate from the same malloc arena."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, 1)


def hand_back() -> None:
    """Give the heap's free pages back to the system: a phase's transient memory is done."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)   # the C library the interpreter runs on
