#!/usr/bin/env python3
"""Memory of a scan that meets a decompression bomb: one small `.eml.gz` that expands hugely.

    python benchmarks/bench_bomb.py [--expands-to-mb 1024] [--runs 1]

Builds (once, under benchmarks/data/) an eml archive of one ordinary
message and one gzip file of about 1 MB per GB that decompresses to
`--expands-to-mb` MB (a header block, then zero bytes), and runs
`mailrestore scan eml:ARCHIVE` on it with a fresh catalog: wall time, peak
RSS of the command's largest process and the peak PSS of its whole tree,
and the reason the bomb is reported with. The raw limits beside it: the
compressed and the decompressed size. `--max-message-size` (default 256 MiB)
bounds what one item may hold in memory while it is read.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import fmt, machine_line, mailrestore_cmd, markdown_table, run_measured  # noqa: E402

DATA = HERE / "data"
WORK = HERE / "work"
HEADER = (b"Message-ID: <bomb@bench.test>\nDate: Fri, 08 Dec 2017 12:00:00 +0000\n"
          b"From: a@example.org\nX-Envelope-To: b@example.com\nSubject: bomb\n\n")
ORDINARY = (b"Message-ID: <ok@bench.test>\nDate: Fri, 08 Dec 2017 12:00:00 +0000\n"
            b"From: a@example.org\nX-Envelope-To: b@example.com\nSubject: ok\n\nhello\n")
MB = 1024 * 1024


def build(expands_to_mb: int) -> tuple[Path, int]:
    """The archive directory and the bomb's compressed size, built once per size."""
    root = DATA / f"bomb-{expands_to_mb}m"
    bomb = root / "2017" / "12" / "08" / "bomb.eml.gz"
    if not bomb.exists():
        bomb.parent.mkdir(parents=True, exist_ok=True)
        (bomb.parent / "ok.eml").write_bytes(ORDINARY)
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        zeros = bytes(MB)
        tmp = bomb.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            out.write(compressor.compress(HEADER))
            for _ in range(expands_to_mb):
                out.write(compressor.compress(zeros))
            out.write(compressor.flush())
        tmp.rename(bomb)
    return root, bomb.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expands-to-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    root, compressed = build(args.expands_to_mb)
    WORK.mkdir(exist_ok=True)
    rows = []
    for run_no in range(args.runs):
        catalog = WORK / "bomb-catalog.sqlite"
        for stale in WORK.glob("bomb-catalog.sqlite*"):
            stale.unlink()
        run = run_measured([*mailrestore_cmd(), "scan", f"eml:{root}", "--catalog", str(catalog),
                            "--json"], log_dir=WORK / "bomb-log", sample_tree=True)
        try:
            doc = json.loads(run.stdout)
            reasons = "; ".join(p["reason"] for p in doc["problems"]) or "none"
            messages = doc["messages"]
        except (ValueError, KeyError):
            reasons, messages = f"exit {run.returncode}: {run.stderr.strip()[-160:]}", "-"
        rows.append([str(run_no + 1), str(run.returncode), str(messages), fmt(run.seconds, 2),
                     fmt(run.peak_rss_kb / 1024, 1), fmt(run.tree_pss_kb / 1024, 1), reasons])
    print(f"# A {compressed / MB:.1f} MB .eml.gz expanding to {args.expands_to_mb:,} MB"
          f" (+ 1 ordinary message)\n")
    print(machine_line() + "\n")
    print(markdown_table(("run", "exit", "messages", "wall s", "peak RSS MB", "tree PSS MB",
                          "bomb reported as"), rows, "lrrrrrl"))
    print(f"\nCommand:\n    {' '.join(mailrestore_cmd())} scan eml:{root} --catalog "
          f"{WORK / 'bomb-catalog.sqlite'} --json")


if __name__ == "__main__":
    main()
