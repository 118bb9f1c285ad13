"""eml reader: a directory tree of one-message files, as gateway archives keep them.

Any file name is a message (``.gz``/``.zst`` or not: compression is told by
magic bytes). A unit is one file; its ref is the path relative to the store
root and ``Item.delivered`` the file's mtime. ``eml:FILE`` reads that one
file. Hidden files (names starting with ``.``, where archivers write before
renaming) are skipped; empty files, junk, unreadable files and symlinks
leaving the root are reported unreadable with the path and reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from restore.errors import UnreadableItem
from restore.stores.base import Item, Store, Unit, Unreadable
from restore.stores.files import (
    Found,
    Refused,
    StoreRoot,
    failure_reason,
    read_message,
    read_message_file,
    stamp,
)


class EmlStore(Store):
    kind = "eml"
    parallel_safe = True

    def __init__(self, spec: str, path: str):
        super().__init__(spec)
        self._single: str | None = None
        if os.path.isfile(path):
            path = os.path.realpath(path)  # the file named is trusted, wherever it lives
            self.root = StoreRoot(os.path.dirname(path), spec)
            self._single = os.path.basename(path)
        else:
            self.root = StoreRoot(path, spec)

    def units(self) -> Iterator[Unit | Unreadable]:
        files: Iterable[Found | Refused]
        if self._single:
            files = [self.root.examine(os.path.join(self.root.path, self._single))]
        else:
            files = self.root.walk()
        for found in files:
            if isinstance(found, Refused):
                yield Unreadable(Unit(found.rel, ""), found.rel, found.reason)
            else:
                yield Unit(found.rel, stamp(found.stat), size=found.stat.st_size, path=found.rel)

    def read(self, units: Iterable[Unit]) -> Iterator[Item | Unreadable]:
        for unit in units:
            try:
                # A listed unit's path was checked by the listing just now.
                path = (os.path.join(self.root.path, unit.path) if unit.path
                        else self.root.locate(unit.ref))
                data, st = read_message_file(path, unit.ref)
            except UnreadableItem as exc:
                yield Unreadable(unit, exc.where, exc.reason)
            except OSError as exc:
                yield Unreadable(unit, unit.ref, failure_reason(exc))
            else:
                yield Item(unit, unit.ref, data, st.st_mtime)

    def open_ref(self, ref: str) -> bytes:
        return read_message(self.root.locate(ref), ref)
