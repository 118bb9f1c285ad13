"""The command line: a thin click shell over the library.

This is the only place where errors become exit codes (SPEC.md):
0 done, 1 findings or partial failure, 2 usage error, 3 could not run.
"""

from __future__ import annotations

import shlex
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from restore import __version__, report
from restore import audit as auditing
from restore.catalog import BUSY_SECONDS, Catalog
from restore.credentials import get_password
from restore.diff import DiffSettings, where
from restore.errors import MailrestoreError, UsageError
from restore.options import (
    imap_options,
    inject_options,
    json_option,
    pair_options,
    reading_options,
    window_options,
)
from restore.pipeline import Job, inject_plan
from restore.plan import PlanEntry, load_plan, save_plan
from restore.recipients import DEFAULT_RECIPIENT_HEADERS, AliasMap, normalize_address
from restore.stores import StoreOptions, open_store
from restore.window import iso

if TYPE_CHECKING:
    from restore.inject import InjectResult

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="mailrestore")
def cli() -> None:
    """Put back the mail a failed-over mail store lost, exactly once.

    After a failover the promoted replica lacks the mail that arrived between
    its last replication and the return of inbound mail. mailrestore compares
    each mailbox's timeline on the replica with a gateway archive, finds what
    is missing inside the gap, and appends it back (IMAP or Maildir) with its
    original received time, exactly once.

    \b
    Typical night (R=maildir:/var/vmail/%d/%n/Maildir, A=eml:/srv/gateway):
      mailrestore timeline --archive A --replica R
      mailrestore diff --archive A --replica R --plan gap.jsonl
      mailrestore inject gap.jsonl --to R --dry-run
      mailrestore inject gap.jsonl --to R

    Exit codes: 0 done, 1 findings or partial failure, 2 usage error,
    3 could not run (store missing, connection or login failed).
    """


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if _nagios_requested(sys.argv[1:]):
            # Nagios reads exit 2 as CRITICAL: a typo in a check must say UNKNOWN.
            code, line = auditing.nagios_unknown(exc.format_message())
            click.echo(line)
            sys.exit(code)
        exc.show()
        sys.exit(2)
    except MailrestoreError as exc:
        click.echo(f"mailrestore: {exc}", err=True)
        sys.exit(exc.exit_code)
    except sqlite3.OperationalError as exc:
        # The catalog or a journal: held by another command past the wait, or a failing disk.
        reason = (f"in use by another mailrestore command (waited {BUSY_SECONDS:.0f} s); let it"
                  " finish, or give this one its own --catalog / --state" if "locked" in str(exc)
                  else str(exc))
        click.echo(f"mailrestore: catalog or journal database: {reason}", err=True)
        sys.exit(3)
    except KeyboardInterrupt:
        click.echo("Interrupted; the journal keeps what was done, re-run to finish.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(0)


def _nagios_requested(args: list[str]) -> bool:
    """Whether the command line asks for ``audit --format nagios``."""
    if "audit" not in args:
        return False
    return "--format=nagios" in args or any(
        a == "--format" and b == "nagios" for a, b in zip(args, args[1:], strict=False))


def parse_time(value: str | None, option: str) -> float | None:
    """ISO 8601 -> epoch seconds; a time without offset is UTC; "auto" -> None."""
    if value is None or value == "auto":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} {value!r}: expected ISO 8601, e.g. 2017-12-08T16:02:00+00:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _wants_imap(*specs: str | None) -> bool:
    return any(s and s.startswith(("imap://", "imaps://")) for s in specs)


def store_options(opts: dict, *specs: str | None) -> StoreOptions:
    password = None
    if _wants_imap(*specs):
        imap_spec = next(s for s in specs if s and s.startswith(("imap://", "imaps://")))
        password = get_password(opts.get("password_file"), imap_spec)
    users = None
    if opts.get("users_file"):
        users = read_users_file(opts["users_file"])
    return StoreOptions(password=password, insecure=bool(opts.get("insecure")), users=users,
                        match=opts.get("match") or "auto")


def read_users_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"--users {path}: {exc.strerror or exc}") from None
    users = [normalize_address(line.split("#", 1)[0]) for line in lines]
    return [u for u in users if u]


