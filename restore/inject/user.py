"""One user's share of an inject run: journal first, target check, batches, retries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from itertools import groupby
from typing import TypeVar

from restore.errors import (
    ItemError,
    PermanentError,
    Problem,
    RefusedItem,
    TargetError,
    TargetUnavailable,
    TransientError,
)
from restore.inject.committer import Group
from restore.inject.context import Context, Delivery
from restore.journal import Row, State, entry_key
from restore.plan import PlanEntry
from restore.targets.base import Message, Outcome, TargetSession

log = logging.getLogger(__name__)

T = TypeVar("T")


class UserRun:
    """One user's entries, written through one session by one worker."""

    def __init__(self, user: str, entries: list[PlanEntry], folder: str | None, ctx: Context):
        self.user = user
        self.ctx = ctx
        deliveries = [Delivery(e, folder or e.folder, entry_key(e), e.received) for e in entries]
        deliveries.sort(key=lambda delivery: (delivery.received, delivery.entry.ref))
        self.deliveries = deliveries
        self.retries = 0
        self.checked = False        # the target check has read this user's mailbox
        self._reading: Iterator[list[Delivery]] | None = None

    def skip_done(self) -> None:
        """Count what the journal has done or found present (or what the plan lists twice)."""
        journal = self.ctx.journal
        records = journal.status(self.user) if journal else {}
        todo, seen, present = [], set(), 0
        for delivery in self.deliveries:
            record = records.get((delivery.folder, delivery.key))
            if (delivery.folder, delivery.key) in seen or (
                    record and record.state in (State.DONE, State.PRESENT)):
                present += 1
                continue
            seen.add((delivery.folder, delivery.key))
            if record and record.state is State.PENDING:
                delivery.in_doubt, delivery.planned_id = True, record.planned_id
            todo.append(delivery)
        self.deliveries = todo
        self.ctx.skipped += present
        self.ctx.tally.add(self.user, present=present)

    def open_session(self) -> TargetSession:
        """A session to the user's mailbox, retrying while the target is briefly away.

        The first batch's items are read meanwhile (``start_reading``).
        """
        self.start_reading()
        return self._retrying(lambda: self.ctx.target.session(self.user))

    def start_reading(self) -> None:
        """Start reading the first batch's items, so that the login and the target check
        do not wait for the archive, nor the archive for them."""
        if self._reading is None:
            self._reading = self._batches()

    def _retrying(self, attempt: Callable[[], T], lost: Callable[[], None] = lambda: None) -> T:
        """``attempt()`` until it gets through: after each TransientError, ``lost()`` and back off.

        The retries are counted per user and start again after each batch
        written; past the last delay the target is given up (TargetUnavailable).
        """
        while True:
            try:
                return attempt()
            except TransientError as exc:
                lost()
                self._back_off(exc)

    def _back_off(self, exc: Exception) -> None:
        delays = self.ctx.retry_delays
        if self.retries >= len(delays) or self.ctx.stop.is_set():
            raise TargetUnavailable(
                f"{self.ctx.target.describe()}: {self.user}: gave up after {self.retries} retries: "
                f"{exc}"
            ) from None
        log.warning("%s: %s; retrying in %.1fs", self.user, exc, delays[self.retries])
        self.ctx.stop.wait(delays[self.retries])
        self.retries += 1

    def run(self, session: TargetSession | None) -> None:
        if self.ctx.dry_run:
            self.dry_run()
            return
        try:
            if self.ctx.stop.is_set():
                return      # stopped before this user's turn: left for the resume
            if session is None:
                session = self.open_session()
            self.ctx.journal_created(self.user, session)
            self.start_reading()
            # The target check, while the first batch is still being read.
            session = self._batch(session, [])
            assert self._reading is not None
            for batch in self._reading:
                session = self._batch(session, batch)
                self.retries = 0
        except TargetUnavailable:
            if self.ctx.tally.result.stopped:
                return      # stopping anyway: the batch in doubt stays pending for the resume
            raise
        except (PermanentError, TargetError) as exc:
            # The target refuses this user only: the others go on.
            self.fail_all(exc.reason if isinstance(exc, ItemError) else str(exc))
        finally:
            if session is not None:
                close_quietly(session)
            if self.ctx.check is not None:
                self.ctx.check.forget(self.user)

    def _batches(self) -> Iterator[list[Delivery]]:
        """The user's batches, the next one's items read ahead while this one is handled.

        The first batch's reading starts now, not at the first ``next()``.
        """
        batches = split(self.deliveries, self.ctx.batch_size, self.ctx.target.batch_bytes)
        ahead = self.ctx.prefetch(batches[0]) if batches else None
        return self._in_turn(batches, ahead)

    def _in_turn(self, batches: list[list[Delivery]], ahead: Future[None] | None
                 ) -> Iterator[list[Delivery]]:
        for i, batch in enumerate(batches):
            if self.ctx.stop.is_set():
                return
            if ahead is not None:
                ahead.result()
            ahead = self.ctx.prefetch(batches[i + 1]) if i + 1 < len(batches) else None
            yield batch

    def dry_run(self) -> None:
        """What a run would do for this user, touching nothing."""
        check = self.ctx.check
        reason = check.read(self.user, None) if check is not None else None
        reason = reason or self.ctx.target.probe(self.user)
        if reason is not None:
            self.fail_all(reason)
            return
        try:
            for batch in self._batches():
                read = [(d, m) for d in batch if (m := self._message(d)) is not None]
                ready = self._not_held(read)
                self.ctx.tally.add(self.user, appended=len(ready),
                                   would_write=[delivery.entry for delivery, _ in ready])
        finally:
            if check is not None:
                check.forget(self.user)

    def _not_held(self, read: list[tuple[Delivery, Message]]) -> list[tuple[Delivery, Message]]:
        """Journal as ``present`` what the target holds already; the rest, to write."""
        check = self.ctx.check
        if check is None or not read:
            return read
        keys = [check.key(delivery.entry, message.data) for delivery, message in read]
        held = check.held(self.user, keys)
        if not held:
            return read
        ready, present = [], []
        for (delivery, message), key in zip(read, keys, strict=True):
            if key in held:
                delivery.settled = True
                present.append(delivery)
            else:
                ready.append((delivery, message))
        self.ctx.record(State.PRESENT, [d.row() for d in present])
        self.ctx.tally.add(self.user, present=len(present))
        return ready

    def _batch(self, session: TargetSession | None, batch: list[Delivery]) -> TargetSession:
        """Write one batch, on fresh sessions while the connection keeps dropping."""
        def attempt() -> TargetSession:
            nonlocal session
            if session is None:
                session = self.ctx.target.session(self.user)
                self.ctx.journal_created(self.user, session)
            self._write(session, batch)
            return session

        def lost() -> None:
            nonlocal session
            if session is not None:
                close_quietly(session)
            session = None

        return self._retrying(attempt, lost)

    def _write(self, session: TargetSession, batch: list[Delivery]) -> None:
        if not self.checked and self.ctx.check is not None:
            self.ctx.check.read(self.user, session)     # a dropped connection: read again
            self.checked = True
        unknown: list[tuple[Delivery, Message]] = []
        ready: list[tuple[Delivery, Message]] = []
        found: list[Delivery] = []
        theirs: list[Delivery] = []
        for delivery in batch:
            if delivery.settled:
                continue
            message = self._message(delivery)
            if message is None:
                continue
            if delivery.in_doubt:
                target_id = session.find(delivery.folder, message)
                if target_id is not None:
                    # Under the name this journal promised (Maildir), it is the write in
                    # doubt; under another name, a copy that was there before.
                    name = target_id.partition(":")[0]
                    ours = not delivery.planned_id or name == delivery.planned_id
                    delivery.planned_id, delivery.settled = target_id, True
                    (found if ours else theirs).append(delivery)
                    continue
                ready.append((delivery, message))
            else:
                unknown.append((delivery, message))
        if found:
            self.ctx.record(State.DONE, [d.row(d.planned_id) for d in found])
            written = sum(delivery.attempted for delivery in found)
            self.ctx.tally.add(self.user, appended=written, present=len(found) - written)
        if theirs:
            self.ctx.record(State.PRESENT, [d.row(d.planned_id) for d in theirs])
            self.ctx.tally.add(self.user, present=len(theirs))
        ready += self._not_held(unknown)
        ready.sort(key=lambda pair: (pair[0].received, pair[0].entry.ref))
        for folder, group in groupby(ready, key=lambda pair: pair[0].folder):
            self._append(session, folder, list(group))

    def _message(self, delivery: Delivery) -> Message | None:
        """The message to write, or None when its archive item cannot be read or is refused."""
        if delivery.data is None:
            try:
                delivery.data = self.ctx.read_source(delivery.entry)
            except RefusedItem as exc:
                self._fail([(delivery, exc.reason)])
                return None
            except Exception as exc:  # noqa: BLE001 - one bad archive item must not end the run
                reason = (
                    exc.reason if isinstance(exc, ItemError) else f"{type(exc).__name__}: {exc}"
                )
                self._fail([(delivery, f"cannot read archive item: {reason}")])
                return None
        entry = delivery.entry
        return Message(delivery.data, delivery.received, entry.message_id, entry.fingerprint,
                       self.ctx.flags, delivery.planned_id)

    def _append(self, session: TargetSession, folder: str,
                pairs: list[tuple[Delivery, Message]]) -> None:
        if self.ctx.pace and not self.ctx.pace.take(len(pairs), self.ctx.stop):
            return      # stopping: this batch was not started, nothing of it is in doubt
        deliveries = [delivery for delivery, _ in pairs]
        messages = [replace(m, planned_id=session.prepare(folder, m)) for _, m in pairs]
        for delivery, message in zip(deliveries, messages, strict=True):
            delivery.planned_id, delivery.in_doubt = message.planned_id, True
            delivery.attempted = True
        # The journal must know the promised names before the target holds anything: the
        # rows are committed here and made durable by the committer, or by ``durable``,
        # which the target calls before it can hold any of them (IMAP: while the batch is
        # on its way, before the command's last line).
        self.ctx.record(State.PENDING, [d.row(d.planned_id) for d in deliveries])
        committer = self.ctx.committer
        staged = session.stage(folder, messages) if committer is not None else None
        self.ctx.journal_created(self.user, session)
        if committer is not None and staged is not None:
            committer.submit(Group(partial(self.settle, deliveries), staged))
            return
        outcomes = session.append(folder, messages, ready=self.ctx.durable)
        self.ctx.journal_created(self.user, session)
        self.ctx.record(State.DONE, self.settle(deliveries, outcomes))

    def settle(self, deliveries: list[Delivery], outcomes: Sequence[Outcome]) -> list[Row]:
        """Count what the target did with a batch; the rows of those written, to journal done."""
        done, refused, warnings = [], [], []
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            if outcome.ok:
                delivery.planned_id = outcome.target_id or delivery.planned_id
                delivery.settled = True
                done.append(delivery)
                if outcome.warning:
                    warnings.append(Problem(delivery.entry.ref, outcome.warning, user=self.user))
            else:
                delivery.in_doubt = False  # refused: the target holds nothing of it
                refused.append((delivery, outcome.reason))
        self._fail(refused)
        self.ctx.tally.add(self.user, appended=len(done), warnings=warnings)
        return [d.row(d.planned_id) for d in done]

    def fail_all(self, reason: str) -> None:
        self._fail([(delivery, reason) for delivery in self.deliveries if not delivery.settled])

    def _fail(self, failures: list[tuple[Delivery, str]]) -> None:
        for delivery, _ in failures:
            delivery.settled = True
        # In-doubt rows stay pending: the next run must look before writing.
        self.ctx.record(State.FAILED,
            [delivery.row(reason) for delivery, reason in failures if not delivery.in_doubt])
        self.ctx.tally.add(
            self.user,
            failed=[Problem(d.entry.ref, reason, user=self.user) for d, reason in failures])


def split(deliveries: list[Delivery], most: int, most_bytes: int | None) -> list[list[Delivery]]:
    """Batches of at most ``most`` messages and (but for a single larger one) ``most_bytes``."""
    batches: list[list[Delivery]] = []
    batch: list[Delivery] = []
    size = 0
    for delivery in deliveries:
        if batch and (len(batch) >= most or
                      (most_bytes is not None and size + delivery.entry.size > most_bytes)):
            batches.append(batch)
            batch, size = [], 0
        batch.append(delivery)
        size += delivery.entry.size
    if batch:
        batches.append(batch)
    return batches


def close_quietly(session: TargetSession) -> None:
    try:
        session.close()
    except Exception as exc:  # noqa: BLE001 - a dead connection may fail to say goodbye
        log.debug("closing session: %s", exc)
