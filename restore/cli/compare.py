"""``mailrestore timeline`` and ``diff``: compare an archive with a replica."""

from __future__ import annotations

from typing import Any

import click

from restore import report, usercsv
from restore.cli.command import command
from restore.cli.common import make_job, memory_doc, recall, remember
from restore.cli.options import (
    fail_on_option,
    imap_options,
    journal_options,
    json_option,
    option,
    pair_options,
    reading_options,
    report_option,
    selection_options,
    window_options,
)
from restore.diff import FAIL_ON
from restore.plan import save_plan


@command()
@pair_options
@reading_options
@imap_options
@selection_options
@option("--bucket", type=click.Choice(["hour", "day"]), default="hour", show_default=True,
        stage="output",
        help="Width of one bar of the chart.")
@option("--svg", type=click.Path(dir_okay=False), stage="output",
        help="Also save the chart as an SVG file.")
@option("--around", type=click.IntRange(0), default=12, show_default=True, metavar="N",
        stage="output",
        help="Buckets shown either side of the window (with no window: the last 2N+1).")
@option("--all", "show_all", is_flag=True, stage="output",
        help="Chart every bucket of the stores' history.")
@window_options
def timeline(**opts: Any) -> int:
    """Chart archive and replica arrivals per hour or day, with the gap highlighted.

    Green: archive mail the replica has; red: archive mail it lacks; blue:
    what arrived on the replica. The window (detected, or --since/--until)
    is marked in the margin. --svg saves the same chart for a postmortem.
    """
    from restore import chart

    job = make_job(opts, opts["replica"], *opts["archives"])
    result = job.diff(opts["archives"], opts["replica"])
    chart.show_timeline(result, opts["bucket"], opts["svg"],
                        around=None if opts["show_all"] else opts["around"])
    return 0


@command()
@pair_options
@reading_options
@imap_options
@selection_options
@window_options
@option("--plan", "plan_file", type=click.Path(dir_okay=False), stage="output",
        help="Write the messages to restore to FILE (JSON Lines).")
@report_option
@journal_options
@fail_on_option(",".join(FAIL_ON), "archive message")
@json_option
def diff(**opts: Any) -> int:
    """Class every archive message per user: present, missing, outside-window, ...

    Prints each gap found (or the --since/--until window) with the evidence
    for it, a table per user, the totals and the problems. Every gap found
    is restored; --gap N keeps one. The first diff or restore that uses a
    target's journal remembers the window(s), and later runs reuse them
    unless given --since/--until. Exit 1 when something is missing,
    unroutable or unreadable (--fail-on chooses the classes).
    """
    job = make_job(opts, opts["replica"], *opts["archives"])
    memory = recall(opts, job)
    result = job.diff(opts["archives"], opts["replica"])
    recorded = remember(memory, result, by="diff")
    planned = 0
    if opts["plan_file"]:
        planned = save_plan(opts["plan_file"], result.plan(), result.plan_header())
    reported = usercsv.write(opts["report_file"], usercsv.from_diff(result)) \
        if opts["report_file"] else 0
    if opts["as_json"]:
        doc = {**result.to_json(), "journal": memory_doc(memory, job, recorded)}
        if opts["plan_file"]:
            doc["plan"] = {"file": opts["plan_file"], "messages": planned}
        if opts["report_file"]:
            doc["report"] = {"file": opts["report_file"], "users": reported}
        report.print_json(doc)
    else:
        hint = None
        if opts["plan_file"] and planned:
            hint = (f"Next: mailrestore inject {opts['plan_file']} --to TARGET --dry-run, "
                    "then without --dry-run.")
        elif result.counts["missing"] and not opts["plan_file"]:
            hint = "Next: add --plan FILE to write the messages to restore."
        report.print_diff(result, opts["plan_file"], planned, hint,
                          report.memory_note(memory, bool(job.settings.remembered), recorded))
        if opts["report_file"]:
            report.print_report_written(opts["report_file"], reported)
    return 1 if result.fails(opts["fail_on"]) else 0
