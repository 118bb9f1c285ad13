"""Undo in a Maildir: remove what a run delivered, and the folders it created once empty."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

from restore.identity import is_same_message
from restore.mailnames import is_inside
from restore.targets.base import CHANGED, MOVED, folder_gone
from restore.targets.dovecot_keywords import KEYWORDS_FILE
from restore.targets.maildir_fs import MAILDIRFOLDER, OUTSIDE_ROOT, Folder, exists, listdir, read


def remove_written(box: Folder | None, folder: str, batch: Sequence[tuple[str, str, str]],
                   cur_names: dict[str, dict[str, str]], dry_run: bool = False
                   ) -> list[str | None]:
    """``TargetSession.remove`` in the open folder ``box`` (None: it no longer exists).

    ``cur_names`` caches, per folder, the listing of ``cur/`` by base name.
    """
    if box is None:
        return [folder_gone(folder)] * len(batch)
    outcomes: list[str | None] = []
    unlinked: set[int] = set()
    for target_id, fingerprint, digest in batch:
        found = written_file(box, folder, target_id, cur_names)
        if found is None:
            outcomes.append(MOVED)
            continue
        dir_fd, entry = found
        content = read(entry, dir_fd)
        if content is None:
            outcomes.append(MOVED)
        elif not is_same_message(content, fingerprint, digest):
            outcomes.append(CHANGED)
        elif dry_run:
            outcomes.append(None)
        else:
            try:
                os.unlink(entry, dir_fd=dir_fd)
            except FileNotFoundError:
                outcomes.append(MOVED)
                continue
            unlinked.add(dir_fd)
            outcomes.append(None)
    for dir_fd in unlinked:
        os.fsync(dir_fd)    # the removals are durable before the journal says undone
    return outcomes


def written_file(box: Folder, folder: str, target_id: str, cur_names: dict[str, dict[str, str]]
                 ) -> tuple[int, str] | None:
    """Where the file delivered as ``target_id`` is now: new/NAME, or cur/NAME with any flags."""
    name = target_id.partition(":")[0]
    if not name or "/" in name or name.startswith("."):
        return None
    if exists(name, box.new):
        return box.new, name
    names = cur_names.get(folder)
    if names is None:
        # One listing per folder: cur/ may hold a hundred thousand messages.
        names = cur_names[folder] = {e.partition(":")[0]: e for e in listdir(box.cur)}
    entry = names.get(name)
    return (box.cur, entry) if entry is not None else None

def remove_created(root: str, real_root: str, path: str, dry_run: bool = False) -> str | None:
    """``TargetSession.remove_created`` under the mail root ``root`` (``real_root``: resolved)."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return f"{path}: not a path under the mail root: left alone"
    full = f"{root}/{path}"
    if not is_inside(os.path.realpath(os.path.dirname(full)), real_root):
        return f"{path}: {OUTSIDE_ROOT}: left alone"
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return None
    if parts[-1] == MAILDIRFOLDER and stat.S_ISREG(st.st_mode):
        if st.st_size:
            return f"{path}: no longer empty: left alone"
        if not dry_run:
            os.unlink(full)
    elif parts[-1] == KEYWORDS_FILE and stat.S_ISREG(st.st_mode):
        if dry_run:
            return None     # the undo itself empties the folder first, or it says then why not
        folder = os.path.dirname(full)
        if any(os.listdir(f"{folder}/{sub}") for sub in ("cur", "new")
               if os.path.isdir(f"{folder}/{sub}")):
            # Mail the run did not write may carry the letters the file names.
            return f"{path}: the folder still holds mail: left alone"
        os.unlink(full)
    elif stat.S_ISDIR(st.st_mode):
        if dry_run:
            return None     # emptied first by the undo itself, or it says then why not
        try:
            os.rmdir(full)
        except OSError as exc:
            why = "not empty" if exc.errno == errno.ENOTEMPTY else exc.strerror
            return f"{path}: {why}: left alone"
    else:
        return f"{path}: not what the run created: left alone"
    if dry_run:
        return None
    parent = os.open(os.path.dirname(full), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(parent)
    finally:
        os.close(parent)
    return None
