"""What the administrator reads: rich tables on stdout, tqdm progress on stderr.

Nothing in the core imports this module; the CLI hands results to it.
"""

from __future__ import annotations

import heapq
import json
import shlex
import sys
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from restore.pipeline import ProgressBar
from restore.times import human, iso, to_the_second

if TYPE_CHECKING:   # rich is imported when something is printed: a silent cron run skips it
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from restore.errors import Problem

SHOW_USERS = 25
SHOW_PROBLEMS = 20


def console() -> Console:
    from rich.console import Console

    # Mail is hostile: a Message-ID or folder name like "[/]" or ":smile:" must be
# printed as written, so rich markup and emoji codes are off everywhere.
    # Piped or mailed by cron there is no terminal width: keep Message-IDs whole.
    width = None if sys.stdout.isatty() else 250
    return Console(file=sys.stdout, highlight=False, soft_wrap=True, markup=False, emoji=False,
                   width=width)


def bold(text: str) -> Text:
    from rich.text import Text

    return Text(text, style="bold")


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def print_json(doc: Any) -> None:
    # Written as it is encoded: with indent, json.dumps builds the whole text
    # in pieces first (~1 KB per user of a diff: 23 MB at 20,000 users).
    json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def warn(text: str) -> None:
    sys.stderr.write(f"mailrestore: {text}\n")


def memory_note(memory, reused: bool, recorded: list) -> str | None:
    """What the journal did with the window: reused (the evidence says so), recorded, or not."""
    if recorded or memory.replaced:
        n = len(memory.windows)
        these = "this window" if n == 1 else f"these {n} windows"
        instead = (f" It replaces {plural(len(memory.replaced), 'window')} remembered before."
                   if memory.replaced else "")
        return (f"Remembered in journal {memory.path}: later diff, restore and audit runs use "
                f"{these} (give --since/--until to override).{instead}")
    if memory.windows and not reused:
        return (f"Journal {memory.path} remembers {plural(len(memory.windows), 'window')}; "
                "this run uses the one given.")
    return None


