#!/usr/bin/env python3
"""Inject rate into a private Dovecot on loopback: mailrestore beside its peers.

    python benchmarks/bench_inject.py [--n 5000] [--users 8] [--only NAME,...]
    python benchmarks/bench_inject.py --parallel [--n 8000] [--users 8]

The same N real messages (benchmarks/corpus.py), spread round-robin over
--users mailboxes, go into fresh, empty INBOXes once per contender:

  IMAP target
    mailrestore j1/j4/j8  `mailrestore inject PLAN --to imap://admin@127.0.0.1:PORT --jobs J`
                          (master login, MAILRESTORE_PASSWORD)
    mbsync                isync `Sync Push` of each user's Maildir, CopyArrivalDate,
                          all channels in one `mbsync -a` run
    doveadm import        `doveadm import -u USER maildir:SRC "" mailbox INBOX` per user,
                          source on /dev/shm so it copies rather than hardlinks
  IMAP target, K = --users mailboxes at once (--parallel picks these, with the
  sequential peers for reference), as an administrator runs a per-mailbox tool:
    mailrestore jK        `mailrestore inject ... --jobs K`
    mbsync parallel       `parallel -j K mbsync -c RC {} ::: u0 ...`: one mbsync per channel
    doveadm import parallel
                          `parallel -j K --colsep '\t' doveadm ... import -u {1} maildir:{2}
                          "" mailbox INBOX :::: JOBS`: one import per user
  Maildir target
    mailrestore maildir j1/j4
                          `mailrestore inject PLAN --to maildir:BASE/mail/%u/Maildir`
    plain copy            benchmarks/plaincopy.py: tmp/ -> fsync -> new/, new/ fsynced
                          per 50 messages: the same guarantee with nothing else

Every run is checked afterwards: each user's INBOX must hold exactly its
messages (`doveadm mailbox status`). Wall time, peak RSS and CPU of each
contender's process tree come from benchmarks/measure.py, and the CPU that
Dovecot's processes spent meanwhile from /proc; source copies,
plans and logins before the run are not timed. Dovecot (tests/dovecot.py,
mail_fsync=optimized) is started here and stopped by its PID at the end.
A contender that cannot run is reported "not available"; the rest go on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import default_out, ensure_maildir  # noqa: E402
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
    tree_cpu,
)

WORK = HERE / "work"
SHM = Path("/dev/shm")
DOMAIN = "bench.example"
MESSAGE_ID = re.compile(rb"(?im)^message-id:\s*(<[^>\r\n]*>)")


@dataclass(frozen=True)
class SourceMessage:
    path: Path
    ref: str          # relative to the source Maildir, without the :2, flags
    received: float   # the file mtime
    size: int


@dataclass
class Bench:
    """What every contender shares: the server, the messages, the work space."""

    server: Any       # tests/dovecot.py's Dovecot, imported at run time
    source: Path
    messages: list[SourceMessage]
    users_per_run: int
    work: Path

    def fresh_users(self, label: str) -> list[str]:
        users = [f"{label}{k}@{DOMAIN}" for k in range(1, self.users_per_run + 1)]
        for user in users:
            self.server.add_user(user)
        return users

    def assignment(self, users: list[str]) -> dict[str, list[SourceMessage]]:
        by_user: dict[str, list[SourceMessage]] = {u: [] for u in users}
        for i, message in enumerate(self.messages):
            by_user[users[i % len(users)]].append(message)
        return by_user

    def count(self, user: str) -> int | None:
        proc = self.server.doveadm("mailbox", "status", "-u", user, "messages", "INBOX",
                                   check=False)
        match = re.search(r"messages=(\d+)", proc.stdout)
        return int(match.group(1)) if match else None

    def verify(self, by_user: dict[str, list[SourceMessage]]) -> str:
        """'' when every INBOX holds exactly its messages, else what is wrong."""
        counts = {u: self.count(u) for u in by_user}
        wrong = [f"{u}: {counts[u]} of {len(ms)}" for u, ms in by_user.items()
                 if counts[u] != len(ms)]
        return "" if not wrong else "COUNT MISMATCH " + "; ".join(wrong[:3])

    def chown_to_mail(self, path: Path) -> None:
        """doveadm reads (and writes index files into) an import source as the mail uid."""
        if os.getuid() != 0:
            return
        owner = os.stat(self.server.base / "mail")
        for dirpath, _, filenames in os.walk(path):
            os.chown(dirpath, owner.st_uid, owner.st_gid)
            for name in filenames:
                os.chown(os.path.join(dirpath, name), owner.st_uid, owner.st_gid)


def source_messages(maildir: Path) -> list[SourceMessage]:
    out = []
    for sub in ("cur", "new"):
        for entry in os.scandir(maildir / sub):
            st = entry.stat()
            stem = entry.name.partition(":2,")[0]
            out.append(SourceMessage(Path(entry.path), f"{sub}/{stem}", st.st_mtime, st.st_size))
    return sorted(out, key=lambda m: m.received)


def fingerprinter() -> Callable[[bytes], str]:
    """mailrestore's own identity key, as `diff` writes it into a plan; '' if unavailable."""
    try:
        from restore.identity import fingerprint_of
    except ImportError:
        return lambda data: ""
    return fingerprint_of


