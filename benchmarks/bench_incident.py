#!/usr/bin/env python3
"""The whole restore of a failover incident, timed per phase beside the disk's raw limits.

    python benchmarks/bench_incident.py --gap 100000 [--format eml.zst] [--target maildir,imap]

Builds (once, cached under benchmarks/data/gap-<N>-<format>/ with a stamp
file) the incident of benchmarks/gapincident.py: N/50 users, 50 messages
each missing from a 12-hour gap, 14 % more already on the replica. Then, as
an administrator would run it, each step a fresh process with the page cache
dropped first:

  raw read          2 readers `cat` every archive file (benchmarks/rawio.py)
  raw read+unzip    the same, decompressing too (decompress seconds apart)
  raw write fsync   4 processes write N ~3 KB files tmp/ -> new/, fsync file + dir
  raw write syncfs  the same with one syncfs() per 1,000 files
  diff --plan       mailrestore diff (scan + diff) into a plan, fresh catalog
  inject            mailrestore inject of that plan into the replica (a fresh copy)
  restore           mailrestore restore in one go on another fresh copy
  restore imap      the same into a private Dovecot serving that copy (--target imap)

Every target is checked afterwards: each user's Maildir holds every
expected Message-ID exactly once and nothing else. Wall time, messages/s,
CPU, peak RSS (largest process, from wait4) and the peak summed PSS of the
whole process tree (sampled), the machine's CPU split and load average go
into a markdown table and JSON under benchmarks/work/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gapincident as gi  # noqa: E402
from corpus import current_stamp, stamp_path  # noqa: E402
from measure import (  # noqa: E402
    Run,
    fmt,
    machine_line,
    mailrestore_cmd,
    markdown_table,
    ratio,
    run_measured,
    tree_cpu,
)
from server import MODES  # noqa: E402

DATA = HERE / "data"
WORK = HERE / "work"
STAMP_VERSION = 1
GB = 1e9


# ------------------------------------------------------------- the incident

def incident_dir(shape: gi.Shape) -> Path:
    return DATA / f"gap-{shape.label}-{shape.fmt}"


def archive_spec(shape: gi.Shape, root: Path) -> str:
    kind = {"maildir": "maildir", "mbox.zst": "mbox"}.get(shape.fmt, "eml")
    return f"{kind}:{root / 'archive'}"


def disk_estimate(shape: gi.Shape) -> dict[str, float]:
    """Bytes the build and the runs need, from a sample of the messages."""
    sizes = gi.sample_sizes(shape)
    archive = shape.archive_items * (sizes["archive_item"] if shape.fmt == "mbox.zst"
                                     else sizes["archive_item_on_disk"])
    directories = shape.users * 5 * 4096                            # %d/%n/Maildir/{cur,new,tmp}
    replica = shape.present * sizes["maildir_file_on_disk"] + directories
    restored = shape.archive_items * sizes["maildir_file_on_disk"] + directories  # a run's copy
    side = shape.archive_items * 600 + shape.missing * 900          # catalog, plan, journal
    raw_write = shape.missing * 4096
    return {"build": archive + replica, "runs": restored + side + raw_write,
            "total": archive + replica + restored + side + raw_write}


def ensure_incident(shape: gi.Shape, jobs: int) -> dict:
    root = incident_dir(shape)
    stamp_file = stamp_path(root)
    wanted = {"version": STAMP_VERSION, "gap": shape.gap, "format": shape.fmt, "seed": shape.seed}
    done = current_stamp(root, wanted)
    if done:
        return done
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    print(f"building {root.name}: {shape.users:,} users, {shape.archive_items:,} archive items "
          f"({shape.fmt}), {shape.present:,} on the replica, {jobs} processes ...", flush=True)
    (partial / "replica").mkdir(parents=True)
    if shape.fmt == "maildir":
        for part in ("cur", "new", "tmp"):
            (partial / "archive" / part).mkdir(parents=True)
    else:
        for day, hour in gi.hours():
            (partial / "archive" / day / ("" if shape.fmt == "mbox.zst" else hour)).mkdir(
                parents=True, exist_ok=True)
    with Pool(jobs) as pool:
        tasks = [(shape, str(partial), a, b) for a, b in gi.user_chunks(shape.users, 100)]
        sizes = pool.starmap(gi.build_users, tasks, chunksize=1)
        archive_bytes = sum(a for a, _ in sizes)
        replica_bytes = sum(r for _, r in sizes)
        if shape.fmt == "mbox.zst":
            hours = [(shape, str(partial), day, hour) for day, hour in gi.hours()]
            archive_bytes = sum(pool.starmap(gi.build_mbox_hour, hours, chunksize=1))
    partial.rename(root)
    stamp = dict(wanted, users=shape.users, archive_items=shape.archive_items,
                 replica_messages=shape.present, archive_bytes=archive_bytes,
                 replica_bytes=replica_bytes, seconds=round(time.perf_counter() - started, 1),
                 truth={"missing": shape.missing, "present": shape.present},
                 since=gi.SINCE, until=gi.UNTIL)
    stamp_file.write_text(json.dumps(stamp, indent=1) + "\n")
    print(f"  built in {stamp['seconds']} s: archive {archive_bytes / 1e6:,.0f} MB, "
          f"replica {replica_bytes / 1e6:,.0f} MB", flush=True)
    return stamp


# ------------------------------------------------------------- measuring

def cpu_jiffies() -> list[int]:
    with open("/proc/stat") as fh:
        return [int(v) for v in fh.readline().split()[1:9]]


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def cpu_split(before: list[int], after: list[int]) -> dict[str, float]:
    """The machine's CPU over the run, in % of all CPUs: user, system, iowait, idle."""
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(d) or 1
    user, nice, system, idle, iowait, irq, softirq, steal = d
    return {"user": round(100 * (user + nice) / total, 1),
            "system": round(100 * (system + irq + softirq) / total, 1),
            "iowait": round(100 * iowait / total, 1), "idle": round(100 * idle / total, 1),
            "steal": round(100 * steal / total, 1)}


