"""Maildir delivery: append messages to per-user Maildirs, never outside the mail root.

``maildir:/var/vmail/%d/%n/Maildir`` names a tree of per-user Maildirs
(``restore.mailnames.PathTemplate``); a path without variables is one Maildir that
every user's mail goes to. Folders are Maildir++ subfolders (``Sent`` ->
``.Sent``, ``Archive/2017`` -> ``.Archive.2017``, non-ASCII in modified
UTF-7 as Dovecot and Courier write them).

Delivery follows the Maildir rules, plus what crash safety needs:

1. a name never used before (time, microseconds, pid, counter, random,
   host, ``,S=size``), promised by ``prepare`` so the journal holds it
   before anything is written;
2. ``stage``: create ``tmp/NAME`` with O_EXCL, write LF-terminated bytes,
   set the mtime to the received time (Dovecot caches the received date the
   first time it sees the file, so it must be right before the link);
3. ``commit``, for many staged batches at once: make their files durable
   (one ``syncfs`` per file system; where there is no syncfs, stage fsyncs
   each file instead), hard-link each into ``new/`` (or ``cur/NAME:2,FLAGS``
   when flags are given, keywords as Dovecot's letters:
   ``restore.targets.dovecot_keywords``), which refuses an existing name,
   unlink the tmp file, and make the links durable (``syncfs`` again; else
   an fsync of each directory linked into), before ``commit`` returns. So a
   file in ``new/`` never has contents a power cut could lose, and a message
   reported written survives one. ``append`` is ``stage`` and ``commit`` of
   one batch.

Every directory is opened relative to the mail root's file descriptor and
checked, once open, to still lie under the root: a user or folder name from
a plan, a ``..`` or a symlinked user directory pointing elsewhere can make
nothing be created outside the mail root, even when running as root.

Undo (``remove``) finds a message by the name it was delivered under, in
``new/`` or in ``cur/`` with any flags a mail client added since, checks
that its content still has the fingerprint, unlinks it and fsyncs the
directory. Directories this target created, and a ``dovecot-keywords``
file, are listed by the session (``take_created``) so that undo can remove
them again once their folder is empty (``restore.targets.maildir_undo``).
The calls on the disk, by directory descriptor, are
``restore.targets.maildir_fs``'s.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence

from restore.errors import PermanentError, TargetError, TransientError, UsageError
from restore.identity import fingerprint_of, normalize_newlines
from restore.mailnames import (
    PathTemplate,
    info_suffix,
    invalid_mailbox_reason,
    is_inside,
    is_keyword,
    is_template,
    maildir_dirname,
    unique_name,
)
from restore.targets.base import Message, Outcome, Staged, Target, TargetSession, nothing
from restore.targets.dovecot_keywords import KEYWORDS_FILE, KeywordsFull, keyword_letters
from restore.targets.maildir_fs import (
    MAILDIRFOLDER,
    OUTSIDE_ROOT,
    SYNCFS,
    Folder,
    StagedBatch,
    copy_owner,
    exists,
    listdir,
    mark_maildirfolder,
    read,
    real_path,
    syncfs,
    unlink_quietly,
)
from restore.targets.maildir_undo import remove_created, remove_written

NO_MAILBOX = "no mailbox"


def maildir_bytes(data: bytes) -> bytes:
    """Maildir files hold LF line endings: CRLF and a bare CR become LF (identity stays)."""
    return normalize_newlines(data)



class MaildirTarget(Target):
    """Per-user Maildirs under a fixed mail root."""

    kind = "maildir"
    stages = True

    def __init__(self, path: str, *, create_missing: bool = False):
        self.spec = f"maildir:{path}"
        self.create_missing = create_missing
        if any(part in (".", "..") for part in path.split("/")):
            # Normalising would silently move the mail root; refuse instead.
            raise UsageError(f"{self.spec}: '.' and '..' are not allowed in a Maildir path")
        path = os.path.join(os.getcwd(), path)
        self.template = PathTemplate(path) if is_template(path) else None
        self.root = self.template.root if self.template else path
        if not os.path.isdir(self.root):
            raise TargetError(f"{self.spec}: mail root {self.root} does not exist")
        self.real_root = os.path.realpath(self.root)

    def mailbox_path(self, user: str) -> str:
        """The user's Maildir; raises PermanentError when the user cannot have one here."""
        reason = invalid_mailbox_reason(user)
        if reason:
            raise PermanentError(user, f"not a valid mailbox name: {reason}")
        if self.template is None:
            return self.root
        try:
            path = self.template.expand(user)
        except ValueError as exc:
            raise PermanentError(user, str(exc)) from None
        if any(part in (".", "..") for part in self._below_root(path)):
            raise PermanentError(user, OUTSIDE_ROOT)
        return path

    def _below_root(self, path: str) -> list[str]:
        return [part for part in path[len(self.root):].split("/") if part]

    def session(self, user: str) -> MaildirSession:
        """Open ``user``'s Maildir; PermanentError when it is missing (unless create_missing)."""
        created: list[str] = []
        fd = self._open_mailbox(user, self.create_missing, created)
        if fd is None:
            raise PermanentError(user, NO_MAILBOX)
        path = self.mailbox_path(user)
        try:
            self._check_writable(path)
        except BaseException:
            os.close(fd)
            raise
        return MaildirSession(self, user, path, fd, created)

    def probe(self, user: str) -> str | None:
        try:
            fd = self._open_mailbox(user, False, [])
            if fd is not None:
                os.close(fd)
                self._check_writable(self.mailbox_path(user))
        except (PermanentError, TargetError) as exc:
            return exc.reason if isinstance(exc, PermanentError) else str(exc)
        if fd is None:
            return None if self.create_missing else NO_MAILBOX
        return None

    def _open_mailbox(self, user: str, create: bool, created: list[str]) -> int | None:
        """The descriptor of ``user``'s Maildir, None when missing and not created."""
        path = self.mailbox_path(user)
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise TargetError(f"{self.spec}: mail root {self.root}: {exc.strerror}") from None
        here = self.root
        try:
            for part in self._below_root(path):
                here = f"{here}/{part}"
                child = self._open_dir(fd, part, here, create=create, user=user, created=created)
                os.close(fd)
                fd = -1
                if child is None:
                    return None
                fd = child
        except OSError as exc:
            raise PermanentError(user, f"{here}: {exc.strerror}") from None
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        return fd

    def commit(self, staged: Sequence[Staged]) -> list[list[Outcome]]:
        """Make staged batches durable, visible (linked, in order) and durable again."""
        batches = [b for b in staged if isinstance(b, StagedBatch) and b.files]
        try:
            try:
                if SYNCFS is not None:
                    # The files' bytes first: a file in new/ must never lose its contents.
                    for fd in {b.dev: b.tmp for b in batches}.values():
                        syncfs(fd)
                linked: set[int] = set()
                for batch in batches:
                    linked |= batch.link()
                if SYNCFS is not None:
                    for fd in {b.dev: b.tmp for b in batches}.values():
                        syncfs(fd)
                else:
                    for fd in linked:
                        os.fsync(fd)
            except OSError as exc:
                # The files are linked but maybe not durable: in doubt, not failed.
                where = batches[0].path if len(batches) == 1 else f"{len(batches)} folders"
                raise TransientError(f"{where}: sync: {exc.strerror}") from None
        finally:
            for each in staged:
                if isinstance(each, StagedBatch):
                    each.close()
        return [b.results() if isinstance(b, StagedBatch) else [] for b in staged]

    def relative(self, path: str) -> str:
        """``path`` (under the mail root) relative to it, as the journal records it."""
        return path[len(self.root):].lstrip("/")

    def _check_writable(self, maildir: str) -> None:
        """TargetError when this process may not write into ``maildir``: said once, not per message.

        A read-only mount or a mailbox of another user is the target's
        problem as a whole, not one message's.
        """
        for path in (maildir, f"{maildir}/tmp"):
            effective = os.access in os.supports_effective_ids
            if os.path.isdir(path) and not os.access(path, os.W_OK, effective_ids=effective):
                read_only = os.statvfs(path).f_flag & os.ST_RDONLY
                raise TargetError(f"{self.spec}: cannot write to {path}: "
                                  + ("read-only file system" if read_only else "permission denied"))

    def _open_dir(self, parent: int, name: str, path: str, *, create: bool, user: str,
                  mode: int = 0o700, owner: os.stat_result | None = None,
                  created: list[str] | None = None) -> int | None:
        """Open (or create) directory ``name`` under ``parent``; refuse it outside the root.

        Returns None when it is missing and not to be created. A directory
        created here gets ``mode`` and the owner of ``owner`` (default: of its
        parent), so the mail server's user can read what root delivered; it
        is added to ``created``.
        """
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            try:
                os.mkdir(name, mode, dir_fd=parent)
                if created is not None:
                    created.append(self.relative(path))
            except FileExistsError:
                pass  # another worker or the MDA made it just now
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            try:
                os.fchmod(fd, mode)
                copy_owner(fd, owner or os.fstat(parent))
                os.fsync(parent)
            except BaseException:
                os.close(fd)
                raise
        if not is_inside(real_path(fd, path), self.real_root):
            os.close(fd)
            raise PermanentError(user, f"{path}: {OUTSIDE_ROOT}")
        return fd



