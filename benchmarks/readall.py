#!/usr/bin/env python3
"""The floor for scanning: open and read every file under a Maildir once.

    python benchmarks/readall.py PATH      prints "<files> files <bytes> bytes"

No parsing, no hashing: any fingerprinting tool reads at least this much, so
its rate against this one shows what its own work costs.
"""

from __future__ import annotations

import os
import sys


def read_all(root: str) -> tuple[int, int]:
    files = total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "tmp"]  # tmp/ holds deliveries in progress
        for name in filenames:
            try:
                with open(os.path.join(dirpath, name), "rb") as fh:
                    total += len(fh.read())
            except OSError:
                continue
            files += 1
    return files, total


if __name__ == "__main__":
    count, size = read_all(sys.argv[1])
    print(f"{count} files {size} bytes")
