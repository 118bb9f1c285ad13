"""``mailrestore audit``: the cron check, in text, JSON or as a Nagios plugin."""

from __future__ import annotations

import time
from typing import Any

import click

from restore import audit as auditing
from restore import report
from restore.cli.command import command
from restore.cli.common import make_job, recall
from restore.cli.options import (
    fail_on_option,
    imap_options,
    journal_options,
    option,
    pair_options,
    reading_options,
    selection_options,
)
from restore.plan import save_plan
from restore.times import human, iso, parse_time_option


@command()
@pair_options
@reading_options
@imap_options
@selection_options
@option("--window", default="24h", show_default=True, metavar="DURATION", stage="window",
        help="How far back to check (s/m/h/d).")
@option("--grace", default="15m", show_default=True, metavar="DURATION", stage="window",
        help="Skip mail this recent: it may still be in flight.")
@option("--now", default=None, metavar="TIME", stage="window",
        help="Audit as if it were TIME (ISO 8601, or as printed).")
@option("--format", "fmt", type=click.Choice(["text", "json", "nagios"]), default="text",
        stage="output",
        show_default=True,
        help="text: silent when clean; json: the diff's fields; nagios: one plugin status line.")
@option("--warning", type=int, default=1, show_default=True, stage="output",
        help="Nagios: WARNING at N missing (of the --fail-on classes).")
@option("--critical", type=int, default=10, show_default=True, stage="output",
        help="Nagios: CRITICAL at N missing (of the --fail-on classes).")
@journal_options
@fail_on_option("missing", "archive message of the window")
@option("--plan", "plan_file", type=click.Path(dir_okay=False), stage="output",
        help="Write the missing messages to FILE (JSON Lines), for inject.")
@option("--verbose", "-v", is_flag=True, stage="output",
        help="Text: also say what was checked, and how many messages users deleted.")
def audit(**opts: Any) -> int:
    """Cron check: is every archived message of the last window in its mailbox?

    Checks archive mail received in (now - window, now - grace]. Silent with
    exit 0 when nothing is missing, so cron mails only on trouble; a report
    and exit 1 when something is (--fail-on adds unroutable or unreadable).
    Two overlapping runs never both run. Mail missing inside a window the
    journal remembers (--state, --to, else the replica's) is reported as a
    restore not finished.
    """
    now = parse_time_option(opts["now"], "--now")
    if now is None:  # not given, or "auto": whole seconds, so the times printed are exact
        now = float(int(time.time()))
    job = make_job({**opts, "since": None, "until": None}, opts["replica"], *opts["archives"],
                   progress=False)
    memory = recall(opts, job, always=True)
    result = auditing.run(job, opts["archives"], opts["replica"], now=now, window=opts["window"],
                          grace=opts["grace"])
    if opts["plan_file"]:
        save_plan(opts["plan_file"], result.plan(), result.plan_header())
    failing = {cls: result.counts[cls] for cls in opts["fail_on"]}
    findings = result.missing_by_user()
    if opts["fmt"] == "nagios":
        w = result.window
        detail = (report.plural(len(findings), "user") if findings and "missing" in failing
                  else f"window {human(w.since)} to {human(w.until)}")
        if result.unfinished:
            detail += f"; restore not finished: {result.unfinished} of them"
        code, line = auditing.nagios(failing, opts["warning"], opts["critical"], detail,
                                     result.counts["deleted"])
        click.echo(line)
        return code
    if opts["fmt"] == "json":
        doc = result.to_json()
        doc["window"]["evidence"] = (f"audit: {iso(now)} minus --window {opts['window']}"
                                     f" and --grace {opts['grace']}")
        doc["missing"] = [{**f, "oldest": iso(f["oldest"]), "newest": iso(f["newest"])}
                          for f in findings]
        if memory.windows:
            doc["remembered"] = {"journal": str(memory.path),
                                 "windows": [w.to_json() for w in memory.windows],
                                 "unfinished": result.unfinished}
        report.print_json(doc)
    elif any(failing.values()) or opts["verbose"]:
        # The same audit writes the plan: a diff would not know what users deleted.
        again = ["audit", *(a for spec in opts["archives"] for a in ("--archive", spec)),
                 "--replica", opts["replica"], "--now", iso(now), "--window", opts["window"],
                 "--grace", opts["grace"], "--plan", "gap.jsonl"]
        report.print_audit(result, findings if "missing" in failing else [],
                           {c: n for c, n in failing.items() if n and c != "missing"},
                           next_step=again, verbose=opts["verbose"])
    return 1 if any(failing.values()) else 0