class TqdmBar(ProgressBar):
    def __init__(self, label: str, total: int | None):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, unit="msg", file=sys.stderr, leave=False,
                        dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.bar.update(n)

    def show_rate(self, per_second: float) -> None:
        self.bar.set_postfix_str(f"appended {per_second:,.1f}/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


def progress_factory(enabled: bool):
    """Progress bars only on a terminal (SPEC.md): cron logs stay clean."""
    if enabled and sys.stderr.isatty():
        return TqdmBar
    from restore.pipeline import no_progress

    return no_progress


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]],
          numbers: bool = True) -> Table:
    """A table; ``numbers``: every column but the first holds numbers, right-aligned."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for i, col in enumerate(columns):
        t.add_column(col, justify="right" if numbers and i else "left")
    for row in rows:
        t.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    return t


def print_scan(spec: str, summary: dict) -> None:
    out = console()
    out.print(bold(spec), f": {plural(summary['messages'], 'message')}, "
              f"{plural(summary['unreadable'], 'unreadable item')}", sep="")
    if summary["first"] is not None:
        out.print(f"received from {human(summary['first'])} to {human(summary['last'])}")
    out.print(f"catalog: {summary['reused']:,} units unchanged, {summary['read']:,} read, "
              f"{summary['dropped']:,} gone since the last scan")
    rows = [(u or "(not per user)", f, n) for u, f, n in summary["folders"]]
    if rows:
        out.print(table(None, ("user", "folder", "messages"), rows[:200]))
        if len(rows) > 200:
            out.print(f"... {len(rows) - 200:,} more user/folder rows in --json")
    print_problems(out, summary["problems"])


def print_diff(result, plan_file: str | None = None, planned: int = 0,
               next_hint: str | None = None, memory: str | None = None) -> None:
    out = console()
    c = result.counts
    print_windows(out, result.window, result.windows)
    if not result.selection.everyone and any(w.source.startswith("auto") for w in result.windows):
        out.print(f"  detected from the mail of {result.selection.describe()} only; the whole "
                  "incident's window (a diff without a user filter) is surer: give it with "
                  "--since/--until")
    if memory:
        out.print(memory)
    out.print()
    # The users with the most missing, without sorting every user (20,000 and more).
    shown = heapq.nsmallest(SHOW_USERS, result.users.items(),
                            key=lambda kv: (-kv[1]["missing"], kv[0]))
    rows = [(u, v["present"], v["missing"], v["outside-window"], v["duplicate"])
            for u, v in shown]
    if rows:
        out.print(table("Per user", ("user", "present", "missing", "outside-window", "duplicate"),
                        rows))
        if len(result.users) > SHOW_USERS:
            rest = sum(v["missing"] for v in result.users.values()) - sum(r[2] for r in rows)
            out.print(f"... and {len(result.users) - SHOW_USERS:,} more users with "
                      f"{rest:,} missing (all in --json)")
        out.print()
    deleted = f"{c['deleted']:,} deleted by their users, " if c["deleted"] else ""
    out.print(
        bold("Totals:"), f"{c['present']:,} present, {c['missing']:,} missing (to restore), "
        f"{deleted}{c['outside-window']:,} outside the window, {c['duplicate']:,} duplicate, "
        f"{c['unroutable']:,} unroutable: {result.pairs:,} (user, message) pairs; "
        f"{plural(c['unreadable'], 'unreadable archive item')}"
    )
    print_problems(out, result.problems)
    if c["outside-window"]:
        out.print(f"{plural(c['outside-window'], 'message')} absent outside the window: most "
                  "likely deleted by their users, so not restored.")
    if c["deleted"]:
        out.print(f"{plural(c['deleted'], 'message')} inside the window: in the mailbox after the "
                  "window was remembered, gone since: deleted by their users, so not restored.")
    if plan_file:
        out.print(f"\nPlan: {plural(planned, 'message')} written to {plan_file}")
    if next_hint:
        out.print(next_hint)


def print_config(path: str, found: bool, profile: str | None, rows: list[dict]) -> None:
    """``mailrestore config``: what each option defaults to, and why."""
    out = console()
    out.print(bold("Configuration file:"), path if found else f"{path} (none)")
    out.print(bold("Profile:"), profile or "none (--profile NAME)")
    out.print()

    def shown(value: object) -> str:
        if isinstance(value, list):
            return " ".join(shlex.quote(str(v)) for v in value) or "-"
        return "-" if value is None or value == "" else str(value)

    out.print(table(None, ("setting", "value", "from", "commands"),
                    [(r["setting"], shown(r["value"]), r["source"], ", ".join(r["commands"]))
                     for r in rows], numbers=False))
    out.print()
    out.print("The command line wins over all of these; MAILRESTORE_PASSWORD is the IMAP "
              "password and is never shown.")


def print_report_written(path: str, users: int) -> None:
    console().print(f"Report: {plural(users, 'user')} written to {path}")


def print_windows(out: Console, window, windows: list) -> None:
    """The window(s) mail is restored from, each with the evidence it was found on."""
    if len(windows) <= 1:
        w = windows[0] if windows else window
        out.print(bold("Window:"), "none" if w.empty else
                  f"{human(w.since)} (exclusive) to {human(w.until)} ({w.source})")
        out.print(f"  {w.evidence}")
        return
    out.print(bold("Windows:"), f"{len(windows)} gaps, all restored (--gap N keeps only the Nth)")
    for n, w in enumerate(windows, 1):
        out.print(f"  {n}. {human(w.since)} (exclusive) to {human(w.until)} ({w.source})")
        out.print(f"     {w.evidence}")


def print_problems(out: Console, problems: list[Problem]) -> None:
    if not problems:
        return
    out.print()
    out.print(bold("Problems:"))
    unroutable = Counter(p.reason for p in problems if p.kind == "unroutable")
    for reason, n in sorted(unroutable.items()):
        out.print(f"  unroutable  {plural(n, 'message')}: {reason}")
    others = [p for p in problems if p.kind != "unroutable"]
    for p in others[:SHOW_PROBLEMS]:
        out.print(f"  {p.kind}  {p.where}: {p.reason}")
    if len(others) > SHOW_PROBLEMS:
        out.print(f"  ... {len(others) - SHOW_PROBLEMS:,} more (all in --json)")


def print_audit(result, findings: list[dict], others: dict[str, int], next_step: list[str],
                verbose: bool = False) -> None:
    """The cron mail: short, and enough to act on.

    ``findings``: the missing mail per user; ``others``: the counts of the
    other --fail-on classes found; ``next_step``: the arguments of the
    command that writes the plan; ``verbose``: say what was checked and what
    users deleted, too. Plain text, not rich markup: Message-IDs are written
    by strangers, and a ``[/]`` or ``:smile:`` in one must print as it is.
    """
    w = result.window
    c = result.counts
    lines = []
    if verbose:
        lines.append(f"mailrestore audit: archive mail received from {human(w.since)} to "
                     f"{human(w.until)}: {c['present']:,} in its mailbox, {c['missing']:,} "
                     f"missing, {c['deleted']:,} deleted by its user (seen in the mailbox by an "
                     "earlier run, gone now).")
    if findings:
        total = sum(f["missing"] for f in findings)
        lines.append(f"mailrestore audit: {total:,} archived message(s) received between "
                     f"{human(w.since)} and {human(w.until)} are not in their mailbox.")
        for f in findings:
            lines.append(f"  {f['user']}: {f['missing']:,} missing, received {human(f['oldest'])} "
                         f"to {human(f['newest'])}")
            lines.extend(f"      {mid}" for mid in f["message_ids"])
        if result.unfinished:
            lines.append(f"  {result.unfinished:,} of them inside the window(s) a restore "
                         "remembers: that restore is not finished; run it again.")
            lines.extend(f"  {human(w.since)} (exclusive) to {human(w.until)}: {w.evidence}"
                         for w in result.remembered)
        lines.extend(f"  A failover? {gap.evidence}" for gap in result.gaps)
        lines += [
            "Next: list them in a plan, check it, and put them back (with this audit's other "
            "options):",
            f"  mailrestore {shlex.join(next_step)}",
            f"  mailrestore inject gap.jsonl --to {shlex.quote(result.replica.spec)}",
        ]
    if others:
        lines.append("mailrestore audit: " + ", ".join(f"{n:,} {cls}" for cls, n in others.items())
                     + " (--fail-on):")
        shown = [p for p in result.problems if p.kind in others][:SHOW_PROBLEMS]
        lines.extend(f"  {p.kind}  {p.where}: {p.reason}" for p in shown)
    sys.stdout.write("".join(f"{line}\n" for line in lines))


def print_inject(result, target: str, not_selected: int = 0, resume: str | None = None) -> None:
    out = console()
    dry = result.dry_run
    verb, failing = ("would append", "would fail") if dry else ("appended", "failed")
    if dry and result.would_write:
        out.print(table(f"Dry run: nothing written; {plural(result.appended, 'message')} would "
                        f"be appended to {target}",
                        ("user", "folder", "received", "size", "Message-ID"),
                        [(e.user, e.folder, iso(e.received), e.size, e.message_id or "-")
                         for e in result.would_write]))
        if result.appended > len(result.would_write):
            out.print(f"... {result.appended - len(result.would_write):,} more")
        out.print()
    rows = [(u, c.appended, c.already_present, c.failed)
            for u, c in sorted(result.users.items(), key=lambda kv: (-kv[1].failed, kv[0]))]
    if rows:
        out.print(table("Per user", ("user", verb, "already present", failing), rows[:SHOW_USERS]))
        if len(rows) > SHOW_USERS:
            out.print(f"... and {len(rows) - SHOW_USERS:,} more users (all in --json)")
    out.print(bold("Totals:"), f"{result.appended:,} {verb}, {result.already_present:,} already "
              f"present (journal or target), {result.failed:,} {failing}")
    if result.rate is not None and result.appended:
        out.print(f"Rate: {result.rate:,.1f} messages appended per second "
                  f"({result.appended:,} in {result.seconds:,.1f} s of writing)")
    if not_selected:
        out.print(f"{plural(not_selected, 'plan line')} for users not selected: left out.")
    if result.journal:
        run = f", run {result.run}" if result.run is not None else ""
        out.print(f"Journal: {result.journal}{run}")
    if result.problems:
        out.print()
        out.print(bold("Would not be written:" if dry else "Not written:"))
        for p in result.problems[:SHOW_PROBLEMS]:
            out.print(f"  {p.user or '-'}  {p.where}: {p.reason}")
        if len(result.problems) > SHOW_PROBLEMS:
            out.print(f"  ... {len(result.problems) - SHOW_PROBLEMS:,} more (all in --json)")
        if not dry and not result.stopped:
            out.print("Fix the cause (quota, mailbox, archive item) and run the same command "
                      "again: what is done is journaled and will not be written twice.")
    if result.stopped:
        out.print()
        out.print(bold("Stopped:"), f"{result.stopped}; {plural(result.left, 'message')} not "
                  "attempted. Fix the cause (quota, mailbox, archive item) and resume with the "
                  "same command: what is done is journaled and will not be written twice.")
        if resume:
            out.print(f"  {resume}")
    for w in result.warnings[:SHOW_PROBLEMS]:
        out.print(f"  warning  {w.user}  {w.where}: {w.reason}")
    if dry:
        out.print("Dry run: nothing was written, not even the journal. Run again without "
                  "--dry-run to write.")


def print_runs(journal: str, target: str | None, runs: list) -> None:
    out = console()
    out.print(bold("Journal:"), f"{journal} (target {target or 'not recorded yet'})")
    if not runs:
        out.print("No run recorded.")
        return
    rows = []
    for r in runs:
        did = (f"{r.removed:,} removed, {r.left_alone:,} left (run {r.undoes})"
               if r.command == "undo" else
               f"{r.appended:,} appended, {r.already_present:,} present, {r.failed:,} failed")
        exit_code = "-" if r.exit_code is None else str(r.exit_code)
        rows.append((str(r.id), r.command, to_the_second(r.started), to_the_second(r.ended), did,
                     f"{r.status.value} ({exit_code})", r.plan or "-"))
    out.print(table(None, ("run", "command", "started", "ended", "what it did", "status (exit)",
                           "plan"), rows))
    out.print("Take a run back with: mailrestore undo RUN --state " + shlex.quote(journal))


def print_undo(result, target: str) -> None:
    out = console()
    verb = "would be removed" if result.dry_run else "removed"
    out.print(bold("Totals:"), f"run {result.run}: {plural(result.removed, 'message')} {verb} "
              f"from {target}, {plural(len(result.folders), 'created folder')} {verb}, "
              f"{len(result.left):,} left alone")
    if result.left:
        out.print()
        out.print(bold("Left alone:"))
        for p in result.left[:SHOW_PROBLEMS]:
            out.print(f"  {p.user or '-'}  {p.where}: {p.reason}")
        if len(result.left) > SHOW_PROBLEMS:
            out.print(f"  ... {len(result.left) - SHOW_PROBLEMS:,} more (all in --json)")
    run = f", run {result.undo_run}" if result.undo_run is not None else ""
    out.print(f"Journal: {result.journal}{run}")
    if result.dry_run:
        out.print("Dry run: nothing was removed, not even journaled. Run again without "
                  "--dry-run to remove.")


def print_merged(doc: dict) -> None:
    """``report merge``: one row per shard, the totals, and what the merge warns about."""
    out = console()
    shards = doc["merge"]["shards"]

    def window(w: dict | None) -> str:
        if not w or not w.get("since"):
            return "-"
        return f"{w['since']} to {w['until']}"

    columns: list[str] = []
    totals: list[int] = []
    if "counts" in doc:
        columns += ["missing", "present", "outside-window", "duplicate", "unroutable", "unreadable"]
        totals += [doc["counts"].get(c, 0) for c in columns]
    if "appended" in doc:
        written = ["appended", "already_present", "failed"]
        columns += written
        totals += [doc.get(c, 0) for c in written]
    rows = [(s["shard"] or s["file"], window(s.get("window"))) for s in shards]
    out.print(table(f"{plural(len(shards), 'report')} merged", ("shard", "window"), rows,
                    numbers=False))
    out.print(table("Totals", ("", *columns), [("all shards", *totals)]))
    problems = doc.get("problems") or []
    if problems:
        out.print(f"{plural(len(problems), 'problem')} (each once; all in --json)")
    for warning in doc["merge"]["warnings"]:
        out.print(bold("Warning:"), warning)
