"""The JSONL plan: one message to restore per line (SPEC.md "Plan file"), and its seal.

A plan is input too: it can be edited by hand or by scripts, so every line is
validated on read, and a bad line is reported with its number and reason.

Sealed plans. ``diff --plan`` writes a header object as the first line::

    {"mailrestore_plan": 2, "archives": ["eml:/srv/gateway"], "match": "auto", "made": "..."}

``inject`` reads only items of those archives (``Seal``): a line whose
source is another store, or whose item resolves outside its archive, or
whose item no longer has the line's fingerprint, is refused with the reason.
So a plan edited into ``"source": "eml:/etc", "ref": "shadow"`` writes
nothing. Scripts that filter a plan keep the header line (it has no
``user``); a plan without one is refused unless ``inject --archive`` names
the archives. Several headers (plans concatenated) add up their archives.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO

from restore import private
from restore.errors import RefusedItem, UsageError
from restore.identity import MATCH_MODES, is_same_message
from restore.mailnames import invalid_folder_reason, invalid_mailbox_reason
from restore.memory import bound_sqlite
from restore.times import NoOffset, iso, parse_iso

PLAN_FORMAT = 2
HEADER_FIELD = "mailrestore_plan"
CHANGED = "archive item changed since the diff: run diff again"
NO_FINGERPRINT = "no fingerprint: the line cannot be checked against its archive item"


@dataclass(frozen=True, slots=True)
class PlanEntry:
    user: str
    folder: str
    source: str          # the archive STORE spec, e.g. "eml:/srv/gateway"
    ref: str             # re-opens the item inside source (mbox: PATH:OFFSET)
    received: float      # epoch seconds; ISO 8601 with offset in the file
    size: int
    message_id: str | None
    fingerprint: str
    digest: str = ""     # the fingerprint with the body (identity's strict key); "" if unknown

    def to_json(self) -> str:
        fields = {"user": self.user, "folder": self.folder, "source": self.source,
                  "ref": self.ref, "received": iso(self.received), "size": self.size,
                  "message_id": self.message_id, "fingerprint": self.fingerprint}
        if self.digest:
            fields["digest"] = self.digest
        return _ENCODE(fields)


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
# A plan repeats each user and folder on every line: each is checked once.
_mailbox_reason = lru_cache(maxsize=4096)(invalid_mailbox_reason)
_folder_reason = lru_cache(maxsize=256)(invalid_folder_reason)


@dataclass(frozen=True, slots=True)
class PlanHeader:
    """A plan's first line: the archives it was made from, and the diff's identity rule."""

    archives: tuple[str, ...]
    match: str = "auto"
    made: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps({HEADER_FIELD: PLAN_FORMAT, "archives": list(self.archives),
                           "match": self.match, "made": iso(self.made)}, ensure_ascii=False,
                          separators=(", ", ": "))


def _parse_header(obj: dict, where: str) -> PlanHeader:
    if obj.get(HEADER_FIELD) != PLAN_FORMAT:
        raise UsageError(f"{where}: plan format {obj.get(HEADER_FIELD)!r}, this mailrestore "
                         f"reads {PLAN_FORMAT}: make the plan again with diff --plan")
    archives = obj.get("archives")
    if not isinstance(archives, list) or not archives or not all(
            isinstance(a, str) and a for a in archives):
        raise UsageError(f"{where}: the header's archives must be a list of STOREs")
    match = obj.get("match", "auto")
    if match not in MATCH_MODES:
        raise UsageError(
            f"{where}: the header's match {match!r} is not one of {', '.join(MATCH_MODES)}")
    try:
        made = parse_iso(str(obj["made"])) if obj.get("made") else 0.0
    except ValueError:
        made = 0.0
    return PlanHeader(tuple(archives), match, made)


def parse_line(line: str, lineno: int = 0, name: str = "plan") -> PlanEntry | PlanHeader:
    """One plan line -> PlanEntry (or the header); UsageError naming the line and the reason."""
    where = f"{name}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object")
    # JSON may escape a lone surrogate ("\\ud800"), which no file name, journal or report holds
    try:
        # only an escape, or a surrogate itself, makes one
        if "\\u" in line or not line.isascii():
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"{where}: not valid text (a lone surrogate escaped in the JSON)") from None
    if HEADER_FIELD in obj:
        return _parse_header(obj, where)
    missing = [f for f in ("user", "source", "ref", "received") if not obj.get(f)]
    if missing:
        raise UsageError(f"{where}: missing field(s) {', '.join(missing)}")
    user = str(obj["user"])
    reason = _mailbox_reason(user)
    if reason:
        raise UsageError(f"{where}: user {user!r} rejected: {reason}")
    folder = str(obj.get("folder") or "INBOX")
    reason = _folder_reason(folder)
    if reason:
        raise UsageError(f"{where}: folder {folder!r} rejected: {reason}")
    try:
        received = parse_iso(str(obj["received"]))
    except NoOffset:
        raise UsageError(f"{where}: received {obj['received']!r} has no UTC offset") from None
    except ValueError:
        raise UsageError(f"{where}: received {obj['received']!r} is not an ISO 8601 time") from None
    try:
        size = int(obj.get("size") or 0)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{where}: size {obj.get('size')!r} is not a number") from None
    if size < 0:
        raise UsageError(f"{where}: size {size} is negative")
    mid = obj.get("message_id")
    return PlanEntry(
        user=user,
        folder=folder,
        source=str(obj["source"]),
        ref=str(obj["ref"]),
        received=received,
        size=size,
        message_id=str(mid) if mid else None,
        fingerprint=str(obj.get("fingerprint") or ""),
        digest=str(obj.get("digest") or ""),
    )


def read_plan(fh: IO[str], name: str = "plan",
              headers: list[PlanHeader] | None = None) -> Iterator[PlanEntry | UsageError]:
    """Yield entries; a bad line is yielded as its UsageError so the run goes on.

    Header lines are not yielded: they are appended to ``headers`` when given.
    """
    for lineno, line in enumerate(fh, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            got = parse_line(line, lineno, name)
        except UsageError as exc:
            yield exc
            continue
        if isinstance(got, PlanHeader):
            if headers is not None:
                headers.append(got)
        else:
            yield got


def write_plan(fh: IO[str], entries: Iterable[PlanEntry], header: PlanHeader | None = None) -> int:
    """Write the header line (when given), then one line per entry; the number of entries."""
    if header is not None:
        fh.write(header.to_json() + "\n")
    n = 0
    for entry in entries:
        fh.write(entry.to_json() + "\n")
        n += 1
    return n


@dataclass
class LoadedPlan:
    """A plan file read whole: its entries, bad lines (each names its line) and header."""

    entries: list[PlanEntry]
    bad: list[UsageError]
    header: PlanHeader | None


def load_plan(path: str) -> LoadedPlan:
    """Read a small plan file whole; ``open_plan`` streams one of any size."""
    entries: list[PlanEntry] = []
    bad: list[UsageError] = []
    headers: list[PlanHeader] = []
    with _reading(path):
        # a byte-order mark, as Notepad writes, is no line
        with open(path, encoding="utf-8-sig") as fh:
            for got in read_plan(fh, name=path, headers=headers):
                (bad if isinstance(got, UsageError) else entries).append(got)  # type: ignore[arg-type]
    return LoadedPlan(entries, bad, _merged(headers, path))


def _merged(headers: list[PlanHeader], path: str) -> PlanHeader | None:
    """Several header lines (plans concatenated) add up their archives."""
    if not headers:
        return None
    if len({h.match for h in headers}) > 1:
        raise UsageError(f"plan {path}: its header lines name different --match rules "
                         f"({', '.join(sorted({h.match for h in headers}))}): inject them apart")
    archives = tuple(dict.fromkeys(a for h in headers for a in h.archives))
    return PlanHeader(archives, headers[0].match, headers[0].made)


@contextmanager
def _reading(path: str) -> Iterator[None]:
    """Errors reading a plan file, as one line naming it."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"plan {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"plan {path}: not UTF-8 text (a plan is JSON Lines)") from None


