"""The private Dovecot the benchmarks write into: tests/dovecot.py's, with three knobs.

`mail_fsync` (optimized, as the tests run it; never or always to see what
Dovecot's own fsyncs cost), `homes`, a function from a user to the home
directory that holds its Maildir, so Dovecot can serve an existing tree such
as a replica laid out as ROOT/%d/%n/Maildir, and `mode`:

  default       Dovecot's defaults, as the tests run it: a new imap-login
                process per connection and a new imap process per login
                (`service_count = 1`, Dovecot's "high-security mode")
  performance   what an administrator sets for a bulk load, Dovecot's
                documented "high-performance mode": login processes serve
                many connections (`service imap-login { service_count = 0 }`)
                and imap processes are reused from login to login
                (`service imap { service_count = 0 }`), one of each kept
                ready per CPU (`process_min_avail`)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dovecot import Dovecot, dovecot_installed  # noqa: E402

__all__ = ["MODES", "Dovecot", "dovecot_installed", "private_dovecot"]

MODES = ("default", "performance")


def performance_settings() -> str:
    ready = os.cpu_count() or 1
    return f"  service_count = 0\n  process_min_avail = {ready}\n"


def private_dovecot(users: Iterable[str] = (), mail_fsync: str = "optimized",
                    homes: Callable[[str], Path] | None = None, mode: str = "default") -> Dovecot:
    """A Dovecot (not started) with these settings."""
    if mode not in MODES:
        raise ValueError(f"unknown Dovecot mode {mode!r}")

    class Server(Dovecot):
        def _home(self, user: str) -> Path:
            return homes(user) if homes else super()._home(user)

        def _config(self) -> str:
            config = super()._config().replace("mail_fsync = optimized",
                                               f"mail_fsync = {mail_fsync}")
            if mode == "performance":
                for service in ("service imap-login {\n", "service imap {\n"):
                    if service not in config:
                        raise RuntimeError(f"tests/dovecot.py's config has no {service.strip()}")
                    config = config.replace(service, service + performance_settings(), 1)
            return config

    return Server(users)
