"""An inject run: the first session, the pool of workers over users, the wind-down."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice

from restore.errors import Interrupted, PermanentError, TargetError, TargetUnavailable
from restore.inject.committer import Committer
from restore.inject.context import Context, TargetCheck
from restore.inject.result import InjectResult, Tally
from restore.inject.user import UserRun
from restore.journal import Journal
from restore.plan import PlanEntry, UserLines, by_user
from restore.ratelimit import TokenBucket
from restore.targets.base import Target, TargetSession

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


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
    read_many: Callable[[list[PlanEntry]], list[bytes | None] | None] | None = None,
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
    ``read_source``, which reports why; it answers None instead of a list
    when it cannot take the batch yet (the readers are starting), which is
    then read with ``read_source``.
    """
    tally = Tally(dry_run, progress, show_rate, None if dry_run else bad_item_limit)
    batch_size = batch_size or target.batch_messages
    rate = None if dry_run else max_rate
    if rate:
        batch_size = max(1, min(batch_size, int(rate)))
    ctx = Context(target, journal, flags, read_source, tally, batch_size, retry_delays,
                   check, run, dry_run, stop=tally.stop, read_many=read_many)
    runs = _todo(UserRun(user, lines, folder, ctx) for user, lines in users)
    first: tuple[UserRun, TargetSession] | None = None
    # Each user's first batch is read while its session opens: the pool is there before any.
    ctx.read_ahead = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="read-ahead")
    if not dry_run:
        # The first user of every worker is ready before the first session opens, rather
        # than handed out one by one by this thread as the workers compete with it for the
        # interpreter (``open_session`` reads a user's first items while it logs in).
        head = list(islice(runs, max(1, jobs)))
        runs = chain(head, runs)
        try:
            first, runs = _first_session(runs)
        except BaseException:
            ctx.read_ahead.shutdown(wait=True, cancel_futures=True)
            raise
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


def _todo(runs: Iterable[UserRun]) -> Iterator[UserRun]:
    """The users with something left to do once the journal has been asked."""
    for user_run in runs:
        user_run.skip_done()
        user_run.ctx.todo += len(user_run.deliveries)
        if user_run.deliveries:
            yield user_run


FIRST_SESSION_TRIES = 3


def _first_session(runs: Iterator[UserRun]
                   ) -> tuple[tuple[UserRun, TargetSession] | None, Iterator[UserRun]]:
    """Open the first session alone, before any worker starts.

    If the target refuses it, it may refuse the target as a whole (wrong
    admin password, unreachable, bad certificate: exit 3) or just this user
    (with a master login a user without a mailbox is refused like a wrong
    password). Up to ``FIRST_SESSION_TRIES`` users are tried: when a later
    one gets in, the earlier refusals were about those users only.
    """
    refused: list[tuple[UserRun, TargetError]] = []
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


def _run_pool(runs: Iterator[UserRun], first: tuple[UserRun, TargetSession] | None, jobs: int,
              ctx: Context) -> None:
    """Feed users to ``jobs`` worker threads; the first error (or Ctrl-C) stops them all.

    Workers finish the batch in hand (so the journal stays exact) and stop;
    what they staged is committed before this returns.
    """
    jobs = max(1, jobs)
    work: queue.Queue[tuple[UserRun, TargetSession | None] | None] = queue.Queue(maxsize=2 * jobs)
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
    if not ctx.dry_run and ctx.target.stages:
        ctx.committer = Committer(ctx.target, ctx.journal, ctx.stop, ctx.record)
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


def _wind_down(work: queue.Queue, threads: list[threading.Thread], ctx: Context) -> None:
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
