"""``mailrestore inject`` and ``restore``: append a plan to a target, exactly once."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

import click

from restore import report, usercsv
from restore.cli.command import command
from restore.cli.common import (
    make_job,
    memory_doc,
    public_argv,
    recall,
    remember,
    resume_command,
    same_target,
    selection,
)
from restore.cli.options import (
    catalog_option,
    imap_options,
    inject_options,
    json_option,
    max_message_size_option,
    option,
    pair_options,
    reading_options,
    report_option,
    selection_options,
    window_options,
)
from restore.errors import Problem, UsageError
from restore.journal import RunInfo, file_sha256
from restore.mailnames import keyword_problem
from restore.pipeline import (
    DiffPlan,
    InjectSettings,
    Job,
    PlanFileSource,
    PlanSource,
    inject_plan,
    readers_for,
)
from restore.plan import Seal, open_plan, save_plan

if TYPE_CHECKING:
    from restore.diff import ScannedStore
    from restore.inject import InjectResult


def write_flags(opts: dict) -> tuple[str, ...]:
    """The flags restored mail gets (--flags, --keyword); UsageError for a bad keyword."""
    flags = tuple(opts["flags"].split()) if opts["flags"] else ()
    keyword = opts["keyword"]
    if keyword is None:
        return flags
    problem = keyword_problem(keyword)
    if problem:
        raise UsageError(f"--keyword {keyword!r} is not an IMAP keyword: {problem}")
    return flags if keyword in flags else (*flags, keyword)


def run_inject(plan: PlanSource, total: int, opts: dict, job: Job, seal: Seal, run_info: RunInfo,
               scanned_target: ScannedStore | None = None) -> InjectResult:
    """Append ``plan`` (``total`` messages at most) to the --to target exactly once, with a
    progress bar on a terminal."""
    settings = InjectSettings(
        target=opts["target"], password=job.store_options.password,
        insecure=bool(opts["insecure"]), create_missing=bool(opts.get("create_missing")),
        state=opts["state"], jobs=opts["jobs"], folder=opts["folder"],
        flags=write_flags(opts), dry_run=opts["dry_run"],
        max_rate=opts["max_rate"], bad_item_limit=opts["bad_item_limit"],
        readers=readers_for(total))
    bar = report.progress_factory(not opts["as_json"])(
        "checking" if settings.dry_run else "appending", total)
    try:
        return inject_plan(plan, settings, job, seal=seal, run_info=run_info,
                           scanned_target=scanned_target, progress=bar.update,
                           show_rate=bar.show_rate)
    finally:
        bar.close()


def finish_inject(result: InjectResult, opts: dict, rows: usercsv.Rows, diff=None,
                  not_selected: int = 0, journal: dict | None = None) -> int:
    """Print the outcome and write --report; the exit status, 1 when something could not be written.

    ``rows``: the --report rows known before the run (the diff's, or the plan's);
    ``not_selected``: plan lines left out for a user filter (neither written nor failed);
    ``journal``: what the restore's journal remembers (``memory_doc``).
    """
    reported = usercsv.write(opts["report_file"], usercsv.add_inject(rows, result)) \
        if opts["report_file"] else 0
    resume = resume_command() if result.stopped else None
    if opts["as_json"]:
        doc = result.as_dict()
        if resume:
            doc["stopped"] = {**cast("dict", doc["stopped"]), "resume": resume}
        doc["not_selected"] = not_selected
        if selection(opts).shard:
            doc["shard"] = selection(opts).shard_label     # for report merge
        if opts["report_file"]:
            doc["report"] = {"file": opts["report_file"], "users": reported}
        if diff is not None:
            # One shape for every problem, so a script reads user/ref/reason from each;
            # the diff's own class and where stay beside them.
            found = [{"user": p.user or "", "ref": p.where, **p.as_dict()} for p in diff.problems]
            doc = {"window": diff.window.to_json(), "windows": [w.to_json() for w in diff.windows],
                   "counts": diff.counts, **doc, "journal": journal,
                   "problems": cast("list[dict]", doc["problems"]) + found}
        report.print_json(doc)
    else:
        report.print_inject(result, opts["target"], not_selected, resume)
        if opts["report_file"]:
            report.print_report_written(opts["report_file"], reported)
    failed = result.failed or (diff is not None and diff.counts["unreadable"]
                               + diff.counts["unroutable"])
    return 1 if failed else 0


@command()
@click.argument("plan", type=click.Path(dir_okay=False))
@option("--to", "target", required=True, metavar="TARGET", stage="writing",
        help="maildir: template or imap(s):// URL to append to.")
@option("--archive", "archives", multiple=True, metavar="STORE", stage="sources",
        help="Archive the plan may read items from (repeatable); instead of the plan's "
        "header line, e.g. for a plan whose header a script dropped.")
@option("--create-missing", is_flag=True, stage="writing",
        help="Maildir: create the mailbox of a user the target does not have yet.")
@catalog_option
@inject_options
@max_message_size_option
@imap_options
@selection_options
@report_option
@json_option
def inject(**opts: Any) -> int:
    """Append the messages of PLAN to TARGET, exactly once.

    Append only: nothing in the target is deleted, overwritten or reordered
    (only `mailrestore undo` takes a run back). A message the journal has not
    recorded as done is first looked up in TARGET (read into the catalog),
    so a lost journal or another spelling of TARGET writes nothing twice.
    Items are read only from the archives the plan's header names, and must
    still have the plan's fingerprint. Exit 1 when some messages could not
    be written or plan lines were refused.
    """
    write_flags(opts)       # a bad --keyword is refused before anything is read
    plan = open_plan(opts["plan"])
    archives = opts["archives"] or (plan.header.archives if plan.header else ())
    if not archives:
        raise UsageError(
            f"plan {opts['plan']} has no header line naming the archives it was made from, so "
            "its lines cannot be checked: keep the header when filtering (jq -c "
            "'select(.mailrestore_plan or .user == \"alice@example.com\")'), or name the "
            "archives with --archive STORE")
    seal = Seal(archives, plan.header.match if plan.header else "auto")
    bad: list[UsageError] = []

    def skip(exc: UsageError) -> None:
        click.echo(f"mailrestore: skipping {exc}", err=True)
        bad.append(exc)

    rows: usercsv.Rows = {}
    source = PlanFileSource(plan, selection(opts), skip,
                            (lambda lines: rows.update(usercsv.from_plan(lines[1])))
                            if opts["report_file"] else None)
    job = make_job(opts, opts["target"])
    info = RunInfo("inject", public_argv(), os.path.abspath(opts["plan"]),
                   file_sha256(opts["plan"]))
    result = run_inject(source, plan.entries, opts, job, seal, info)
    for exc in bad:
        result.failed += 1
        result.problems.append(Problem("plan", str(exc), user=""))
    return finish_inject(result, opts, rows, not_selected=source.not_selected)


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
    exactly as `diff --plan` and `inject` would. The target's journal
    remembers the window(s): a second restore reuses them, so once the gap is
    filled it appends nothing, whatever users did since. Exit 1 when some
    messages could not be written or archive items were unreadable or
    unroutable.
    """
    write_flags(opts)
    job = make_job(opts, opts["replica"], opts["target"], *opts["archives"])
    memory = recall(opts, job)
    result = job.diff(opts["archives"], opts["replica"])
    # What this restore appends comes from these windows: a re-run keeps to them.
    recorded = [] if opts["dry_run"] else remember(
        memory, result, by="restore", replace=not job.settings.remembered)
    planned = result.counts["missing"]
    header = result.plan_header()
    if opts["plan_file"]:
        save_plan(opts["plan_file"], result.plan(), header)
    if not opts["as_json"]:
        report.print_diff(result, opts["plan_file"], planned, memory=report.memory_note(
            memory, bool(job.settings.remembered), recorded))
        click.echo()
    info = RunInfo("restore", public_argv(),
                   os.path.abspath(opts["plan_file"]) if opts["plan_file"] else "",
                   file_sha256(opts["plan_file"]) if opts["plan_file"] else "")
    injected = run_inject(DiffPlan(result), planned, opts, job, Seal(header.archives, header.match),
                          info,
                          scanned_target=result.replica
                          if same_target(opts["replica"], opts["target"])
                          else None)
    if not opts["dry_run"] and same_target(opts["replica"], opts["target"]):
        # Only users every planned message of whom is there: a failure or a stopped
        # run (--bad-item-limit) leaves the rest missing, for the next run to write.
        result.record_restored(sorted(
            user for user, c in injected.users.items()
            if not c.failed and c.appended + c.already_present
            == result.users.get(user, {}).get("missing")))
    rows = usercsv.from_diff(result) if opts["report_file"] else {}
    return finish_inject(injected, opts, rows, diff=result,
                         journal=memory_doc(memory, job, recorded))
