"""The committer thread: durability in groups for targets that stage (Maildir)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from restore.errors import TargetUnavailable
from restore.journal import Journal, Row, State
from restore.targets.base import Outcome, Staged, Target

COMMIT_LIMIT = 4096       # messages staged and not yet committed, across workers


@dataclass
class Group:
    """One staged batch of one user, on its way to the committer."""

    settle: Callable[[Sequence[Outcome]], list[Row]]   # the user's: rows to mark done
    staged: Staged


class Committer:
    """Makes the batches every worker stages durable together: one round, two syncs, many batches.

    Workers ``submit`` and go on; the committer's thread takes everything
    submitted since its last round. At most ``COMMIT_LIMIT`` messages wait,
    so a slow disk holds the workers back rather than letting them run ahead.
    """

    def __init__(self, target: Target, journal: Journal | None, stop: threading.Event,
                 record: Callable[[State, list[Row]], None]):
        self.target = target
        self.journal = journal
        self.stop = stop
        self.record = record
        self.waiting: list[Group] = []
        self.staged = 0          # messages submitted, not yet committed
        self.closing = False
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="inject-commit", daemon=True)
        self.thread.start()

    def submit(self, group: Group) -> None:
        with self.cond:
            while self.staged >= COMMIT_LIMIT and self.error is None:
                self.cond.wait()
            if self.error is not None:
                raise TargetUnavailable(f"{self.target.describe()}: {self.error}")
            self.waiting.append(group)
            self.staged += group.staged.size
            self.cond.notify_all()

    def close(self) -> None:
        """Commit what is waiting, and stop."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.thread.join()
        if self.error is not None:
            raise TargetUnavailable(f"{self.target.describe()}: {self.error}")

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.waiting and not self.closing:
                    self.cond.wait()
                groups, self.waiting = self.waiting, []
                if not groups:
                    return
            try:
                self._round(groups)
            except BaseException as exc:  # noqa: BLE001 - the workers and the run see it
                self.stop.set()
                with self.cond:
                    self.error = exc
                    self.cond.notify_all()
                return
            with self.cond:
                self.staged -= sum(group.staged.size for group in groups)
                self.cond.notify_all()

    def _round(self, groups: list[Group]) -> None:
        if self.journal is not None:
            self.journal.flush()     # the pending rows, before any file is linked
        outcomes = self.target.commit([group.staged for group in groups])
        done: list[Row] = []
        for group, results in zip(groups, outcomes, strict=True):
            done += group.settle(results)
        self.record(State.DONE, done)