# A user's lines, in plan order; inject orders them by received time.
UserLines = tuple[str, list[PlanEntry]]


def by_user(entries: Iterable[PlanEntry]) -> Iterator[UserLines]:
    """Entries in any order, grouped by user in memory: for plans small enough to hold."""
    groups: dict[str, list[PlanEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.user, []).append(entry)
    yield from groups.items()


def runs_of_users(entries: Iterable[PlanEntry]) -> Iterator[UserLines]:
    """Entries already ordered by user (the diff's cursor), one user's at a time."""
    user: str | None = None
    group: list[PlanEntry] = []
    for entry in entries:
        if entry.user != user:
            if user is not None:
                yield user, group
            user, group = entry.user, []
        group.append(entry)
    if user is not None:
        yield user, group
SORT_BATCH = 10_000
BOM = b"\xef\xbb\xbf"


class PlanFile:
    """A plan file of any size, handed to inject one user at a time.

    ``open_plan`` reads it once to find the header lines, count the entry
    lines and learn whether each user's lines are together (as ``diff
    --plan`` writes them: by user, then received time). ``users()`` then
    reads it again, parsing and checking each line, and yields each user's
    lines as one group, so memory holds one user's lines per worker, never
    the plan. A plan whose users are scattered (edited, concatenated) is
    sorted on disk first: a private temporary SQLite file of (user, byte
    offset) in ``scratch``, deleted afterwards.
    """

    def __init__(self, path: str, header: PlanHeader | None, entries: int, users: list[str],
                 grouped: bool):
        self.path = path
        self.header = header
        self.entries = entries          # entry lines, bad ones included
        self.user_names = users         # every user a line names, in first-seen order
        self.grouped = grouped

    def users(self, scratch: str | Path | None = None,
              bad: Callable[[UsageError], None] = lambda exc: None) -> Iterator[UserLines]:
        """Each user's entries as one group; a bad line goes to ``bad`` and the rest goes on."""
        with _reading(self.path), open(self.path, "rb") as fh:
            lines = _numbered(fh) if self.grouped else self._sorted(fh, scratch)
            user: str | None = None
            group: list[PlanEntry] = []
            done: set[str] = set()
            for lineno, raw in lines:
                try:
                    got = parse_line(raw.decode("utf-8"), lineno, self.path)
                except UsageError as exc:
                    bad(exc)
                    continue
                if isinstance(got, PlanHeader):
                    continue
                if got.user != user:
                    if user is not None:
                        yield user, group
                        done.add(user)
                    if got.user in done:   # the file changed since open_plan read it
                        raise UsageError(f"plan {self.path} changed while it was read: "
                                         "inject it again")
                    user, group = got.user, []
                group.append(got)
            if user is not None:
                yield user, group

    def _sorted(self, fh: IO[bytes], scratch: str | Path | None) -> Iterator[tuple[int, bytes]]:
        """The entry lines by user, then plan order, through a temporary on-disk index."""
        folder = Path(scratch) if scratch and Path(scratch).is_dir() else None
        fd, name = tempfile.mkstemp(prefix=".plan-sort-", suffix=".sqlite", dir=folder)
        os.close(fd)    # mkstemp made it 0600: the plan's users stay private
        db = sqlite3.connect(name)
        bound_sqlite(db)
        try:
            db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                             "CREATE TABLE lines (user TEXT NOT NULL, lineno INTEGER NOT NULL,"
                             " offset INTEGER NOT NULL)")
            rows = []
            for lineno, offset, raw in _entry_lines(fh):
                rows.append((_user_of(raw) or "", lineno, offset))
                if len(rows) >= SORT_BATCH:
                    db.executemany("INSERT INTO lines VALUES (?, ?, ?)", rows)
                    rows = []
            db.executemany("INSERT INTO lines VALUES (?, ?, ?)", rows)
            for lineno, offset in db.execute(
                "SELECT lineno, offset FROM lines ORDER BY user, lineno"):
                fh.seek(offset)
                yield lineno, fh.readline()
        finally:
            db.close()
            os.unlink(name)


