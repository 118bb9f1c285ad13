"""Append a plan's messages to a target: in parallel across users, in order, exactly once.

Each worker thread takes whole users: one session per user, so one mailbox
is written by one worker, in received-time order. Per user:

1. entries the journal has ``done`` are counted ``already_present``;
2. entries left ``pending`` by an interrupted run are in doubt: the target
   is asked (``session.find``) and they are written only if absent;
3. the rest go in batches: read from the archive, ``prepare`` (the target
   promises a name), journal ``pending``, ``append``, journal ``done``.

An archive item that cannot be read fails that message only. A connection
that drops (``TransientError``) is retried with backoff on a fresh session,
the batch in flight being in doubt. A user the target refuses
(``PermanentError``, e.g. no mailbox) fails that user's messages. A
``TargetError`` on the first session opened means the target itself is
unusable (login refused, no mail root) and ends the run, as does a target
that keeps failing after the retries (``TargetUnavailable``).

The journal is never marked ``failed`` for a message whose presence is
unknown (in doubt): it stays ``pending`` so the next run checks first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import TypeVar

from restore.errors import (
    ItemError,
    PermanentError,
    Problem,
    TargetError,
    TargetUnavailable,
    TransientError,
)
from restore.journal import Journal, Row, State, entry_key
from restore.plan import PlanEntry
from restore.targets.base import Message, Target, TargetSession

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_SIZE = 50
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass
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
    would_write: list[PlanEntry] = field(default_factory=list)   # dry run: what a run writes

    def as_dict(self) -> dict[str, object]:
        """The ``inject --json`` document (SPEC.md)."""
        return {
            "appended": self.appended,
            "already_present": self.already_present,
            "failed": self.failed,
            "dry_run": self.dry_run,
            "users": [
                {"user": user, "appended": c.appended, "already_present": c.already_present,
                 "failed": c.failed}
                for user, c in sorted(self.users.items())
            ],
            "problems": [p.as_inject_dict() for p in self.problems],
            "warnings": [p.as_inject_dict() for p in self.warnings],
        }


class _Tally:
    """The result, updated by every worker; reports progress as messages settle."""

    def __init__(self, dry_run: bool, progress: Callable[[int], None] | None):
        self.result = InjectResult(dry_run=dry_run)
        self.progress = progress
        self.lock = threading.Lock()

    def add(self, user: str, *, appended: int = 0, present: int = 0,
            failed: Sequence[Problem] = (), warnings: Sequence[Problem] = ()) -> None:
        with self.lock:
            result = self.result
            counts = result.users.setdefault(user, UserCounts())
            counts.appended += appended
            counts.already_present += present
            counts.failed += len(failed)
            result.appended += appended
            result.already_present += present
            result.failed += len(failed)
            result.problems.extend(failed)
            result.warnings.extend(warnings)
            if self.progress and appended + present + len(failed):
                self.progress(appended + present + len(failed))


@dataclass
class _Delivery:
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
        return Row(self.entry.user, self.folder, self.key, detail, self.entry.ref)


@dataclass
class _Context:
    """What every user's run shares."""

    target: Target
    journal: Journal | None
    flags: tuple[str, ...]
    read_source: Callable[[PlanEntry], bytes]
    tally: _Tally
    batch_size: int
    retry_delays: Sequence[float]
    stop: threading.Event = field(default_factory=threading.Event)
    # Reads the archive items of a user's next batch while this one is written.
    read_ahead: ThreadPoolExecutor | None = None

    def prefetch(self, batch: list[_Delivery]) -> Future[None] | None:
        if self.read_ahead is None:
            return None
        return self.read_ahead.submit(_load, batch, self.read_source)


def _load(batch: list[_Delivery], read_source: Callable[[PlanEntry], bytes]) -> None:
    """Fill in what can be read; a failure is left for the writer to read again and report."""
    for delivery in batch:
        if delivery.data is None and not delivery.settled:
            try:
                delivery.data = read_source(delivery.entry)
            except Exception:  # noqa: BLE001, S112 - reported when the writer reads it itself
                continue