def plan_header(source: Path) -> str | None:
    """The header line that seals a plan to its archive; None for a mailrestore before #9."""
    try:
        from restore.plan import PlanHeader
    except ImportError:
        return None
    return PlanHeader((f"maildir:{source}",)).to_json()


def write_plan(path: Path, source: Path, by_user: dict[str, list[SourceMessage]]) -> None:
    fingerprint = fingerprinter()
    header = plan_header(source)
    with open(path, "w") as fh:
        if header:
            fh.write(header + "\n")
        for user, messages in by_user.items():
            for m in messages:
                data = m.path.read_bytes()
                found = MESSAGE_ID.search(data)
                fh.write(json.dumps({
                    "user": user, "folder": "INBOX", "source": f"maildir:{source}", "ref": m.ref,
                    "received": datetime.fromtimestamp(m.received, UTC).isoformat(),
                    "size": m.size,
                    "message_id": found.group(1).decode("ascii", "replace") if found else None,
                    "fingerprint": fingerprint(data)}) + "\n")


def copy_maildir(messages: list[SourceMessage], dest: Path) -> Path:
    """A Maildir holding copies of `messages` (same names, bytes and mtimes)."""
    shutil.rmtree(dest, ignore_errors=True)
    for sub in ("cur", "new", "tmp"):
        (dest / sub).mkdir(parents=True)
    for m in messages:
        shutil.copy2(m.path, dest / m.path.parent.name / m.path.name)
    return dest


# ------------------------------------------------------------- contenders

def finish(bench: Bench, name: str, cmd: list[str], by_user: dict[str, list[SourceMessage]],
           env: dict | None = None, appended: int | None = None) -> Measurement:
    """Run one contender's command, then check every mailbox got its messages (and, for
    mailrestore, that its --json says it appended ``appended``)."""
    server_cpu = tree_cpu(bench.server.master_pid)
    run = run_measured(cmd, env=env, log_dir=bench.work / "logs" / name.replace(" ", "-"))
    result = Measurement(name, len(bench.messages), extra={"command": " ".join(cmd)})
    if run.returncode != 0:
        result.note = failure_note(run)
        return result
    result.seconds, result.peak_rss_kb = run.seconds, run.peak_rss_kb
    result.extra.update(client_cpu_s=round(run.user_s + run.sys_s, 2),
                        dovecot_cpu_s=round(tree_cpu(bench.server.master_pid) - server_cpu, 2))
    result.note = bench.verify(by_user)
    if appended is not None and not result.note:
        try:
            said = json.loads(run.stdout)["appended"]
        except (ValueError, KeyError, TypeError):
            said = None
        if said != appended:
            result.note = f"inject --json says appended={said}"
    return result


def mailrestore_inject(bench: Bench, name: str, label: str, jobs: int, target_kind: str,
                       again: bool = False) -> Measurement:
    """Inject a plan into fresh mailboxes; ``again``: measure instead a second run with a
    fresh journal, which the target check must turn into 0 appended."""
    users = bench.fresh_users(label)
    by_user = bench.assignment(users)
    plan = bench.work / f"plan-{label}.jsonl"
    state = bench.work / f"journal-{label}.sqlite"
    for leftover in [*bench.work.glob(state.name + "*"), *bench.work.glob(f"again-{state.name}*")]:
        leftover.unlink()
    write_plan(plan, bench.source, by_user)
    server = bench.server
    if target_kind == "imap":
        target = f"imap://{server.master_user}@{server.host}:{server.port}"
    else:
        target = f"maildir:{server.base}/mail/%u/Maildir"
    cmd = [*mailrestore_cmd(), "inject", str(plan), "--to", target, "--jobs", str(jobs),
           "--state", str(state), "--json"]
    # The catalog (the target check's copy of the target) stays in the work space.
    env = dict(os.environ, MAILRESTORE_PASSWORD=server.master_pass,
               XDG_CACHE_HOME=str(bench.work / f"cache-{label}"))
    shutil.rmtree(bench.work / f"cache-{label}", ignore_errors=True)
    if not again:
        return finish(bench, name, cmd, by_user, env, appended=len(bench.messages))
    subprocess.run(cmd, env=env, capture_output=True, check=False)
    cmd[cmd.index(str(state))] = str(bench.work / f"again-{state.name}")
    return finish(bench, name, cmd, by_user, env, appended=0)


