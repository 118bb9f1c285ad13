"""Shared option bundles, so every command spells --json, --jobs, --catalog alike.

Every option belongs to a stage of the pipeline (``STAGES``): ``--help`` and
the man pages list options stage by stage, so the help teaches the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from restore.diff import FAILING
from restore.identity import MATCH_MODES
from restore.recipients import DEFAULT_RECIPIENT_HEADERS

F = Callable[..., Any]

# Stage -> section title, in pipeline order.
STAGES = {
    "sources": "Sources",
    "matching": "Matching",
    "window": "Window",
    "selection": "Selection",
    "writing": "Writing",
    "output": "Output",
    "general": "General",
}


class StagedOption(click.Option):
    """A click option that knows its pipeline stage (a key of ``STAGES``)."""

    def __init__(self, *args: Any, stage: str = "general", **kwargs: Any):
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        super().__init__(*args, **kwargs)
        self.stage = stage


def option(*decls: str, stage: str, **kwargs: Any) -> F:
    """``click.option`` for an option of ``stage``."""
    return click.option(*decls, cls=StagedOption, stage=stage, **kwargs)


def _stack(*decorators: F) -> F:
    def apply(func: F) -> F:
        for deco in reversed(decorators):
            func = deco(func)
        return func

    return apply


class Size(click.ParamType):
    """A size in bytes: ``256M``, ``1G``, ``500K`` (powers of 1024) or a plain number."""

    name = "size"
    UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        number, unit = (text[:-1], text[-1]) if text[-1:] in self.UNITS else (text, "")
        if not number.isdigit() or int(number) == 0:
            self.fail(f"{value!r}: expected a size like 256M, 1G or 500K", param, ctx)
        return int(number) * self.UNITS[unit]


max_message_size_option = option(
    "--max-message-size", type=Size(), default="256M", show_default=True, metavar="SIZE",
    stage="sources",
    help="A message bigger than this (decompressed) is unreadable, 'too large'; read without "
    "holding more than this.")

catalog_option = option(
    "--catalog", type=click.Path(dir_okay=False), stage="sources",
    help="Fingerprint cache (SQLite). Default: the user cache directory.")

reading_options = _stack(
    catalog_option,
    max_message_size_option,
    option("--alias-map", type=click.Path(dir_okay=False), stage="matching",
           help="File of 'alias@domain user@domain' lines (# comments); applied once."),
    option("--recipient-header", "recipient_headers", multiple=True, metavar="NAME",
           stage="matching",
           help="Envelope header naming the recipient; repeatable; the first present wins. "
           f"Default: {', '.join(DEFAULT_RECIPIENT_HEADERS)}."),
    option("--match", type=click.Choice(MATCH_MODES), default="auto", show_default=True,
           stage="matching",
           help="Identity rule: Message-ID+Date+From (auto), Message-ID alone, or also equal "
           "bodies (strict)."),
)

imap_options = _stack(
    option("--password-file", type=click.Path(dir_okay=False), stage="sources",
           help="File holding the IMAP password (else $MAILRESTORE_PASSWORD, else a prompt)."),
    option("--insecure", is_flag=True, stage="sources", help="Do not verify TLS certificates."),
)

selection_options = _stack(
    option("--user", "user_masks", multiple=True, metavar="MASK", stage="selection",
           help="Only users matching MASK (shell-style: '*@example.com', 'alice*'); repeatable."),
    option("--users", "users_file", type=click.Path(dir_okay=False), stage="selection",
           help="Only the users listed in FILE, one per line (# comments); an IMAP replica "
           "reads these users (default: the archive's recipients)."),
    option("--exclude-user", "exclude_users", multiple=True, metavar="MASK", stage="selection",
           help="Leave out users matching MASK; repeatable."),
    option("--shard", metavar="K/N", stage="selection",
           help="Only the users of shard K of N (0 <= K < N; a stable hash of the address), "
           "so N hosts can split one restore, each with its own journal and catalog."),
)

pair_options = _stack(
    option("--archive", "archives", multiple=True, required=True, metavar="STORE",
           stage="sources", help="Gateway archive (read-only); repeatable."),
    option("--replica", required=True, metavar="STORE", stage="sources",
           help="The promoted replica."),
)

window_options = _stack(
    option("--since", default="auto", show_default=True, metavar="TIME|auto", stage="window",
           help="Start of the gap (exclusive): ISO 8601 (no offset: UTC) or a time as printed."),
    option("--until", default="auto", show_default=True, metavar="TIME|auto", stage="window",
           help="End of the gap (inclusive): ISO 8601 (no offset: UTC) or a time as printed."),
    option("--gap", type=click.IntRange(min=1), default=None, metavar="N", stage="window",
           help="Of the gaps detected, use only the Nth (default: all of them)."),
    option("--create-missing", is_flag=True, stage="matching",
           help="Plan mail for users with no mailbox on the replica instead of "
           "reporting them unroutable."),
)

def _classes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = [] if value.strip() == "none" else [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAILING]
    if unknown or (not names and value.strip() != "none"):
        raise click.BadParameter(
            f"{value!r}: expected classes from {', '.join(FAILING)}, comma-separated, or none")
    return tuple(names)


def fail_on_option(default: str, what: str) -> F:
    """``--fail-on CLASSES``: which classes make the command exit 1."""
    return option(
        "--fail-on", default=default, show_default=True, metavar="CLASSES", callback=_classes,
        stage="output",
        help=f"Exit 1 when any {what} has one of these classes (comma-separated; 'none': "
        f"never). E.g. --fail-on missing: is the gap closed?")


journal_options = _stack(
    option("--state", type=click.Path(dir_okay=False), stage="window",
           help="Journal whose remembered window(s) to use (default: that of --to TARGET, "
           "else the replica's)."),
    option("--to", "target", metavar="TARGET", stage="window",
           help="The target the gap was (or will be) restored to: its journal remembers "
           "the window (default: the replica)."),
)

json_option = option("--json", "as_json", is_flag=True, stage="output",
                     help="Print one JSON document.")

report_option = option(
    "--report", "report_file", type=click.Path(dir_okay=False), metavar="FILE.csv",
    stage="output",
    help="Also write one row per user (missing, restored, already present, failed, "
    "unroutable, first and last received in the gap) as CSV for a spreadsheet.")

inject_options = _stack(
    option("--jobs", "-j", type=click.IntRange(1, 64), default=4, show_default=True,
           stage="writing", help="Mailboxes written in parallel (one connection each)."),
    option("--folder", default=None, metavar="F", stage="writing",
           help="Folder to append to (default: the plan's, INBOX); created if missing."),
    option("--flags", default="", metavar="F", stage="writing",
           help="Flags for restored mail, e.g. '\\Seen' (default none: shows as unread)."),
    option("--max-rate", type=click.FloatRange(min=0, min_open=True), default=None, metavar="N",
           stage="writing",
           help="Append at most N messages per second across all jobs (default: as fast as "
           "the target takes them), to spare a live server."),
    option("--keyword", metavar="NAME", stage="writing",
           help="Mark restored mail with the IMAP keyword NAME (e.g. '$Restored') so users can "
           "search for it; in Maildir as Dovecot stores keywords (dovecot-keywords)."),
    option("--bad-item-limit", type=click.IntRange(min=1), default=None, metavar="N",
           stage="writing",
           help="Stop cleanly after N messages failed (refused by the target, unreadable, "
           "refused by the plan's seal) and print the command that resumes (default: go on)."),
    # Not dir_okay=False: a directory is a journal error (one line, exit 3) like any other.
    option("--state", type=click.Path(), stage="writing",
           help="Journal (SQLite) of messages done. Default: per target in the user state "
           "directory."),
    option("--dry-run", is_flag=True, stage="writing",
           help="Show what would be written; write nothing."),
)
