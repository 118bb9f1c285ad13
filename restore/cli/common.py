"""What the commands share: turning options into a Job, store options and a user selection."""

from __future__ import annotations

import re
import shlex
import sys

from restore import report
from restore.catalog import Catalog
from restore.credentials import get_password
from restore.diff import DiffSettings
from restore.errors import JournalError, LockedError, UsageError
from restore.incident import Memory
from restore.pipeline import Job
from restore.recipients import DEFAULT_RECIPIENT_HEADERS, AliasMap
from restore.selection import UserSelection
from restore.stores import StoreOptions
from restore.stores.base import DEFAULT_MAX_MESSAGE_SIZE
from restore.times import parse_time_option


def public_argv() -> list[str]:
    """The command line as a run row records it: a password someone put in a URL masked."""
    return [re.sub(r"^([a-z]+://[^/:@]*):[^/@]*@", r"\1:***@", arg) for arg in sys.argv[1:]]


def resume_command() -> str:
    """The command line that goes on after a stop: the same one (the journal skips what is done)."""
    return shlex.join(["mailrestore", *public_argv()])


def same_target(replica: str, target: str) -> bool:
    """Whether ``restore``'s TARGET is its replica, however spelled (read once, then)."""
    from restore.targets import canonical_target

    try:
        return canonical_target(replica) == canonical_target(target)
    except UsageError:
        return False     # an mbox replica, say: not a target


def wants_imap(*specs: str | None) -> bool:
    return any(s and s.startswith(("imap://", "imaps://")) for s in specs)


def selection(opts: dict) -> UserSelection:
    """The users the command line selects (--user, --users, --exclude-user, --shard)."""
    return UserSelection.from_options(opts.get("user_masks") or (), opts.get("users_file"),
                                      opts.get("exclude_users") or (), opts.get("shard"))


def imap_password(opts: dict, url: str) -> str:
    """The password for an IMAP URL; the URL is checked first, as it must not hold one itself."""
    from restore.imapconn import parse_imap_url

    parse_imap_url(url)     # a password in the URL is refused there, and never shown
    return get_password(opts.get("password_file"), url)


def store_options(opts: dict, *specs: str | None,
                  users: UserSelection | None = None) -> StoreOptions:
    password = None
    if wants_imap(*specs):
        imap_spec = next(s for s in specs if s and s.startswith(("imap://", "imaps://")))
        password = imap_password(opts, imap_spec)
    users = users if users is not None else selection(opts)
    return StoreOptions(password=password, insecure=bool(opts.get("insecure")),
                        users=users.listed(), selection=users, match=opts.get("match") or "auto",
                        max_message_size=opts.get("max_message_size") or DEFAULT_MAX_MESSAGE_SIZE)


def make_job(opts: dict, *specs: str | None, progress: bool = True) -> Job:
    users = selection(opts)
    aliases = AliasMap.load(opts["alias_map"]) if opts.get("alias_map") else AliasMap()
    settings = DiffSettings(
        match=opts.get("match") or "auto",
        recipient_headers=tuple(opts.get("recipient_headers") or DEFAULT_RECIPIENT_HEADERS),
        aliases=aliases,
        since=parse_time_option(opts.get("since"), "--since"),
        until=parse_time_option(opts.get("until"), "--until"),
        gap=opts.get("gap"),
        create_missing=bool(opts.get("create_missing")),
        users=users,
    )
    since, until = settings.since, settings.until
    if since is not None and until is not None and since >= until:
        raise UsageError("--since must be earlier than --until")
    return Job(
        catalog=Catalog(opts.get("catalog")),
        settings=settings,
        store_options=store_options(opts, *specs, users=users),
        progress=report.progress_factory(progress and not opts.get("as_json")),
    )


def recall(opts: dict, job: Job, *, always: bool = False) -> Memory:
    """The run's journal (--state, --to, the replica) and the window(s) it remembers.

    They replace detection unless --since/--until are given (``always``:
    the audit, whose own window is always given, uses them to tell a
    restore that is not finished from a new loss).
    """
    memory = Memory.of(opts.get("state"), opts.get("target"), opts["replica"])
    given = job.settings.since is not None or job.settings.until is not None
    if always or not given:
        job.settings.remembered = memory.windows
    return memory


def remember(memory: Memory, result, *, by: str, replace: bool = False) -> list:
    """Record the window(s) ``result`` used if the journal remembers none (or ``replace``).

    A diff does not wait for an inject holding the journal, nor stop for a
    journal it cannot write: it leaves the recording to the next run, and
    says so (a restore's inject then reports the journal's trouble itself).
    """
    if (memory.windows and not replace) or not result.selection.everyone:
        return []      # a user filter's window is not the whole incident's
    try:
        return memory.record(result.windows, by=by, at=result.started)
    except (LockedError, JournalError) as exc:
        report.warn(f"window not remembered: {exc}")
        return []


def memory_doc(memory: Memory, job: Job, recorded: list) -> dict:
    """The ``journal`` field of a diff's or restore's JSON."""
    return {"path": str(memory.path) if memory.path else None,
            "remembered": [w.to_json() for w in memory.windows],
            "reused": bool(job.settings.remembered), "recorded": len(recorded)}
