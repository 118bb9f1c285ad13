"""A synthetic mail-storage incident, and the truth a correct diff must find.

``build_incident(root)`` writes, deterministically from a seed:

    replica/<domain>/<local>/Maildir    the promoted replica: the delivered copy
                                        of every message, except those
                                        received in the gap (since, until]
    gateway/YYYY/MM/DD/<hex>.eml.zst    the gateway archive: every inbound
    gateway-mbox/YYYY-MM-DD.mbox.zst    message as the gateway saw it, with
    gateway-maildir/                    X-Envelope-To, in one or more formats
    aliases                             the alias map (with twists)
    truth/copies.jsonl                  the expected class of every archive copy

and returns an ``Incident`` whose ``truth`` says what a correct diff finds.
Every message carries an ``X-Incident-Key`` header (equal in duplicates), so
tests match archive items to the truth without relying on refs.

The demo, the end-to-end tests and the benchmarks all use it, so it streams:
a message is written as soon as it is made and then dropped, which keeps
memory flat at 100k messages.
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

CLASSES = ("present", "missing", "outside-window", "duplicate", "unroutable", "unreadable")

DOMAIN = "example.com"
# Fixed dates keep the output stable from run to run: the timeline ends at
# midnight after the incident day, and inbound mail came back at 23:15.
TIMELINE_END = datetime(2017, 12, 9, tzinfo=UTC)
GAP_UNTIL = datetime(2017, 12, 8, 23, 15, tzinfo=UTC)
DAY = 86400
HOUR = 3600

INBOX = ""                      # Maildir++ folder directories, relative to the Maildir
ARCHIVE_FOLDER = ".Archive.2017"
TROUBLE_FOLDER = ".&AMQ-rger"   # "Ärger" in modified UTF-7
SENT_FOLDER = ".Sent"

USER_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank",
              "grace", "heidi", "ivan", "judy", "mallory", "oscar")
SENDERS = (("Martin Kowalski", "m.kowalski@partner.example"),
           ("Ana Souza", "ana@supplier.example.net"),
           ("Billing", "billing@invoices.example.org"),
           ("Jörg Müller", "joerg.mueller@kunde.example.de"),
           ("Support Desk", "support@vendor.example"),
           ("Priya Raman", "priya@consult.example.in"),
           ("Newsletter", "news@lists.example.org"))
RELAYS = ("mx1.partner.example", "mail.supplier.example.net", "out.lists.example.org",
          "smtp.vendor.example")
SENDER_TZ_MINUTES = (0, 60, -300, 330, -480)
WORDS = ("invoice quarterly report meeting schedule contract review draft budget "
         "shipment delivery update agenda proposal minutes offer renewal ticket "
         "server migration backup weekend lunch travel approval deadline").split()


# ---------------------------------------------------------------- the truth


@dataclass(frozen=True, slots=True)
class ArchiveCopy:
    """One archive item and the class each of its recipients must get."""

    store: str                          # archive STORE spec holding it
    ref: str                            # path relative to the store root; mbox: PATH:OFFSET
    key: str = ""                       # X-Incident-Key ("" when unreadable)
    message_id: str | None = None
    received: datetime | None = None    # topmost Received: of this copy
    classes: tuple[tuple[str, str], ...] = ()   # (user or rejected address, class)
    unreadable: str = ""                # the reason, for a corrupt item

    def to_json(self) -> str:
        obj: dict[str, object] = {"store": self.store, "ref": self.ref}
        if self.unreadable:
            obj["unreadable"] = self.unreadable
        else:
            obj.update(key=self.key, message_id=self.message_id,
                       received=self.received.isoformat() if self.received else None,
                       classes=[list(pair) for pair in self.classes])
        return json.dumps(obj, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> ArchiveCopy:
        obj = json.loads(line)
        if "unreadable" in obj:
            return cls(obj["store"], obj["ref"], unreadable=obj["unreadable"])
        return cls(obj["store"], obj["ref"], obj["key"], obj["message_id"],
                   datetime.fromisoformat(obj["received"]),
                   tuple((user, klass) for user, klass in obj["classes"]))


@dataclass
class Truth:
    """What a correct diff of the incident finds.

    Every (recipient, archive copy) pair has one class; an unreadable item
    counts once. Copies of one message received at the same second (the
    gateway archived the same bytes twice) may legitimately swap which one
    is ``duplicate``, so compare classes per (user, key) as multisets
    (``classes_by_user_key``), not per ref.
    """

    since: datetime
    until: datetime
    counts: dict[str, int]                  # class -> count, every class present
    users: dict[str, dict[str, int]]        # recipient -> class -> count (no unreadable)
    missing: set[tuple[str, str]]           # (user, X-Incident-Key) to restore
    unreadable: list[tuple[str, str, str]]  # (store, ref, reason)
    copies_file: Path                       # one ArchiveCopy per line

    def copies(self) -> Iterator[ArchiveCopy]:
        with self.copies_file.open(encoding="utf-8") as fh:
            for line in fh:
                yield ArchiveCopy.from_json(line)

    def classes_by_user_key(self) -> dict[tuple[str, str], list[str]]:
        """(user, key) -> sorted classes of its archive copies."""
        out: dict[tuple[str, str], list[str]] = {}
        for copy in self.copies():
            for user, klass in copy.classes:
                out.setdefault((user, copy.key), []).append(klass)
        return {pair: sorted(classes) for pair, classes in out.items()}

    def to_json(self) -> str:
        return json.dumps({
            "window": {"since": self.since.isoformat(), "until": self.until.isoformat()},
            "counts": self.counts,
            "users": {user: dict(sorted(c.items())) for user, c in sorted(self.users.items())},
            "missing": sorted([user, key] for user, key in self.missing),
            "unreadable": [{"store": s, "ref": r, "reason": why} for s, r, why in self.unreadable],
            "copies": str(self.copies_file),
        }, indent=2, ensure_ascii=False)


@dataclass
class Incident:
    root: Path
    replica: str              # store spec of the replica, templated per user
    archives: list[str]       # store specs of the gateway archive
    alias_map: Path | None
    gap_since: datetime       # last replication (exclusive)
    gap_until: datetime       # inbound mail back (inclusive)
    truth: Truth
    users: list[str]          # addresses with a mailbox on the replica


# ------------------------------------------------------------- the messages


@dataclass(frozen=True, slots=True)
class _Timeline:
    start: int
    end: int
    since: int
    until: int

    def in_gap(self, t: int) -> bool:
        return self.since < t <= self.until

    def early(self, f: float) -> int:
        """Well before the gap (at least 6 hours): where user deletions may lie."""
        return self.start + int((self.since - 6 * HOUR - self.start) * f)

    def gap(self, f: float) -> int:
        return self.since + max(1, int((self.until - self.since) * f))

    def after(self, f: float) -> int:
        return self.until + max(1, int((self.end - self.until) * f))


@dataclass(frozen=True, slots=True)
class _Delivery:
    """How the replica holds one user's delivered copy."""

    folder: str = INBOX
    when: int = 0              # delivery time: the file mtime and the LMTP Received:
    state: str = "seen"        # "seen", "unseen" (both in cur/) or "new"
    spam: bool = False         # the filter tagged the Subject
    via_backup_mx: bool = False


