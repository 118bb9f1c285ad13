"""``mailrestore demo``: the whole job on a sample incident, in a few seconds."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import click

from restore import report
from restore.cli.command import command
from restore.cli.common import make_job, public_argv
from restore.cli.options import option
from restore.errors import UsageError
from restore.journal import RunInfo
from restore.pipeline import DiffPlan, InjectSettings, inject_plan
from restore.plan import Seal, save_plan
from restore.times import human, iso

# What the night this sample is modelled on took by hand: finding the gap,
# exporting, deduplicating and re-importing mailbox by mailbox, checking.
BY_HAND = "5 h 30 min"


@command()
@option("--dir", "directory", type=click.Path(file_okay=False), stage="output",
        help="Where to create the sample incident (default: a new temporary directory).")
@option("--plan-only", is_flag=True, stage="output",
        help="Stop after the diff and the plan; print the commands that do the rest.")
def demo(**opts: Any) -> int:
    """Run the whole job on a sample incident: diff, plan, inject, check.

    The incident: a promoted replica of six mailboxes missing five and a half
    hours of mail, and a gateway archive of zstd-compressed eml files with
    the usual twists (duplicates, a Bcc recipient, an alias, an unroutable
    recipient, a corrupt item). The demo charts the gap, writes the plan,
    appends the missing mail to the sample replica exactly once, and diffs
    again to show nothing is missing. Works offline; writes only under --dir.
    """
    import tempfile

    from restore import chart
    from restore.demo import build_incident

    started = time.monotonic()
    root = Path(opts["directory"] or tempfile.mkdtemp(prefix="mailrestore-demo-"))
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"--dir {root}: not empty; give an empty or new directory")
    incident = build_incident(root)
    catalog, plan, journal = root / "catalog.sqlite", root / "gap.jsonl", root / "journal.sqlite"
    click.echo(f"Sample incident built in {root}")
    click.echo(f"  replica (promoted backup): {incident.replica}")
    click.echo(f"  gateway archive:           {incident.archives[0]}")
    click.echo("  the replica lacks the mail received from "
               f"{human(incident.gap_since.timestamp())} to "
               f"{human(incident.gap_until.timestamp())}")

    settings = {"catalog": str(catalog), "alias_map": incident.alias_map}
    step(1, "diff: find the gap and what it lost")
    job = make_job(settings, progress=False)
    result = job.diff(incident.archives, incident.replica)
    click.echo()
    chart.show_timeline(result, "hour", None, around=4, with_window=False)
    click.echo()
    planned = save_plan(str(plan), result.plan(), result.plan_header())
    report.print_diff(result, str(plan), planned)
    w = result.window
    if opts["plan_only"]:
        print_next(incident, root, w, plan_only=True)
        return 0

    step(2, f"inject: append the {planned} missing messages to the replica, exactly once")
    bar = report.progress_factory(True)("appending", planned)
    try:
        header = result.plan_header()
        injected = inject_plan(DiffPlan(result),
                               InjectSettings(incident.replica, state=str(journal)),
                               job, seal=Seal(header.archives, header.match),
                               run_info=RunInfo("demo", public_argv()),
                               scanned_target=result.replica, progress=bar.update)
    finally:
        bar.close()
    click.echo(f"Appended {injected.appended:,} messages to {len(injected.users):,} mailboxes, "
               f"in received-time order; {injected.already_present:,} already present, "
               f"{injected.failed:,} failed.")

    step(3, "check: the same diff again")
    check = make_job({**settings, "since": iso(w.since), "until": iso(w.until)},
                     progress=False).diff(incident.archives, incident.replica)
    before, after = result.counts, check.counts
    click.echo(f"{after['missing']:,} missing; present went from {before['present']:,} to "
               f"{after['present']:,} (+{after['present'] - before['present']:,}, as appended).")
    print_next(incident, root, w, plan_only=False)
    click.echo()
    click.echo(f"The whole job took {time.monotonic() - started:.1f} s; "
               f"by hand, such a night took {BY_HAND}.")
    return 1 if after["missing"] or injected.failed else 0


def step(n: int, title: str) -> None:
    click.echo()
    click.echo(click.style(f"{n}/3 {title}", bold=True))


def print_next(incident, root: Path, window, plan_only: bool) -> None:
    """The commands that repeat (or, with --plan-only, finish) the job by hand."""
    q = shlex.quote
    archive, replica = q(incident.archives[0]), q(incident.replica)
    alias = f" --alias-map {q(str(incident.alias_map))}" if incident.alias_map else ""
    catalog, journal = q(str(root / "catalog.sqlite")), q(str(root / "journal.sqlite"))
    common = f"--archive {archive} --replica {replica}{alias} --catalog {catalog}"
    plan = q(str(root / "gap.jsonl"))
    to = f"--to {replica} --state {journal} --catalog {catalog}"
    same_window = (f" --since {iso(window.since)} --until {iso(window.until)}"
                   if not window.empty else "")
    click.echo()
    click.echo("Next, try:")
    click.echo(f"  mailrestore timeline {common} --svg {q(str(root / 'timeline.svg'))}")
    if plan_only:
        click.echo(f"  mailrestore inject {plan} {to} --dry-run")
        click.echo(f"  mailrestore inject {plan} {to}")
        click.echo(f"  mailrestore diff {common}{same_window}      # afterwards: 0 missing")
    click.echo(f"  mailrestore inject {plan} {to}      # {'again: ' if plan_only else ''}"
               "nothing appended: exactly once")