MBSYNC_CHANNEL = """
IMAPAccount {label}
Host {host}
Port {port}
User {user}
Pass {password}
SSLType None
AuthMechs LOGIN PLAIN

IMAPStore {label}-far
Account {label}

MaildirStore {label}-near
Path {maildir}/
Inbox {maildir}

Channel {label}
Far :{label}-far:
Near :{label}-near:
Patterns INBOX
Sync Push
Create None
CopyArrivalDate yes
SyncState *
"""


def parallel_cmd(jobs: int) -> list[str] | None:
    """GNU parallel running `jobs` at once, as an administrator would; None if missing."""
    exe = shutil.which("parallel")
    return [exe, "--will-cite", "--quote", "--halt", "now,fail=1", "-j", str(jobs)] if exe else None


def mbsync(bench: Bench, at_once: bool = False) -> Measurement:
    name = "mbsync parallel" if at_once else "mbsync"
    if not shutil.which("mbsync"):
        return Measurement(name, len(bench.messages), note="not available (mbsync not installed)")
    if at_once and not parallel_cmd(1):
        return Measurement(name, len(bench.messages), note="not available (GNU parallel missing)")
    users = bench.fresh_users("mbsyncp" if at_once else "mbsync")
    by_user = bench.assignment(users)
    root = bench.work / "mbsync-src"
    shutil.rmtree(root, ignore_errors=True)
    config = []
    for k, (user, messages) in enumerate(by_user.items()):
        maildir = copy_maildir(messages, root / f"u{k}")
        config.append(MBSYNC_CHANNEL.format(
            label=f"u{k}", host=bench.server.host, port=bench.server.port, user=user,
            password=bench.server.password_of(user), maildir=maildir))
    rc = root / "mbsyncrc"
    rc.write_text("".join(config))
    if at_once:
        cmd = [*(parallel_cmd(len(users)) or []), "mbsync", "-q", "-c", str(rc), "{}", ":::",
               *(f"u{k}" for k in range(len(users)))]
    else:
        cmd = ["mbsync", "-q", "-c", str(rc), "-a"]
    result = finish(bench, name, cmd, by_user)
    shutil.rmtree(root, ignore_errors=True)
    return result


def doveadm_import(bench: Bench, at_once: bool = False) -> Measurement:
    name = "doveadm import parallel" if at_once else "doveadm import"
    if at_once and not parallel_cmd(1):
        return Measurement(name, len(bench.messages), note="not available (GNU parallel missing)")
    users = bench.fresh_users("importp" if at_once else "import")
    by_user = bench.assignment(users)
    # tmpfs: on the mail filesystem doveadm would hardlink instead of copying
    root = SHM / f"mailrestore-bench-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    lines = ["set -e"]
    jobs = []
    for k, (user, messages) in enumerate(by_user.items()):
        src = copy_maildir(messages, root / f"u{k}")
        lines.append(f"doveadm -c '{bench.server.conf}' import -u '{user}' 'maildir:{src}' '' "
                     "mailbox INBOX")
        jobs.append(f"{user}\t{src}")
    bench.chown_to_mail(root)
    script = bench.work / "doveadm-import.sh"
    script.write_text("\n".join(lines) + "\n")
    jobs_file = bench.work / "doveadm-import.tsv"
    jobs_file.write_text("\n".join(jobs) + "\n")
    if at_once:
        cmd = [*(parallel_cmd(len(users)) or []), "--colsep", "\t", "doveadm", "-c",
               str(bench.server.conf), "import", "-u", "{1}", "maildir:{2}", "", "mailbox", "INBOX",
               "::::", str(jobs_file)]
    else:
        cmd = ["sh", str(script)]
    try:
        return finish(bench, name, cmd, by_user)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def plain_copy(bench: Bench) -> Measurement:
    users = bench.fresh_users("plain")
    by_user = bench.assignment(users)
    jobs = {str(bench.server.maildir(u)): [[str(m.path), m.received] for m in ms]
            for u, ms in by_user.items()}
    jobs_file = bench.work / "plaincopy-jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    cmd = [sys.executable, str(HERE / "plaincopy.py"), str(jobs_file)]
    return finish(bench, "plain copy", cmd, by_user)


