"""Writers for the gateway archive's formats and for the replica's Maildirs.

Deterministic: the same calls give the same bytes, names and mtimes. The
small functions at the top (compression, mbox entries, Maildir names and
directories) are the conventions every format shares; the tests' mail
factory builds its stores with them too.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from restore.demo.model import INBOX, TIMELINE_END, Delivery

MAILDIR_DIRS = ("cur", "new", "tmp")
_QUOTABLE_FROM = re.compile(rb"^(>*From )", re.MULTILINE)


class Compression:
    """Compresses archive files by the chosen suffix; one zstd context reused."""

    def __init__(self, kind: str | None):
        if kind not in (None, "gz", "zst"):
            raise ValueError(f"compress must be None, 'gz' or 'zst', not {kind!r}")
        self.kind = kind
        self.suffix = f".{kind}" if kind else ""
        self._zstd = zstandard.ZstdCompressor()

    def compress(self, data: bytes) -> bytes:
        if self.kind == "zst":
            return self._zstd.compress(data)
        if self.kind == "gz":
            return gzip.compress(data, mtime=0)    # mtime=0: same bytes on every run
        return data

    def truncated(self, data: bytes) -> tuple[bytes, str, str]:
        """A compressed stream cut in half: (bytes, suffix, reason)."""
        if self.kind == "gz":
            packed = gzip.compress(data, mtime=0)
            return packed[: len(packed) // 2], ".gz", "truncated gzip stream"
        packed = self._zstd.compress(data)
        return packed[: len(packed) // 2], ".zst", "truncated zstd frame"

    def open_stream(self, path: Path) -> tuple[BinaryIO, BinaryIO]:
        """(writer, file): close the writer first, then the file."""
        raw = path.open("wb")
        if self.kind == "zst":
            # a context of its own: the shared one stays free for one-shot files
            return zstandard.ZstdCompressor().stream_writer(raw), raw
        if self.kind == "gz":
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
            return gz, raw  # type: ignore[return-value]
        return raw, raw


def write_file(path: Path, data: bytes, mtime: float | None = None) -> None:
    """A new file; ``mtime`` is its delivery or archive time."""
    with path.open("wb") as fh:
        fh.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def mbox_entry(data: bytes, sender: str, received: float) -> bytes:
    """One mboxrd entry: ``From`` line (asctime in UTC), quoted body, separating blank line."""
    body = _QUOTABLE_FROM.sub(rb">\1", data)
    if not body.endswith(b"\n"):
        body += b"\n"
    from_line = f"From {sender} {time.asctime(time.gmtime(received))}\n".encode()
    return from_line + body + b"\n"


def make_maildir(path: Path, marker_mtime: float | None = None, *, subfolder: bool = False) -> Path:
    """``cur/``, ``new/``, ``tmp/``; a Maildir++ subfolder also gets its ``maildirfolder`` file."""
    for sub in MAILDIR_DIRS:
        (path / sub).mkdir(parents=True, exist_ok=True)
    if subfolder:
        write_file(path / "maildirfolder", b"", marker_mtime)
    return path


def maildir_name(when: int, serial: int, host: str, size: int, flags: str | None = None) -> str:
    """A message's place in its Maildir: ``new/NAME`` unread by any client, else
    ``cur/NAME:2,FLAGS`` (``flags`` in Maildir letters, maybe none)."""
    name = f"{when}.M{serial}P1.{host},S={size}"
    return f"new/{name}" if flags is None else f"cur/{name}:2,{flags}"


def item_name(key: str, copy: int) -> str:
    return hashlib.blake2b(f"{key}/{copy}".encode(), digest_size=8).hexdigest()


class ArchiveWriter(Protocol):
    """One archive format: items in, refs out (as SPEC.md's plan ``ref`` names them)."""

    spec: str

    def add(self, data: bytes, received: int, name: str, sender: str) -> str:
        """Archive one message (LF line ends) and return its ref."""

    def add_corrupt(self, data: bytes, received: int, name: str) -> list[tuple[str, str]]:
        """Archive broken items made from one message: [(ref, reason)]."""

    def close(self) -> None: ...


class EmlArchive:
    """gateway/YYYY/MM/DD/<hex>.eml[.zst|.gz], CRLF as on the SMTP wire."""

    def __init__(self, root: Path, compression: Compression):
        self.root = root
        self.spec = f"eml:{root}"
        self.compression = compression
        self._dirs: set[str] = set()

    def _day_dir(self, t: int) -> str:
        day = time.strftime("%Y/%m/%d", time.gmtime(t))
        if day not in self._dirs:
            (self.root / day).mkdir(parents=True, exist_ok=True)
            self._dirs.add(day)
        return day

    def add(self, data: bytes, received: int, name: str, sender: str) -> str:
        ref = f"{self._day_dir(received)}/{name}.eml{self.compression.suffix}"
        write_file(self.root / ref, self.compression.compress(data.replace(b"\n", b"\r\n")),
                   received)
        return ref

    def add_corrupt(self, data: bytes, received: int, name: str) -> list[tuple[str, str]]:
        day = self._day_dir(received)
        packed, suffix, reason = self.compression.truncated(data.replace(b"\n", b"\r\n"))
        truncated, empty = f"{day}/{name}.eml{suffix}", f"{day}/{name}0.eml"
        write_file(self.root / truncated, packed, received)
        write_file(self.root / empty, b"", received)
        return [(truncated, reason), (empty, "empty file")]

    def close(self) -> None:
        """Nothing stays open: every item is its own file."""


class MboxArchive:
    """gateway-mbox/YYYY-MM-DD.mbox[.zst|.gz], mboxrd, one file per day.

    Messages must come in time order: a day's file is written as one stream.
    """

    def __init__(self, root: Path, compression: Compression):
        self.root = root
        self.spec = f"mbox:{root}"
        self.compression = compression
        root.mkdir(parents=True, exist_ok=True)
        self._name = ""
        self._streams: tuple[BinaryIO, BinaryIO] | None = None
        self._offset = 0       # in the decompressed stream, as a ref names it
        self._last = 0

    def add(self, data: bytes, received: int, name: str, sender: str) -> str:
        day = time.strftime("%Y-%m-%d", time.gmtime(received))
        file_name = f"{day}.mbox{self.compression.suffix}"
        if file_name != self._name:
            self.close()
            self._name, self._offset = file_name, 0
            self._streams = self.compression.open_stream(self.root / file_name)
        assert self._streams is not None
        entry = mbox_entry(data, sender, received)
        self._streams[0].write(entry)
        ref = f"{file_name}:{self._offset}"
        self._offset += len(entry)
        self._last = received
        return ref

    def add_corrupt(self, data: bytes, received: int, name: str) -> list[tuple[str, str]]:
        entry = mbox_entry(data, "mailer-daemon", received)
        packed, suffix, reason = self.compression.truncated(entry)
        ref = time.strftime("%Y-%m-%d", time.gmtime(received)) + f"-resent.mbox{suffix}"
        write_file(self.root / ref, packed, received)
        return [(ref, reason)]

    def close(self) -> None:
        if self._streams:
            writer, raw = self._streams
            writer.close()
            raw.close()
            os.utime(self.root / self._name, (self._last, self._last))
            self._streams = None


class MaildirArchive:
    """gateway-maildir/: one Maildir for all users, INBOX only."""

    def __init__(self, root: Path, compression: Compression):
        self.root = make_maildir(root)
        self.spec = f"maildir:{root}"
        self._n = 0

    def add(self, data: bytes, received: int, name: str, sender: str) -> str:
        self._n += 1
        ref = maildir_name(received, self._n, "gateway", len(data), flags="")
        write_file(self.root / ref, data, received)
        return ref

    def add_corrupt(self, data: bytes, received: int, name: str) -> list[tuple[str, str]]:
        self._n += 1
        ref = maildir_name(received, self._n, "gateway", 0, flags="")
        write_file(self.root / ref, b"", received)
        return [(ref, "empty file")]

    def close(self) -> None:
        """Nothing stays open: every item is its own file."""


# format -> (directory under the incident root, writer)
ARCHIVES: dict[str, tuple[str, Callable[[Path, Compression], ArchiveWriter]]] = {
    "eml": ("gateway", EmlArchive),
    "mbox": ("gateway-mbox", MboxArchive),
    "maildir": ("gateway-maildir", MaildirArchive),
}


class Replica:
    """replica/<domain>/<local>/Maildir with Maildir++ folders; mtime = delivery time."""

    def __init__(self, root: Path, users: list[str]):
        self.root = root
        self.spec = f"maildir:{root}/%d/%n/Maildir"
        self._made: set[Path] = set()
        self._n = 0
        for user in users:
            self._folder(user, INBOX)

    def _maildir(self, user: str) -> Path:
        local, _, domain = user.rpartition("@")
        return self.root / domain / local / "Maildir"

    def _folder(self, user: str, folder: str) -> Path:
        path = self._maildir(user) / folder if folder else self._maildir(user)
        if path not in self._made:
            # Same seed, same bytes and times: not the time of the build.
            make_maildir(path, TIMELINE_END.timestamp(), subfolder=bool(folder))
            self._made.add(path)
        return path

    def deliver(self, user: str, delivery: Delivery, data: bytes) -> None:
        self._n += 1
        flags = None if delivery.state == "new" else "S" if delivery.state == "seen" else ""
        rel = maildir_name(delivery.when, self._n, "replica", len(data), flags)
        write_file(self._folder(user, delivery.folder) / rel, data, delivery.when)
