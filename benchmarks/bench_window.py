#!/usr/bin/env python3
"""Gap detection time and memory on a timeline of a million (user, message) pairs.

    python benchmarks/bench_window.py [--pairs 1000000] [--users 500] [--days 60]

Builds the diff's temporary ``pairs`` table in a scratch catalog (streamed,
no message files: detection only reads that table), with ordinary deletions
(0.5 %, and one user clearing a week of mail), a five-hour failover and a
40-minute one, then runs the diff's own window detection on it
(``restore.diff._windows``). Printed beside it, the raw limit: one pass of the
same ordered query over the table (sorting it, and through the index that
detection builds once), which detection makes a few of. Peak
memory is Python's own allocation high-water mark during detection
(tracemalloc, in a second, separate run, since tracing slows it down).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from restore.catalog import Catalog  # noqa: E402
from restore.diff import DiffSettings, _windows  # noqa: E402

T0 = 1_506_816_000                      # 2017-10-01
HOUR = 3600
QUERY = ("SELECT received, user, present FROM pairs WHERE copy = 1 AND routable"
         " AND received IS NOT NULL ORDER BY received, present DESC")


def build(catalog: Catalog, pairs: int, users: int, days: int, seed: int = 1):
    rng = random.Random(seed)
    span = days * 24 * HOUR
    gaps = [(T0 + span // 3, T0 + span // 3 + 5 * HOUR),
            (T0 + 2 * span // 3, T0 + 2 * span // 3 + 40 * 60)]
    tidy = (f"user{users - 1}", T0 + span // 6, T0 + span // 6 + 7 * 24 * HOUR)
    db = catalog.db
    db.executescript("""
        DROP TABLE IF EXISTS temp.pairs;
        CREATE TEMP TABLE pairs (
            id INTEGER PRIMARY KEY, user TEXT NOT NULL, msg INTEGER NOT NULL,
            received REAL, key TEXT NOT NULL, reason TEXT,
            routable INTEGER NOT NULL DEFAULT 0, present INTEGER NOT NULL DEFAULT 0,
            copy INTEGER NOT NULL DEFAULT 1, class TEXT);
    """)
    lost = [0] * len(gaps)
    db.execute("BEGIN")
    batch = []
    for n in range(pairs):
        user = f"user{rng.randrange(users)}"
        ts = float(T0 + rng.randrange(span))
        hit = next((g for g, (a, b) in enumerate(gaps) if a < ts <= b), None)
        if hit is not None:
            lost[hit] += 1
            present = False
        else:
            present = rng.random() >= 0.005 and not (user == tidy[0] and tidy[1] <= ts <= tidy[2])
        batch.append((user, n, ts, str(n), 1, int(present)))
        if len(batch) == 10_000:
            db.executemany("INSERT INTO pairs (user, msg, received, key, routable, present)"
                           " VALUES (?,?,?,?,?,?)", batch)
            batch = []
    db.executemany("INSERT INTO pairs (user, msg, received, key, routable, present)"
                   " VALUES (?,?,?,?,?,?)", batch)
    db.execute("COMMIT")
    return gaps, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--days", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-window-") as tmp:
        catalog = Catalog(Path(tmp) / "catalog.sqlite")
        started = time.perf_counter()
        gaps, lost = build(catalog, args.pairs, args.users, args.days)
        built = time.perf_counter() - started

        started = time.perf_counter()
        rows = sum(1 for _ in catalog.db.execute(QUERY))
        one_pass = time.perf_counter() - started

        started = time.perf_counter()
        window, windows = _windows(catalog, DiffSettings())
        detection = time.perf_counter() - started

        started = time.perf_counter()
        sum(1 for _ in catalog.db.execute(QUERY))
        indexed_pass = time.perf_counter() - started

        tracemalloc.start()
        _windows(catalog, DiffSettings())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        catalog.close()

    print(f"{rows:,} pairs, {args.users} users, {args.days} days (built in {built:.1f} s)")
    print()
    print("| what | seconds | peak Python memory |")
    print("|---|---|---|")
    print(f"| one pass of the ordered query, sorting (the raw limit) | {one_pass:.2f} | - |")
    print(f"| one pass through the index detection makes | {indexed_pass:.2f} | - |")
    print(f"| gap detection (restore.diff._windows) | {detection:.2f} | {peak / 1e6:.1f} MB |")
    print()
    for (a, b), n in zip(gaps, lost, strict=True):
        print(f"failover {a} to {b}: {n:,} pairs lost")
    for w in windows:
        print(f"found {w.since:.0f} to {w.until:.0f}: {w.evidence}")


if __name__ == "__main__":
    main()