def open_plan(path: str) -> PlanFile:
    """Read a plan file's header lines and learn its shape, holding none of its entries."""
    headers: list[PlanHeader] = []
    users: dict[str, None] = {}
    entries, grouped, last = 0, True, None
    with _reading(path), open(path, "rb") as fh:
        for lineno, _, raw in _entry_lines(fh):
            # UnicodeDecodeError: not a plan, refused before anything is done
            text = raw.decode("utf-8")
            user = _user_of(text)
            if user is None and HEADER_FIELD in text:
                try:
                    got = parse_line(text, lineno, path)
                except UsageError:
                    got = None
                if isinstance(got, PlanHeader):
                    headers.append(got)
                    continue
            entries += 1
            if user is None or user == last:
                continue
            if user in users:
                grouped = False
            users[user] = None
            last = user
    return PlanFile(path, _merged(headers, path), entries, list(users), grouped)


def _numbered(fh: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for lineno, _, raw in _entry_lines(fh):
        yield lineno, raw


def _entry_lines(fh: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, line) of every line that is neither blank nor a comment."""
    offset = 0
    for lineno, raw in enumerate(fh, 1):
        start, offset = offset, offset + len(raw)
        if lineno == 1 and raw.startswith(BOM):     # as Notepad writes: no part of the line
            raw, start = raw[len(BOM):], start + len(BOM)
        text = raw.strip()
        if text and not text.startswith(b"#"):
            yield lineno, start, raw


def _user_of(raw: str | bytes) -> str | None:
    """The user a line names, as ``parse_line`` reads it; None for a header or a bad line."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or HEADER_FIELD in obj or not obj.get("user"):
        return None
    return str(obj["user"])


def save_plan(path: str, entries: Iterable[PlanEntry], header: PlanHeader | None = None) -> int:
    """Write a plan atomically: a crash never leaves half a plan behind."""
    tmp = f"{path}.tmp"
    try:
        with private.open_text(tmp) as fh:
            n = write_plan(fh, entries, header)
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"--plan {path}: {exc.strerror or exc}") from None
    return n


