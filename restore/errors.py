"""Every error mailrestore raises on purpose, and the exit code each becomes.

``restore.cli.main`` is the only place where an error becomes an exit code
(SPEC.md); ``audit --format nagios`` turns any of them into UNKNOWN (3).

class                  exit  raised when
MailrestoreError       1     (the base; not raised itself)
UsageError             2     bad option, bad STORE syntax, bad plan line, unusable --catalog
CannotRunError         3     the job cannot start or go on at all:
  StoreError           3       a store cannot be opened or read (missing path, login refused)
  TargetError          3       a target cannot be opened or written at all
    TargetUnavailable  3         the target kept failing after every retry
  WorkerDied           3       a scan worker process ended without answering
  LockedError          3       another run holds the lock (cron overlap, journal in use)
  CatalogError         3       the catalog database failed (disk full, corrupt file)
    CatalogBusy        3         another command kept the catalog past the wait
  JournalError         3       the journal cannot be read or written
InvariantError         70    a bug: the class counts do not add up (EX_SOFTWARE)
Interrupted            130   Ctrl-C (SIGINT) while appending; says what was written so far
TransientError         -     a connection dropped; retried, and never reaches main()
ItemError              -     one item failed: the run records a ``Problem`` and goes on
  UnreadableItem       -       an archive item cannot be read
  RefusedItem          -       a plan line inject will not follow (outside the plan's archives,
                               or its item changed since the diff)
  PermanentError       -       the target refused this message (or user) for good
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class MailrestoreError(Exception):
    """Base of every error mailrestore raises on purpose."""

    exit_code = 1


class UsageError(MailrestoreError):
    """The command line or an input file is malformed."""

    exit_code = 2


class CannotRunError(MailrestoreError):
    """The job cannot start or go on at all."""

    exit_code = 3


class StoreError(CannotRunError):
    """A store cannot be opened (missing path, unreachable server, login refused)."""


class TargetError(CannotRunError):
    """A target cannot be opened or written at all."""


class TargetUnavailable(TargetError):
    """The target kept failing after every retry."""


class WorkerDied(CannotRunError):
    """A scan worker process ended without answering (killed, out of memory)."""


class LockedError(CannotRunError):
    """Another run holds the lock (cron overlap)."""


class CatalogError(CannotRunError):
    """The catalog database failed while in use (a full disk, a damaged file)."""


class CatalogBusy(CatalogError):
    """Another command kept the catalog longer than this one waits for it."""

    def __init__(self, path: Path, waited: float):
        super().__init__(
            f"catalog {path} is in use by another mailrestore command (waited {waited:.0f} s);"
            " let it finish, or give this one its own --catalog")


class JournalError(CannotRunError):
    """The journal cannot be read or written: without it, exactly-once cannot be kept."""


class InvariantError(MailrestoreError):
    """The class counts do not add up: a bug, never to be papered over."""

    exit_code = 70    # EX_SOFTWARE (sysexits.h): an internal error, not the user's


class Interrupted(MailrestoreError):
    """Ctrl-C stopped an inject after the batches in hand; ``done`` is what it wrote until then."""

    exit_code = 130     # 128 + SIGINT, as shells report it

    def __init__(self, message: str, done: object = None):
        super().__init__(message)
        self.done = done


class TransientError(MailrestoreError):
    """Worth retrying on a fresh connection (connection dropped, server restarting)."""


class ItemError(MailrestoreError):
    """One item could not be read or written; carries the reason for the report."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class UnreadableItem(ItemError):
    """An archive item cannot be read: corrupt, truncated, not a message."""


class RefusedItem(ItemError):
    """A plan line inject will not follow: not in the plan's archives, or changed since the diff."""


class PermanentError(ItemError):
    """The target refused this message for good (quota, too big, no such user)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One item the run could not read, route or write, and went on without.

    ``where`` is what an administrator can open (a path, ``PATH:OFFSET``) or
    a plan entry's ref; ``kind`` the diff class (``unreadable``,
    ``unroutable``, ``replica-unreadable``), "" for inject's; ``user`` whom
    it concerns, None when nobody.
    """

    where: str
    reason: str
    kind: str = ""
    user: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The diff's and scan's JSON shape (SPEC.md): class, where, user if any, reason."""
        doc = {"class": self.kind, "where": self.where}
        if self.user is not None:
            doc["user"] = self.user
        doc["reason"] = self.reason
        return doc

    def as_inject_dict(self) -> dict[str, str]:
        """Inject's JSON shape (SPEC.md): user, ref, reason."""
        return {"user": self.user or "", "ref": self.where, "reason": self.reason}
