"""Maildir reader: one Maildir, or a Dovecot-style template tree of per-user Maildirs.

``maildir:/srv/mail/alice/Maildir`` is one Maildir; its units have no user.
``maildir:/var/vmail/%d/%n/Maildir`` is a tree walked below its fixed root
(``/var/vmail``), one directory level per template component; each unit's
user comes from the variables (see ``restore.mailnames.PathTemplate``). A directory
whose name is not a valid mailbox name (``restore.mailnames``) is reported
as unreadable and never entered.

Folders are Maildir++: the Maildir itself is INBOX, ``.Sent`` is "Sent",
``.Archive.2017`` is "Archive/2017", and modified UTF-7 is decoded
(``.&AMQ-rger`` is "Ärger"). Messages are the files in ``cur/`` and
``new/``; ``tmp/`` and Dovecot's index files are never read. A message file
may be compressed (Dovecot zlib / mail_compress plugin): told by magic bytes.

A unit's ``ref`` is the file's path relative to the store root (the
Maildir, or the template's fixed root) without the ``:2,FLAGS`` info suffix,
e.g. ``example.com/alice/Maildir/.Sent/cur/1512767585.M1P2.host,S=4123``: a
client setting a flag renames the file but neither changes its ref nor, as
the rename keeps the mtime, its stamp. ``open_ref`` finds the file in
``cur/`` or ``new/`` whatever its flags are now. ``Item.delivered`` is the
file's mtime.

Maildir delivery is write-once: a message file is written in ``tmp/`` and
renamed into ``new/``, and never rewritten in place; a flag change renames
it within ``cur/``. Every change to what ``cur/`` or ``new/`` holds is then
a change of that directory's entries, which moves the directory's mtime and
ctime. So each message directory is a ``UnitGroup`` stamped with its inode,
mtime and ctime: while that stamp is unchanged, the catalog reuses the
directory's units without listing or stat'ing them. A directory changed in
the last ``RACY_SECONDS`` gets no stamp (a change within the same clock tick
as the stamp would not move it), so it is listed until it has been quiet.
A tool that rewrites message files in place without renaming them breaks
the assumption: after running one, touch the directories it changed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence

from restore.errors import StoreError, UnreadableItem
from restore.mailnames import (
    INFO_SEPARATOR,
    PathTemplate,
    fs_name,
    invalid_mailbox_reason,
    is_template,
    maildir_folder,
    message_stem,
    name_text,
)
from restore.selection import EVERYONE, UserSelection
from restore.stores.base import Item, Store, Unit, UnitGroup, Unreadable
from restore.stores.files import (
    OUTSIDE_ROOT,
    Refused,
    StoreRoot,
    directory_stamp,
    failure_reason,
    read_ahead,
    read_message,
    read_message_file,
    sorted_listing,
    stamp,
)

MESSAGE_DIRS = ("cur", "new")


class MaildirStore(Store):
    kind = "maildir"
    parallel_safe = True

    def __init__(self, spec: str, path: str, selection: UserSelection = EVERYONE):
        super().__init__(spec)
        self.template = PathTemplate(path) if is_template(path) else None
        # Only a template tells whose a Maildir is: a plain one is listed whole.
        self.selection = selection if self.template is not None else EVERYONE
        self.root = StoreRoot(self.template.root if self.template else path, spec)
        if self.template is None and not any(
            os.path.isdir(os.path.join(self.root.path, sub)) for sub in MESSAGE_DIRS
        ):
            raise StoreError(f"{spec}: {self.root.path} is not a Maildir (no cur/ or new/)")
        self._index_dir = ""
        self._index: dict[str, str] = {}

    # -- listing -------------------------------------------------------------

    def users(self) -> set[str] | None:
        if self.template is None:
            return None
        return {user for user, _ in self._mailboxes() if user is not None}

    def lists_group(self, key: str) -> bool:
        if self.selection.everyone:
            return True
        user = self._owner(key)
        return user is None or self.selection(user)

    def _owner(self, rel: str) -> str | None:
        """The user whose Maildir holds ``rel`` (relative to the root), if the template says."""
        assert self.template is not None
        parts = rel.split("/")
        if len(parts) < len(self.template.components):
            return None
        variables: dict[str, str] = {}
        for part, component in zip(parts, self.template.components, strict=False):
            captured = component.match(part)
            if captured is None:
                return None
            variables |= captured
        return self.template.user(variables)

    def units(self) -> Iterator[Unit | Unreadable]:
        for group in self.unit_groups():
            if isinstance(group, Unreadable):
                yield group
            else:
                yield from group.units()

    def unit_groups(
        self, recorded: Mapping[str, str] | None = None
    ) -> Iterator[UnitGroup | Unreadable]:
        """One group per ``cur/`` and ``new/`` directory, stamped (see the module doc)."""
        for user, maildir in self._mailboxes():
            if isinstance(maildir, Refused):
                yield Unreadable(Unit(maildir.rel, ""), maildir.rel, maildir.reason)
                continue
            for folder in self._folders(maildir):
                if isinstance(folder, Refused):
                    yield Unreadable(Unit(folder.rel, "", user=user), folder.rel, folder.reason)
                    continue
                folder_dir, name = folder
                for sub in MESSAGE_DIRS:
                    group = self._message_dir(os.path.join(folder_dir, sub), name, user)
                    if group is not None:
                        yield group

    def _mailboxes(self) -> Iterator[tuple[str | None, str | Refused]]:
        """(user, Maildir path) for every mailbox; (None, Refused) for a rejected one."""
        if self.template is None:
            yield None, self.root.path
            return
        yield from self._descend(self.root.path, 0, {})

    def _descend(
        self, directory: str, depth: int, variables: dict[str, str]
    ) -> Iterator[tuple[str | None, str | Refused]]:
        assert self.template is not None
        components = self.template.components
        if depth == len(components):
            user = self.template.user(variables)
            reason = invalid_mailbox_reason(user)
            if reason:
                if self.selection.everyone:
                    yield None, Refused(self.root.rel(directory),
                                        f"not a valid mailbox name: {reason}")
            elif self.selection(user):
                yield user, directory
            return
        component = components[depth]
        if component.literal is not None:
            path = os.path.join(directory, component.literal)
            if os.path.isdir(path):
                yield from self._enter(path, depth, variables, {})
            return
        for entry in self._list(directory):
            if isinstance(entry, Refused):
                yield None, entry
                continue
            captured = component.match(entry.name)
            if captured is None or not entry.is_dir():
                continue
            yield from self._enter(entry.path, depth, variables, captured)

    def _enter(
        self, path: str, depth: int, variables: dict[str, str], captured: dict[str, str]
    ) -> Iterator[tuple[str | None, str | Refused]]:
        if any(variables.get(k, v) != v for k, v in captured.items()):
            return  # a variable repeated in the template took two values
        if not self.root.contains(path):
            yield None, Refused(self.root.rel(path), OUTSIDE_ROOT)
            return
        yield from self._descend(path, depth + 1, variables | captured)

    def _list(self, directory: str) -> Sequence[os.DirEntry[str] | Refused]:
        """A directory's entries in name order (hidden ones too: they may be bad user names)."""
        try:
            with os.scandir(directory) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            return [
                Refused(self.root.rel(directory), f"cannot list directory: {failure_reason(exc)}")
            ]

    def _folders(self, maildir: str) -> Iterator[tuple[str, str] | Refused]:
        """(folder directory, folder name) of INBOX and every Maildir++ subfolder."""
        yield maildir, "INBOX"
        for entry in self._list(maildir):
            if isinstance(entry, Refused):
                yield entry
            elif entry.name.startswith(".") and entry.name not in (".", ".."):
                if problem := self.root.entry_problem(entry):
                    yield Refused(self.root.rel(entry.path), problem)
                elif os.path.isdir(os.path.join(entry.path, "cur")):
                    yield entry.path, maildir_folder(name_text(entry.name))

    def _message_dir(
        self, directory: str, folder: str, user: str | None
    ) -> UnitGroup | Unreadable | None:
        try:
            st = os.stat(directory)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        rel = self.root.rel(directory)
        if not self.root.contains(directory):
            return Unreadable(Unit(rel, "", folder, user), rel, OUTSIDE_ROOT)
        return UnitGroup(rel, directory_stamp(st),
                         lambda: self._message_files(directory, rel, folder, user),
                         lambda: self._message_files(directory, rel, folder, user, stamped=False))

    def _message_files(
        self, directory: str, rel: str, folder: str, user: str | None, stamped: bool = True
    ) -> Iterator[Unit | Unreadable]:
        """The directory's message files; ``stamped``: examined (a stat each) here, not in read."""
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            yield Unreadable(Unit(rel, "", folder, user), rel,
                             f"cannot list directory: {failure_reason(exc)}")
            return
        try:
            for name in sorted_listing(fd):
                if stamped:
                    yield self._message_file(fd, directory, rel, name, folder, user)
                else:
                    text = name_text(name)
                    yield Unit(f"{rel}/{message_stem(text)}", "", folder, user, 0, 0,
                               f"{rel}/{text}")
        except OSError as exc:
            yield Unreadable(Unit(rel, "", folder, user), rel,
                             f"cannot list directory: {failure_reason(exc)}")
        finally:
            os.close(fd)

    def _message_file(
        self, fd: int | None, directory: str, rel: str, name: str, folder: str, user: str | None
    ) -> Unit | Unreadable:
        """A listed entry (``rel``: its directory's, as text) as a stamped unit, or why it is no
        message file to read."""
        text = name_text(name)
        where = f"{rel}/{text}"
        ref = f"{rel}/{message_stem(text)}"
        problem = None
        try:
            # relative to the open directory (when there is one): no path walk
            if fd is not None:
                st = os.lstat(name, dir_fd=fd)
            else:
                st = os.lstat(os.path.join(directory, name))
            if stat.S_ISLNK(st.st_mode):
                path = os.path.join(directory, name)
                problem = self._symlink_problem(path)
                if not problem:
                    st = os.stat(path)
        except OSError as exc:
            problem = failure_reason(exc)
        if not problem and not stat.S_ISREG(st.st_mode):
            problem = "not a regular file"
        if problem:
            return Unreadable(Unit(ref, "", folder, user), where, problem)
        return Unit(ref, stamp(st), folder, user, size=st.st_size, path=where)

    def _symlink_problem(self, path: str) -> str | None:
        if not os.path.exists(path):
            return "broken symlink"
        return None if self.root.contains(path) else OUTSIDE_ROOT

    # -- reading -------------------------------------------------------------

    def read(self, units: Iterable[Unit]) -> Iterator[Item | Unreadable]:
        for unit in read_ahead(units, self.root):
            unstamped = not unit.stamp and unit.path
            yield self._read_unstamped(unit) if unstamped else self._read_one(unit)

    def _read_one(self, unit: Unit) -> Item | Unreadable:
        try:
            data, st = self._read(unit)
        except UnreadableItem as exc:
            return Unreadable(unit, exc.where, exc.reason)
        except OSError as exc:
            return Unreadable(unit, unit.ref, failure_reason(exc))
        return Item(unit, unit.ref, data, st.st_mtime)

    def _read_unstamped(self, unit: Unit) -> Item | Unreadable:
        """A unit listed without a stat: stamped from the file read (see ``UnitGroup.unstamped``).

        The common case, a plain regular file, costs no more than reading it;
        anything else (a symlink, a failed read) is examined as a stamped
        listing would have, and then read as a stamped unit is.
        """
        path = self.root.path_of(unit.path)
        try:
            data, st = read_message_file(path, unit.ref, self.max_message_size,
                                         follow_symlinks=False)
        except UnreadableItem:
            directory, name = os.path.split(path)
            rel = unit.path.rpartition("/")[0]
            examined = self._message_file(None, directory, rel, name, unit.folder, unit.user)
            if isinstance(examined, Unit):
                return self._read_one(examined)
            if os.path.lexists(path):
                return examined
            # renamed (flags set, or moved to cur/) since it was listed
            try:
                data, st = read_message_file(self._find(unit.ref), unit.ref, self.max_message_size)
            except UnreadableItem as exc:
                return Unreadable(unit, exc.where, exc.reason)
        return Item(Unit(unit.ref, stamp(st), unit.folder, unit.user, 0, st.st_size, unit.path),
                    unit.ref, data, st.st_mtime)

    def _read(self, unit: Unit) -> tuple[bytes, os.stat_result]:
        if unit.path:  # found and checked by the listing just now
            path = self.root.path_of(unit.path)
            try:
                return read_message_file(path, unit.ref, self.max_message_size)
            except UnreadableItem:
                if os.path.lexists(path):
                    raise
                # renamed (flags set, or moved to cur/) since it was listed
        return read_message_file(self._find(unit.ref), unit.ref, self.max_message_size)

    def open_ref(self, ref: str) -> bytes:
        return read_message(self._find(ref), ref, self.max_message_size)

    def _find(self, ref: str) -> str:
        """The message file a ref names, in ``cur/`` or ``new/``, whatever its flags."""
        folder_ref, _, sub_and_stem = ref.rpartition("/")
        head, _, sub = folder_ref.rpartition("/")
        stem = sub_and_stem
        if sub not in MESSAGE_DIRS or not stem or INFO_SEPARATOR in stem:
            raise UnreadableItem(ref, "not a Maildir message reference")
        folder_dir = self.root.locate(head) if head else self.root.path
        if self._index_dir != folder_dir:
            self._index, self._index_dir = self._build_index(folder_dir), folder_dir
        stem = fs_name(stem)
        name = self._index.get(stem)
        if name is None or not os.path.lexists(os.path.join(folder_dir, name)):
            # moved to cur/ or flags changed since the folder was indexed
            self._index = self._build_index(folder_dir)
            name = self._index.get(stem)
        if name is None:
            raise UnreadableItem(ref, "no such message (expunged?)")
        path = os.path.join(folder_dir, name)
        if not self.root.contains(path):
            raise UnreadableItem(ref, OUTSIDE_ROOT)
        return path

    @staticmethod
    def _build_index(folder_dir: str) -> dict[str, str]:
        """Message stem -> ``cur/NAME`` or ``new/NAME`` for one folder (one folder in memory)."""
        index: dict[str, str] = {}
        for sub in MESSAGE_DIRS:
            try:
                with os.scandir(os.path.join(folder_dir, sub)) as it:
                    for entry in it:
                        index.setdefault(message_stem(entry.name), f"{sub}/{entry.name}")
            except OSError:
                continue
        return index