CONTENDERS: dict[str, Callable[[Bench], Measurement]] = {
    "mailrestore j1": lambda b: mailrestore_inject(b, "mailrestore j1", "imapj1u", 1, "imap"),
    "mailrestore j4": lambda b: mailrestore_inject(b, "mailrestore j4", "imapj4u", 4, "imap"),
    "mailrestore j8": lambda b: mailrestore_inject(b, "mailrestore j8", "imapj8u", 8, "imap"),
    "mailrestore jK": lambda b: mailrestore_inject(b, f"mailrestore j{b.users_per_run}", "imapjku",
                                                   b.users_per_run, "imap"),
    "mbsync": mbsync,
    "doveadm import": doveadm_import,
    "mbsync parallel": lambda b: mbsync(b, at_once=True),
    "doveadm import parallel": lambda b: doveadm_import(b, at_once=True),
    "mailrestore maildir j1": lambda b: mailrestore_inject(b, "mailrestore maildir j1", "mdj1u",
                                                           1, "maildir"),
    "mailrestore maildir j4": lambda b: mailrestore_inject(b, "mailrestore maildir j4", "mdj4u",
                                                           4, "maildir"),
    # The target check alone: the same plan again with a fresh journal, into full mailboxes.
    "mailrestore j4 again": lambda b: mailrestore_inject(b, "mailrestore j4 again", "imapj4a", 4,
                                                         "imap", again=True),
    "mailrestore maildir j4 again": lambda b: mailrestore_inject(
        b, "mailrestore maildir j4 again", "mdj4a", 4, "maildir", again=True),
    "plain copy": plain_copy,
}
PARALLEL = ["mailrestore jK", "mbsync", "mbsync parallel", "doveadm import",
            "doveadm import parallel"]


# ------------------------------------------------------------- report