def go_cold(paths: list[Path], how: str) -> str:
    """Drop the page cache (as root), else evict `paths`' files one by one; say which."""
    if how == "none":
        return "warm"
    os.sync()  # dirty pages cannot be dropped
    if how in ("auto", "drop"):
        try:
            with open("/proc/sys/vm/drop_caches", "w") as fh:
                fh.write("3\n")
            return "drop_caches"
        except OSError:
            if how == "drop":
                raise
    for path in paths:
        for dirpath, _, filenames in os.walk(path):
            for name in filenames:
                try:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
    return "fadvise"


class Bench:
    def __init__(self, args: argparse.Namespace, shape: gi.Shape, stamp: dict):
        self.args, self.shape, self.stamp = args, shape, stamp
        self.root = incident_dir(shape)
        self.work = WORK / f"incident-{shape.label}-{shape.fmt}"
        self.rows: list[dict] = []

    def measure(self, name: str, cmd: list[str], messages: int, cold: list[Path],
                env: dict | None = None, ok_codes: tuple[int, ...] = (0,),
                dovecot_pid: int | None = None) -> tuple[dict, Run]:
        cold_how = go_cold(cold, self.args.cold)
        if self.args.profile and cmd[0] != sys.executable:
            out = self.work / "profiles" / f"{name.replace(' ', '-')}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            cmd = ["py-spy", "record", "--subprocesses", "--idle", "--rate", "97", "--native",
                   "--format", "raw", "--output", str(out), "--", *cmd]
        env = dict(env or os.environ, XDG_STATE_HOME=str(self.work / "xdg-state"),
                   XDG_CACHE_HOME=str(self.work / "xdg-cache"))
        load = loadavg()
        before, server_before = cpu_jiffies(), tree_cpu(dovecot_pid)
        run = run_measured(cmd, env=env, log_dir=self.work / "logs" / name.replace(" ", "-"),
                           timeout=6 * 3600, sample_tree=True)
        split, server_after = cpu_split(before, cpu_jiffies()), tree_cpu(dovecot_pid)
        row: dict[str, Any] = {
            "step": name, "messages": messages, "seconds": round(run.seconds, 2),
            "msgs_per_s": round(messages / run.seconds) if run.seconds else None,
            "user_s": round(run.user_s, 1), "sys_s": round(run.sys_s, 1),
            "peak_rss_mb": round(run.peak_rss_kb / 1024, 1),
            "tree_pss_mb": round(run.tree_pss_kb / 1024, 1), "cpu": split, "load": load,
            "cache": cold_how, "command": " ".join(cmd), "status": "ok"}
        if dovecot_pid:
            row["dovecot_cpu_s"] = round(server_after - server_before, 1)
        if run.returncode not in ok_codes:
            lines = [ln for ln in (run.stderr + run.stdout).splitlines() if ln.strip()]
            row["status"] = f"FAILED (exit {run.returncode}: {lines[-1][:160] if lines else ''})"
        print(f"  {name:22} {fmt(run.seconds, 1):>8} s {fmt(row['msgs_per_s']):>8}/s "
              f"user {run.user_s:6.1f} s sys {run.sys_s:6.1f} s  RSS {row['peak_rss_mb']:7.1f} MB "
              f"tree {row['tree_pss_mb']:7.1f} MB  load {load}  {row['status']}", flush=True)
        self.rows.append(row)
        return row, run

    def fresh_replica(self, name: str) -> Path:
        """A real copy of the replica tree (a restore writes into it)."""
        dest = self.work / name
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(self.root / "replica"), str(dest)], check=True)
        return dest

    def check(self, row: dict, maildirs: Path) -> None:
        """Every expected Message-ID exactly once in every user's Maildir, nothing else."""
        if not row["status"].startswith("ok"):
            return
        with Pool(self.args.build_jobs) as pool:
            parts = pool.starmap(gi.check_users, [(self.shape, str(maildirs), a, b)
                                                  for a, b in gi.user_chunks(self.shape.users)])
        total = {key: sum(p[key] for p in parts) for key in ("found", "missing", "doubled",
                                                             "unexpected")}
        examples = [e for p in parts for e in p["examples"]][:3]
        row["check"] = total
        if total["missing"] or total["doubled"] or total["unexpected"]:
            row["status"] = (f"NOT EXACT: {total['missing']} missing, {total['doubled']} doubled, "
                             f"{total['unexpected']} unexpected; " + "; ".join(examples))
        else:
            row["status"] = f"exact ({total['found']:,} messages, each once)"
        print(f"    check: {row['status']}", flush=True)

    def expect_json(self, row: dict, run: Run, key: str, want: int) -> None:
        if not row["status"].startswith("ok"):
            return
        try:
            doc = json_output(run)
            got = doc["counts"][key] if key in doc.get("counts", {}) else doc[key]
        except (ValueError, KeyError, TypeError):
            got = None
        if got != want:
            row["status"] = f"WRONG: {key} = {got}, expected {want}"

    # -- the steps ------------------------------------------------------

    def raw(self) -> None:
        archive = self.root / "archive"
        rawio = [sys.executable, str(HERE / "rawio.py")]
        for name, extra in (("raw read", []), ("raw read+unzip", ["--decompress"])):
            if extra and self.shape.fmt in ("eml", "maildir"):
                continue
            row, run = self.measure(name, [*rawio, "read", str(archive), "--readers",
                                           str(self.args.readers), *extra],
                                    self.shape.archive_items, [archive])
            self._raw_result(row, run, self.shape.archive_items)
        files = self.args.raw_write_files or self.shape.missing
        boxes = max(1, files // gi.GAP_PER_USER)
        for name, sync in (("raw write fsync", "file"), ("raw write syncfs", "syncfs")):
            scratch = self.work / "raw-write"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            row, run = self.measure(name, [*rawio, "write", str(scratch), "--boxes", str(boxes),
                                           "--files", str(files), "--procs", str(self.args.writers),
                                           "--sync", sync], files, [])
            self._raw_result(row, run, files)
            shutil.rmtree(scratch, ignore_errors=True)

    def _raw_result(self, row: dict, run: Run, want: int) -> None:
        try:
            doc = json.loads(run.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            row["status"] = row["status"] if row["status"] != "ok" else "no result"
            return
        row["raw"] = doc
        if doc["files"] != want and self.shape.fmt != "mbox.zst":
            row["status"] = f"WRONG: {doc['files']} files, expected {want}"
        # the rate is the program's own timing: the Maildirs exist before a restore too
        row["seconds"] = doc["seconds"]
        row["msgs_per_s"] = round(want / doc["seconds"]) if doc["seconds"] else None
        if doc.get("decompress_s"):
            row["decompress_s"] = doc["decompress_s"]

    def split(self, inject: bool = True) -> None:
        replica = self.fresh_replica("replica-split")
        template = f"maildir:{replica}/%d/%n/Maildir"
        catalog, plan, journal = (self.work / n for n in ("catalog.sqlite", "plan.jsonl",
                                                          "journal.sqlite"))
        for leftover in [*self.work.glob("catalog.sqlite*"), *self.work.glob("journal.sqlite*"),
                         plan]:
            leftover.unlink(missing_ok=True)
        cold = [self.root / "archive", replica]
        cmd = [*mailrestore_cmd(), "diff", "--archive", archive_spec(self.shape, self.root),
               "--replica", template, "--plan", str(plan), "--catalog", str(catalog), "--json"]
        row, run = self.measure("diff --plan", cmd, self.shape.archive_items, cold, ok_codes=(0, 1))
        self.expect_json(row, run, "missing", self.shape.missing)
        self.expect_json(row, run, "present", self.shape.present)
        row["catalog_mb"] = round(file_bytes(catalog) / 1e6, 1)
        row["plan_mb"] = round(file_bytes(plan) / 1e6, 1)
        try:
            row["window"] = json_output(run)["window"]
        except (ValueError, KeyError):
            pass
        if not row["status"].startswith("ok") or not inject:
            if not self.args.keep:
                shutil.rmtree(replica, ignore_errors=True)
            return
        cmd = [*mailrestore_cmd(), "inject", str(plan), "--to", template, "--jobs",
               str(self.args.jobs), "--state", str(journal), "--json"]
        row, run = self.measure(f"inject --jobs {self.args.jobs}", cmd, self.shape.missing, cold)
        self.expect_json(row, run, "appended", self.shape.missing)
        row["journal_mb"] = round(file_bytes(journal) / 1e6, 1)
        self.check(row, replica)
        if not self.args.keep:
            shutil.rmtree(replica, ignore_errors=True)

    def restore(self, target: str) -> None:
        replica = self.fresh_replica(f"replica-restore-{target}")
        template = f"maildir:{replica}/%d/%n/Maildir"
        catalog = self.work / f"catalog-{target}.sqlite"
        journal = self.work / f"journal-{target}.sqlite"
        for leftover in [*self.work.glob(catalog.name + "*"), *self.work.glob(journal.name + "*")]:
            leftover.unlink()
        cold = [self.root / "archive", replica]
        base = [*mailrestore_cmd(), "restore", "--archive", archive_spec(self.shape, self.root),
                "--replica", template, "--catalog", str(catalog), "--state", str(journal), "--json"]
        if target == "maildir":
            cmd = [*base, "--to", template, "--jobs", str(self.args.jobs)]
            row, run = self.measure(
                f"restore --jobs {self.args.jobs}", cmd, self.shape.missing, cold
            )
            self._after_restore(row, run, catalog, journal, replica)
            if not self.args.keep:
                shutil.rmtree(replica, ignore_errors=True)
            return
        server = self._dovecot(replica)
        try:
            target_url = f"imap://{server.master_user}@{server.host}:{server.port}"
            cmd = [*base, "--to", target_url, "--jobs", str(self.args.imap_jobs)]
            env = dict(os.environ, MAILRESTORE_PASSWORD=server.master_pass)
            row, run = self.measure(f"restore imap --jobs {self.args.imap_jobs}", cmd,
                                    self.shape.missing, cold, env=env,
                                    dovecot_pid=server.master_pid)
            row["dovecot_fsync"] = self.args.dovecot_fsync
            row["dovecot_mode"] = self.args.dovecot_mode
            self._after_restore(row, run, catalog, journal, replica)
            if row["status"].startswith("exact"):
                self._doveadm_sample(row, server)
        finally:
            server.cleanup()  # its own directory; the replica copy is not below it
        if not self.args.keep:
            shutil.rmtree(replica, ignore_errors=True)

    def _after_restore(self, row: dict, run: Run, catalog: Path, journal: Path,
                       replica: Path) -> None:
        self.expect_json(row, run, "appended", self.shape.missing)
        row["catalog_mb"] = round(file_bytes(catalog) / 1e6, 1)
        row["journal_mb"] = round(file_bytes(journal) / 1e6, 1)
        self.check(row, replica)

    def _dovecot(self, replica: Path):  # noqa: ANN202 - tests/dovecot.py is imported late
        from server import private_dovecot

        def home(user: str) -> Path:
            local, _, domain = user.partition("@")
            return replica / domain / local

        users = [f"{local}@{domain}" for local, domain in map(gi.user_address,
                                                                range(self.shape.users))]
        if os.getuid() == 0:  # Dovecot refuses mail as root: the copy belongs to the mail uid
            subprocess.run(["chown", "-R", "5000:5000", str(replica)], check=True)
        server = private_dovecot(users, self.args.dovecot_fsync, home,
                                 self.args.dovecot_mode).start()
        print(f"  dovecot pid {server.master_pid} on {server.host}:{server.port} "
              f"({len(users):,} users, mail_fsync={self.args.dovecot_fsync}, "
              f"{self.args.dovecot_mode} mode)", flush=True)
        return server

    def _doveadm_sample(self, row: dict, server) -> None:  # noqa: ANN001
        """Dovecot's own count for a few users agrees with the files on disk."""
        wrong = []
        for u in range(0, self.shape.users, max(1, self.shape.users // 5)):
            user = "@".join(gi.user_address(u))
            out = server.doveadm("mailbox", "status", "-u", user, "messages", "INBOX",
                                 check=False).stdout
            if f"messages={self.shape.per_user}" not in out:
                wrong.append(f"{user}: {out.strip()}")
        if wrong:
            row["status"] = "NOT EXACT (doveadm): " + "; ".join(wrong[:3])


def json_output(run: Run) -> dict:
    """The command's --json document (py-spy, when profiling, adds lines of its own)."""
    return json.loads(
        "\n".join(ln for ln in run.stdout.splitlines() if not ln.startswith("py-spy>"))
    )


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


# ------------------------------------------------------------- report

def report(bench: Bench) -> str:
    shape, rows = bench.shape, bench.rows
    by = {r["step"]: r for r in rows}
    out = [f"# mailrestore incident benchmark: gap {shape.missing:,} ({machine_line()})", "",
           f"{shape.users:,} users; archive {shape.archive_items:,} items ({shape.fmt}, "
           f"{bench.stamp['archive_bytes'] / 1e6:,.0f} MB), replica {shape.present:,} messages; "
           f"{os.cpu_count()} CPUs. Page cache: {', '.join(sorted({r['cache'] for r in rows}))} "
           "before each step.", ""]
    table = []
    for r in rows:
        cpu = r["cpu"]
        extra = "; ".join(f"{k.replace('_mb', '')} {r[k]:,} MB" for k in ("catalog_mb", "plan_mb",
                                                                          "journal_mb") if k in r)
        if "decompress_s" in r:
            extra = f"decompress {r['decompress_s']} s CPU"
        if "dovecot_cpu_s" in r:
            extra += (f"; Dovecot CPU {r['dovecot_cpu_s']} s (mail_fsync={r['dovecot_fsync']}, "
                      f"{r.get('dovecot_mode', 'default')} mode)")
        table.append([r["step"], f"{r['messages']:,}", fmt(r["seconds"], 1), fmt(r["msgs_per_s"]),
                      f"{r['user_s']:.1f} + {r['sys_s']:.1f}", fmt(r["peak_rss_mb"], 0),
                      fmt(r["tree_pss_mb"], 0),
                      f"{cpu['user']:.0f}/{cpu['system']:.0f}/{cpu['iowait']:.0f}/{cpu['idle']:.0f}",
                      r["load"], extra, r["status"]])
    out.append(markdown_table(("step", "messages", "wall s", "msgs/s", "CPU user+sys s",
                               "peak RSS MB", "tree PSS MB", "machine usr/sys/io/idle %",
                               "load before", "sizes", "status"), table, "lrrrrrrrlll"))

    def rate(name: str) -> float | None:
        return by[name]["msgs_per_s"] if name in by and by[name]["status"][:2] in ("ok", "ex") \
            else None

    inject = next((r for r in rows if r["step"].startswith("inject")), None)
    lines = []
    if "diff --plan" in by:
        lines.append(["diff archive items/s vs raw read files/s",
                      fmt(ratio(rate("diff --plan"), rate("raw read")), 2)])
    if inject:
        lines += [["inject msgs/s vs raw write fsync (file + dir)",
                   fmt(ratio(rate(inject["step"]), rate("raw write fsync")), 2)],
                  ["inject msgs/s vs raw write syncfs/1000",
                   fmt(ratio(rate(inject["step"]), rate("raw write syncfs")), 2)]]
    if "raw read" in by and "raw write syncfs" in by:
        floor = by["raw read"]["seconds"] + by["raw write syncfs"]["seconds"]
        lines.append(["floor: raw read + raw write syncfs, s", fmt(floor, 1)])
        for r in rows:
            if r["step"].startswith("restore"):
                lines.append([f"{r['step']} wall / floor", fmt(ratio(r["seconds"], floor), 2)])
    lines = [line for line in lines if line[1] != "-"]
    if lines:
        out += ["", markdown_table(("ratio (same run)", "value"), lines)]
    window = by.get("diff --plan", {}).get("window")
    if window:
        out += ["", f"Window found: {window.get('since')} .. {window.get('until')} "
                f"({window.get('source')}); the incident's gap is "
                f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(gi.SINCE))} .. "
                f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(gi.UNTIL))} UTC."]
    out += ["", "Commands:"] + [f"    {r['command']}" for r in rows]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gap", type=int, default=10000, help="messages missing (N/50 users)")
    ap.add_argument("--format", dest="fmt", choices=gi.FORMATS, default="eml.zst")
    ap.add_argument("--target", default="maildir", help="comma-separated: maildir, imap")
    ap.add_argument("--steps", default="raw,split,restore",
                    help="comma-separated subset of raw, split (diff --plan + inject), "
                    "diff (diff --plan alone), restore")
    ap.add_argument("--jobs", type=int, default=4, help="inject/restore --jobs for Maildir")
    ap.add_argument("--imap-jobs", type=int, default=8, help="restore --jobs over IMAP")
    ap.add_argument("--dovecot-fsync", choices=("optimized", "always", "never"),
                    default="optimized")
    ap.add_argument("--dovecot-mode", choices=MODES, default="default",
                    help="Dovecot's login and imap processes: default (one per connection) or "
                    "performance (reused; benchmarks/server.py)")
    ap.add_argument("--readers", type=int, default=2, help="raw read processes")
    ap.add_argument("--writers", type=int, default=4, help="raw write processes")
    ap.add_argument("--raw-write-files", type=int, default=0, help="default: the gap's size")
    ap.add_argument("--cold", choices=("auto", "drop", "fadvise", "none"), default="auto",
                    help="how to empty the page cache before each step (auto: drop_caches, "
                    "else fadvise)")
    ap.add_argument("--build-jobs", type=int, default=max(2, os.cpu_count() or 2))
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--estimate", action="store_true",
                    help="print the disk the incident and a run need, build nothing")
    ap.add_argument("--force", action="store_true", help="build even if the disk looks too small")
    ap.add_argument("--keep", action="store_true", help="keep the restored replica copies")
    ap.add_argument("--profile", action="store_true",
                    help="run mailrestore under py-spy (raw stacks under work/.../profiles/); "
                    "timings are then inflated")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    shape = gi.Shape(args.gap, args.fmt, args.seed)
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if set(targets) - {"maildir", "imap"} or set(steps) - {"raw", "split", "diff", "restore"}:
        ap.error("--target takes maildir,imap; --steps takes raw,split,diff,restore")

    need = disk_estimate(shape)
    free = shutil.disk_usage(DATA.parent).free
    print(f"gap {shape.missing:,}: {shape.users:,} users, {shape.archive_items:,} archive items "
          f"({shape.fmt}). Disk: the incident ~{need['build'] / GB:.1f} GB, a run ~"
          f"{need['runs'] / GB:.1f} GB more at its peak; {free / GB:.1f} GB free; "
          f"{shape.archive_items + shape.present + shape.missing * 2:,} inodes.", flush=True)
    if args.estimate:
        return
    built = incident_dir(shape).is_dir()
    if need["total"] > 0.9 * free and not (built and need["runs"] < 0.9 * free) and not args.force:
        sys.exit("not enough free disk (--force to try anyway)")
    stamp = ensure_incident(shape, args.build_jobs)
    if args.build_only:
        return
    bench = Bench(args, shape, stamp)
    bench.work.mkdir(parents=True, exist_ok=True)
    if "raw" in steps:
        bench.raw()
    if "split" in steps and "maildir" in targets:
        bench.split()
    elif "diff" in steps:
        bench.split(inject=False)
    if "restore" in steps:
        for target in targets:
            bench.restore(target)
    text = report(bench)
    print("\n" + text)
    name = f"incident-{shape.label}-{shape.fmt}-{'-'.join(targets)}"
    if "imap" in targets and args.dovecot_fsync != "optimized":
        name += f"-fsync-{args.dovecot_fsync}"
    if "imap" in targets and args.dovecot_mode != "default":
        name += f"-{args.dovecot_mode}"
    if args.profile:
        name += "-profiled"
    (WORK / f"{name}.md").write_text(text + "\n")
    (WORK / f"{name}.json").write_text(json.dumps(
        {"shape": {"gap": shape.missing, "users": shape.users, "archive_items": shape.archive_items,
                   "replica": shape.present, "format": shape.fmt},
         "stamp": stamp, "machine": machine_line(), "rows": bench.rows}, indent=1) + "\n")
    print(f"\n(saved to {WORK / name}.md and .json)")


if __name__ == "__main__":
    main()
