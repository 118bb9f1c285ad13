"""Build mail stores in a test's tmp_path: messages, Maildirs, mbox files, eml trees.

    def test_x(mail_factory):
        msg = mail_factory.make_message(subject="hi", received=datetime(2017, 12, 8, 21, 13))
        mail_factory.write_maildir(tmp_path / "Maildir", {"INBOX": [msg], "Archive/2017": [msg]})

Every message gets a unique Message-ID unless one is given. Compression is
``None``, ``"gz"`` or ``"zst"``. Dates are timezone-aware datetimes (naive
ones are taken as UTC). The files are written with the sample incident's
writers (``restore.demo.writers``), so the stores follow one set of conventions.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from crosscheck import mbox_view
from imapclient import imap_utf7

from restore.demo.writers import Compression, maildir_name, make_maildir, mbox_entry, write_file

DEFAULT_DATE = datetime(2017, 12, 8, 12, 0, tzinfo=UTC)
AUTO = "auto"
SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"


def sample_messages() -> dict[str, bytes]:
    """The real-world messages of fixtures/samples/ by file name, mbox ``From `` line dropped."""
    out = {}
    for path in sorted(SAMPLES.glob("*.txt")):
        data = path.read_bytes()
        out[path.name] = data.split(b"\n", 1)[1] if data.startswith(b"From ") else data
    return out


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _stamp(when: datetime | None) -> float | None:
    return None if when is None else _aware(when).timestamp()


def compressed(data: bytes, kind: str | None) -> bytes:
    return Compression(kind).compress(data)


def maildir_folder_dir(folder: str) -> str:
    """``INBOX`` -> ``""``; ``Archive/2017`` -> ``.Archive.2017``; mUTF-7 encoded."""
    if folder == "INBOX":
        return ""
    return "." + ".".join(imap_utf7.encode(part).decode("ascii") for part in folder.split("/"))


class MailFactory:
    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self._serial = itertools.count(1)

    def make_message(
        self,
        message_id: str | None = AUTO,
        date: datetime = DEFAULT_DATE,
        sender: str = "Sender <sender@example.org>",
        to: str = "alice@example.com",
        subject: str = "Test message",
        body: str = "Hello.\n",
        received: datetime | None = None,
        envelope_to: str | None = None,
        extra_headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """One RFC 5322 message with LF line endings; ``message_id=None`` omits the header."""
        serial = next(self._serial)
        headers: list[tuple[str, str]] = []
        if received is not None:
            headers.append((
                "Received",
                f"from mx.example.org by mail.example.com; {format_datetime(_aware(received))}",
            ))
        if envelope_to is not None:
            headers += [("X-Envelope-To", envelope_to), ("Delivered-To", envelope_to)]
        if message_id == AUTO:
            message_id = f"<{serial}.{int(_aware(date).timestamp())}@factory.test>"
        if message_id is not None:
            headers.append(("Message-ID", message_id))
        headers += [
            ("Date", format_datetime(_aware(date))),
            ("From", sender),
            ("To", to),
            ("Subject", subject),
        ]
        extra = extra_headers.items() if isinstance(extra_headers, Mapping) else extra_headers
        headers += list(extra)
        head = "".join(f"{name}: {value}\n" for name, value in headers)
        return (head + "\n" + body).encode("utf-8")

    # -- Maildir ---------------------------------------------------------------

    def write_maildir(
        self,
        root: Path,
        folders: Mapping[str, Iterable[bytes]],
        mtime: datetime | None = None,
        flags: str | None = None,
    ) -> list[Path]:
        """A Maildir++ at ``root``; messages go to ``new/``, or to ``cur/`` with ``:2,FLAGS``."""
        written = []
        make_maildir(root)
        for folder, messages in folders.items():
            folder_dir = make_maildir(root / maildir_folder_dir(folder),
                                      subfolder=folder != "INBOX")
            for data in messages:
                path = folder_dir / maildir_name(1512734400, next(self._serial), "factory",
                                                 len(data), flags)
                write_file(path, data, _stamp(mtime))
                written.append(path)
        return written

    def write_maildir_tree(
        self,
        root: Path,
        users: Mapping[str, Mapping[str, Iterable[bytes]]],
        layout: str = "%d/%n/Maildir",
        mtime: datetime | None = None,
    ) -> str:
        """Per-user Maildirs below ``root``; returns the template (``root/%d/%n/Maildir``)."""
        for user, folders in users.items():
            local, _, domain = user.rpartition("@")
            rel = layout.replace("%u", user).replace("%n", local or user).replace("%d", domain)
            self.write_maildir(root / rel, folders, mtime=mtime)
        return f"{root}/{layout}"

    # -- mbox and eml ----------------------------------------------------------

    def write_mbox(
        self,
        path: Path,
        messages: Sequence[bytes],
        compress: str | None = None,
        from_dates: Sequence[datetime] | None = None,
    ) -> list[int]:
        """An mboxrd file; returns each message's From_ line offset (decompressed).

        The stdlib's ``mailbox.mbox`` must read back exactly these messages.
        """
        chunks, offsets, offset = [], [], 0
        for i, data in enumerate(messages):
            when = _aware(from_dates[i] if from_dates else DEFAULT_DATE)
            chunk = mbox_entry(data, "sender@example.org", when.timestamp())
            offsets.append(offset)
            offset += len(chunk)
            chunks.append(chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, compressed(b"".join(chunks), compress))
        assert [data for data, _ in mbox_view(path)] == [
            m if m.endswith(b"\n") else m + b"\n" for m in messages]
        return offsets

    def write_eml_tree(
        self,
        root: Path,
        messages: Iterable[bytes],
        compress: str | None = None,
        mtime: datetime | None = None,
        subdir: str = "2017/12/08",
    ) -> list[Path]:
        """One file per message under ``root/subdir``, named ``NNNN.eml[.gz|.zst]``."""
        written = []
        directory = root / subdir
        directory.mkdir(parents=True, exist_ok=True)
        suffix = f".{compress}" if compress else ""
        for data in messages:
            path = directory / f"{next(self._serial):04d}.eml{suffix}"
            write_file(path, compressed(data, compress), _stamp(mtime))
            written.append(path)
        return written
