"""``mailrestore report merge``: the --json reports of several shards as one."""

from __future__ import annotations

import json
from typing import Any

import click

from restore import report
from restore.cli.command import command
from restore.cli.options import json_option
from restore.errors import UsageError
from restore.merge import merge


@command("report")
@click.argument("action", type=click.Choice(["merge"]))
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@json_option
def report_command(**opts: Any) -> int:
    """Combine the --json reports of the shards of one job (report merge FILE...).

    Each file is what diff, inject, restore or audit printed with --json on
    one shard (--shard K/N). The merged report has the same fields with the
    totals added up: a finding without a user (an unreadable archive item,
    a bad plan line), which every shard reports, is counted once. It lists
    each shard's window and warns when they differ, or when a shard is
    missing. Exit 1 when the merged report has findings, as its command would.
    """
    docs = [_load(name) for name in opts["files"]]
    merged = merge(docs, list(opts["files"]))
    if opts["as_json"]:
        report.print_json(merged)
    else:
        report.print_merged(merged)
    counts = merged.get("counts", {})
    findings = merged.get("failed") or any(
        counts.get(c) for c in ("missing", "unroutable", "unreadable")
        if "appended" not in merged or c != "missing")
    return 1 if findings else 0


def _load(name: str) -> dict[str, Any]:
    try:
        with open(name, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise UsageError(f"{name}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{name}: not a JSON report (give the output of --json)") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{name}: not a mailrestore --json report")
    return doc