def make_job(opts: dict, *specs: str | None, progress: bool = True) -> Job:
    aliases = AliasMap.load(opts["alias_map"]) if opts.get("alias_map") else AliasMap()
    settings = DiffSettings(
        match=opts.get("match") or "auto",
        recipient_headers=tuple(opts.get("recipient_headers") or DEFAULT_RECIPIENT_HEADERS),
        aliases=aliases,
        since=parse_time(opts.get("since"), "--since"),
        until=parse_time(opts.get("until"), "--until"),
        gap=opts.get("gap"),
        create_missing=bool(opts.get("create_missing")),
    )
    if settings.since is not None and settings.until is not None and settings.since >= settings.until:
        raise UsageError("--since must be earlier than --until")
    return Job(
        catalog=Catalog(opts.get("catalog")),
        settings=settings,
        store_options=store_options(opts, *specs),
        progress=report.progress_factory(progress and not opts.get("as_json")),
    )


def run_inject(entries: list[PlanEntry], opts: dict, password: str | None = None) -> InjectResult:
    """Append ``entries`` to the --to target exactly once, with a progress bar on a terminal."""
    spec = opts["target"]
    if password is None and _wants_imap(spec):
        password = get_password(opts.get("password_file"), spec)
    bar = report.progress_factory(not opts["as_json"])("appending", len(entries))
    try:
        return inject_plan(
            entries, spec, password=password, insecure=bool(opts["insecure"]),
            create_missing=bool(opts.get("create_missing")), state=opts["state"],
            jobs=opts["jobs"], folder=opts["folder"],
            flags=tuple(opts["flags"].split()) if opts["flags"] else (),
            dry_run=opts["dry_run"], progress=bar.update)
    finally:
        bar.close()


def finish_inject(result: InjectResult, opts: dict, diff=None) -> None:
    """Print the outcome and exit 1 when something could not be written."""
    if opts["as_json"]:
        doc = result.as_dict()
        if diff is not None:
            # One shape for every problem, so a script reads user/ref/reason from each;
            # the diff's own class and where stay beside them.
            found = [{"user": p.get("user", ""), "ref": p["where"], **p} for p in diff.problems]
            doc = {"window": diff.window.to_json(), "counts": diff.counts, **doc,
                   "problems": cast("list[dict]", doc["problems"]) + found}
        report.print_json(doc)
    else:
        report.print_inject(result, opts["target"])
    if result.failed or (diff is not None and diff.counts["unreadable"] + diff.counts["unroutable"]):
        raise SystemExit(1)


@cli.command()
@click.argument("store")
@reading_options
@imap_options
@json_option
def scan(store: str, **opts: Any) -> None:
    """Fingerprint STORE into the catalog and count its messages.

    Prints messages per user and folder, the time span, and every unreadable
    item with its reason. A second scan of an unchanged store re-reads nothing.
    Exit 1 when some items are unreadable.
    """
    job = make_job(opts, store)
    opened = open_store(store, job.store_options)
    try:
        side, stats = job.scan(opened)
    finally:
        opened.close()
    summary = job.catalog.summary(side.sid)
    problems = [{"class": "unreadable", "where": where(store, p.where), "reason": p.reason}
                for p in job.catalog.problems(side.sid)]
    summary.update(read=stats.read, reused=stats.reused, dropped=stats.dropped,
                   unreadable=len(problems), problems=problems)
    if opts["as_json"]:
        report.print_json({
            "store": store, "messages": summary["messages"], "unreadable": len(problems),
            "first": iso(summary["first"]), "last": iso(summary["last"]),
            "catalog": {"units_read": stats.read, "units_unchanged": stats.reused,
                        "units_gone": stats.dropped},
            "folders": [{"user": u, "folder": f, "messages": n} for u, f, n in summary["folders"]],
            "problems": problems,
        })
    else:
        report.print_scan(store, summary)
    if problems:
        raise SystemExit(1)


@cli.command()
@pair_options
@reading_options
@imap_options
@click.option("--user", "only_user", metavar="U", help="Only this user's timeline.")
@click.option("--bucket", type=click.Choice(["hour", "day"]), default="hour", show_default=True,
              help="Width of one bar of the chart.")
@click.option("--svg", type=click.Path(dir_okay=False), help="Also save the chart as an SVG file.")
@click.option("--around", type=click.IntRange(0), default=12, show_default=True, metavar="N",
              help="Buckets shown either side of the window (with no window: the last 2N+1).")
