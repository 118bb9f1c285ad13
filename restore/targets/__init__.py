"""Target writers: ``open_target("maildir:/var/vmail/%d/%n/Maildir")`` or an IMAP URL.

``canonical_target`` names the real target behind a spelling: what a
journal is keyed by and compared with, so that ``maildir:vmail//%d/%n/Maildir/``
typed in /srv and ``maildir:/srv/vmail/%d/%n/Maildir`` are one target, as are
``imap://admin@Mail.example.com/`` and ``imap://admin@mail.example.com:143``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from restore.errors import UsageError
from restore.mailnames import is_template
from restore.targets.base import Message, Outcome, Target, TargetSession

__all__ = ["Message", "Outcome", "Target", "TargetOptions", "TargetSession", "canonical_target",
           "open_target"]

BAD_TARGET = ("bad TARGET {!r}: expected maildir:PATH, imap://[LOGIN@]HOST[:PORT] "
              "or imaps://[LOGIN@]HOST[:PORT]")


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
    raise UsageError(BAD_TARGET.format(spec))


def canonical_target(spec: str) -> str:
    """The one spelling of the target ``spec`` names (never holding a password).

    Maildir: the path made absolute, empty components (doubled or trailing
    slashes) dropped, the fixed part before the first ``%`` variable
    resolved to a real path, the variable part kept. IMAP: scheme, LOGIN,
    lowercased host and explicit port; no path, no trailing slash.
    """
    kind, sep, rest = spec.partition(":")
    if kind == "maildir" and sep and rest:
        return f"maildir:{_canonical_path(rest)}"
    if kind in ("imap", "imaps") and rest.startswith("//") and len(rest) > 2:
        from restore.imapconn import parse_imap_url

        return parse_imap_url(spec).canonical
    raise UsageError(BAD_TARGET.format(spec))


def _canonical_path(path: str) -> str:
    parts = [part for part in os.path.join(os.getcwd(), path).split("/") if part]
    first = next((i for i, part in enumerate(parts) if is_template(part)), len(parts))
    root = os.path.realpath("/" + "/".join(parts[:first]))
    return "/".join([root.rstrip("/"), *parts[first:]]) or "/"
