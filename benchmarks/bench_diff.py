#!/usr/bin/env python3
"""Diff throughput and memory on a synthetic incident of ~10k and ~100k messages.

    python benchmarks/bench_diff.py [--sizes 10000,100000] [--users 50] [--days 10]

For each size an incident is built once (restore.demo.build_incident,
no twists; cached under benchmarks/data/incident-<N>k with its truth), then

  diff cold   `mailrestore diff --archive eml:... --replica maildir:... --json
               --catalog FILE` with a fresh catalog
  diff warm   the same again: both stores unchanged, every item a catalog hit, and the
              window the cold diff remembered reused (no detection)

are measured for wall time and peak RSS (benchmarks/measure.py). msgs/s counts
(user, archive message) pairs, the unit diff classes. Each run's class counts
are compared with the incident's truth; the window is auto-detected, as an
operator would run it. An untimed read of every file comes first so both
runs read from the page cache. A diff that fails is reported "not available".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import current_stamp, stamp_path  # noqa: E402
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

DATA = HERE / "data"
WORK = HERE / "work"
STAMP_VERSION = 1


def incident_dir(n: int) -> Path:
    return DATA / (f"incident-{n // 1000}k" if n % 1000 == 0 else f"incident-{n}")


def ensure_incident(n: int, users: int, days: int) -> dict:
    """The incident of about `n` messages: its store specs and true class counts.

    Built once; the stamp beside it records what it was built with.
    """
    root = incident_dir(n)
    stamp_file = stamp_path(root)
    per_user_per_day = max(1, round(n / (users * days)))
    wanted = {"version": STAMP_VERSION, "users": users, "days": days,
              "per_user_per_day": per_user_per_day}
    done = current_stamp(root, wanted)
    if done:
        return done
    from restore.demo import build_incident  # the package under test; may be unfinished

    shutil.rmtree(root, ignore_errors=True)
    print(f"building incident {root.name}: {users} users x {per_user_per_day}/day"
          f" x {days} days ...", flush=True)
    incident = build_incident(root, users=users, per_user_per_day=per_user_per_day, days=days,
                              twists=False)
    stamp = dict(wanted, replica=incident.replica, archives=list(incident.archives),
                 since=incident.truth.since.isoformat(), until=incident.truth.until.isoformat(),
                 counts=dict(incident.truth.counts))
    stamp_file.write_text(json.dumps(stamp, indent=1) + "\n")
    return stamp


def diff_cmd(stamp: dict, catalog: Path) -> list[str]:
    archives = [arg for spec in stamp["archives"] for arg in ("--archive", spec)]
    return [*mailrestore_cmd(), "diff", *archives, "--replica", stamp["replica"],
            "--json", "--catalog", str(catalog)]


def audit_cmd(stamp: dict, catalog: Path) -> list[str]:
    """An hourly audit as cron runs it, on the hour after inbound mail came back."""
    archives = [arg for spec in stamp["archives"] for arg in ("--archive", spec)]
    now = datetime.fromisoformat(stamp["until"]) + timedelta(hours=1)
    return [*mailrestore_cmd(), "audit", *archives, "--replica", stamp["replica"],
            "--now", now.isoformat(), "--window", "24h", "--grace", "15m", "--format", "json",
            "--catalog", str(catalog)]


def measure_audit(name: str, cmd: list[str], pairs: int) -> Measurement:
    env = dict(os.environ, XDG_STATE_HOME=str(WORK / "state"))  # the audit lock lives there
    run = run_measured(cmd, env=env,
                       log_dir=WORK / "logs" / f"audit-{pairs}-{name.replace(' ', '-')}")
    result = Measurement(name, pairs, extra={"command": " ".join(cmd)})
    if run.returncode not in (0, 1):  # 1: the audit found the gap's mail missing
        result.note = failure_note(run)
        return result
    result.seconds, result.peak_rss_kb = run.seconds, run.peak_rss_kb
    return result


def measure_diff(name: str, cmd: list[str], stamp: dict, state: Path) -> Measurement:
    """One diff; ``state``: where it keeps the replica's journal (the remembered window)."""
    pairs = sum(stamp["counts"].values())
    run = run_measured(cmd, env=dict(os.environ, XDG_STATE_HOME=str(state)),
                       log_dir=WORK / "logs" / f"diff-{pairs}-{name.replace(' ', '-')}")
    result = Measurement(name, pairs, extra={"command": " ".join(cmd)})
    if run.returncode not in (0, 1):  # 1: findings (mail is missing: the point of an incident)
        result.note = failure_note(run)
        return result
    result.seconds, result.peak_rss_kb = run.seconds, run.peak_rss_kb
    try:
        counts = json.loads(run.stdout)["counts"]
    except (ValueError, KeyError, TypeError):
        result.note = "no counts in the --json output"
        return result
    if counts != {**stamp["counts"], "deleted": 0}:
        differ = {k: (counts.get(k), v) for k, v in stamp["counts"].items() if counts.get(k) != v}
        result.note = "counts differ from truth (got, want): " + ", ".join(
            f"{k} {g}/{w}" for k, (g, w) in differ.items())
    return result


