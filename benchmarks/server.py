"""The private Dovecot the benchmarks write into: tests/dovecot.py's, with two knobs.

`mail_fsync` (optimized, as the tests run it; never or always to see what
Dovecot's own fsyncs cost) and `homes`, a function from a user to the home
directory that holds its Maildir, so Dovecot can serve an existing tree such
as a replica laid out as ROOT/%d/%n/Maildir.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dovecot import Dovecot, dovecot_installed  # noqa: E402

__all__ = ["Dovecot", "dovecot_installed", "private_dovecot"]


def private_dovecot(users: Iterable[str] = (), mail_fsync: str = "optimized",
                    homes: Callable[[str], Path] | None = None) -> Dovecot:
    """A Dovecot (not started) with these settings."""

    class Server(Dovecot):
        def _home(self, user: str) -> Path:
            return homes(user) if homes else super()._home(user)

        def _config(self) -> str:
            return super()._config().replace("mail_fsync = optimized", f"mail_fsync = {mail_fsync}")

    return Server(users)