@click.option("--all", "show_all", is_flag=True, help="Chart every bucket of the stores' history.")
@window_options
def timeline(**opts: Any) -> None:
    """Chart archive and replica arrivals per hour or day, with the gap highlighted.

    Green: archive mail the replica has; red: archive mail it lacks; blue:
    what arrived on the replica. The window (detected, or --since/--until)
    is marked in the margin. --svg saves the same chart for a postmortem.
    """
    from restore import chart

    job = make_job(opts, opts["replica"], *opts["archives"])
    result = job.diff(opts["archives"], opts["replica"])
    chart.show_timeline(result, opts["bucket"], opts["only_user"], opts["svg"],
                        around=None if opts["show_all"] else opts["around"])


@cli.command()
@pair_options
@reading_options
@imap_options
@window_options
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False),
              help="Write the messages to restore to FILE (JSON Lines).")
@json_option
def diff(**opts: Any) -> None:
    """Class every archive message per user: present, missing, outside-window, ...

    Prints each gap found (or the --since/--until window) with the evidence
    for it, a table per user, the totals and the problems. Every gap found
    is restored; --gap N keeps one. Exit 1 when something is missing,
    unroutable or unreadable.
    """
    job = make_job(opts, opts["replica"], *opts["archives"])
    result = job.diff(opts["archives"], opts["replica"])
    planned = 0
    if opts["plan_file"]:
        planned = save_plan(opts["plan_file"], result.plan())
    if opts["as_json"]:
        doc = result.to_json()
        if opts["plan_file"]:
            doc["plan"] = {"file": opts["plan_file"], "messages": planned}
        report.print_json(doc)
    else:
        hint = None
        if opts["plan_file"] and planned:
            hint = (f"Next: mailrestore inject {opts['plan_file']} --to TARGET --dry-run, "
                    "then without --dry-run.")
        elif result.counts["missing"] and not opts["plan_file"]:
            hint = "Next: add --plan FILE to write the messages to restore."
        report.print_diff(result, opts["plan_file"], planned, hint)
    if result.findings:
        raise SystemExit(1)


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--to", "target", required=True, metavar="TARGET",
              help="maildir: template or imap(s):// URL to append to.")
@inject_options
@imap_options
@json_option
def inject(**opts: Any) -> None:
    """Append the messages of PLAN to TARGET, exactly once.

    Append only: nothing in the target is deleted, overwritten or reordered.
    Every message is journaled, so a re-run (after success or a crash)
    writes each message once. Exit 1 when some messages could not be written.
    """
    entries, bad_lines = load_plan(opts["plan"])
    for exc in bad_lines:
        click.echo(f"mailrestore: skipping {exc}", err=True)
    result = run_inject(entries, opts)
    from restore.inject import Problem

    for exc in bad_lines:
        result.failed += 1
        result.problems.append(Problem("", "plan", str(exc)))
    finish_inject(result, opts)


@cli.command()
@pair_options
@reading_options
@click.option("--to", "target", required=True, metavar="TARGET",
              help="Where to append; usually the replica itself.")
@window_options
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False),
              help="Also keep the plan in FILE.")
@inject_options
@imap_options
@json_option
def restore(**opts: Any) -> None:
    """Diff and inject in one go: put the gap back into TARGET.

    Prints the diff's window and totals, then appends the missing messages
    exactly as `diff --plan` and `inject` would. Exit 1 when some messages
    could not be written or archive items were unreadable or unroutable.
    """
    job = make_job(opts, opts["replica"], *opts["archives"])
    result = job.diff(opts["archives"], opts["replica"])
    entries = list(result.plan())
    if opts["plan_file"]:
        save_plan(opts["plan_file"], entries)
    if not opts["as_json"]:
        report.print_diff(result, opts["plan_file"], len(entries))
        click.echo()
    injected = run_inject(entries, opts, password=job.store_options.password)
    finish_inject(injected, opts, diff=result)


@cli.command()
@pair_options
@reading_options
@imap_options
@click.option("--window", default="24h", show_default=True, metavar="DURATION", help="How far back to check (s/m/h/d).")
@click.option("--grace", default="15m", show_default=True, metavar="DURATION",
              help="Skip mail this recent: it may still be in flight.")
@click.option("--now", default=None, metavar="TIME", help="Audit as if it were TIME (ISO 8601).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "nagios"]), default="text",
              show_default=True,
              help="text: silent when clean; json: the diff's fields; nagios: one plugin status line.")