def bench_size(n: int, users: int, days: int) -> list[Measurement]:
    try:
        stamp = ensure_incident(n, users, days)
    except Exception as exc:  # noqa: BLE001 - an unfinished builder must not stop the report
        note = f"not available (build_incident: {type(exc).__name__}: {exc})"
        return [Measurement(name, n, note=note)
                for name in ("diff cold", "diff warm", "audit cold", "audit warm")]
    root = incident_dir(n)
    files, size = read_all(str(root))  # untimed warm-up: both runs read from the page cache
    print(f"\n## ~{n:,} messages: {root} ({files:,} files, {size / 1e6:.0f} MB, "
          f"{sum(stamp['counts'].values()):,} user-message pairs)", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    catalog = WORK / f"diff-catalog-{n}.sqlite"
    for leftover in WORK.glob(catalog.name + "*"):
        leftover.unlink()
    state = WORK / f"diff-state-{n}"
    shutil.rmtree(state, ignore_errors=True)    # the cold diff detects; the warm one reuses
    results = []
    for name in ("diff cold", "diff warm"):
        result = measure_diff(name, diff_cmd(stamp, catalog), stamp, state)
        print(f"  {name:10} {fmt(result.seconds, 2):>8} s {fmt(result.rate):>8} msgs/s "
              f"{fmt(result.peak_rss_kb / 1024 if result.peak_rss_kb else None, 1):>7} MB  "
              f"{result.note}", flush=True)
        results.append(result)
    audit_catalog = WORK / f"audit-catalog-{n}.sqlite"
    for leftover in WORK.glob(audit_catalog.name + "*"):
        leftover.unlink()
    pairs = sum(stamp["counts"].values())
    for name in ("audit cold", "audit warm"):
        result = measure_audit(name, audit_cmd(stamp, audit_catalog), pairs)
        print(f"  {name:10} {fmt(result.seconds, 2):>8} s  {result.note}", flush=True)
        results.append(result)
    return results


def report(by_size: dict[int, list[Measurement]]) -> str:
    out = [f"# mailrestore diff benchmark ({machine_line()})",
           "Synthetic incident (restore.demo, no twists), eml archive vs Maildir replica, "
           "window auto-detected; page cache warm; msgs/s = (user, archive message) pairs/s.", ""]
    for n, results in by_size.items():
        out += [f"## ~{n:,} messages", "", markdown_table(MEASUREMENT_HEADERS,
                                                           measurement_rows(results), "lrrrrl"), ""]
    sizes = sorted(by_size)
    small, large = by_size[sizes[0]], by_size[sizes[-1]]
    rows = []
    for a, b in zip(small, large, strict=True):
        rows.append(
            [
                a.name,
                fmt(a.rate),
                fmt(b.rate),
                fmt(a.peak_rss_kb / 1024 if a.ok else None, 1),
                fmt(b.peak_rss_kb / 1024 if b.ok else None, 1),
                fmt(ratio(b.peak_rss_kb, a.peak_rss_kb) if a.ok and b.ok else None, 2),
            ]
        )
    if len(sizes) > 1:
        out += [f"## Growth from ~{sizes[0]:,} to ~{sizes[-1]:,} messages", "",
                markdown_table(("run", "msgs/s small", "msgs/s large", "RSS MB small",
                                "RSS MB large", "RSS growth"), rows), ""]
        cold_small, cold_large = small[0], large[0]
        out += ["## Targets", "",
                target_line(f"diff peak RSS growth with {sizes[-1] / sizes[0]:g}x messages",
                            ratio(cold_large.peak_rss_kb, cold_small.peak_rss_kb)
                            if cold_small.ok and cold_large.ok else None, 1.5,
                            higher_is_better=False),
                target_line("diff msgs/s at the large size vs the small one",
                            ratio(cold_large.rate, cold_small.rate), 0.8)]
        audits = {m.name: m for m in large}
        cold, warm = audits.get("audit cold"), audits.get("audit warm")
        if cold and warm and cold.ok and warm.ok:
            out += [target_line("hourly audit of an unchanged store vs a cold one (time)",
                                ratio(warm.seconds, cold.seconds), 0.05, higher_is_better=False)]
        out += [""]
    out += ["Commands:"] + [f"    {m.extra['command']}" for m in large if "command" in m.extra]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description="mailrestore diff throughput and memory")
    ap.add_argument("--sizes", default="10000,100000",
                    help="comma-separated approximate message counts (default 10000,100000)")
    ap.add_argument("--users", type=int, default=50, help="mailboxes in the incident")
    ap.add_argument("--days", type=int, default=10, help="days of mail in the incident")
    ap.add_argument("--json", type=Path, default=WORK / "diff-results.json")
    args = ap.parse_args()
    by_size = {n: bench_size(n, args.users, args.days)
               for n in sorted(int(s) for s in args.sizes.split(","))}
    print("\n" + report(by_size))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({str(n): [m.as_dict() for m in ms]
                                     for n, ms in by_size.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
