"""The jobs behind the commands: scan and compare stores, append a plan to a target.

``Job`` opens the stores, brings the catalog up to date and compares them
(``scan``, ``diff``, ``timeline``, ``restore``, ``audit``, ``demo``);
``inject_plan`` appends a plan to a target exactly once (``inject``,
``restore``). The CLI only turns options into calls and results into output.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from restore.catalog import Catalog, ScanStats
from restore.diff import DiffResult, DiffSettings, ScannedStore, compare, recipients_of
from restore.errors import (
    MailrestoreError,
    RefusedItem,
    TargetError,
    TransientError,
    UnreadableItem,
    UsageError,
)
from restore.identity import facts_of
from restore.memory import hand_back, one_heap_arena
from restore.plan import PlanEntry, PlanFile, Seal, UserLines, runs_of_users
from restore.recipients import DEFAULT_RECIPIENT_HEADERS
from restore.selection import EVERYONE, UserSelection
from restore.stores import Store, StoreOptions, open_store
from restore.stores.files import NOT_INSIDE, OUTSIDE_ROOT

if TYPE_CHECKING:
    from concurrent.futures import Future

    from restore.inject import InjectResult
    from restore.journal import RunInfo
    from restore.targets import Target
    from restore.targets.base import TargetSession

log = logging.getLogger(__name__)

# A progress reporter: called with (label, total or None) it returns a
# function counting items done, and ``close()`` ends the bar.
ProgressFactory = Callable[[str, int | None], "ProgressBar"]


class ProgressBar:
    def update(self, n: int) -> None:
        pass

    def show_rate(self, per_second: float) -> None:
        """Show the messages appended per second so far."""

    def close(self) -> None:
        pass


def no_progress(label: str, total: int | None) -> ProgressBar:
    return ProgressBar()


@dataclass
class Job:
    catalog: Catalog
    settings: DiffSettings = field(default_factory=DiffSettings)
    store_options: StoreOptions = field(default_factory=StoreOptions)
    progress: ProgressFactory = no_progress

    @property
    def envelope_headers(self) -> Sequence[str]:
        return tuple(self.settings.recipient_headers or DEFAULT_RECIPIENT_HEADERS)

    def scan(self, store: Store) -> tuple[ScannedStore, ScanStats]:
        bar = self.progress(f"reading {store.describe()}", None)
        try:
            store_id, stats = self.catalog.refresh(store, self.envelope_headers, bar.update)
        finally:
            bar.close()
        return ScannedStore(store_id, store.spec), stats

    def diff(self, archive_specs: Sequence[str], replica_spec: str) -> DiffResult:
        with ExitStack() as stack:
            archives = [self._open(stack, spec) for spec in archive_specs]
            archive_sides = [self.scan(store)[0] for store in archives]
            replica = self._open(stack, replica_spec, archive_sides)
            replica_side = self.scan(replica)[0]
            result = compare(self.catalog, archive_sides, replica_side, replica.users(),
                             self.settings)
        hand_back()     # the scan's batches and the gap detection's tallies
        return result

    def _open(self, stack: ExitStack, spec: str, archives: Sequence[ScannedStore] = ()) -> Store:
        options = self.store_options
        if archives and options.users is None and spec.startswith(("imap://", "imaps://")):
            options = StoreOptions(**{**vars(options), "users": self.recipients(archives)})
        store = open_store(spec, options)
        stack.callback(store.close)
        return store

    def recipients(self, archives: Sequence[ScannedStore]) -> list[str]:
        """Every valid user the archives name: whom to read on an IMAP replica."""
        return recipients_of(self.catalog, archives, self.settings)


class SourceReader:
    """Re-opens plan entries' archive items: one open store per archive, shared by workers.

    With a ``seal`` (``restore.plan.Seal``) only the plan's archives are
    opened, a ref leading outside its archive is refused, and every item
    read must still have its plan line's fingerprint.
    """

    def __init__(self, seal: Seal | None = None, options: StoreOptions | None = None) -> None:
        self.seal = seal
        self.options = options or StoreOptions()
        self.stores: dict[str, Store] = {}
        self.lock = threading.Lock()

    def read(self, entry: PlanEntry) -> bytes:
        archive = self.seal.archive_of(entry) if self.seal else entry.source
        with self.lock:
            store = self.stores.get(archive)
            if store is None:
                try:
                    store = open_store(archive, self.options)
                except MailrestoreError as exc:
                    raise UnreadableItem(entry.ref, f"archive {archive}: {exc}") from None
                self.stores[archive] = store
        try:
            data = store.open_ref(entry.ref)
        except UnreadableItem as exc:
            if self.seal and exc.reason in (OUTSIDE_ROOT, NOT_INSIDE):
                raise RefusedItem(entry.ref, f"ref {entry.ref!r} resolves outside the archive "
                                             f"{archive}") from None
            raise
        if self.seal:
            self.seal.check(entry, data)
        return data

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


READERS_FROM = 5000     # messages: below, starting reader processes costs more than they save


def readers_for(total: int) -> int:
    """Reader processes for a plan of ``total`` messages: two per CPU when it is large.

    Two, because a reader of a cold archive waits for the disk half the time.
    """
    from restore.scanpool import worker_count

    cpus = worker_count()
    return min(2 * cpus, 16) if total >= READERS_FROM and cpus > 1 else 0


class ReaderPool:
    """Reads and checks archive items in worker processes, beside inject's threads.

    Opening, decompressing and fingerprinting an archive item (the seal's
    check) is most of inject's Python work per message; in one process it
    all runs under one interpreter lock with the writing. ``readers``
    processes (started by a forkserver: forking inject's threads is unsafe)
    each open the plan's archives with the same seal and options, and read
    whole batches: inject's read-ahead hands them a batch and gets back the
    bytes of each item, or None for one they could not read or that failed
    the seal, which the worker then reads again itself, to report it.

    Starting them (a forkserver, then each process importing mailrestore)
    takes longer than reading the first batches: until the first reader is
    up, ``read_many`` answers None and the batches are read in this process,
    so no connection waits for the pool.
    """

    def __init__(self, seal: Seal | None, options: StoreOptions, readers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(
            readers, mp_context=multiprocessing.get_context("forkserver"),
            initializer=_start_reader, initargs=(seal, options))
        self.up: Future[None] | None = None
        # Submitting the first task starts the forkserver, and waits for it: not here.
        self.starting = threading.Thread(target=self._start, name="readers-start", daemon=True)
        self.starting.start()

    def _start(self) -> None:
        try:
            self.up = self.pool.submit(_up)
        except Exception as exc:  # noqa: BLE001 - the batches are then all read in this process
            log.warning("reader processes did not start (%s); reading in this process", exc)

    def read_many(self, entries: list[PlanEntry]) -> list[bytes | None] | None:
        """Each item's bytes (None for one not read), or None while no reader is up yet."""
        up = self.up
        if up is None or not up.done():
            return None
        return self.pool.submit(_read_many, entries).result()

    def close(self) -> None:
        self.starting.join()
        self.pool.shutdown(wait=True, cancel_futures=True)


_READER: SourceReader | None = None     # a reader process's own


def _start_reader(seal: Seal | None, options: StoreOptions) -> None:
    global _READER
    _READER = SourceReader(seal, options)


def _up() -> None:
    """Runs in a reader once it has started."""


def _read_many(entries: list[PlanEntry]) -> list[bytes | None]:
    assert _READER is not None
    out: list[bytes | None] = []
    for entry in entries:
        try:
            out.append(_READER.read(entry))
        except Exception:  # noqa: BLE001 - the worker reads it again and reports why
            out.append(None)
    return out


class CatalogCheck:
    """inject's target check: what the catalog last read of the target, per user.

    ``held`` runs on inject's worker threads; the catalog's connection is
    used by one thread at a time (``Catalog.lock``), the plan's cursor too.
    """

    def __init__(self, catalog: Catalog, store_id: int, match: str, per_user: bool):
        self.catalog = catalog
        self.store_id = store_id
        self.match = match
        self.per_user = per_user
        catalog.index_for_diff(match, by_received=False)

    def key(self, entry: PlanEntry, data: bytes) -> str:
        return identity_key(entry, data, self.match)

    def held(self, user: str, keys: Sequence[str]) -> set[str]:
        with self.catalog.lock:
            return self.catalog.held(self.store_id, self.match, user if self.per_user else None,
                                     list(keys))

    def read(self, user: str, session: TargetSession | None) -> str | None:
        return None     # the catalog read the target before the run

    def forget(self, user: str) -> None:
        pass


class SessionCheck:
    """inject's target check read through each user's own session (IMAP: ``held_keys``).

    Each user's mailbox is read when the user's session opens, right before
    anything is written to it, on the worker's connection: one login per
    user for the check and the writing together, as many users at a time as
    there are workers. A dry run opens a session only to read.
    """

    def __init__(self, target: Target, match: str):
        self.target = target
        self.match = match
        self.keys: dict[str, set[str]] = {}

    def key(self, entry: PlanEntry, data: bytes) -> str:
        return identity_key(entry, data, self.match)

    def held(self, user: str, keys: Sequence[str]) -> set[str]:
        return self.keys.get(user, set()).intersection(keys)

    def read(self, user: str, session: TargetSession | None) -> str | None:
        if session is not None:
            self.keys[user] = session.held_keys(self.match) or set()
            return None
        try:
            with self.target.session(user) as own:
                self.keys[user] = own.held_keys(self.match) or set()
        except (TargetError, TransientError) as exc:
            return str(exc)
        return None

    def forget(self, user: str) -> None:
        self.keys.pop(user, None)


def identity_key(entry: PlanEntry, data: bytes, match: str) -> str:
    """The identity key of a plan entry's message under ``match``, as the catalog keys it."""
    if match == "auto":
        return entry.fingerprint    # the seal checked it is the item's
    facts = facts_of(data)
    return facts.mid_key if match == "message-id" else facts.strict_key


class PlanSource(Protocol):
    """A plan as inject reads it: one user's entries at a time, so its size does not matter."""

    def user_names(self) -> list[str]:
        """Every user with entries (whose mailboxes the target check reads)."""

    def users(self, scratch: Path) -> Iterator[UserLines]:
        """Each user's entries once; ``scratch``: a private directory for an on-disk sort."""


class PlanFileSource:
    """A plan file (``restore.plan.open_plan``), narrowed to the selected users.

    Lines of other users are counted in ``not_selected``; bad lines go to
    ``bad`` as they are met; ``each_user`` sees every selected user's lines
    (the --report rows).
    """

    def __init__(self, plan: PlanFile, selection: UserSelection = EVERYONE,
                 bad: Callable[[UsageError], None] = lambda exc: None,
                 each_user: Callable[[UserLines], None] | None = None):
        self.plan = plan
        self.selection = selection
        self.bad = bad
        self.each_user = each_user
        self.not_selected = 0

    def user_names(self) -> list[str]:
        return sorted(self.selection.select(self.plan.user_names))

    def users(self, scratch: Path) -> Iterator[UserLines]:
        for user, lines in self.plan.users(scratch, self.bad):
            if not self.selection(user):
                self.not_selected += len(lines)
                continue
            if self.each_user is not None:
                self.each_user((user, lines))
            yield user, lines


class DiffPlan:
    """The plan of a diff just made (``restore``), read from the catalog's cursor as inject goes."""

    def __init__(self, result: DiffResult):
        self.result = result

    def user_names(self) -> list[str]:
        return sorted(u for u, counts in self.result.users.items() if counts.get("missing"))

    def users(self, scratch: Path) -> Iterator[UserLines]:
        return runs_of_users(self.result.plan())


@dataclass
class InjectSettings:
    """How to append a plan: the target, its journal, and the knobs of ``inject``."""

    target: str
    password: str | None = None
    insecure: bool = False
    create_missing: bool = False
    state: str | None = None
    jobs: int = 4
    folder: str | None = None
    flags: tuple[str, ...] = ()
    dry_run: bool = False
    max_rate: float | None = None       # messages appended per second, across all jobs
    bad_item_limit: int | None = None   # stop cleanly after this many failed messages
    readers: int = 0                    # reader processes for the archive items (0: in-process)


def inject_plan(
    plan: PlanSource,
    settings: InjectSettings,
    job: Job,
    *,
    seal: Seal | None,
    run_info: RunInfo,
    scanned_target: ScannedStore | None = None,
    progress: Callable[[int], None] | None = None,
    show_rate: Callable[[float], None] | None = None,
) -> InjectResult:
    """Open the target and its journal, read the target into the catalog, and inject.

    The journal is ``settings.state``, else the default of the canonical
    target. ``scanned_target``: the target as the caller's diff just read it
    (``restore`` into its replica), so it is not read again. A dry run opens
    the journal read-only (or not at all) and writes nothing to the target
    or the journal; it does bring the catalog (a cache) up to date.
    """
    from restore.inject import inject_users
    from restore.journal import Journal, RunStatus
    from restore.journalfile import default_journal_path
    from restore.targets import TargetOptions, canonical_target, open_target

    canonical = canonical_target(settings.target)
    target = open_target(settings.target, TargetOptions(
        password=settings.password, insecure=settings.insecure,
        create_missing=settings.create_missing))
    path = Path(settings.state) if settings.state else default_journal_path(canonical)
    journal = (Journal.open_readonly(path, canonical) if settings.dry_run
               else Journal(path, canonical))
    options = StoreOptions(password=settings.password, insecure=settings.insecure,
                           max_message_size=job.store_options.max_message_size)
    sources = SourceReader(seal, options)
    one_heap_arena()    # before the workers, the read-ahead and the readers' threads start
    readers = ReaderPool(seal, options, settings.readers) if settings.readers > 0 else None
    try:
        check = _target_check(job, target, settings, plan.user_names(),
                              seal.match if seal else job.settings.match, scanned_target)
        run = journal.begin_run(run_info) if journal is not None and not settings.dry_run else None
        try:
            result = inject_users(plan.users(path.parent), target, journal, jobs=settings.jobs,
                                  folder=settings.folder, flags=settings.flags,
                                  dry_run=settings.dry_run, read_source=sources.read, check=check,
                                  run=run, progress=progress, show_rate=show_rate,
                                  max_rate=settings.max_rate,
                                  bad_item_limit=settings.bad_item_limit,
                                  read_many=readers.read_many if readers else None)
        except BaseException as exc:
            if journal is not None and run is not None:
                interrupted = isinstance(exc, KeyboardInterrupt)
                journal.end_run(run, RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED,
                                130 if interrupted else getattr(exc, "exit_code", 70))
            raise
        if journal is not None and run is not None:
            journal.end_run(run, RunStatus.FAILED if result.failed else RunStatus.DONE,
                            1 if result.failed else 0, appended=result.appended,
                            already_present=result.already_present, failed=result.failed)
        result.journal, result.run = str(path), run
        return result
    finally:
        if journal is not None:
            journal.close()
        sources.close()
        if readers is not None:
            readers.close()
        hand_back()     # the batches' buffers, before the report is built


def _target_check(job: Job, target: Target, settings: InjectSettings, users: list[str],
                  match: str, scanned: ScannedStore | None) -> CatalogCheck | SessionCheck:
    """Read the target (as a store) into the catalog: what it holds before anything is written.

    An IMAP target not read already is read user by user in inject's own
    sessions instead (``SessionCheck``).
    """
    if scanned is None and target.kind == "imap":
        return SessionCheck(target, match)
    if scanned is None:
        options = StoreOptions(password=settings.password, insecure=settings.insecure,
                               users=users if target.kind == "imap" else None, match=match)
        with ExitStack() as stack:
            store = open_store(settings.target, options)
            stack.callback(store.close)
            scanned = job.scan(store)[0]
    per_user = target.kind == "imap" or getattr(target, "template", None) is not None
    return CatalogCheck(job.catalog, scanned.store_id, match, per_user)
