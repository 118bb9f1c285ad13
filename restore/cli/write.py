"""``mailrestore inject`` and ``restore``: append a plan to a target, exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import click

from restore import report, usercsv
from restore.cli.command import command
from restore.cli.common import make_job, selection, wants_imap
from restore.credentials import get_password
from restore.errors import Problem
from restore.options import (
    imap_options,
    inject_options,
    json_option,
    option,
    pair_options,
    reading_options,
    report_option,
    selection_options,
    window_options,
)
from restore.pipeline import inject_plan
from restore.plan import PlanEntry, load_plan, save_plan

if TYPE_CHECKING:
    from restore.inject import InjectResult


def run_inject(entries: list[PlanEntry], opts: dict, password: str | None = None) -> InjectResult:
    """Append ``entries`` to the --to target exactly once, with a progress bar on a terminal."""
    spec = opts["target"]
    if password is None and wants_imap(spec):
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


def finish_inject(result: InjectResult, opts: dict, rows: usercsv.Rows, diff=None,
                  not_selected: int = 0) -> int:
    """Print the outcome and write --report; the exit status, 1 when something could not be written.

    ``rows``: the --report rows known before the run (the diff's, or the plan's);
    ``not_selected``: plan lines left out for a user filter (neither written nor failed).
    """
    reported = usercsv.write(opts["report_file"], usercsv.add_inject(rows, result)) \
        if opts["report_file"] else 0
    if opts["as_json"]:
        doc = result.as_dict()
        doc["not_selected"] = not_selected
        if opts["report_file"]:
            doc["report"] = {"file": opts["report_file"], "users": reported}
        if diff is not None:
            # One shape for every problem, so a script reads user/ref/reason from each;
            # the diff's own class and where stay beside them.
            found = [{"user": p.user or "", "ref": p.where, **p.as_dict()} for p in diff.problems]
            doc = {"window": diff.window.to_json(), "counts": diff.counts, **doc,
                   "problems": cast("list[dict]", doc["problems"]) + found}
        report.print_json(doc)
    else:
        report.print_inject(result, opts["target"], not_selected)
        if opts["report_file"]:
            report.print_report_written(opts["report_file"], reported)
    failed = result.failed or (diff is not None and diff.counts["unreadable"] + diff.counts["unroutable"])
    return 1 if failed else 0


@command()
@click.argument("plan", type=click.Path(dir_okay=False))
@option("--to", "target", required=True, metavar="TARGET", stage="writing",
        help="maildir: template or imap(s):// URL to append to.")
@inject_options
@imap_options
@selection_options
@report_option
@json_option
def inject(**opts: Any) -> int:
    """Append the messages of PLAN to TARGET, exactly once.

    Append only: nothing in the target is deleted, overwritten or reordered.
    Every message is journaled, so a re-run (after success or a crash)
    writes each message once. Exit 1 when some messages could not be written.
    """
    entries, bad_lines = load_plan(opts["plan"])
    for exc in bad_lines:
        click.echo(f"mailrestore: skipping {exc}", err=True)
    users = selection(opts)
    selected = [e for e in entries if users(e.user)]
    result = run_inject(selected, opts)
    for exc in bad_lines:
        result.failed += 1
        result.problems.append(Problem("plan", str(exc), user=""))
    return finish_inject(result, opts, usercsv.from_plan(selected),
                         not_selected=len(entries) - len(selected))


@command()
@pair_options
@reading_options
@option("--to", "target", required=True, metavar="TARGET", stage="writing",
        help="Where to append; usually the replica itself.")
@window_options
@option("--plan", "plan_file", type=click.Path(dir_okay=False), stage="output",
        help="Also keep the plan in FILE.")
@inject_options
@imap_options
@selection_options
@report_option
@json_option
def restore(**opts: Any) -> int:
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
    rows = usercsv.from_diff(result) if opts["report_file"] else {}
    return finish_inject(injected, opts, rows, diff=result)
