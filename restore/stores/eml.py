"""eml reader: a directory tree of one-message files, as gateway archives keep them.

Any file name is a message (``.gz``/``.zst`` or not: compression is told by
magic bytes). A unit is one file; its ref is the path relative to the store
root and ``Item.delivered`` the file's mtime. ``eml:FILE`` reads that one
file. Hidden files (names starting with ``.``, where archivers write before
renaming) are skipped; empty files, junk, unreadable files and symlinks
leaving the root are reported unreadable with the path and reason.

Gateway archives write each file once (and rename it into place), so a
directory whose inode, mtime and ctime are unchanged holds the same files
as when it was last listed. When every file lies in a leaf directory (the
usual ``YYYY/MM/DD/`` layout), each leaf directory is a stamped
``UnitGroup`` and the catalog skips unchanged ones without stat'ing their
files. A tree with files beside subdirectories is one unstamped group,
listed file by file every time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from functools import partial

from restore.errors import UnreadableItem
from restore.mailnames import name_text
from restore.stores.base import Item, Store, Unit, UnitGroup, Unreadable
from restore.stores.files import (
    Found,
    Refused,
    directory_stamp,
    failure_reason,
    read_ahead,
    read_message,
    read_message_file,
    root_and_file,
    sorted_names,
    stamp,
)


class EmlStore(Store):
    kind = "eml"
    parallel_safe = True

    def __init__(self, spec: str, path: str):
        super().__init__(spec)
        self.root, self._single = root_and_file(path, spec)

    def units(self) -> Iterator[Unit | Unreadable]:
        files: Iterable[Found | Refused]
        if self._single:
            files = [self.root.examine(os.path.join(self.root.path, self._single))]
        else:
            files = self.root.walk()
        yield from map(_unit, files)

    def unit_groups(
        self, recorded: Mapping[str, str] | None = None
    ) -> Iterator[UnitGroup | Unreadable]:
        leaves = None if self._single else self._leaf_directories(recorded or {})
        if leaves is None:
            yield UnitGroup(None, None, self.units)
            return
        for leaf in leaves:
            if isinstance(leaf, Refused):
                yield Unreadable(Unit(leaf.rel, ""), leaf.rel, leaf.reason)
                continue
            rel, path, st = leaf
            yield UnitGroup(rel, directory_stamp(st), partial(self._leaf_units, path, rel),
                            partial(self._leaf_unstamped, path, rel))

    def _leaf_directories(self, recorded: Mapping[str, str]
                          ) -> list[tuple[str, str, os.stat_result] | Refused] | None:
        """Every directory holding files, when none also holds subdirectories; else None.

        Told from the directory entries' types alone: no file is stat'ed. A
        directory the last scan found to be a leaf (``recorded``) whose stamp
        is unchanged holds the same entries: it is not listed again (a day of
        a gateway archive holds thousands of files).
        """
        leaves: list[tuple[str, str, os.stat_result] | Refused] = []
        seen: set[tuple[int, int]] = set()
        pending = [(self.root.path, "")]
        while pending:
            path, rel = pending.pop()
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) in seen:      # a symlink loop inside the root
                    continue
                seen.add((st.st_dev, st.st_ino))
                if rel and rel in recorded and recorded[rel] == directory_stamp(st):
                    leaves.append((rel, path, st))
                    continue
                # Counted as they come, not held: a leaf holds thousands of files.
                files, others = 0, []
                with os.scandir(path) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        link = entry.is_symlink()
                        if link or entry.is_dir(follow_symlinks=False):
                            others.append((entry.path, entry.name, link))
                        else:
                            files += 1
            except OSError as exc:
                leaves.append(Refused(rel or ".", f"cannot list directory: {failure_reason(exc)}"))
                continue
            subdirs = []
            for entry_path, entry_name, link in others:
                name = name_text(entry_name)
                entry_rel = f"{rel}/{name}" if rel else name
                if not link:
                    subdirs.append((entry_path, entry_rel))
                    continue
                # A symlink to a directory inside the root is a subdirectory; any
                # other is one of this directory's files, which its walk reports.
                found = self.root.examine_listed(entry_path, entry_rel)
                if isinstance(found, str):
                    subdirs.append((entry_path, found))
                else:
                    files += 1
            has_files = files > 0
            if has_files and (subdirs or not rel):
                return None     # files beside subdirectories, or in the root itself
            if has_files:
                leaves.append((rel, path, st))
            pending.extend(sorted(subdirs, reverse=True))
        return leaves

    def _leaf_units(self, path: str, rel: str) -> Iterator[Unit | Unreadable]:
        return map(_unit, self.root.walk(path))

    def _leaf_unstamped(self, path: str, rel: str) -> Iterator[Unit | Unreadable]:
        """A leaf's units without a stat each (``UnitGroup.unstamped``): its plain files by name.

        What the directory entry does not show to be a plain file (a
        symlink, a subdirectory made since) is examined as ``_leaf_units`` does.
        """
        others: set[str] = set()    # entries not shown to be plain files: few, if any

        def names(entries: Iterator[os.DirEntry[str]]) -> Iterator[str]:
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    others.add(entry.name)
                yield entry.name

        try:
            with os.scandir(path) as entries:
                listed = sorted_names(names(entries))
        except OSError as exc:
            yield Unreadable(Unit(rel, ""), rel, f"cannot list directory: {failure_reason(exc)}")
            return
        for name in listed:
            entry_rel = f"{rel}/{name_text(name)}"
            if name not in others:
                yield Unit(entry_rel, "", path=entry_rel)
                continue
            found = self.root.examine_listed(f"{path}/{name}", entry_rel)
            if isinstance(found, str):
                yield from map(_unit, self.root.walk(f"{path}/{name}"))
            else:
                yield _unit(found)

    def read(self, units: Iterable[Unit]) -> Iterator[Item | Unreadable]:
        for unit in read_ahead(units, self.root):
            if unit.path and not unit.stamp:
                yield self._read_unstamped(unit)
                continue
            try:
                # A listed unit's path was checked by the listing just now.
                path = self.root.path_of(unit.path) if unit.path else self.root.locate(unit.ref)
                data, st = read_message_file(path, unit.ref, self.max_message_size)
            except UnreadableItem as exc:
                yield Unreadable(unit, exc.where, exc.reason)
            except OSError as exc:
                yield Unreadable(unit, unit.ref, failure_reason(exc))
            else:
                yield Item(unit, unit.ref, data, st.st_mtime)

    def _read_unstamped(self, unit: Unit) -> Item | Unreadable:
        """A unit listed without a stat, stamped from the file read (as ``MaildirStore`` does).

        Anything but a plain file read in one go (a symlink, a failed read)
        is examined as a stamped listing would have, then read as such.
        """
        path = self.root.path_of(unit.path)
        try:
            data, st = read_message_file(path, unit.ref, self.max_message_size,
                                         follow_symlinks=False)
        except UnreadableItem:
            found = self.root.examine_listed(path, unit.path)
            if isinstance(found, str):      # a directory now, since the listing
                return Unreadable(unit, unit.ref, "not a regular file")
            examined = _unit(found)
            if isinstance(examined, Unreadable):
                return examined
            return next(self.read([examined]))
        return Item(Unit(unit.ref, stamp(st), size=st.st_size, path=unit.path), unit.ref, data,
                    st.st_mtime)

    def open_ref(self, ref: str) -> bytes:
        return read_message(self.root.locate(ref), ref, self.max_message_size)


def _unit(found: Found | Refused) -> Unit | Unreadable:
    if isinstance(found, Refused):
        return Unreadable(Unit(found.rel, ""), found.rel, found.reason)
    return Unit(found.rel, stamp(found.stat), size=found.stat.st_size, path=found.rel)
