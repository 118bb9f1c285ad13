"""Target writers: ``open_target("maildir:/var/vmail/%d/%n/Maildir")`` or an IMAP URL."""

from __future__ import annotations

from dataclasses import dataclass

from restore.errors import UsageError
from restore.targets.base import Message, Outcome, Target, TargetSession

__all__ = ["Message", "Outcome", "Target", "TargetOptions", "TargetSession", "open_target"]


@dataclass
class TargetOptions:
    """What opening a target may need besides its spec."""

    password: str | None = None   # IMAP: from --password-file / MAILRESTORE_PASSWORD / prompt
    insecure: bool = False        # IMAP: skip TLS certificate verification
    create_missing: bool = False  # Maildir: create a user's Maildir that does not exist


def open_target(spec: str, options: TargetOptions | None = None) -> Target:
    """Open a target for appending; UsageError for bad syntax, TargetError if unusable."""
    options = options or TargetOptions()
    kind, sep, rest = spec.partition(":")
    if kind == "maildir" and sep and rest:
        from restore.targets.maildir import MaildirTarget

        return MaildirTarget(rest, create_missing=options.create_missing)
    if kind in ("imap", "imaps") and rest.startswith("//") and len(rest) > 2:
        from restore.targets.imap import ImapTarget

        if options.password is None:
            raise UsageError(f"{spec}: no password (--password-file or MAILRESTORE_PASSWORD)")
        return ImapTarget(spec, options.password, options.insecure)
    raise UsageError(
        f"bad TARGET {spec!r}: expected maildir:PATH, imap://[LOGIN@]HOST[:PORT] "
        "or imaps://[LOGIN@]HOST[:PORT]"
    )