@dataclass(slots=True)
class _Mail:
    key: str
    received: int              # when the gateway received it
    sender: str                # envelope sender
    envelope: list[str]        # X-Envelope-To values, one header each
    original: str              # the message as sent: headers, blank line, body; LF
    message_id: str | None
    queue_id: str
    copies: tuple[int, ...] = (0,)   # seconds after `received` each archive copy was taken
    archive_format: str = ""         # where the first copy goes, when that format is in use
    kept: dict[str, _Delivery] = field(default_factory=dict)  # user -> replica copy


def _rfc5322(t: int, tz_minutes: int = 0) -> str:
    return format_datetime(datetime.fromtimestamp(t, timezone(timedelta(minutes=tz_minutes))))


def _address(user: str) -> str:
    return f"{user.partition('@')[0].capitalize()} <{user}>"


class _Author:
    """Makes plausible messages from the shared random generator."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def message_id(self) -> str:
        return f"<{self.rng.getrandbits(64):016x}.{self.rng.randrange(10**6)}@mail.example.net>"

    def body(self, from_lines: bool = False) -> str:
        rng = self.rng
        lines = ["Hello,", ""]
        for _ in range(rng.randint(1, 5)):
            lines.append(" ".join(rng.choices(WORDS, k=rng.randint(4, 12))).capitalize() + ".")
        if from_lines:
            # mbox must quote these (mboxrd) and a reader must unquote them
            lines += ["", "From the minutes of last week:", ">From an earlier reply, quoted.",
                      ">>From deeper still."]
        lines += ["", "Grüße / regards", ""]
        return "\n".join(lines)

    def compose(self, key: str, received: int, to: list[str], *, cc: tuple[str, ...] = (),
                envelope: list[str] | None = None, message_id: str | None = None,
                without_message_id: bool = False, sender: tuple[str, str] | None = None,
                from_lines: bool = False) -> _Mail:
        """A message received at ``received``; by default one envelope header per To."""
        rng = self.rng
        name, address = sender or rng.choice(SENDERS)
        date = _rfc5322(received - rng.randint(2, 600), rng.choice(SENDER_TZ_MINUTES))
        if not without_message_id:
            message_id = message_id or self.message_id()
        headers = [f"From: {name} <{address}>", f"To: {', '.join(map(_address, to))}"]
        if cc:
            headers.append(f"Cc: {', '.join(map(_address, cc))}")
        headers += [f"Subject: {rng.choice(WORDS).capitalize()} {rng.choice(WORDS)}", f"Date: {date}"]
        if message_id:
            headers.append(f"Message-ID: {message_id}")
        headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: 8bit", f"X-Incident-Key: {key}"]
        return _Mail(key=key, received=received, sender=address,
                     envelope=envelope or [f"<{a}>" for a in to],
                     original="\n".join(headers) + "\n\n" + self.body(from_lines),
                     message_id=message_id, queue_id=f"{rng.getrandbits(40):010X}")


def _gateway_hop(mail: _Mail, copy: int) -> str:
    relay = RELAYS[int(mail.queue_id, 16) % len(RELAYS)]
    queue_id = mail.queue_id if mail.copies[copy] == 0 else f"{mail.queue_id}{copy}"
    return (f"Received: from {relay} ({relay} [198.51.100.{int(mail.queue_id, 16) % 250 + 1}])\n"
            f"\tby gw.{DOMAIN} (Postfix) with ESMTPS id {queue_id};\n"
            f"\t{_rfc5322(mail.received + mail.copies[copy])}\n")


def _archive_text(mail: _Mail, copy: int) -> str:
    """The copy as the gateway archived it, before delivery."""
    envelope = "".join(f"X-Envelope-To: {value}\n" for value in mail.envelope)
    return envelope + _gateway_hop(mail, copy) + mail.original


def _delivered_text(mail: _Mail, user: str, delivery: _Delivery) -> str:
    """The copy as the mail store delivered it: delivery headers on top, spam verdict."""
    head, _, body = mail.original.partition("\n\n")
    if delivery.spam:
        head = head.replace("\nSubject: ", "\nSubject: [SPAM] ", 1)
        verdict = "X-Spam-Flag: YES\nX-Spam-Status: Yes, score=7.9 required=5.0\n"
    else:
        verdict = "X-Spam-Status: No, score=-0.4 required=5.0\n"
    hops = [f"Received: from gw.{DOMAIN} (gw.{DOMAIN} [192.0.2.25])\n"
            f"\tby mail.{DOMAIN} with LMTP id {mail.queue_id.lower()}\n"
            f"\tfor <{user}>; {_rfc5322(delivery.when)}\n"]
    if delivery.via_backup_mx:
        hops.append(f"Received: from gw.{DOMAIN} by backup-mx.{DOMAIN} (Postfix) with ESMTP;\n"
                     f"\t{_rfc5322(mail.received + 4)}\n")
    hops.append(_gateway_hop(mail, 0))
    return (f"Return-Path: <{mail.sender}>\nDelivered-To: {user}\n" + "".join(hops)
            + head + "\n" + verdict + "\n" + body)


# ------------------------------------------------------------------ writers


class _Compression:
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
            return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0), raw  # type: ignore[return-value]
        return raw, raw


def _write(path: Path, data: bytes, mtime: int) -> None:
    with path.open("wb") as fh:
        fh.write(data)
    os.utime(path, (mtime, mtime))


def _item_name(key: str, copy: int) -> str:
    return hashlib.blake2b(f"{key}/{copy}".encode(), digest_size=8).hexdigest()


class _ArchiveWriter(Protocol):
    """One archive format: items in, refs out (as SPEC.md's plan ``ref`` names them)."""

    spec: str

    def add(self, data: bytes, received: int, name: str, sender: str) -> str:
        """Archive one message (LF line ends) and return its ref."""

    def add_corrupt(self, data: bytes, received: int, name: str) -> list[tuple[str, str]]:
        """Archive broken items made from one message: [(ref, reason)]."""

    def close(self) -> None: ...


class _EmlArchive:
    """gateway/YYYY/MM/DD/<hex>.eml[.zst|.gz], CRLF as on the SMTP wire."""

    def __init__(self, root: Path, compression: _Compression):
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
        _write(self.root / ref, self.compression.compress(data.replace(b"\n", b"\r\n")), received)
        return ref

    def add_corrupt(self, data: bytes, received: int, name: str) -> list[tuple[str, str]]:
        day = self._day_dir(received)
        packed, suffix, reason = self.compression.truncated(data.replace(b"\n", b"\r\n"))
        truncated, empty = f"{day}/{name}.eml{suffix}", f"{day}/{name}0.eml"
        _write(self.root / truncated, packed, received)
        _write(self.root / empty, b"", received)
        return [(truncated, reason), (empty, "empty file")]

    def close(self) -> None:
        """Nothing stays open: every item is its own file."""


class _MboxArchive:
    """gateway-mbox/YYYY-MM-DD.mbox[.zst|.gz], mboxrd, one file per day.

    Messages must come in time order: a day's file is written as one stream.
    """

    FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)

    def __init__(self, root: Path, compression: _Compression):
        self.root = root
        self.spec = f"mbox:{root}"
        self.compression = compression
        root.mkdir(parents=True, exist_ok=True)
        self._name = ""
        self._streams: tuple[BinaryIO, BinaryIO] | None = None
        self._offset = 0       # in the decompressed stream, as a ref names it
        self._last = 0

    def _entry(self, data: bytes, received: int, sender: str) -> bytes:
        body = self.FROM_LINE.sub(rb">\1", data)
        if not body.endswith(b"\n"):
            body += b"\n"
        from_line = f"From {sender} {time.asctime(time.gmtime(received))}\n".encode()
        return from_line + body + b"\n"

    def add(self, data: bytes, received: int, name: str, sender: str) -> str:
        file_name = time.strftime("%Y-%m-%d", time.gmtime(received)) + f".mbox{self.compression.suffix}"
        if file_name != self._name:
            self.close()
            self._name, self._offset = file_name, 0
            self._streams = self.compression.open_stream(self.root / file_name)
        assert self._streams is not None
        entry = self._entry(data, received, sender)
        self._streams[0].write(entry)
        ref = f"{file_name}:{self._offset}"
        self._offset += len(entry)
        self._last = received
        return ref

    def add_corrupt(self, data: bytes, received: int, name: str) -> list[tuple[str, str]]:
        packed, suffix, reason = self.compression.truncated(self._entry(data, received, "mailer-daemon"))
        ref = time.strftime("%Y-%m-%d", time.gmtime(received)) + f"-resent.mbox{suffix}"
        _write(self.root / ref, packed, received)
        return [(ref, reason)]

    def close(self) -> None:
        if self._streams:
            writer, raw = self._streams
            writer.close()
            raw.close()
            os.utime(self.root / self._name, (self._last, self._last))
            self._streams = None


