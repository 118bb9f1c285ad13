"""``mailrestore scan``: fingerprint one store into the catalog."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click

from restore import report
from restore.cli.command import command
from restore.cli.common import make_job
from restore.cli.options import imap_options, json_option, option, reading_options
from restore.errors import Problem
from restore.selection import EVERYONE
from restore.stores import item_location, open_store
from restore.times import iso


@command()
@click.argument("store")
@reading_options
@imap_options
@option("--users", "users_file", type=click.Path(dir_okay=False), stage="sources",
        help="IMAP store: file of users whose mailboxes to read, one per line (# comments).")
@json_option
def scan(store: str, **opts: Any) -> int:
    """Fingerprint STORE into the catalog and count its messages.

    Prints messages per user and folder, the time span, and every unreadable
    item with its reason. A second scan of an unchanged store re-reads nothing.
    Exit 1 when some items are unreadable.
    """
    job = make_job(opts, store)
    # --users names whom an IMAP store reads; a scan catalogs every mailbox it finds.
    opened = open_store(store, replace(job.store_options, selection=EVERYONE))
    try:
        side, stats = job.scan(opened)
    finally:
        opened.close()
    summary = job.catalog.summary(side.store_id)
    problems = [Problem(item_location(store, p.where), p.reason, "unreadable")
                for p in job.catalog.problems(side.store_id)]
    summary.update(read=stats.read, reused=stats.reused, dropped=stats.dropped,
                   unreadable=len(problems), problems=problems)
    if opts["as_json"]:
        report.print_json({
            "store": store, "messages": summary["messages"], "unreadable": len(problems),
            "first": iso(summary["first"]), "last": iso(summary["last"]),
            "catalog": {"units_read": stats.read, "units_unchanged": stats.reused,
                        "units_gone": stats.dropped},
            "folders": [{"user": u, "folder": f, "messages": n} for u, f, n in summary["folders"]],
            "problems": [p.as_dict() for p in problems],
        })
    else:
        report.print_scan(store, summary)
    return 1 if problems else 0
