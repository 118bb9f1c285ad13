"""One error hierarchy; the CLI turns each family into an exit code (SPEC.md).

UsageError      exit 2   bad option, bad STORE syntax, bad plan line
CannotRunError  exit 3   store not found, connection or login failed
  StoreError             ... while reading a store
  TargetError            ... while writing a target
ItemError       (never exits) one archive item or one message failed; the
                run records it as a problem and goes on with the rest.
"""

from __future__ import annotations


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


class WorkerDied(CannotRunError):
    """A scan worker process ended without answering (killed, out of memory)."""


class LockedError(CannotRunError):
    """Another run holds the lock (cron overlap)."""


class ItemError(MailrestoreError):
    """One item could not be read or written; carries the reason for the report."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class UnreadableItem(ItemError):
    """An archive item cannot be read: corrupt, truncated, not a message."""


class TransientError(MailrestoreError):
    """Worth retrying on a fresh connection (connection dropped, server restarting)."""


class PermanentError(ItemError):
    """The target refused this message for good (quota, too big, no such user)."""
