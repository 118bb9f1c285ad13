"""What an inject run's workers share: the context, each entry on its way, reading ahead."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from restore.inject.committer import Committer
from restore.inject.result import Tally
from restore.journal import Journal, Row, State
from restore.plan import PlanEntry
from restore.ratelimit import TokenBucket
from restore.targets.base import Target, TargetSession

log = logging.getLogger(__name__)


class TargetCheck(Protocol):
    """Whether the target already holds messages (``restore.pipeline.CatalogCheck``)."""

    def key(self, entry: PlanEntry, data: bytes) -> str:
        """The identity key of an entry, under the rule the check compares by."""

    def held(self, user: str, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` that ``user``'s mailbox holds, in any folder. Thread-safe."""

    def read(self, user: str, session: TargetSession | None) -> str | None:
        """Before ``user``'s first look-up: read the mailbox through ``session`` if the check
        works that way (None: a dry run, which opens its own). Why it cannot, or None."""

    def forget(self, user: str) -> None:
        """``user`` is done: what was read of the mailbox can go."""



@dataclass
class Delivery:
    """One plan entry on its way into the target."""

    entry: PlanEntry
    folder: str
    key: str
    received: float
    planned_id: str = ""
    in_doubt: bool = False      # a pending journal row: the target may already hold it
    attempted: bool = False     # this run sent it (so if found, this run appended it)
    data: bytes | None = None   # kept across retries of its batch
    settled: bool = False

    def row(self, detail: str = "") -> Row:
        return Row(self.entry.user, self.folder, self.key, detail, self.entry.ref,
                   self.entry.digest)


@dataclass
class Context:
    """What every user's run shares."""

    target: Target
    journal: Journal | None
    flags: tuple[str, ...]
    read_source: Callable[[PlanEntry], bytes]
    tally: Tally
    batch_size: int
    retry_delays: Sequence[float]
    check: TargetCheck | None = None
    run: int | None = None          # the journal's id of this run
    dry_run: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    # Reads the archive items of a user's next batch while this one is written.
    read_ahead: ThreadPoolExecutor | None = None
    pace: TokenBucket | None = None     # --max-rate, shared by every worker
    committer: Committer | None = None     # the target stages: durability in groups
    read_many: Callable[[list[PlanEntry]], list[bytes | None] | None] | None = None
    todo: int = 0           # messages the journal had not settled, of the users met so far
    skipped: int = 0        # messages the journal had settled before the run (already present)

    def prefetch(self, batch: list[Delivery]) -> Future[None] | None:
        if self.read_ahead is None:
            return None
        return self.read_ahead.submit(load, batch, self.read_source, self.read_many)

    def record(self, state: State, rows: list[Row]) -> None:
        """Journal ``rows`` in ``state`` for this run; a dry run journals nothing."""
        if self.journal and not self.dry_run and rows:
            if state is State.PENDING:
                # Committed without a sync under the journal's lock; ``durable`` (or the
                # committer) syncs them outside it before the target can show any of them:
                # the workers' syncs overlap instead of queueing behind the lock.
                self.journal.mark_pending(rows, self.run, durable=False)
            else:
                self.journal.mark(state, rows, self.run)

    def durable(self) -> None:
        """Make the pending rows recorded so far durable (one sync of the journal's log)."""
        if self.journal and not self.dry_run:
            self.journal.flush()

    def journal_created(self, user: str, session: TargetSession) -> None:
        created = session.take_created()
        if created and self.journal and self.run is not None:
            self.journal.record_created(self.run, user, created)


def load(batch: list[Delivery], read_source: Callable[[PlanEntry], bytes],
          read_many: Callable[[list[PlanEntry]], list[bytes | None] | None] | None = None
          ) -> None:
    """Fill in what can be read; a failure is left for the writer to read again and report.

    ``read_many`` answers None when it cannot take the batch yet: it is read here.
    """
    if read_many is not None:
        wanted = [d for d in batch if d.data is None and not d.settled]
        try:
            got = read_many([d.entry for d in wanted])
            if got is not None:
                for delivery, data in zip(wanted, got, strict=True):
                    delivery.data = data
                return
        except Exception as exc:  # noqa: BLE001 - the readers are gone: read here
            log.warning("reader processes failed (%s); reading in this process", exc)
    for delivery in batch:
        if delivery.data is None and not delivery.settled:
            try:
                delivery.data = read_source(delivery.entry)
            except Exception:  # noqa: BLE001, S112 - reported when the writer reads it itself
                continue