def inject(
    entries: Iterable[PlanEntry],
    target: Target,
    journal: Journal | None,
    *,
    jobs: int = 1,
    folder: str | None = None,
    flags: tuple[str, ...] = (),
    dry_run: bool = False,
    read_source: Callable[[PlanEntry], bytes],
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
    retry_delays: Sequence[float] = RETRY_DELAYS,
) -> InjectResult:
    """Append ``entries`` to ``target`` exactly once; see the module docstring.

    ``folder`` overrides each entry's folder. ``progress`` is called with the
    number of messages settled since its last call (``tqdm.update``). With
    ``dry_run`` nothing is written, not even the journal (pass one opened
    with ``Journal.open_readonly``, or None): the result counts as
    ``appended`` what a run would write.
    """
    tally = _Tally(dry_run, progress)
    ctx = _Context(target, journal, flags, read_source, tally, batch_size, retry_delays)
    runs = [_UserRun(user, group, folder, ctx) for user, group in _by_user(entries).items()]
    # Biggest mailboxes first, so no single late start draws the run out.
    runs.sort(key=lambda run: (-len(run.deliveries), run.user))
    for run in runs:
        run.skip_done()
    runs = [run for run in runs if run.deliveries]
    if dry_run:
        for run in runs:
            tally.add(run.user, appended=len(run.deliveries))
            tally.result.would_write.extend(delivery.entry for delivery in run.deliveries)
        return tally.result
    first_session, runs = _first_session(runs)
    if runs:
        _run_pool(runs, first_session, jobs, ctx)
    return tally.result


FIRST_SESSION_TRIES = 3


def _first_session(runs: list[_UserRun]) -> tuple[TargetSession | None, list[_UserRun]]:
    """Open the first session alone, before any worker starts.

    If the target refuses it, it may refuse the target as a whole (wrong
    admin password, unreachable, bad certificate: exit 3) or just this user
    (with a master login a user without a mailbox is refused like a wrong
    password). Up to ``FIRST_SESSION_TRIES`` users are tried: when a later
    one gets in, the earlier refusals were about those users only.
    """
    refused: list[tuple[_UserRun, TargetError]] = []
    while runs:
        run = runs[0]
        try:
            session = run.open_session()
        except PermanentError as exc:
            run.fail_all(exc.reason)
            runs = runs[1:]
            continue
        except TargetUnavailable:
            raise
        except TargetError as exc:
            refused.append((run, exc))
            runs = runs[1:]
            if len(refused) < FIRST_SESSION_TRIES and runs:
                continue
            raise refused[0][1] from None
        for other, refusal in refused:
            other.fail_all(str(refusal))
        return session, runs
    if refused:
        raise refused[0][1] from None
    return None, runs


def _by_user(entries: Iterable[PlanEntry]) -> dict[str, list[PlanEntry]]:
    groups: dict[str, list[PlanEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.user, []).append(entry)
    return groups


def _run_pool(runs: list[_UserRun], first_session: TargetSession | None, jobs: int,
              ctx: _Context) -> None:
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="inject")
    ctx.read_ahead = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="read-ahead")
    try:
        futures = [pool.submit(runs[0].run, first_session)]
        futures += [pool.submit(run.run, None) for run in runs[1:]]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            error = future.exception()
            if error is not None:
                raise error
    except BaseException:
        # Workers finish the batch in hand (so the journal stays exact) and stop.
        ctx.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        ctx.read_ahead.shutdown(wait=True, cancel_futures=True)
    pool.shutdown(wait=True)


