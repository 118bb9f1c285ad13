"""The jobs behind the commands: scan and compare stores, append a plan to a target.

``Job`` opens the stores, brings the catalog up to date and compares them
(``scan``, ``diff``, ``timeline``, ``restore``, ``audit``, ``demo``);
``inject_plan`` appends a plan to a target exactly once (``inject``,
``restore``). The CLI only turns options into calls and results into output.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from restore.catalog import Catalog, ScanStats
from restore.diff import DiffResult, DiffSettings, ScannedStore, compare, recipients_of
from restore.errors import MailrestoreError, UnreadableItem
from restore.plan import PlanEntry
from restore.recipients import DEFAULT_RECIPIENT_HEADERS
from restore.stores import Store, StoreOptions, open_store

if TYPE_CHECKING:
    from restore.inject import InjectResult

# A progress reporter: called with (label, total or None) it returns a
# function counting items done, and ``close()`` ends the bar.
ProgressFactory = Callable[[str, int | None], "ProgressBar"]


class ProgressBar:
    def update(self, n: int) -> None:
        pass

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
            return compare(self.catalog, archive_sides, replica_side, replica.users(), self.settings)

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
    """Re-opens plan entries' archive items: one open store per source, shared by workers."""

    def __init__(self, options: StoreOptions | None = None) -> None:
        self.options = options or StoreOptions()
        self.stores: dict[str, Store] = {}
        self.lock = threading.Lock()

    def read(self, entry: PlanEntry) -> bytes:
        with self.lock:
            store = self.stores.get(entry.source)
            if store is None:
                try:
                    store = open_store(entry.source, self.options)
                except MailrestoreError as exc:
                    raise UnreadableItem(entry.ref, f"archive {entry.source}: {exc}") from None
                self.stores[entry.source] = store
        return store.open_ref(entry.ref)

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


def inject_plan(
    entries: list[PlanEntry],
    target_spec: str,
    *,
    password: str | None = None,
    insecure: bool = False,
    create_missing: bool = False,
    state: str | None = None,
    jobs: int = 4,
    folder: str | None = None,
    flags: tuple[str, ...] = (),
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> InjectResult:
    """Open the target and its journal (``state``, else the default per target) and inject.

    A dry run opens the journal read-only (or not at all) and writes nothing.
    """
    from restore.inject import inject
    from restore.journal import Journal, default_journal_path
    from restore.targets import TargetOptions, open_target

    target = open_target(target_spec, TargetOptions(password=password, insecure=insecure,
                                                    create_missing=create_missing))
    path = Path(state) if state else default_journal_path(target_spec)
    sources = SourceReader(StoreOptions(password=password, insecure=insecure))
    journal = Journal.open_readonly(path, target_spec) if dry_run else Journal(path, target_spec)
    try:
        return inject(entries, target, journal, jobs=jobs, folder=folder, flags=flags,
                      dry_run=dry_run, read_source=sources.read, progress=progress)
    finally:
        if journal is not None:
            journal.close()
        sources.close()