def report(results: dict[str, Measurement], n: int, users: int, source: str,
           mail_fsync: str = "optimized", mode: str = "default") -> str:
    def rate(name: str) -> float | None:
        return results[name].rate if name in results else None

    imap_best = max((m.rate for name, m in results.items() if m.rate and re.fullmatch(
        r"mailrestore j\d+", name)), default=None)
    maildir_j1 = rate("mailrestore maildir j1")
    table = [row + [fmt(m.extra.get("client_cpu_s"), 1), fmt(m.extra.get("dovecot_cpu_s"), 1)]
             for row, m in zip(measurement_rows(list(results.values())), results.values(),
                               strict=True)]
    out = [f"# mailrestore inject benchmark ({machine_line()})",
           f"{n:,} messages from the {source} corpus over {users} users; each contender into "
           "fresh empty INBOXes, counts verified after each run.",
           f"Dovecot 2.3 on 127.0.0.1, mail_fsync={mail_fsync}, {mode} mode "
           "(benchmarks/server.py); timings exclude setup and the "
           "count check. CPU: user+system seconds of the contender's processes, and of "
           "Dovecot's processes meanwhile.", "",
           markdown_table([*MEASUREMENT_HEADERS[:-1], "client CPU s", "Dovecot CPU s",
                           MEASUREMENT_HEADERS[-1]],
                          [[*r[:-3], r[-2], r[-1], r[-3]] for r in table], "lrrrrrrl"),
           "", "## Ratios (msgs/s)", ""]
    rows = [
        ["best mailrestore IMAP / mbsync", fmt(ratio(imap_best, rate("mbsync")), 2)],
        [
            "best mailrestore IMAP / doveadm import",
            fmt(ratio(imap_best, rate("doveadm import")), 2),
        ],
        [
            f"best mailrestore IMAP / mbsync, {users} at once",
            fmt(ratio(imap_best, rate("mbsync parallel")), 2),
        ],
        [
            f"best mailrestore IMAP / doveadm import, {users} at once",
            fmt(ratio(imap_best, rate("doveadm import parallel")), 2),
        ],
        ["mailrestore j1 / mbsync", fmt(ratio(rate("mailrestore j1"), rate("mbsync")), 2)],
        ["mailrestore maildir j1 / plain copy", fmt(ratio(maildir_j1, rate("plain copy")), 2)],
        [
            "mailrestore maildir j4 / plain copy",
            fmt(ratio(rate("mailrestore maildir j4"), rate("plain copy")), 2),
        ],
    ]
    rows = [r for r in rows if r[1] != "-"]
    out += [markdown_table(("ratio", "value"), rows), "", "## Targets", ""]
    targets = [("mailrestore IMAP (best --jobs) vs mbsync", "mbsync", 4),
               ("mailrestore IMAP (best --jobs) vs doveadm import", "doveadm import", 0.8),
               (f"mailrestore IMAP (best --jobs) vs mbsync, {users} at once (#11)",
                "mbsync parallel", 4),
               (f"mailrestore IMAP (best --jobs) vs doveadm import, {users} at once (#11)",
                "doveadm import parallel", 0.8)]
    out += [target_line(label, ratio(imap_best, rate(peer)), goal)
            for label, peer, goal in targets if peer in results]
    if "plain copy" in results:
        out.append(target_line("mailrestore Maildir (--jobs 1) vs plain tmp->new copy",
                               ratio(maildir_j1, rate("plain copy")), 0.8))
    out += ["", "Commands (users and paths as in the last run):"]
    out += [f"    {m.extra['command']}" for m in results.values() if "command" in m.extra]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description="mailrestore inject vs mbsync, doveadm import, plain copy")
    ap.add_argument("--n", type=int, default=5000, help="messages per contender (default 5000)")
    ap.add_argument("--users", type=int, default=8, help="mailboxes the messages spread over")
    ap.add_argument("--only", default="",
                    help=f"comma-separated subset of: {', '.join(CONTENDERS)}")
    ap.add_argument("--parallel", action="store_true",
                    help="the peers as run for many mailboxes, K = --users at once: "
                    f"{', '.join(PARALLEL)}")
    ap.add_argument("--mail-fsync", choices=("optimized", "always", "never"), default="optimized",
                    help="Dovecot's mail_fsync (default optimized, as the tests run it)")
    ap.add_argument("--dovecot-mode", choices=("default", "performance"), default="default",
                    help="Dovecot's login and imap processes: default (one per connection) or "
                    "performance (reused; benchmarks/server.py)")
    ap.add_argument("--json", type=Path, default=WORK / "inject-results.json")
    args = ap.parse_args()
    chosen = ([c.strip() for c in args.only.split(",") if c.strip()]
              or (PARALLEL if args.parallel else [c for c in CONTENDERS if c not in PARALLEL]))
    unknown = set(chosen) - set(CONTENDERS)
    if unknown:
        ap.error(f"unknown contender(s): {', '.join(sorted(unknown))}")

    try:
        from server import dovecot_installed, private_dovecot
    except ImportError as exc:
        sys.exit(f"tests/dovecot.py is needed to run a private Dovecot: {exc}")
    if not dovecot_installed():
        sys.exit("dovecot is not installed (apt-get install -y dovecot-imapd)")

    source = default_out(args.n)
    stamp = ensure_maildir(source, args.n)
    work = WORK / "inject"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    server = private_dovecot(mail_fsync=args.mail_fsync, mode=args.dovecot_mode).start()
    print(f"dovecot pid {server.master_pid} on {server.host}:{server.port}, base {server.base}",
          flush=True)
    results: dict[str, Measurement] = {}
    try:
        bench = Bench(server, source, source_messages(source), args.users, work)
        for name in chosen:
            try:
                result = CONTENDERS[name](bench)
            except (OSError, subprocess.SubprocessError) as exc:
                result = Measurement(name, args.n, note=f"not available (harness: {exc})")
            results[result.name] = result
            print(f"  {result.name:24} {fmt(result.seconds, 2):>8} s {fmt(result.rate):>7} msgs/s "
                  f"{fmt(result.peak_rss_kb / 1024 if result.peak_rss_kb else None, 1):>7} MB  "
                  f"CPU client {fmt(result.extra.get('client_cpu_s'), 1)} s, "
                  f"Dovecot {fmt(result.extra.get('dovecot_cpu_s'), 1)} s  {result.note}",
                  flush=True)
    finally:
        server.cleanup()  # SIGTERM to the master we started, then its directory goes
    print("\n" + report(results, args.n, args.users, stamp["source"], args.mail_fsync,
                         args.dovecot_mode))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([m.as_dict() for m in results.values()], indent=1) + "\n")


if __name__ == "__main__":
    main()