class _UserRun:
    """One user's entries, written through one session by one worker."""

    def __init__(self, user: str, entries: list[PlanEntry], folder: str | None, ctx: _Context):
        self.user = user
        self.ctx = ctx
        deliveries = [_Delivery(e, folder or e.folder, entry_key(e), e.received) for e in entries]
        deliveries.sort(key=lambda delivery: (delivery.received, delivery.entry.ref))
        self.deliveries = deliveries
        self.retries = 0

    def skip_done(self) -> None:
        """Count what the journal has done (or what the plan lists twice); keep the rest."""
        journal = self.ctx.journal
        records = journal.status(self.user) if journal else {}
        todo, seen, present = [], set(), 0
        for delivery in self.deliveries:
            record = records.get((delivery.folder, delivery.key))
            if (delivery.folder, delivery.key) in seen or (record and record.state is State.DONE):
                present += 1
                continue
            seen.add((delivery.folder, delivery.key))
            if record and record.state is State.PENDING:
                delivery.in_doubt, delivery.planned_id = True, record.planned_id
            todo.append(delivery)
        self.deliveries = todo
        self.ctx.tally.add(self.user, present=present)

    def open_session(self) -> TargetSession:
        """A session to the user's mailbox, retrying while the target is briefly away."""
        return self._retrying(lambda: self.ctx.target.session(self.user))

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
                f"{self.ctx.target.describe()}: {self.user}: gave up after {self.retries} retries: {exc}"
            ) from None
        log.warning("%s: %s; retrying in %.1fs", self.user, exc, delays[self.retries])
        self.ctx.stop.wait(delays[self.retries])
        self.retries += 1

    def run(self, session: TargetSession | None) -> None:
        try:
            if session is None:
                session = self.open_session()
            size = self.ctx.batch_size
            todo = self.deliveries
            batches = [todo[start:start + size] for start in range(0, len(todo), size)]
            ahead = self.ctx.prefetch(batches[0]) if batches else None
            for i, batch in enumerate(batches):
                if self.ctx.stop.is_set():
                    return
                if ahead is not None:
                    ahead.result()
                ahead = self.ctx.prefetch(batches[i + 1]) if i + 1 < len(batches) else None
                session = self._batch(session, batch)
                self.retries = 0
        except TargetUnavailable:
            raise
        except (PermanentError, TargetError) as exc:
            # The target refuses this user only: the others go on.
            self.fail_all(exc.reason if isinstance(exc, ItemError) else str(exc))
        finally:
            if session is not None:
                _close_quietly(session)

    def _batch(self, session: TargetSession | None, batch: list[_Delivery]) -> TargetSession:
        """Write one batch, on fresh sessions while the connection keeps dropping."""
        def attempt() -> TargetSession:
            nonlocal session
            if session is None:
                session = self.ctx.target.session(self.user)
            self._write(session, batch)
            return session

        def lost() -> None:
            nonlocal session
            if session is not None:
                _close_quietly(session)
            session = None

        return self._retrying(attempt, lost)

    def _write(self, session: TargetSession, batch: list[_Delivery]) -> None:
        ready: list[tuple[_Delivery, Message]] = []
        found: list[_Delivery] = []
        for delivery in batch:
            if delivery.settled:
                continue
            message = self._message(delivery)
            if message is None:
                continue
            if delivery.in_doubt:
                target_id = session.find(delivery.folder, message)
                if target_id is not None:
                    delivery.planned_id, delivery.settled = target_id, True
                    found.append(delivery)
                    continue
            ready.append((delivery, message))
        if found:
            if self.ctx.journal:
                self.ctx.journal.mark_done([d.row(d.planned_id) for d in found])
            ours = sum(delivery.attempted for delivery in found)
            self.ctx.tally.add(self.user, appended=ours, present=len(found) - ours)
        for folder, group in groupby(ready, key=lambda pair: pair[0].folder):
            self._append(session, folder, list(group))

    def _message(self, delivery: _Delivery) -> Message | None:
        """The message to write, or None when its archive item cannot be read."""
        if delivery.data is None:
            try:
                delivery.data = self.ctx.read_source(delivery.entry)
            except Exception as exc:  # noqa: BLE001 - one bad archive item must not end the run
                reason = exc.reason if isinstance(exc, ItemError) else f"{type(exc).__name__}: {exc}"
                self._fail([(delivery, f"cannot read archive item: {reason}")])
                return None
        entry = delivery.entry
        return Message(delivery.data, delivery.received, entry.message_id, entry.fingerprint,
                       self.ctx.flags, delivery.planned_id)

    def _append(self, session: TargetSession, folder: str,
                pairs: list[tuple[_Delivery, Message]]) -> None:
        deliveries = [delivery for delivery, _ in pairs]
        messages = [replace(m, planned_id=session.prepare(folder, m)) for _, m in pairs]
        for delivery, message in zip(deliveries, messages, strict=True):
            delivery.planned_id, delivery.in_doubt = message.planned_id, True
            delivery.attempted = True
        # The journal must know the promised names before the target holds anything.
        if self.ctx.journal:
            self.ctx.journal.mark_pending([d.row(d.planned_id) for d in deliveries])
        outcomes = session.append(folder, messages)
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
        if self.ctx.journal:
            self.ctx.journal.mark_done([d.row(d.planned_id) for d in done])
        self.ctx.tally.add(self.user, appended=len(done), warnings=warnings)

    def fail_all(self, reason: str) -> None:
        self._fail([(delivery, reason) for delivery in self.deliveries if not delivery.settled])

    def _fail(self, failures: list[tuple[_Delivery, str]]) -> None:
        for delivery, _ in failures:
            delivery.settled = True
        if self.ctx.journal:
            # In-doubt rows stay pending: the next run must look before writing.
            self.ctx.journal.mark_failed(
                [delivery.row(reason) for delivery, reason in failures if not delivery.in_doubt])
        self.ctx.tally.add(
            self.user, failed=[Problem(d.entry.ref, reason, user=self.user) for d, reason in failures])


def _close_quietly(session: TargetSession) -> None:
    try:
        session.close()
    except Exception as exc:  # noqa: BLE001 - a dead connection may fail to say goodbye
        log.debug("closing session: %s", exc)