class Seal:
    """Which archive items a plan may have inject read, and whether one still is what was planned.

    ``archives`` are the plan header's (or ``inject --archive``'s). A line's
    source must name one of them (the same store, however spelled); its item
    is then opened in that archive, which refuses a ref leading outside it,
    and must still have the line's fingerprint.
    """

    def __init__(self, archives: Sequence[str], match: str = "auto"):
        self.archives = tuple(archives)
        self.match = match
        self._by_identity = {archive_identity(a): a for a in self.archives}
        self._of_source: dict[str, str | None] = {}    # a plan repeats its few sources

    def archive_of(self, entry: PlanEntry) -> str:
        """The archive (as the header spells it) holding ``entry``; RefusedItem if none does."""
        if not entry.fingerprint:
            raise RefusedItem(entry.ref, NO_FINGERPRINT)
        if entry.source not in self._of_source:
            try:
                identity = archive_identity(entry.source)
            except UsageError:
                identity = None
            self._of_source[entry.source] = self._by_identity.get(identity) if identity else None
        archive = self._of_source[entry.source]
        if archive is None:
            raise RefusedItem(entry.ref,
                              f"source {entry.source!r} is not one of the plan's archives")
        return archive

    @staticmethod
    def check(entry: PlanEntry, data: bytes) -> None:
        """RefusedItem unless ``data`` has the fingerprint (and digest) the diff recorded.

        Both are computed as the scan computes them: the fingerprint from
        Message-ID, Date and From (or the whole message), the digest from
        those and the body, so a body replaced under the same headers is caught.
        """
        if not is_same_message(data, entry.fingerprint, entry.digest):
            raise RefusedItem(entry.ref, CHANGED)


def archive_identity(spec: str) -> str:
    """What makes two spellings of a STORE the same archive: the real path, or the canonical URL."""
    from restore.stores import split_spec

    kind, where = split_spec(spec)
    if kind in ("imap", "imaps"):
        from restore.imapconn import parse_imap_url

        return parse_imap_url(where).canonical
    return f"{kind}:{os.path.realpath(where)}"
