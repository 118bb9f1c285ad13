"""Append a plan's messages to a target: in parallel across users, in order, exactly once.

The plan comes one user at a time (``restore.plan.PlanFile.users``, or the
diff's cursor): a feeder hands each user to the next free worker thread
through a short queue, so memory holds a few users' entries, never the
plan. Each worker takes whole users: one session per user, so one mailbox
is written by one worker, in received-time order. Per user:

1. entries the journal has ``done`` or ``present`` are counted
   ``already_present``;
2. the rest go in batches, each item read from the archive (and checked
   against the plan's seal by ``read_source``);
3. entries left ``pending`` by an interrupted run are in doubt: the target
   is asked (``session.find``) and they are written only if absent;
4. every other entry is looked up in the target first (``TargetCheck``:
   the target as the catalog last read it, with the diff's identity rule):
   one it holds already, in any folder, is journaled ``present`` and never
   written. So a lost journal, another account's journal or another
   spelling of the target writes nothing twice;
5. what remains: ``prepare`` (the target promises a name), journal
   ``pending``, ``append``, journal ``done`` with where it went.

Durability in groups. Where the target can stage (Maildir, see
``restore.targets.base``), step 5 is split: the worker journals its batch
``pending`` without an fsync, stages it (files in ``tmp/``, not synced)
and goes on with its next batch, while one committer thread takes every
batch staged by any worker since its last round and, for all of them at
once: syncs the journal (the ``pending`` rows are durable), commits them to
the target (one syncfs: the files are durable; links into ``new/``;
another syncfs: the links are durable) and journals them ``done`` in one
transaction. So a crash or power cut at any moment leaves no file in
``new/`` that the journal does not name as pending or done, and none
whose contents are not durable; a round costs two syncs and two journal
transactions however many batches it holds.

An archive item that cannot be read fails that message only. A connection
that drops (``TransientError``) is retried with backoff on a fresh session,
the batch in flight being in doubt. A user the target refuses
(``PermanentError``, e.g. no mailbox) fails that user's messages. A
``TargetError`` on the first session opened means the target itself is
unusable (login refused, no mail root) and ends the run, as does a target
that keeps failing after the retries (``TargetUnavailable``). Ctrl-C lets
every worker finish the batch in hand and raises ``Interrupted`` with what
was written.

The journal is never marked ``failed`` for a message whose presence is
unknown (in doubt): it stays ``pending`` so the next run checks first.

A dry run goes through the same steps without a session: it asks the
target whether each user's mailbox can be written (``Target.probe``), reads
and checks every item, runs the target check, and counts what a run would
append, find present or fail; it writes nothing, not even the journal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import chain, groupby
from typing import Protocol, TypeVar

from restore.errors import (
    Interrupted,
    ItemError,
    PermanentError,
    Problem,
    RefusedItem,
    TargetError,
    TargetUnavailable,
    TransientError,
)
from restore.journal import Journal, Row, State, entry_key
from restore.plan import PlanEntry, UserLines, by_user
from restore.ratelimit import TokenBucket
from restore.targets.base import Message, Outcome, Staged, Target, TargetSession

log = logging.getLogger(__name__)

T = TypeVar("T")

COMMIT_LIMIT = 4096       # messages staged and not yet committed, across workers
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
SHOW_WOULD_WRITE = 200    # a dry run lists the first few; the counts cover every message


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


class _Tally:
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
                result.stopped = f"bad-item limit reached: --bad-item-limit {limit}, {result.failed:,} failed"
                self.stop.set()
            if self.progress and appended + present + len(failed):
                self.progress(appended + present + len(failed))
            if self.show_rate and appended:
                self.show_rate(result.appended / max(time.monotonic() - self.started, 1e-3))


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
        return Row(self.entry.user, self.folder, self.key, detail, self.entry.ref, self.entry.digest)


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
    check: TargetCheck | None = None
    run: int | None = None          # the journal's id of this run
    dry_run: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    # Reads the archive items of a user's next batch while this one is written.
    read_ahead: ThreadPoolExecutor | None = None
    pace: TokenBucket | None = None     # --max-rate, shared by every worker
    committer: _Committer | None = None     # the target stages: durability in groups
    read_many: Callable[[list[PlanEntry]], list[bytes | None]] | None = None
    todo: int = 0           # messages the journal had not settled, of the users met so far
    skipped: int = 0        # messages the journal had settled before the run (already present)

    def prefetch(self, batch: list[_Delivery]) -> Future[None] | None:
        if self.read_ahead is None:
            return None
        return self.read_ahead.submit(_load, batch, self.read_source, self.read_many)

    def record(self, state: State, rows: list[Row]) -> None:
        """Journal ``rows`` in ``state`` for this run; a dry run journals nothing."""
        if self.journal and not self.dry_run and rows:
            if state is State.PENDING and self.committer is not None:
                # The committer flushes the journal before the target shows any of them.
                self.journal.mark_pending(rows, self.run, durable=False)
            else:
                self.journal.mark(state, rows, self.run)

    def journal_created(self, user: str, session: TargetSession) -> None:
        created = session.take_created()
        if created and self.journal and self.run is not None:
            self.journal.record_created(self.run, user, created)


def _load(batch: list[_Delivery], read_source: Callable[[PlanEntry], bytes],
          read_many: Callable[[list[PlanEntry]], list[bytes | None]] | None = None) -> None:
    """Fill in what can be read; a failure is left for the writer to read again and report."""
    if read_many is not None:
        wanted = [d for d in batch if d.data is None and not d.settled]
        try:
            for delivery, data in zip(wanted, read_many([d.entry for d in wanted]), strict=True):
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


def inject(entries: Iterable[PlanEntry], target: Target, journal: Journal | None,
           **options: object) -> InjectResult:
    """``inject_users`` of entries in any order, grouped by user in memory (small plans, tests)."""
    return inject_users(by_user(entries), target, journal, **options)  # type: ignore[arg-type]


def inject_users(
    users: Iterable[UserLines],
    target: Target,
    journal: Journal | None,
    *,
    jobs: int = 1,
    folder: str | None = None,
    flags: tuple[str, ...] = (),
    dry_run: bool = False,
    read_source: Callable[[PlanEntry], bytes],
    check: TargetCheck | None = None,
    run: int | None = None,
    progress: Callable[[int], None] | None = None,
    show_rate: Callable[[float], None] | None = None,
    max_rate: float | None = None,
    bad_item_limit: int | None = None,
    batch_size: int | None = None,
    retry_delays: Sequence[float] = RETRY_DELAYS,
    read_many: Callable[[list[PlanEntry]], list[bytes | None]] | None = None,
) -> InjectResult:
    """Append each user's entries to ``target`` exactly once; see the module docstring.

    ``users`` yields (user, entries) once per user, in any order of users;
    entries in any order. ``folder`` overrides each entry's folder.
    ``check`` looks up what the target holds already (None: only the
    journal is trusted). ``run`` is the journal's id of this run, recorded
    on every row it writes. ``progress`` is called with the number of
    messages settled since its last call (``tqdm.update``), ``show_rate``
    with the messages appended per second so far. ``max_rate``: messages
    per second appended across all workers at most (a batch holds at most a
    second's worth, so the pace is even). ``bad_item_limit``: stop cleanly
    once that many messages failed (``result.stopped``; a dry run goes on).
    With ``dry_run`` nothing is written, not even the journal (pass one
    opened with ``Journal.open_readonly``, or None): the result counts as
    ``appended`` what a run would write. ``batch_size``: messages per batch
    (default: the target's ``batch_messages``, within its ``batch_bytes``).
    ``read_many`` reads the items of a whole batch ahead elsewhere (reader
    processes), None for one it could not: that one is read again with
    ``read_source``, which reports why.
    """
    tally = _Tally(dry_run, progress, show_rate, None if dry_run else bad_item_limit)
    batch_size = batch_size or target.batch_messages
    rate = None if dry_run else max_rate
    if rate:
        batch_size = max(1, min(batch_size, int(rate)))
    ctx = _Context(target, journal, flags, read_source, tally, batch_size, retry_delays,
                   check, run, dry_run, stop=tally.stop, read_many=read_many)
    runs = _todo(_UserRun(user, lines, folder, ctx) for user, lines in users)
    first: tuple[_UserRun, TargetSession] | None = None
    if not dry_run:
        first, runs = _first_session(runs)
    if rate:
        # Filled from now, not from before the users' sessions opened.
        ctx.pace = TokenBucket(rate, burst=batch_size)
    tally.start()
    try:
        _run_pool(runs, first, jobs, ctx)
    except KeyboardInterrupt:
        result = tally.result   # the workers finished their batches: the journal is exact
        raise Interrupted(f"interrupted: {result.appended:,} appended, {result.already_present:,}"
                          f" already present, {result.failed:,} failed so far; the journal keeps"
                          " them", result) from None
    finally:
        tally.finish()
    result = tally.result
    if result.stopped:
        for _ in runs:      # the users the run did not get to count as left too
            pass
        settled = result.appended + result.failed + result.already_present - ctx.skipped
        result.left = ctx.todo - settled
    return result


def _todo(runs: Iterable[_UserRun]) -> Iterator[_UserRun]:
    """The users with something left to do once the journal has been asked."""
    for user_run in runs:
        user_run.skip_done()
        user_run.ctx.todo += len(user_run.deliveries)
        if user_run.deliveries:
            yield user_run


FIRST_SESSION_TRIES = 3


def _first_session(runs: Iterator[_UserRun]
                   ) -> tuple[tuple[_UserRun, TargetSession] | None, Iterator[_UserRun]]:
    """Open the first session alone, before any worker starts.

    If the target refuses it, it may refuse the target as a whole (wrong
    admin password, unreachable, bad certificate: exit 3) or just this user
    (with a master login a user without a mailbox is refused like a wrong
    password). Up to ``FIRST_SESSION_TRIES`` users are tried: when a later
    one gets in, the earlier refusals were about those users only.
    """
    refused: list[tuple[_UserRun, TargetError]] = []
    for run in runs:
        try:
            session = run.open_session()
        except PermanentError as exc:
            run.fail_all(exc.reason)
            continue
        except TargetUnavailable:
            raise
        except TargetError as exc:
            refused.append((run, exc))
            if len(refused) < FIRST_SESSION_TRIES:
                continue
            raise refused[0][1] from None
        for other, refusal in refused:
            other.fail_all(str(refusal))
        return (run, session), runs
    if refused:
        raise refused[0][1] from None
    return None, runs


def _run_pool(runs: Iterator[_UserRun], first: tuple[_UserRun, TargetSession] | None, jobs: int,
              ctx: _Context) -> None:
    """Feed users to ``jobs`` worker threads; the first error (or Ctrl-C) stops them all.

    Workers finish the batch in hand (so the journal stays exact) and stop;
    what they staged is committed before this returns.
    """
    jobs = max(1, jobs)
    work: queue.Queue[tuple[_UserRun, TargetSession | None] | None] = queue.Queue(maxsize=2 * jobs)
    errors: list[BaseException] = []

    def worker() -> None:
        while (item := work.get()) is not None:
            user_run, session = item
            try:
                user_run.run(session)
            except BaseException as exc:  # noqa: BLE001 - handed to the feeding thread
                errors.append(exc)
                ctx.stop.set()

    threads = [threading.Thread(target=worker, name=f"inject-{n}", daemon=True)
               for n in range(jobs)]
    ctx.read_ahead = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="read-ahead")
    if not ctx.dry_run and ctx.target.stages:
        ctx.committer = _Committer(ctx)
    for thread in threads:
        thread.start()
    interrupted = False
    try:
        items = chain([first] if first else [], ((user_run, None) for user_run in runs))
        for item in items:
            if not _put(work, item, ctx.stop):
                break
    except KeyboardInterrupt:
        interrupted = True
        ctx.stop.set()
    except BaseException:
        ctx.stop.set()
        raise
    finally:
        while True:
            try:
                _wind_down(work, threads, ctx)
                break
            except KeyboardInterrupt:   # while waiting for the workers: they still finish
                interrupted = True
                ctx.stop.set()
    if interrupted:
        raise KeyboardInterrupt
    if errors:
        raise errors[0]


def _wind_down(work: queue.Queue, threads: list[threading.Thread], ctx: _Context) -> None:
    """Let every worker finish the batch in hand, then commit what they staged.

    Safe to call again when a Ctrl-C cut it short: a worker still alive gets
    another end-of-work mark whenever the queue has room.
    """
    for thread in threads:
        while thread.is_alive():
            try:
                work.put_nowait(None)
            except queue.Full:
                pass
            thread.join(timeout=0.2)
    assert ctx.read_ahead is not None
    ctx.read_ahead.shutdown(wait=True, cancel_futures=True)
    if ctx.committer is not None:
        ctx.committer.close()


def _put(work: queue.Queue, item: object, stop: threading.Event | None) -> bool:
    """Queue ``item`` for a worker; False when the run stops first."""
    while stop is None or not stop.is_set():
        try:
            work.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


@dataclass
class _Group:
    """One staged batch of one user, on its way to the committer."""

    user_run: _UserRun
    deliveries: list[_Delivery]
    staged: Staged


class _Committer:
    """Makes the batches every worker stages durable together: one round, two syncs, many batches.

    Workers ``submit`` and go on; the committer's thread takes everything
    submitted since its last round. At most ``COMMIT_LIMIT`` messages wait,
    so a slow disk holds the workers back rather than letting them run ahead.
    """

    def __init__(self, ctx: _Context):
        self.ctx = ctx
        self.waiting: list[_Group] = []
        self.staged = 0          # messages submitted, not yet committed
        self.closing = False
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="inject-commit", daemon=True)
        self.thread.start()

    def submit(self, group: _Group) -> None:
        with self.cond:
            while self.staged >= COMMIT_LIMIT and self.error is None:
                self.cond.wait()
            if self.error is not None:
                raise TargetUnavailable(f"{self.ctx.target.describe()}: {self.error}")
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
            raise TargetUnavailable(f"{self.ctx.target.describe()}: {self.error}")

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
                self.ctx.stop.set()
                with self.cond:
                    self.error = exc
                    self.cond.notify_all()
                return
            with self.cond:
                self.staged -= sum(group.staged.size for group in groups)
                self.cond.notify_all()

    def _round(self, groups: list[_Group]) -> None:
        ctx = self.ctx
        if ctx.journal is not None:
            ctx.journal.flush()     # the pending rows, before any file is linked
        outcomes = ctx.target.commit([group.staged for group in groups])
        done: list[Row] = []
        for group, results in zip(groups, outcomes, strict=True):
            done += group.user_run.settle(group.deliveries, results)
        ctx.record(State.DONE, done)


class _UserRun:
    """One user's entries, written through one session by one worker."""

    def __init__(self, user: str, entries: list[PlanEntry], folder: str | None, ctx: _Context):
        self.user = user
        self.ctx = ctx
        deliveries = [_Delivery(e, folder or e.folder, entry_key(e), e.received) for e in entries]
        deliveries.sort(key=lambda delivery: (delivery.received, delivery.entry.ref))
        self.deliveries = deliveries
        self.retries = 0
        self.checked = False        # the target check has read this user's mailbox

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
        if self.ctx.dry_run:
            self.dry_run()
            return
        try:
            if self.ctx.stop.is_set():
                return      # stopped before this user's turn: left for the resume
            if session is None:
                session = self.open_session()
            self.ctx.journal_created(self.user, session)
            for batch in self._batches():
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
                _close_quietly(session)
            if self.ctx.check is not None:
                self.ctx.check.forget(self.user)

    def _batches(self) -> Iterator[list[_Delivery]]:
        """The user's batches, the next one's items read ahead while this one is handled."""
        batches = _split(self.deliveries, self.ctx.batch_size, self.ctx.target.batch_bytes)
        ahead = self.ctx.prefetch(batches[0]) if batches else None
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

    def _not_held(self, read: list[tuple[_Delivery, Message]]) -> list[tuple[_Delivery, Message]]:
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

    def _batch(self, session: TargetSession | None, batch: list[_Delivery]) -> TargetSession:
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
                _close_quietly(session)
            session = None

        return self._retrying(attempt, lost)

    def _write(self, session: TargetSession, batch: list[_Delivery]) -> None:
        if not self.checked and self.ctx.check is not None:
            self.ctx.check.read(self.user, session)     # a dropped connection: read again
            self.checked = True
        unknown: list[tuple[_Delivery, Message]] = []
        ready: list[tuple[_Delivery, Message]] = []
        found: list[_Delivery] = []
        theirs: list[_Delivery] = []
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
                    ours = not delivery.planned_id or target_id.partition(":")[0] == delivery.planned_id
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

    def _message(self, delivery: _Delivery) -> Message | None:
        """The message to write, or None when its archive item cannot be read or is refused."""
        if delivery.data is None:
            try:
                delivery.data = self.ctx.read_source(delivery.entry)
            except RefusedItem as exc:
                self._fail([(delivery, exc.reason)])
                return None
            except Exception as exc:  # noqa: BLE001 - one bad archive item must not end the run
                reason = exc.reason if isinstance(exc, ItemError) else f"{type(exc).__name__}: {exc}"
                self._fail([(delivery, f"cannot read archive item: {reason}")])
                return None
        entry = delivery.entry
        return Message(delivery.data, delivery.received, entry.message_id, entry.fingerprint,
                       self.ctx.flags, delivery.planned_id)

    def _append(self, session: TargetSession, folder: str,
                pairs: list[tuple[_Delivery, Message]]) -> None:
        if self.ctx.pace and not self.ctx.pace.take(len(pairs), self.ctx.stop):
            return      # stopping: this batch was not started, nothing of it is in doubt
        deliveries = [delivery for delivery, _ in pairs]
        messages = [replace(m, planned_id=session.prepare(folder, m)) for _, m in pairs]
        for delivery, message in zip(deliveries, messages, strict=True):
            delivery.planned_id, delivery.in_doubt = message.planned_id, True
            delivery.attempted = True
        # The journal must know the promised names before the target holds anything.
        self.ctx.record(State.PENDING, [d.row(d.planned_id) for d in deliveries])
        committer = self.ctx.committer
        staged = session.stage(folder, messages) if committer is not None else None
        self.ctx.journal_created(self.user, session)
        if committer is not None and staged is not None:
            committer.submit(_Group(self, deliveries, staged))
            return
        outcomes = session.append(folder, messages)
        self.ctx.journal_created(self.user, session)
        self.ctx.record(State.DONE, self.settle(deliveries, outcomes))

    def settle(self, deliveries: list[_Delivery], outcomes: Sequence[Outcome]) -> list[Row]:
        """Count what the target did with a batch; the journal rows of those written, to mark done."""
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

    def _fail(self, failures: list[tuple[_Delivery, str]]) -> None:
        for delivery, _ in failures:
            delivery.settled = True
        # In-doubt rows stay pending: the next run must look before writing.
        self.ctx.record(State.FAILED,
            [delivery.row(reason) for delivery, reason in failures if not delivery.in_doubt])
        self.ctx.tally.add(
            self.user, failed=[Problem(d.entry.ref, reason, user=self.user) for d, reason in failures])


def _split(deliveries: list[_Delivery], most: int, most_bytes: int | None) -> list[list[_Delivery]]:
    """Batches of at most ``most`` messages and (but for a single larger one) ``most_bytes``."""
    batches: list[list[_Delivery]] = []
    batch: list[_Delivery] = []
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


def _close_quietly(session: TargetSession) -> None:
    try:
        session.close()
    except Exception as exc:  # noqa: BLE001 - a dead connection may fail to say goodbye
        log.debug("closing session: %s", exc)
