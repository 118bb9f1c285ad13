"""The standard library's ``mailbox`` as the independent reader of the stores tests use.

    seen = assert_maildir_agrees(maildir)      # mailbox.Maildir and MaildirStore agree
    assert [m.flags for m in seen] == ["FS"]   # then check what the test expects

``assert_maildir_agrees`` reads a Maildir (INBOX and its Maildir++
subfolders) with ``mailbox.Maildir`` and with mailrestore's ``MaildirStore``
and checks that both see the same messages: folder, ``new``/``cur``, flags,
delivery time (the file's mtime) and bytes. ``assert_mbox_agrees`` does the
same for one mbox file (gzip or zstd decompressed first) with
``mailbox.mbox`` and ``MboxStore``: count, bytes and the ``From `` line date.

Where the two readers differ by design, the stdlib's answer is adjusted
here, never the tool's: ``mailbox.mbox`` reads mboxo, so it does not undo the
mboxrd quoting of ``>From `` lines (undone below), and it starts a message
at every ``From `` line, blank line before it or not; the files compared here
quote every such line, as an MTA writing mboxrd does.
"""

from __future__ import annotations

import calendar
import gzip
import io
import mailbox
import re
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import zstandard

from restore.stores import Item, Unreadable, open_store

_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


class Stored(NamedTuple):
    """One message as a reader sees it in a Maildir."""

    folder: str        # Maildir++ directory name without its dot ("" for INBOX), as stored
    subdir: str        # "new" or "cur"
    key: str           # the file name without its ":2,FLAGS" info
    flags: str         # Maildir info letters ("" in new/)
    delivered: float   # file mtime
    data: bytes


def maildir_view(root: Path) -> list[Stored]:
    """Every message of the Maildir at ``root``, as ``mailbox.Maildir`` reads it, sorted."""
    inbox = mailbox.Maildir(root, factory=None, create=False)
    folders = [("", inbox)] + [(name, inbox.get_folder(name)) for name in inbox.list_folders()]
    out = []
    for name, box in folders:
        for key in box.iterkeys():
            message = box.get_message(key)
            out.append(Stored(name, message.get_subdir(), key, message.get_flags(),
                              message.get_date(), box.get_bytes(key)))
    return sorted(out)


def _tool_maildir_view(root: Path) -> list[Stored]:
    out = []
    for got in _read_all(f"maildir:{root}"):
        *folder_dirs, subdir, name = got.unit.path.split("/")
        folder = folder_dirs[0].removeprefix(".") if folder_dirs else ""
        stem, _, flags = name.partition(":2,")
        out.append(Stored(folder, subdir, stem, flags, got.delivered, got.data))
    return sorted(out)


def assert_maildir_agrees(root: Path) -> list[Stored]:
    """``mailbox.Maildir`` and mailrestore read the same messages at ``root``; returns them."""
    stdlib = maildir_view(root)
    assert _tool_maildir_view(root) == stdlib, f"mailbox.Maildir and MaildirStore differ on {root}"
    return stdlib


def maildirs(root: Path) -> list[Path]:
    """The Maildirs at or below ``root`` (not their Maildir++ subfolders), sorted."""
    return sorted(cur.parent for cur in [root / "cur", *root.rglob("cur")]
                  if cur.is_dir() and not cur.parent.name.startswith("."))


def mbox_view(path: Path) -> list[tuple[bytes, float | None]]:
    """(bytes, From_ line date) of each message of an mbox file, as ``mailbox.mbox`` reads it."""
    data = path.read_bytes()
    if data.startswith(b"\x1f\x8b"):
        data = gzip.decompress(data)
    elif data.startswith(b"\x28\xb5\x2f\xfd"):
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data),
                                                          read_across_frames=True).read()
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "mbox"
        plain.write_bytes(data)
        box = mailbox.mbox(plain, factory=None, create=False)
        try:
            return [(_QUOTED_FROM.sub(rb"\1", box.get_bytes(key)), _from_date(box.get_message(key)))
                    for key in box.iterkeys()]
        finally:
            box.close()


def _from_date(message: mailbox.mboxMessage) -> float | None:
    """The asctime date that ends a ``From sender date`` line, as UTC; None without one."""
    asctime = " ".join(message.get_from().split()[-5:])
    try:
        return float(calendar.timegm(time.strptime(asctime, "%a %b %d %H:%M:%S %Y")))
    except ValueError:
        return None


def assert_mbox_agrees(path: Path) -> list[bytes]:
    """``mailbox.mbox`` and mailrestore read the same messages from ``path``; returns them."""
    stdlib = mbox_view(path)
    tool = [(got.data, got.delivered) for got in _read_all(f"mbox:{path}")]
    assert tool == stdlib, f"mailbox.mbox and MboxStore differ on {path}"
    return [data for data, _ in stdlib]


def _read_all(spec: str) -> list[Item]:
    store = open_store(spec)
    try:
        listed = list(store.units())
        got = list(store.read([u for u in listed if not isinstance(u, Unreadable)]))
    finally:
        store.close()
    unreadable = [g for g in listed + got if isinstance(g, Unreadable)]
    assert not unreadable, unreadable
    return [g for g in got if isinstance(g, Item)]
