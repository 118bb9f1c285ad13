"""Shared option bundles, so every command spells --json, --jobs, --catalog alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from restore.identity import MATCH_MODES
from restore.recipients import DEFAULT_RECIPIENT_HEADERS

F = Callable[..., Any]


def _stack(*decorators: F) -> F:
    def apply(func: F) -> F:
        for deco in reversed(decorators):
            func = deco(func)
        return func

    return apply


catalog_option = click.option(
    "--catalog",
    type=click.Path(dir_okay=False),
    help="Fingerprint cache (SQLite). Default: the user cache directory.",
)

reading_options = _stack(
    catalog_option,
    click.option(
        "--alias-map",
        type=click.Path(dir_okay=False),
        help="File of 'alias@domain user@domain' lines (# comments); applied once.",
    ),
    click.option(
        "--recipient-header",
        "recipient_headers",
        multiple=True,
        metavar="NAME",
        help="Envelope header naming the recipient; repeatable; the first present wins. "
        f"Default: {', '.join(DEFAULT_RECIPIENT_HEADERS)}.",
    ),
    click.option(
        "--match",
        type=click.Choice(MATCH_MODES),
        default="auto",
        show_default=True,
        help="Identity rule: Message-ID+Date+From (auto), Message-ID alone, or also equal bodies (strict).",
    ),
)

imap_options = _stack(
    click.option(
        "--password-file",
        type=click.Path(dir_okay=False),
        help="File holding the IMAP password (else $MAILRESTORE_PASSWORD, else a prompt).",
    ),
    click.option("--insecure", is_flag=True, help="Do not verify TLS certificates."),
)

selection_options = _stack(
    click.option("--user", "user_masks", multiple=True, metavar="MASK",
                 help="Only users matching MASK (shell-style: '*@example.com', 'alice*'); "
                 "repeatable."),
    click.option("--users", "users_file", type=click.Path(dir_okay=False),
                 help="Only the users listed in FILE, one per line (# comments); an IMAP "
                 "replica reads these users (default: the archive's recipients)."),
    click.option("--exclude-user", "exclude_users", multiple=True, metavar="MASK",
                 help="Leave out users matching MASK; repeatable."),
)

pair_options = _stack(
    click.option(
        "--archive",
        "archives",
        multiple=True,
        required=True,
        metavar="STORE",
        help="Gateway archive (read-only); repeatable.",
    ),
    click.option("--replica", required=True, metavar="STORE", help="The promoted replica."),
)

window_options = _stack(
    click.option("--since", default="auto", show_default=True, metavar="TIME|auto",
                 help="Start of the gap (exclusive), ISO 8601."),
    click.option("--until", default="auto", show_default=True, metavar="TIME|auto",
                 help="End of the gap (inclusive), ISO 8601."),
    click.option("--gap", type=click.IntRange(min=1), default=None, metavar="N",
                 help="Of the gaps detected, use only the Nth (default: all of them)."),
    click.option("--create-missing", is_flag=True,
                 help="Plan mail for users with no mailbox on the replica instead of "
                 "reporting them unroutable."),
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")

report_option = click.option(
    "--report", "report_file", type=click.Path(dir_okay=False), metavar="FILE.csv",
    help="Also write one row per user (missing, restored, already present, failed, "
    "unroutable, first and last received in the gap) as CSV for a spreadsheet.")

inject_options = _stack(
    click.option("--jobs", "-j", type=click.IntRange(1, 64), default=4, show_default=True,
                 help="Mailboxes written in parallel (one connection each)."),
    click.option("--folder", default=None, metavar="F",
                 help="Folder to append to (default: the plan's, INBOX); created if missing."),
    click.option("--flags", default="", metavar="F",
                 help="Flags for restored mail, e.g. '\\Seen' (default none: shows as unread)."),
    click.option("--state", type=click.Path(dir_okay=False),
                 help="Journal (SQLite) of messages done. Default: per target in the user state directory."),
    click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing."),
)