class MaildirSession(TargetSession):
    """One user's Maildir, used by one worker thread at a time."""

    def __init__(self, target: MaildirTarget, user: str, path: str, mailbox_fd: int,
                 created: list[str] | None = None):
        self.target = target
        self.user = user
        self.path = path
        self.mailbox_fd = mailbox_fd
        self.mailbox_stat = os.fstat(mailbox_fd)
        self.folders: dict[str, Folder] = {}
        self.created = created or []
        self._cur_names: dict[str, dict[str, str]] = {}   # undo: folder -> cur/ base name -> entry

    def take_created(self) -> list[str]:
        created, self.created = self.created, []
        return created

    def close(self) -> None:
        for folder in self.folders.values():
            folder.close()
        self.folders.clear()
        if self.mailbox_fd >= 0:
            os.close(self.mailbox_fd)
            self.mailbox_fd = -1

    def prepare(self, folder: str, message: Message) -> str:
        return unique_name(len(maildir_bytes(message.data)))

    def append(self, folder: str, batch: Sequence[Message],
               ready: Callable[[], None] = nothing) -> list[Outcome]:
        ready()
        return self.target.commit([self.stage(folder, batch)])[0]

    def stage(self, folder: str, batch: Sequence[Message]) -> StagedBatch:
        staged = StagedBatch(len(batch), self.path, [None] * len(batch))
        try:
            box = self._folder(folder, create=True)
        except PermanentError as exc:
            staged.outcomes = [Outcome(ok=False, reason=exc.reason) for _ in batch]
            return staged
        except (ValueError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            staged.outcomes = [
                Outcome(ok=False, reason=f"folder {folder!r}: {reason}") for _ in batch
            ]
            return staged
        if box is None:  # only when not creating; here for the type checker
            staged.outcomes = [
                Outcome(ok=False, reason=f"folder {folder!r} missing") for _ in batch
            ]
            return staged
        staged.path, staged.dev = box.path, box.dev
        staged.tmp, staged.new, staged.cur = os.dup(box.tmp), os.dup(box.new), os.dup(box.cur)
        for position, message in enumerate(batch):
            written = self._write_tmp(box, message)
            if isinstance(written, Outcome):
                staged.outcomes[position] = written
            else:
                staged.files.append((position, *written))
        return staged

    def _write_tmp(self, box: Folder, message: Message) -> tuple[str, str, bool, str] | Outcome:
        """Write ``tmp/NAME``: (NAME, its final name, into cur/, warning), or why not."""
        data = maildir_bytes(message.data)
        name = message.planned_id or unique_name(len(data))
        try:
            letters = self._keyword_letters(box, message.flags)
        except KeywordsFull as exc:
            return Outcome(ok=False, reason=f"{box.path}/{exc}")
        except OSError as exc:
            return Outcome(ok=False, reason=f"{box.path}/{KEYWORDS_FILE}: {exc.strerror}")
        suffix, unknown = info_suffix(message.flags, letters)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         box.file_mode, dir_fd=box.tmp)
        except FileExistsError:
            return Outcome(ok=False, reason=f"tmp/{name} exists: name clash, refused")
        except OSError as exc:
            return Outcome(ok=False, reason=f"tmp/{name}: {exc.strerror}")
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fchmod(fd, box.file_mode)
                copy_owner(fd, self.mailbox_stat)
                os.utime(fd, (message.received, message.received))
                if SYNCFS is None:
                    os.fsync(fd)    # no syncfs to make the group durable at once
            finally:
                os.close(fd)
        except OSError as exc:
            unlink_quietly(name, box.tmp)
            return Outcome(ok=False, reason=f"{name}: {exc.strerror}")
        warning = f"flags not stored in Maildir: {' '.join(unknown)}" if unknown else ""
        return name, name + suffix, bool(suffix), warning

    def _keyword_letters(self, box: Folder, flags: Sequence[str]) -> dict[str, str]:
        """The folder's letters for the keywords among ``flags``, added to its file if new."""
        missing = [flag for flag in flags if is_keyword(flag) and flag not in box.letters]
        if missing:
            existed = exists(KEYWORDS_FILE, box.fd)
            box.letters.update(keyword_letters(
                box.fd, missing, box.file_mode, lambda fd: copy_owner(fd, self.mailbox_stat)))
            if not existed:
                self.created.append(self.target.relative(f"{box.path}/{KEYWORDS_FILE}"))
        return box.letters

    def find(self, folder: str, message: Message) -> str | None:
        """The file holding ``message`` in ``folder``: by the planned name, else by content."""
        try:
            box = self._folder(folder, create=False)
        except (ValueError, PermanentError, OSError):
            return None
        if box is None:
            return None
        name = message.planned_id
        if name:
            if exists(name, box.new):
                return name
            for entry in listdir(box.cur):
                # The MUA moves new/NAME to cur/NAME:2,FLAGS; the NAME part is stable.
                if entry == name or entry.startswith(name + ":"):
                    return entry
            # A crash before the link left our own file in tmp/: it is no mail
            # (never linked into new/ or cur/), and the name will not be reused.
            unlink_quietly(name, box.tmp)
        return self._find_by_content(box, message)

    def remove(self, folder: str, batch: Sequence[tuple[str, str, str]], dry_run: bool = False
               ) -> list[str | None]:
        try:
            box = self._folder(folder, create=False)
        except (ValueError, PermanentError, OSError):
            box = None
        return remove_written(box, folder, batch, self._cur_names, dry_run)

    def remove_created(self, path: str, dry_run: bool = False) -> str | None:
        return remove_created(self.target.root, self.target.real_root, path, dry_run)

    def _find_by_content(self, box: Folder, message: Message) -> str | None:
        """Scan for a file with the received mtime and the same bytes or fingerprint."""
        data = maildir_bytes(message.data)
        second = int(message.received)
        for dir_fd in (box.new, box.cur):
            for entry in listdir(dir_fd):
                try:
                    st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or int(st.st_mtime) != second:
                    continue
                content = read(entry, dir_fd)
                if content is None:
                    continue
                if content == data or (message.fingerprint
                                       and fingerprint_of(content) == message.fingerprint):
                    return entry
        return None

    def _folder(self, folder: str, *, create: bool) -> Folder | None:
        """Open ``folder``, creating it and its cur/new/tmp when ``create``; None if absent."""
        if folder in self.folders:
            return self.folders[folder]
        dirname = maildir_dirname(folder)
        owner = self.mailbox_stat
        mode = stat.S_IMODE(owner.st_mode)
        path = self.path if dirname is None else f"{self.path}/{dirname}"
        opened: list[int] = []
        box = None
        try:
            if dirname is None:
                fd: int | None = os.dup(self.mailbox_fd)
            else:
                fd = self.target._open_dir(self.mailbox_fd, dirname, path, create=create,
                                           user=self.user, mode=mode, owner=owner,
                                           created=self.created)
            if fd is None:
                return None
            opened.append(fd)
            for sub in ("tmp", "new", "cur"):
                sub_fd = self.target._open_dir(fd, sub, f"{path}/{sub}", create=create,
                                               user=self.user, mode=mode, owner=owner,
                                               created=self.created)
                if sub_fd is None:
                    return None
                opened.append(sub_fd)
            if dirname is not None and create and mark_maildirfolder(fd, owner):
                self.created.append(self.target.relative(f"{path}/{MAILDIRFOLDER}"))
            box = Folder(path, fd, opened[1], opened[2], opened[3], file_mode=mode & 0o666,
                          dev=os.fstat(opened[1]).st_dev)
        finally:
            if box is None:
                for fd in opened:
                    os.close(fd)
        self.folders[folder] = box
        return box
