#!/usr/bin/env python3
"""Fingerprinting throughput: mailrestore scan beside mdedup and a plain read.

    python benchmarks/bench_scan.py [--sizes 10000,100000] [--runs 1]

For each size, on the same SpamAssassin-derived Maildir (benchmarks/corpus.py
builds it on first use), one run measures:

  plain read        open/read of every file: the floor (benchmarks/readall.py)
  mdedup            mail-deduplicate's header hashing and grouping, --dry-run,
                    no strategy (so nothing is selected), no cache
  mdedup cache cold/warm
                    the same with mdedup's own hash cache, first and second run
  mailrestore cold  `mailrestore scan maildir:PATH --catalog FILE`, fresh catalog
  mailrestore warm  the same again: unchanged store, every item a catalog hit

mailrestore's bytecode is compiled first, as pip does when it installs a
package (mdedup's was compiled when it was installed).

Each contender runs as a fresh child; wall time and peak RSS come from
os.wait4 (benchmarks/measure.py). The page cache cannot be dropped on a
shared machine, so one untimed read of every file comes first and every
contender reads from cache. After each contender the store's paths, sizes and
mtimes are compared with the start: a contender that changed the store fails.
A contender that cannot run is reported "not available"; the rest go on.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import default_out, ensure_maildir, fingerprint_tree  # noqa: E402
from measure import (  # noqa: E402
    MEASUREMENT_HEADERS,
    Measurement,
    failure_note,
    fmt,
    machine_line,
    mailrestore_cmd,
    markdown_table,
    measurement_rows,
    ratio,
    run_measured,
    target_line,
)
from readall import read_all  # noqa: E402

WORK = HERE / "work"
PLAIN, MDEDUP, MDEDUP_COLD, MDEDUP_WARM, COLD, WARM = (
    "plain read", "mdedup", "mdedup cache cold", "mdedup cache warm",
    "mailrestore cold", "mailrestore warm")


def compile_bytecode() -> None:
    """Give mailrestore the bytecode that pip gave mdedup and click at install time.

    An editable install has none, and where PYTHONDONTWRITEBYTECODE is set
    every run would compile mailrestore from source: ~20 ms that a warm
    scan of any size would pay and an installed copy would not.
    """
    import compileall

    import restore
    compileall.compile_dir(Path(restore.__file__).parent, quiet=1)


def plain_cmd(store: Path) -> list[str]:
    return [sys.executable, str(HERE / "readall.py"), str(store)]


def mdedup_cmd(store: Path, cache: Path | None = None) -> list[str]:
    # delete-discarded with no --strategy selects nothing, and --dry-run acts
    # on nothing: the run hashes and groups every mail and writes no mail.
    cache_args = ["--cache-path", str(cache)] if cache else ["--no-cache"]
    return ["mdedup", "-i", "maildir", *cache_args, "--dry-run",
            "--action", "delete-discarded", str(store)]


def scan_cmd(store: Path, catalog: Path) -> list[str]:
    return [*mailrestore_cmd(), "scan", f"maildir:{store}", "--catalog", str(catalog), "--json"]


def counted_plain(stdout: str) -> int | None:
    match = re.match(r"(\d+) files", stdout)
    return int(match.group(1)) if match else None


def counted_mdedup(stdout: str) -> int | None:
    match = re.search(r"Found\s*\W+\s*(\d+)", stdout)
    return int(match.group(1)) if match else None


def counted_scan(stdout: str) -> int | None:
    """Messages plus unreadable items from `scan --json` (see SPEC.md classes)."""
    try:
        doc = json.loads(stdout)
        return int(doc["messages"]) + int(doc.get("unreadable") or 0)
    except (ValueError, KeyError, TypeError):
        return None


def measure(name: str, cmd: list[str], store: Path, n: int, before: str,
            count_of: Callable[[str], int | None]) -> Measurement:
    """One contender on one store; not available if it fails or alters the store."""
    run = run_measured(cmd, log_dir=WORK / "logs" / f"scan-{n}-{name.replace(' ', '-')}")
    result = Measurement(name, n, extra={"command": " ".join(cmd)})
    if run.returncode not in (0, 1):  # 1 = done with findings (unreadable items)
        result.note = failure_note(run)
        return result
    if fingerprint_tree(store) != before:
        result.note = "FAILED: the store was changed"
        return result
    result.seconds, result.peak_rss_kb = run.seconds, run.peak_rss_kb
    counted = count_of(run.stdout)
    if counted != n:
        result.note = f"counted {counted} messages, expected {n}"
    elif run.returncode == 1:
        result.note = "ok (exit 1: findings)"
    return result


def bench_size(n: int) -> list[Measurement]:
    path = default_out(n)
    stamp = ensure_maildir(path, n)
    print(f"\n## {n:,} messages: {path} ({stamp_line(stamp)})", flush=True)
    before = fingerprint_tree(path)
    files, size = read_all(str(path))  # untimed warm-up: everyone reads from the page cache
    print(f"warm-up read: {files:,} files, {size / 1e6:.0f} MB"
          " (page cache warm for all contenders)", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    catalog = WORK / f"scan-catalog-{n}.sqlite"
    mdedup_cache = WORK / f"mdedup-cache-{n}.db"
    for stale in (catalog, mdedup_cache):
        for leftover in stale.parent.glob(stale.name + "*"):  # with -wal/-shm companions
            leftover.unlink()
    plan = [
        (PLAIN, plain_cmd(path), counted_plain),
        (MDEDUP, mdedup_cmd(path), counted_mdedup),
        (MDEDUP_COLD, mdedup_cmd(path, mdedup_cache), counted_mdedup),
        (MDEDUP_WARM, mdedup_cmd(path, mdedup_cache), counted_mdedup),
        (COLD, scan_cmd(path, catalog), counted_scan),
        (WARM, scan_cmd(path, catalog), counted_scan),
    ]
    results = []
    for name, cmd, count_of in plan:
        result = measure(name, cmd, path, n, before, count_of)
        print(f"  {name:18} {fmt(result.seconds, 2):>8} s {fmt(result.rate):>9} msgs/s "
              f"{fmt(result.peak_rss_kb / 1024 if result.peak_rss_kb else None, 1):>7} MB  "
              f"{result.note}", flush=True)
        results.append(result)
    return results


def stamp_line(stamp: dict) -> str:
    return f"{stamp['source']} corpus, {stamp['bytes'] / 1e6:.0f} MB"


def best(measurements: list[Measurement]) -> Measurement:
    """The fastest of repeated runs of one contender (the least disturbed by neighbours)."""
    done = [m for m in measurements if m.ok]
    if not done:
        return measurements[0]
    return min(done, key=lambda m: m.seconds or 0)


def report(by_size: dict[int, list[Measurement]]) -> str:
    out = [f"# mailrestore scan benchmark ({machine_line()})",
           "Page cache: one untimed read of every file before the contenders; all read from cache.",
           "Each figure is the best of --runs runs; peak RSS via os.wait4 on a fresh child.", ""]
    for n, results in by_size.items():
        out += [f"## {n:,} messages", "", markdown_table(MEASUREMENT_HEADERS,
                                                          measurement_rows(results), "lrrrrl"), ""]
    out += ["## Ratios", ""]
    rows = []
    for n, results in by_size.items():
        named = {m.name: m for m in results}
        mr_vs_mdedup = ratio(named[COLD].rate, named[MDEDUP].rate)
        mr_vs_plain = ratio(named[COLD].rate, named[PLAIN].rate)
        cold_warm = ratio(named[COLD].seconds, named[WARM].seconds)
        warm_vs_mdedup_warm = ratio(named[WARM].rate, named[MDEDUP_WARM].rate)
        rows.append([f"{n:,}", fmt(mr_vs_mdedup, 2), fmt(mr_vs_plain, 2), fmt(cold_warm, 1),
                     fmt(warm_vs_mdedup_warm, 2)])
    out += [markdown_table(("messages", "mailrestore/mdedup", "mailrestore/plain read",
                            "cold/warm time", "warm/mdedup-cache-warm"), rows), ""]
    sizes = sorted(by_size)
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        out += [f"## Peak memory as the store grows {large / small:g}x", ""]
        rows = []
        for name in [m.name for m in by_size[small]]:
            a = next(m for m in by_size[small] if m.name == name)
            b = next(m for m in by_size[large] if m.name == name)
            grow = ratio(b.peak_rss_kb, a.peak_rss_kb) if a.ok and b.ok else None
            rows.append([name, fmt(a.peak_rss_kb / 1024 if a.ok else None, 1),
                         fmt(b.peak_rss_kb / 1024 if b.ok else None, 1), fmt(grow, 2)])
        out += [markdown_table(("contender", f"{small:,} MB", f"{large:,} MB", "growth"), rows), ""]
    largest = {m.name: m for m in by_size[sizes[-1]]}
    small_cold = next(m for m in by_size[sizes[0]] if m.name == COLD)
    growth = (ratio(largest[COLD].peak_rss_kb, small_cold.peak_rss_kb)
              if len(sizes) > 1 and small_cold.ok and largest[COLD].ok else None)
    out += [f"## Targets (at {sizes[-1]:,} messages)", "",
            target_line("mailrestore cold vs mdedup msgs/s",
                        ratio(largest[COLD].rate, largest[MDEDUP].rate), 10),
            target_line("mailrestore cold vs plain read msgs/s",
                        ratio(largest[COLD].rate, largest[PLAIN].rate), 0.3),
            target_line("cold/warm wall time",
                        ratio(largest[COLD].seconds, largest[WARM].seconds), 20),
            target_line(f"peak RSS growth with {sizes[-1] / sizes[0]:g}x messages", growth, 1.5,
                        higher_is_better=False),
            "", "Commands:"]
    out += [f"    {m.extra['command']}" for m in by_size[sizes[-1]]]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description="mailrestore scan vs mdedup vs a plain read")
    ap.add_argument("--sizes", default="10000,100000",
                    help="comma-separated message counts (default 10000,100000)")
    ap.add_argument("--runs", type=int, default=1, help="runs per size; the best is kept")
    ap.add_argument("--json", type=Path, default=WORK / "scan-results.json",
                    help="also save the figures here")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    compile_bytecode()
    by_size = {}
    for n in sizes:
        runs = [bench_size(n) for _ in range(args.runs)]
        by_size[n] = [best([run[i] for run in runs]) for i in range(len(runs[0]))]
    text = report(by_size)
    print("\n" + text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({str(n): [m.as_dict() for m in ms]
                                     for n, ms in by_size.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
