"""From STORE arguments to a diff: open the stores, bring the catalog up to date, compare.

Shared by ``scan``, ``diff``, ``timeline``, ``restore``, ``audit`` and ``demo``;
the CLI only turns options into a ``Job`` and results into output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from restore.catalog import Catalog, ScanStats
from restore.diff import DiffResult, DiffSettings, Side, compare, recipients_of
from restore.recipients import DEFAULT_RECIPIENT_HEADERS
from restore.stores import Store, StoreOptions, open_store

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

    def scan(self, store: Store) -> tuple[Side, ScanStats]:
        bar = self.progress(f"reading {store.describe()}", None)
        try:
            sid, stats = self.catalog.refresh(store, self.envelope_headers, bar.update)
        finally:
            bar.close()
        return Side(sid, store.spec), stats

    def diff(self, archive_specs: Sequence[str], replica_spec: str) -> DiffResult:
        with ExitStack() as stack:
            archives = [self._open(stack, spec) for spec in archive_specs]
            archive_sides = [self.scan(store)[0] for store in archives]
            replica = self._open(stack, replica_spec, archive_sides)
            replica_side = self.scan(replica)[0]
            return compare(self.catalog, archive_sides, replica_side, replica.users(), self.settings)

    def _open(self, stack: ExitStack, spec: str, archives: Sequence[Side] = ()) -> Store:
        options = self.store_options
        if archives and options.users is None and spec.startswith(("imap://", "imaps://")):
            options = StoreOptions(**{**vars(options), "users": self.recipients(archives)})
        store = open_store(spec, options)
        stack.callback(store.close)
        return store

    def recipients(self, archives: Sequence[Side]) -> list[str]:
        """Every valid user the archives name: whom to read on an IMAP replica."""
        return recipients_of(self.catalog, archives, self.settings)