class _MaildirArchive:
    """gateway-maildir/: one Maildir for all users, INBOX only."""

    def __init__(self, root: Path, compression: _Compression):
        self.root = root
        self.spec = f"maildir:{root}"
        for sub in ("cur", "new", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._n = 0

    def add(self, data: bytes, received: int, name: str, sender: str) -> str:
        self._n += 1
        ref = f"cur/{received}.M{self._n}P1.gateway,S={len(data)}:2,"
        _write(self.root / ref, data, received)
        return ref

    def add_corrupt(self, data: bytes, received: int, name: str) -> list[tuple[str, str]]:
        self._n += 1
        ref = f"cur/{received}.M{self._n}P1.gateway,S=0:2,"
        _write(self.root / ref, b"", received)
        return [(ref, "empty file")]

    def close(self) -> None:
        """Nothing stays open: every item is its own file."""


# format -> (directory under the incident root, writer)
_ARCHIVES: dict[str, tuple[str, Callable[[Path, _Compression], _ArchiveWriter]]] = {
    "eml": ("gateway", _EmlArchive),
    "mbox": ("gateway-mbox", _MboxArchive),
    "maildir": ("gateway-maildir", _MaildirArchive),
}


class _Replica:
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
            for sub in ("cur", "new", "tmp"):
                (path / sub).mkdir(parents=True, exist_ok=True)
            if folder:
                marker = path / "maildirfolder"
                marker.touch()
                # Same seed, same bytes and times: not the time of the build.
                os.utime(marker, (TIMELINE_END.timestamp(), TIMELINE_END.timestamp()))
            self._made.add(path)
        return path

    def deliver(self, user: str, delivery: _Delivery, data: bytes) -> None:
        self._n += 1
        name = f"{delivery.when}.M{self._n}P1.replica,S={len(data)}"
        if delivery.state == "new":
            rel = f"new/{name}"
        else:
            rel = f"cur/{name}:2,{'S' if delivery.state == 'seen' else ''}"
        _write(self._folder(user, delivery.folder) / rel, data, delivery.when)


# ------------------------------------------------------------ the classifier


def _normalize(address: str) -> str:
    local, _, domain = address.strip().strip("<>").strip().rpartition("@")
    return f"{local}@{domain.lower()}"


class _TruthRecorder:
    """Classes each archive copy as SPEC.md says, as it is written, and streams it out."""

    def __init__(self, path: Path, timeline: _Timeline, mailboxes: list[str],
                 aliases: dict[str, str]):
        self.path = path
        self.timeline = timeline
        self.mailboxes = set(mailboxes)
        self.aliases = aliases
        self.counts: Counter[str] = Counter()
        self.users: dict[str, Counter[str]] = {}
        self.missing: set[tuple[str, str]] = set()
        self.unreadable: list[tuple[str, str, str]] = []
        # only messages archived more than once can have duplicates; tracking
        # just those keeps memory flat
        self._classed: set[tuple[str, str]] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out = path.open("w", encoding="utf-8")

    def recipients(self, mail: _Mail) -> list[str]:
        users: list[str] = []
        for value in mail.envelope:
            for address in value.split(","):
                user = _normalize(address)
                user = self.aliases.get(user, user)
                if user not in users:
                    users.append(user)
        return users

    def _class(self, user: str, mail: _Mail, received: int) -> str:
        if user not in self.mailboxes:
            return "unroutable"
        if len(mail.copies) > 1:
            if (user, mail.key) in self._classed:
                return "duplicate"
            self._classed.add((user, mail.key))
        if user in mail.kept:
            return "present"
        return "missing" if self.timeline.in_gap(received) else "outside-window"

    def copy(self, store: str, ref: str, mail: _Mail, copy: int) -> None:
        received = mail.received + mail.copies[copy]
        classes = []
        for user in self.recipients(mail):
            klass = self._class(user, mail, received)
            classes.append((user, klass))
            self.counts[klass] += 1
            self.users.setdefault(user, Counter())[klass] += 1
            if klass == "missing":
                self.missing.add((user, mail.key))
        record = ArchiveCopy(store, ref, mail.key, mail.message_id,
                             datetime.fromtimestamp(received, UTC), tuple(classes))
        self._out.write(record.to_json() + "\n")

    def unreadable_item(self, store: str, ref: str, reason: str) -> None:
        self.counts["unreadable"] += 1
        self.unreadable.append((store, ref, reason))
        self._out.write(ArchiveCopy(store, ref, unreadable=reason).to_json() + "\n")

    def finish(self) -> Truth:
        self._out.close()
        return Truth(
            since=datetime.fromtimestamp(self.timeline.since, UTC),
            until=datetime.fromtimestamp(self.timeline.until, UTC),
            counts={klass: self.counts[klass] for klass in CLASSES},
            users={user: dict(counts) for user, counts in self.users.items()},
            missing=self.missing,
            unreadable=self.unreadable,
            copies_file=self.path,
        )


# ------------------------------------------------------------------- the plot


@dataclass(frozen=True, slots=True)
class _Cast:
    """Who plays which part in the twists (needs at least four users)."""

    users: list[str]

    @property
    def quiet(self) -> str:
        """Gets no mail at all during the gap."""
        return self.users[-1]

    @property
    def tidy(self) -> str:
        """Deleted much of their older mail, which must not widen the window."""
        return self.users[-2]


def _twists(author: _Author, cast: _Cast, tl: _Timeline) -> list[_Mail]:
    """The hard cases; each key ends with the class(es) the copies must get.

    In-gap twists only involve users[0..2], so the quiet user stays quiet.
    """
    u0, u1, u2, u3 = cast.users[:4]
    mails: list[_Mail] = []

    def mail(key: str, t: int, to: list[str], copies: tuple[int, ...] = (0,),
             keep: dict[str, _Delivery] | None = None, **compose: object) -> _Mail:
        m = author.compose(f"twist-{key}", t, to, **compose)  # type: ignore[arg-type]
        m.copies = copies
        m.kept = {user: d if d.when else replace(d, when=t) for user, d in (keep or {}).items()}
        mails.append(m)
        return m

    inbox = _Delivery()
    # To two users, Bcc a third: classed once per envelope recipient
    mail("multi-gap-missing", tl.gap(0.3), [u0, u1], envelope=[f"<{u0}>, <{u1}>, <{u2}>"])
    mail("multi-early-present-and-outside-window", tl.early(0.4), [u0], cc=(u1,), keep={u0: inbox},
         envelope=[f"<{u0}>", f"{u1.partition('@')[0]}@EXAMPLE.COM"])
    # the gateway archived the same bytes twice, or the message came again a minute later
    mail("dup-same-bytes-gap-missing", tl.gap(0.5), [u2], copies=(0, 0))
    mail("dup-rereceived-gap-missing", tl.gap(0.45), [u1], copies=(0, 60))
    mail("dup-rereceived-before-present", tl.since - 2 * HOUR, [u0], copies=(0, 60), keep={u0: inbox})
    # no Message-ID: identified by a digest of headers and body
    mail("no-message-id-gap-missing", tl.gap(0.2), [u1], without_message_id=True)
    mail("no-message-id-before-present", tl.since - 3 * HOUR, [u2], without_message_id=True,
         keep={u2: _Delivery(folder=ARCHIVE_FOLDER)})
    # two different messages sharing one Message-ID stay two
    shared = author.message_id()
    mail("shared-message-id-before-present", tl.since - 4 * HOUR, [u1], message_id=shared,
         keep={u1: inbox})
    mail("shared-message-id-gap-missing", tl.gap(0.6), [u1], message_id=shared)
    # the spam filter tagged the delivered copy's Subject
    mail("spam-tagged-present", tl.since - HOUR, [u2], keep={u2: _Delivery(spam=True)})
    # deleted by the user long before the gap
    mail("deleted-early-outside-window", tl.early(0.2), [u3])
    # received in the gap, queued on the backup MX, delivered after it
    for n, (user, f) in enumerate(((u0, 0.7), (u1, 0.95)), 1):
        late = _Delivery(when=tl.after(0.3 * n), state="new", via_backup_mx=True)
        mail(f"late-arrival-{n}-present", tl.gap(f), [user], keep={user: late})
    # an alias the alias map resolves
    info = f"info@{DOMAIN}"
    mail("alias-gap-missing", tl.gap(0.4), [info])
    mail("alias-before-present", tl.since - 5 * HOUR, [info], envelope=[info], keep={u1: inbox})
    # recipients with no mailbox, or names that would escape the mail root
    mail("former-colleague-unroutable", tl.gap(0.55), [f"former.colleague@{DOMAIN}"])
    mail("path-traversal-unroutable", tl.gap(0.65), [f"../../etc@{DOMAIN}"])
    mail("slash-unroutable-and-present", tl.after(0.5), [u0], envelope=[f"<{u0}>", f"<a/b@{DOMAIN}>"],
         keep={u0: _Delivery(state="new")})
    # body lines starting with "From ": mboxrd quoting must round-trip
    for m in (mail("from-lines-present", tl.since - 6 * HOUR, [u2], from_lines=True, keep={u2: inbox}),
              mail("from-lines-gap-missing", tl.gap(0.35), [u0], from_lines=True)):
        m.archive_format = "mbox"
    return mails


def _sent_items(author: _Author, replica: _Replica, users: list[str], tl: _Timeline) -> None:
    """Outgoing mail, on the replica only: the gateway archives inbound mail."""
    for user in users:
        for n in range(2):
            t = tl.early(0.3 + 0.4 * n)
            m = author.compose(f"sent-{user.partition('@')[0]}-{n}", t, ["partner@partner.example"],
                               sender=(user.partition("@")[0].capitalize(), user))
            replica.deliver(user, _Delivery(folder=SENT_FOLDER, when=t), m.original.encode())


class _Plot:
    """Decides what happens to each ordinary message: archived where, kept where."""

    def __init__(self, rng: random.Random, cast: _Cast, tl: _Timeline, twists: bool):
        self.rng = rng
        self.cast = cast
        self.tl = tl
        self.twists = twists

    def arrivals(self, per_user_per_day: int) -> Iterator[list[tuple[int, int]]]:
        """Per day, sorted (received, user index) of ordinary mail."""
        rng, tl = self.rng, self.tl
        quiet = self.cast.quiet if self.twists else None
        for day_start in range(tl.start, tl.end, DAY):
            day = []
            for i, user in enumerate(self.cast.users):
                for _ in range(per_user_per_day):
                    t = rng.randrange(day_start, day_start + DAY)
                    if user != quiet or not tl.in_gap(t):
                        day.append((t, i))
            day.sort()
            yield day

    def fate(self, user: str, t: int) -> _Delivery | None:
        """The replica copy of an ordinary message, or None when it has none."""
        rng, tl = self.rng, self.tl
        if tl.in_gap(t):
            return None
        if self.twists and t < tl.since - 6 * HOUR:
            tidy = user == self.cast.tidy and t < tl.since - 12 * HOUR
            if rng.random() < (0.6 if tidy else 0.02):
                return None
        if t > tl.until:
            return _Delivery(when=t, state="new")
        folder = INBOX
        if t < tl.since - DAY:
            roll = rng.random()
            folder = ARCHIVE_FOLDER if roll < 0.12 else TROUBLE_FOLDER if roll < 0.16 else INBOX
        return _Delivery(folder=folder, when=t, state="unseen" if rng.random() < 0.1 else "seen")


# ------------------------------------------------------------------ build it


def build_incident(root: Path, *, users: int = 6, per_user_per_day: int = 20, days: int = 3,
                   gap_hours: float = 5.5, seed: int = 1, archive_formats: tuple[str, ...] = ("eml",),
                   compress: str | None = "zst", twists: bool = True) -> Incident:
    """Write an incident under ``root`` (missing or empty) and return it with its truth."""
    root = Path(root).absolute()
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty")
    if not archive_formats or any(f not in _ARCHIVES for f in archive_formats):
        raise ValueError(f"archive_formats must be some of {', '.join(_ARCHIVES)}")
    if len(set(archive_formats)) != len(archive_formats):
        raise ValueError("archive_formats lists a format twice")
    end = int(TIMELINE_END.timestamp())
    until = int(GAP_UNTIL.timestamp())
    tl = _Timeline(start=end - days * DAY, end=end, since=until - int(gap_hours * HOUR), until=until)
    if users < 1 or days < 1 or per_user_per_day < 0 or tl.since < tl.start:
        raise ValueError("need users >= 1, days >= 1 and a gap that starts inside the timeline")
    if twists and (users < 4 or tl.since - tl.start < 12 * HOUR or gap_hours < 1):
        raise ValueError("twists need users >= 4, a gap of 1 hour or more, and 12 hours before it")

    rng = random.Random(seed)
    author = _Author(rng)
    names = [f"{USER_NAMES[i] if users <= len(USER_NAMES) else f'user{i:04d}'}@{DOMAIN}"
             for i in range(users)]
    cast = _Cast(names)
    compression = _Compression(compress)
    archives = [_ARCHIVES[f][1](root / _ARCHIVES[f][0], compression) for f in archive_formats]
    replica = _Replica(root / "replica", names)
    alias_map = None
    aliases: dict[str, str] = {}
    if twists:
        aliases = {f"info@{DOMAIN}": names[1]}
        alias_map = root / "aliases"
        alias_map.write_text("# alias              user\n"
                             + "".join(f"{a}  {u}\n" for a, u in aliases.items()), encoding="utf-8")
    recorder = _TruthRecorder(root / "truth" / "copies.jsonl", tl, names, aliases)
    plot = _Plot(rng, cast, tl, twists)

    twist_mails = _twists(author, cast, tl) if twists else []
    if twists:
        _sent_items(author, replica, names, tl)
    # every archive copy in received order, so the earliest copy gets the class
    # and mbox days are written one stream each: (received, is twist, index, copy)
    ordinary = ((t, 0, i, 0) for day in plot.arrivals(per_user_per_day) for t, i in day)
    twist_copies = sorted((m.received + offset, 1, i, copy)
                          for i, m in enumerate(twist_mails) for copy, offset in enumerate(m.copies))
    twist_archive: dict[tuple[int, int], int] = {}   # (twist index, copy) -> archive index
    number = 0
    for t, is_twist, index, copy in heapq.merge(ordinary, twist_copies):
        if is_twist:
            mail = twist_mails[index]
        else:
            number += 1
            user = names[index]
            mail = author.compose(f"m{number:06d}", t, [user], from_lines=rng.random() < 0.03)
            delivery = plot.fate(user, t)
            if delivery:
                mail.kept[user] = delivery
        if len(archives) == 1:
            where = 0
        elif not copy and mail.archive_format in archive_formats:
            where = archive_formats.index(mail.archive_format)
        elif copy and mail.copies[copy] == mail.copies[copy - 1]:
            where = (twist_archive[index, copy - 1] + 1) % len(archives)  # same bytes, other format
        else:
            where = rng.randrange(len(archives))
        if is_twist:
            twist_archive[index, copy] = where
        archive = archives[where]
        ref = archive.add(_archive_text(mail, copy).encode(), t, _item_name(mail.key, copy), mail.sender)
        recorder.copy(archive.spec, ref, mail, copy)
        if copy == 0:
            for user, delivery in mail.kept.items():
                replica.deliver(user, delivery, _delivered_text(mail, user, delivery).encode())

    if twists:
        victim = author.compose("corrupt", tl.gap(0.25), [names[0]])
        for ref, reason in archives[0].add_corrupt(_archive_text(victim, 0).encode(), victim.received,
                                                   _item_name(victim.key, 0)):
            recorder.unreadable_item(archives[0].spec, ref, reason)
    for archive in archives:
        archive.close()
    return Incident(root=root, replica=replica.spec, archives=[a.spec for a in archives],
                    alias_map=alias_map, gap_since=datetime.fromtimestamp(tl.since, UTC),
                    gap_until=datetime.fromtimestamp(tl.until, UTC), truth=recorder.finish(),
                    users=names)
