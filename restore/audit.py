"""The cron check: did every message the gateway accepted reach its mailbox?

Audits archive mail received in ``(now - window, now - grace]``: the grace
period skips mail that may still be in flight. Silent when clean, so cron
mails only on trouble; a lock keeps two overlapping runs from both running.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from restore import locks
from restore.errors import StoreError, UsageError
from restore.times import human, parse_duration

if TYPE_CHECKING:
    from restore.diff import DiffResult
    from restore.pipeline import Job

NAGIOS_STATES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


def run(job: Job, archives: Sequence[str], replica: str, *, now: float, window: str,
        grace: str) -> DiffResult:
    """Diff the archive mail received in ``(now - window, now - grace]``, one run at a time.

    ``window`` and ``grace`` are durations as the options give them (``24h``).
    Absent mail that an earlier diff or audit saw in its mailbox is
    ``deleted``, not missing, unless this run's timeline shows a gap there
    (a failover loses delivered mail too).

    Raises LockedError when another audit of the same stores is running, and
    StoreError when nothing could be checked (``require_a_mailbox``,
    ``require_archive_mail``).
    """
    look_back = parse_duration(window, "--window")
    since, until = audit_bounds(now, look_back, parse_duration(grace, "--grace"))
    job.settings.since, job.settings.until = since, until
    job.settings.consider_from = since - look_back
    job.settings.known_deletions = True
    with exclusive(default_lock_path(list(archives), replica)):
        result = job.diff(archives, replica)
    require_a_mailbox(result)
    require_archive_mail(result, since, until)
    return result


def audit_bounds(now: float, window: float, grace: float) -> tuple[float, float]:
    if grace >= window:
        raise UsageError("--grace must be shorter than --window")
    return now - window, now - grace


def require_a_mailbox(result: DiffResult) -> None:
    """Refuse an all-clear when no archived message could be matched to a mailbox.

    An empty replica (a failed mount) or a path template that matches no user
    makes every message unroutable, and so nothing missing: silence would
    then claim a check that never happened.
    """
    if result.counts["unroutable"] and not result.users:
        raise StoreError(
            f"{result.replica.spec}: none of the {result.counts['unroutable']:,} archived "
            "message(s) has a recipient with a mailbox there; is the replica mounted, and does "
            "its path template match its layout? Nothing was checked"
        )


def require_archive_mail(result: DiffResult, since: float, until: float) -> None:
    """Refuse an all-clear when the archives hold no mail of a window the replica got mail in.

    An archive that is not mounted, or that the gateway stopped writing to,
    is an empty directory: nothing missing, and nothing checked. Taken over
    all the archives together, so a backup MX's archive may stay quiet.
    """
    archived = sum(result.catalog.received_in(a.store_id, since, until) for a in result.archives)
    if archived:
        return
    delivered = result.catalog.received_in(result.replica.store_id, since, until)
    if delivered:
        archives = ", ".join(a.spec for a in result.archives)
        raise StoreError(
            f"archive empty or not mounted: {archives} holds no message received from "
            f"{human(since)} to {human(until)}, while the replica received {delivered:,}; "
            "is it mounted, and is the gateway still archiving? Nothing was checked")


def nagios(findings: dict[str, int], warning: int, critical: int, detail: str = "",
           deleted: int = 0) -> tuple[int, str]:
    """One plugin status line with perfdata, and its exit code.

    ``findings``: the count of each --fail-on class; their total meets the
    thresholds. The perfdata always has ``missing``, with the thresholds, and
    ``deleted``, which never changes the state.
    """
    total = sum(findings.values())
    code = 2 if total >= critical else 1 if total >= warning else 0
    if list(findings) == ["missing"]:
        text = f"{total} message{'s' if total != 1 else ''} missing"
    else:
        text = f"{total} finding{'s' if total != 1 else ''}" + "".join(
            f", {n} {cls}" for cls, n in findings.items())
    if detail:
        text += f" ({detail})"
    perf = f"missing={findings.get('missing', 0)};{warning};{critical};0;" + "".join(
        f" {cls}={n};;;0;" for cls, n in findings.items() if cls != "missing") + (
        f" deleted={deleted};;;0;")
    return code, _status_line(code, f"{text} | {perf}")


def nagios_unknown(reason: str) -> tuple[int, str]:
    """The plugin's answer when the check itself could not run: UNKNOWN, never CRITICAL."""
    return 3, _status_line(3, reason)


def _status_line(code: int, text: str) -> str:
    return f"MAILRESTORE {NAGIOS_STATES[code]} - {text}"


def default_lock_path(archives: list[str], replica: str) -> Path:
    from platformdirs import user_state_dir

    digest = hashlib.sha256("\0".join([*sorted(archives), replica]).encode()).hexdigest()[:16]
    return Path(user_state_dir("mailrestore")) / f"audit-{digest}.lock"


def exclusive(lock_path: Path) -> AbstractContextManager[None]:
    """Hold the audit lock; a second overlapping run fails at once with LockedError."""
    return locks.held(lock_path, "the audit lock", lambda holder: (
        f"another audit of these stores is still running (pid {holder}, lock {lock_path}); "
        "this run did nothing"))
