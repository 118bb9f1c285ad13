"""``mailrestore runs`` and ``undo``: what the runs against a target did, and taking one back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from restore import report
from restore.cli.command import command
from restore.cli.common import public_argv, wants_imap
from restore.cli.options import json_option, option
from restore.credentials import get_password
from restore.errors import UsageError

journal_options = [
    option("--state", type=click.Path(), metavar="FILE", stage="writing",
           help="The journal (as given to inject --state)."),
    option("--to", "target", metavar="TARGET", stage="writing",
           help="The target whose default journal to read (any spelling of it)."),
]


def with_journal_options(func: Any) -> Any:
    for decorate in reversed(journal_options):
        func = decorate(func)
    return func


def journal_path(opts: dict) -> tuple[Path, str | None]:
    """The journal --state or --to names, and the canonical target if --to was given."""
    from restore.journalfile import default_journal_path
    from restore.targets import canonical_target

    if not opts["state"] and not opts["target"]:
        raise UsageError("which journal? give --state FILE, or --to TARGET for its default journal")
    canonical = canonical_target(opts["target"]) if opts["target"] else None
    path = Path(opts["state"]) if opts["state"] else default_journal_path(canonical or "")
    return path, canonical


@command()
@with_journal_options
@json_option
def runs(**opts: Any) -> int:
    """List the runs a journal recorded: inject, restore and undo.

    For each: its id, when it started and ended, the command, the plan (and
    its sha256), what it appended, found already present or failed (for an
    undo: removed and left alone), how it ended and its exit status. A run
    whose process was killed shows as interrupted. Read-only.
    """
    from restore.journal import Journal

    path, canonical = journal_path(opts)
    journal = Journal.open_readonly(path, canonical)
    if journal is None:
        raise UsageError(f"no journal at {path}: no run has been recorded there")
    with journal:
        target, recorded = journal.target, journal.runs()
    if opts["as_json"]:
        report.print_json({"journal": str(path), "target": target,
                           "runs": [r.as_dict() for r in recorded]})
    else:
        report.print_runs(str(path), target, recorded)
    return 0


@command()
@click.argument("run", type=click.IntRange(min=1))
@with_journal_options
@option("--dry-run", is_flag=True, stage="writing",
        help="Check and list what would be removed; remove nothing.")
@option("--password-file", type=click.Path(dir_okay=False), stage="sources",
        help="File holding the IMAP password (else $MAILRESTORE_PASSWORD, else a prompt).")
@option("--insecure", is_flag=True, stage="sources", help="Do not verify TLS certificates.")
@json_option
def undo(**opts: Any) -> int:
    """Take run RUN back: remove exactly the messages it appended.

    Each message is removed only if it is still where RUN put it and still
    the same message (Maildir: its file in new/ or cur/, with any flags;
    IMAP: its UID, same UIDVALIDITY and fingerprint, removed with UID
    EXPUNGE, which needs UIDPLUS). Mail a user has moved or changed since is
    left alone and listed; nothing RUN did not write is touched. Folders RUN
    created are removed again once empty. The undo is journaled: a second
    undo of RUN removes nothing. Exit 1 when something was left alone.
    """
    from restore.journal import Journal, RunInfo
    from restore.targets import TargetOptions, open_target
    from restore.undo import undo as take_back

    path, canonical = journal_path(opts)
    if not path.exists():
        raise UsageError(f"no journal at {path}: no run has been recorded there")
    if opts["dry_run"]:
        journal = Journal.open_readonly(path, canonical)
    else:
        journal = Journal(path, canonical)
    assert journal is not None
    with journal:
        spec = opts["target"] or journal.target
        if spec is None:
            raise UsageError(f"journal {path} records no target: give --to TARGET")
        password = get_password(opts["password_file"], spec) if wants_imap(spec) else None
        target = open_target(spec, TargetOptions(password=password, insecure=opts["insecure"]))
        result = take_back(journal, target, opts["run"], RunInfo("undo", public_argv(),
                                                                  undoes=opts["run"]),
                           dry_run=opts["dry_run"])
    if opts["as_json"]:
        report.print_json(result.as_dict())
    else:
        report.print_undo(result, spec)
    return 1 if result.left else 0