@click.option("--warning", type=int, default=1, show_default=True, help="Nagios: WARNING at N missing.")
@click.option("--critical", type=int, default=10, show_default=True, help="Nagios: CRITICAL at N missing.")
def audit(**opts: Any) -> None:
    """Cron check: is every archived message of the last window in its mailbox?

    Checks archive mail received in (now - window, now - grace]. Silent with
    exit 0 when nothing is missing, so cron mails only on trouble; a report
    and exit 1 when something is. Two overlapping runs never both run.
    """
    fmt = opts["fmt"]
    try:
        now = parse_time(opts["now"], "--now")
        if now is None:  # not given, or "auto"
            now = time.time()
        window = auditing.parse_duration(opts["window"], "--window")
        grace = auditing.parse_duration(opts["grace"], "--grace")
        since, until = auditing.audit_bounds(now, window, grace)
        opts.update(since=None, until=None)
        job = make_job(opts, opts["replica"], *opts["archives"], progress=False)
        job.settings.since, job.settings.until = since, until
        job.settings.consider_from = since - window
        lock = auditing.default_lock_path(list(opts["archives"]), opts["replica"])
        with auditing.exclusive(lock):
            result = job.diff(opts["archives"], opts["replica"])
        auditing.require_a_mailbox(result)
    except MailrestoreError as exc:
        if fmt != "nagios":
            raise
        code, line = auditing.nagios_unknown(str(exc))
        click.echo(line)
        raise SystemExit(code) from None
    missing = result.counts["missing"]
    findings = result.missing_by_user()
    if fmt == "nagios":
        detail = (report.plural(len(findings), "user") if findings
                  else f"window {report.when(since)} to {report.when(until)}")
        code, line = auditing.nagios(missing, opts["warning"], opts["critical"], detail)
        click.echo(line)
        raise SystemExit(code)
    if fmt == "json":
        doc = result.to_json()
        doc["window"]["evidence"] = (f"audit: {iso(now)} minus --window {opts['window']}"
                                     f" and --grace {opts['grace']}")
        doc["missing"] = [{**f, "oldest": iso(f["oldest"]), "newest": iso(f["newest"])}
                          for f in findings]
        report.print_json(doc)
    elif missing:
        report.print_audit(result, findings)
    if missing:
        raise SystemExit(1)


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Where to create the sample incident (default: a new temporary directory).")
def demo(**opts: Any) -> None:
    """Build a sample incident, diff it, chart it, and print the next commands.

    The incident: a promoted replica of six mailboxes missing five and a half
    hours of mail, and a gateway archive of zstd-compressed eml files with
    the usual twists (duplicates, a Bcc recipient, an alias, an unroutable
    recipient, a corrupt item). Works offline; writes only under --dir.
    """
    import tempfile

    from restore import chart
    from restore.demo import build_incident

    root = Path(opts["directory"] or tempfile.mkdtemp(prefix="mailrestore-demo-"))
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"--dir {root}: not empty; give an empty or new directory")
    incident = build_incident(root)
    archive = incident.archives[0]
    q = shlex.quote
    alias = f" --alias-map {q(str(incident.alias_map))}" if incident.alias_map else ""
    catalog = root / "catalog.sqlite"
    plan = root / "gap.jsonl"
    click.echo(f"Sample incident built in {root}")
    click.echo(f"  replica (promoted backup): {incident.replica}")
    click.echo(f"  gateway archive:           {archive}")
    click.echo(f"  the replica lacks the mail received from {report.when(incident.gap_since.timestamp())} "
               f"to {report.when(incident.gap_until.timestamp())}")
    click.echo()
    job = make_job({"catalog": str(catalog), "alias_map": incident.alias_map}, progress=False)
    result = job.diff(incident.archives, incident.replica)
    chart.show_timeline(result, "hour", None, None, around=4, with_window=False)
    click.echo()
    planned = save_plan(str(plan), result.plan())
    report.print_diff(result, str(plan), planned)
    replica = q(incident.replica)
    common = f"--archive {q(archive)} --replica {replica}{alias} --catalog {q(str(catalog))}"
    to = f"--to {replica} --state {q(str(root / 'journal.sqlite'))}"
    w = result.window
    same_window = (f" --since {iso(w.since)} --until {iso(w.until)}" if not w.empty else "")
    click.echo()
    click.echo("Next, try:")
    click.echo(f"  mailrestore timeline {common} --svg {q(str(root / 'timeline.svg'))}")
    click.echo(f"  mailrestore inject {q(str(plan))} {to} --dry-run")
    click.echo(f"  mailrestore inject {q(str(plan))} {to}")
    click.echo(f"  mailrestore diff {common}{same_window}      # afterwards: 0 missing")
    click.echo(f"  mailrestore inject {q(str(plan))} {to}      # again: nothing appended")
