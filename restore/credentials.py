"""Where an IMAP password comes from: never the command line, never a log.

In order: ``--password-file FILE`` (its first line), the environment variable
``MAILRESTORE_PASSWORD``, an interactive prompt when stdin is a terminal.
"""

from __future__ import annotations

import getpass
import os
import sys

from restore.errors import UsageError

PASSWORD_ENV = "MAILRESTORE_PASSWORD"


def get_password(password_file: str | None, prompt_for: str) -> str:
    """The password for ``prompt_for`` (an IMAP URL or login, shown in the prompt)."""
    if password_file:
        return _read_password_file(password_file)
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(f"Password for {prompt_for}: ")
    raise UsageError(
        f"no password for {prompt_for}: give --password-file FILE or set {PASSWORD_ENV} "
        "(no terminal to prompt on)"
    )


def _read_password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            first_line = handle.readline()
    except (OSError, UnicodeDecodeError) as error:
        reason = (
            error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
        )
        raise UsageError(f"cannot read password file {path}: {reason}") from None
    password = first_line.rstrip("\r\n")
    if not password:
        raise UsageError(f"password file {path} is empty (the password is its first line)")
    return password
