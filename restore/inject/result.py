"""What an inject run did: counts per user, problems, and the tally the workers keep."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from restore.errors import Problem
from restore.plan import PlanEntry

SHOW_WOULD_WRITE = 200    # a dry run lists the first few; the counts cover every message


@dataclass(slots=True)
class UserCounts:
    appended: int = 0
    already_present: int = 0
    failed: int = 0


@dataclass
class InjectResult:
    """What an inject run did (or, with ``dry_run``, would do)."""

    appended: int = 0
    already_present: int = 0
    failed: int = 0
    users: dict[str, UserCounts] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    dry_run: bool = False
    would_write: list[PlanEntry] = field(default_factory=list)   # dry run: the first it would write
    journal: str = ""            # the journal used (path), "" when none
    run: int | None = None       # its run id
    seconds: float = 0.0         # spent writing: from the first user's start to the last's end
    stopped: str = ""            # why the run stopped early (--bad-item-limit), "" when it did not
    left: int = 0                # messages a stopped run did not get to: the resume's

    @property
    def rate(self) -> float | None:
        """Messages appended per second of writing; None for a dry run."""
        if self.dry_run:
            return None
        return self.appended / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """The ``inject --json`` document (SPEC.md)."""
        return {
            "appended": self.appended,
            "already_present": self.already_present,
            "failed": self.failed,
            "dry_run": self.dry_run,
            "journal": self.journal or None,
            "run": self.run,
            "seconds": round(self.seconds, 3),
            "rate": None if self.rate is None else round(self.rate, 2),
            "stopped": {"reason": self.stopped, "left": self.left} if self.stopped else None,
            "users": [
                {"user": user, "appended": c.appended, "already_present": c.already_present,
                 "failed": c.failed}
                for user, c in sorted(self.users.items())
            ],
            "problems": [p.as_inject_dict() for p in self.problems],
            "warnings": [p.as_inject_dict() for p in self.warnings],
        }


class Tally:
    """The result, updated by every worker; reports progress as messages settle.

    After ``bad_item_limit`` failed messages it sets ``stop``: no worker
    starts another batch; those in flight finish and are journaled.
    """

    def __init__(self, dry_run: bool, progress: Callable[[int], None] | None,
                 show_rate: Callable[[float], None] | None = None,
                 bad_item_limit: int | None = None):
        self.result = InjectResult(dry_run=dry_run)
        self.progress = progress
        self.show_rate = show_rate
        self.bad_item_limit = bad_item_limit
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def start(self) -> None:
        self.started = time.monotonic()

    def finish(self) -> None:
        self.result.seconds = time.monotonic() - self.started

    def add(self, user: str, *, appended: int = 0, present: int = 0,
            failed: Sequence[Problem] = (), warnings: Sequence[Problem] = (),
            would_write: Sequence[PlanEntry] = ()) -> None:
        with self.lock:
            result = self.result
            room = SHOW_WOULD_WRITE - len(result.would_write)
            if would_write and room > 0:
                result.would_write.extend(would_write[:room])
            counts = result.users.setdefault(user, UserCounts())
            counts.appended += appended
            counts.already_present += present
            counts.failed += len(failed)
            result.appended += appended
            result.already_present += present
            result.failed += len(failed)
            result.problems.extend(failed)
            result.warnings.extend(warnings)
            limit = self.bad_item_limit
            if failed and limit is not None and result.failed >= limit and not result.stopped:
                result.stopped = (f"bad-item limit reached: --bad-item-limit {limit},"
                                  f" {result.failed:,} failed")
                self.stop.set()
            if self.progress and appended + present + len(failed):
                self.progress(appended + present + len(failed))
            if self.show_rate and appended:
                self.show_rate(result.appended / max(time.monotonic() - self.started, 1e-3))

