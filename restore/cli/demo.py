"""``mailrestore demo``: a sample incident to try every command on."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from restore import report
from restore.cli.command import command
from restore.cli.common import make_job
from restore.errors import UsageError
from restore.options import option
from restore.plan import save_plan
from restore.times import human, iso


@command()
@option("--dir", "directory", type=click.Path(file_okay=False), stage="output",
        help="Where to create the sample incident (default: a new temporary directory).")
def demo(**opts: Any) -> int:
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
    click.echo(f"  the replica lacks the mail received from {human(incident.gap_since.timestamp())} "
               f"to {human(incident.gap_until.timestamp())}")
    click.echo()
    job = make_job({"catalog": str(catalog), "alias_map": incident.alias_map}, progress=False)
    result = job.diff(incident.archives, incident.replica)
    chart.show_timeline(result, "hour", None, around=4, with_window=False)
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
    return 0
