"""mbox reader: one file, a directory tree of them, or a glob; gzip/zstd streamed.

Splitting rule (mboxo/mboxrd, as written by MTAs, Dovecot and Python's
``mailbox``; RFC 4155): a message starts at a ``From `` line of the form
mbox writers emit, ``From SENDER DATE`` with an asctime date (``Fri Dec  8
21:13:05 2017``, a zone before the year allowed), that is the first line of
the file or follows an empty line. Any other line, "From now on we meet on
Mondays." after an empty line included, is body text. (The first line of a
file need only start with ``From ``: nothing precedes it to cut.) A message
is the bytes after its ``From `` line up to the next one, less the one empty
line that separates messages (also at the end of the file); one ``>`` is
removed from lines matching ``^>+From `` (mboxrd unquoting). A file whose
first line is not a ``From `` line is not an mbox and is reported
unreadable; an empty file is an empty mbox.

A unit is one file (stamp: size and mtime). An item's ref is
``RELPATH:OFFSET``, OFFSET being the byte offset of its ``From `` line in
the decompressed stream; ``open_ref`` re-reads that one message. A
compressed file can only be decompressed forward, so ``open_ref`` keeps
readers open (``ReaderPool``, closed by ``close()``) and goes on from the
one nearest before the offset: refs read in increasing order decompress a
file once in all. ``Item.delivered`` is the date of the ``From `` line
(asctime, taken as UTC) when it has one.

Incremental reading of append-only files: ``read`` starts a unit at
``unit.resume`` when a message (or the end of the data) starts there. When it
does not, the file was rewritten rather than appended to, and the whole file
is read again from offset 0 — the caller sees that from the first item's
offset being below ``unit.resume``. After a unit has been read to its end
without error, ``end_offset(unit)`` gives the offset to resume from next time.

A message bigger than ``max_message_size`` is reported unreadable ("too
large") and read past in pieces, never held; lines are read at most
``LINE_PIECE`` bytes at a time, so even a gigabyte without a line end is not.

A compressed stream damaged midway: the messages before the damage are
good (each was closed by the next ``From `` line); the message being read is
reported unreadable with the reason, and the rest of the file is lost.
Hidden files and directories (``.imap``, ``.subscriptions``) are skipped.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from typing import BinaryIO

from restore.errors import StoreError, UnreadableItem
from restore.mailnames import mbox_folder
from restore.stores.base import Item, Store, Unit, Unreadable, too_large
from restore.stores.compression import READ_SIZE, CorruptData, open_stream
from restore.stores.files import (
    Found,
    Refused,
    StoreRoot,
    failure_reason,
    root_and_file,
    stamp,
)
from restore.stores.sniff import not_a_message_reason

FROM_LINE = b"From "
BLANK_LINES = (b"\n", b"\r\n")
QUOTED_FROM = re.compile(rb">+From ")
MONTHS = {
    m.encode(): i
    for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)
}
# "From alice@example.com Fri Dec  8 21:13:05 2017" (the sender may hold
# spaces, a zone may precede the year, text may follow it: "remote from x").
FROM_LINE_FORM = re.compile(
    rb"From .*?(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) +(" + b"|".join(MONTHS) + rb") +(\d{1,2}) +"
    rb"(\d{1,2}):(\d{2})(?::(\d{2}))?(?: +(?:([+-]\d{4})|[A-Z]{1,5}))? +(\d{4})(?:\s|$)"
)
GLOB_CHARS = re.compile(r"[*?\[]")
NOT_MBOX = "not an mbox (does not start with a 'From ' line)"


def is_from_line(line: bytes) -> bool:
    """Whether ``line`` is a ``From `` line of the form mbox writers emit (see the module doc)."""
    return line.startswith(FROM_LINE) and FROM_LINE_FORM.match(line) is not None


def from_line_date(line: bytes) -> float | None:
    """Epoch seconds of a ``From `` line's asctime date (UTC unless it names an offset), or None."""
    m = FROM_LINE_FORM.match(line)
    if not m:
        return None
    month, day, hour, minute, second, offset, year = m.groups()
    try:
        when = datetime(int(year), MONTHS[month], int(day), int(hour), int(minute),
                        int(second or 0),
                        tzinfo=UTC)
    except ValueError:
        return None
    east = 0 if offset is None else (int(offset[1:3]) * 3600 + int(offset[3:]) * 60)
    return when.timestamp() - (-east if offset and offset.startswith(b"-") else east)


# Lines are read at most this much at a time: a "line" of a gigabyte (a
# decompression bomb of zeros) is read in pieces, never whole.
LINE_PIECE = 64 * 1024


@dataclass(frozen=True, slots=True)
class RawMessage:
    offset: int         # of the From_ line, in the decompressed stream
    from_line: bytes
    data: bytes | None  # From_ line dropped, separator dropped, mboxrd unquoted; None: too large


class MboxReader:
    """Splits one decompressed mbox stream into messages.

    ``current`` is the offset of the message being read, or of the next one
    (where to report a failure); ``end`` the offset just past the last message
    read (past its From_ line while one is being read). A compressed stream is
    read forward only: ``seek`` goes on from ``current``, never back.
    """

    def __init__(self, stream: BinaryIO, limit: int):
        self._stream = stream
        self._limit = limit     # a message's largest size: a bigger one is skipped unread
        self._first: bytes | None = None  # the line read at ``current``, not used yet
        self.current = 0
        self.end = 0

    @property
    def in_message(self) -> bool:
        return self.end > self.current

    def can_seek(self, offset: int) -> bool:
        return offset >= self.current or self._stream.seekable()

    def seek(self, offset: int) -> bool:
        """Go to ``offset``; True when a message or the end of the data starts there.

        After False the reader's position is unknown: use another one.
        """
        if self._stream.seekable():
            if offset > os.fstat(self._stream.fileno()).st_size:
                return False
            self._stream.seek(offset)
            first = self._stream.readline(LINE_PIECE)
        elif self._first is not None and offset < self.current + len(self._first):
            first = self._first[offset - self.current :]  # the line in hand covers it
        else:
            if not self._skip(offset - self.current - len(self._first or b"")):
                return False
            first = self._stream.readline(LINE_PIECE)
        self.current = self.end = offset
        self._first = first
        return not first or (first.startswith(FROM_LINE) if offset == 0 else is_from_line(first))

    def _skip(self, count: int) -> bool:
        # decompressed in bounded chunks that are dropped at once: a skip costs no memory
        while count:
            chunk = self._stream.read(min(count, READ_SIZE))
            if not chunk:
                return False
            count -= len(chunk)
        return True

    def message(self) -> RawMessage | None:
        """The message at ``current`` (None at the end of the data); moves on to the next one."""
        from_line = self._first
        if not from_line:
            return None
        self.end += len(from_line)
        lines, size, self._first = _message_lines(self._stream.readline, self._limit)
        self.end += size
        raw = RawMessage(self.current, from_line, None if lines is None else _body(*lines))
        self.current = self.end
        return raw

    def messages(self) -> Iterator[RawMessage]:
        while (raw := self.message()) is not None:
            yield raw


def _message_lines(readline: Callable[[int], bytes], limit: int
                   ) -> tuple[tuple[list[bytes], set[int]] | None, int, bytes]:
    """Read the lines after a From_ line up to the next message.

    Returns the message's lines (a long one in pieces, with the indexes of
    the pieces that continue a line), or None when they hold more than
    ``limit`` bytes; their size; and the next message's From_ line (b"" at
    the end of the data).

    This loop runs for every line of an mbox, so its inner loop only looks
    for the next From_ line; sizes are added up a block of lines at a time,
    each block no longer than what could reach the limit, and the pieces of
    long lines are told then. (So inside a block, the "\\n" that ends a line
    of exactly k * LINE_PIECE bytes passes for a blank line: an unquoted From_
    line right after it would start a message.)
    """
    lines: list[bytes] = []
    append = lines.append
    continued: set[int] = set()
    pieces = iter(partial(readline, LINE_PIECE), b"")
    size = 0
    after_blank = False
    while True:
        start = len(lines)
        room = (limit - size) // LINE_PIECE
        for line in islice(pieces, room if room > 0 else 1):
            # is_from_line, inlined: this test runs once per line of every mbox
            if after_blank and line.startswith(FROM_LINE) and FROM_LINE_FORM.match(line):
                return (lines, continued), size + _tally(lines, start, continued), line
            append(line)
            after_blank = line in BLANK_LINES
        if len(lines) == start:     # the end of the data
            return (lines, continued), size, b""
        size += _tally(lines, start, continued)
        if size > limit:
            return None, *_skip_message(pieces, size, lines[-1][-1:] == b"\n")
        if len(lines) - 1 in continued:
            after_blank = False     # the end of a long line, not a blank line


def _tally(lines: list[bytes], start: int, continued: set[int]) -> int:
    """The size of ``lines[start:]``; marks the pieces among them that continue a line."""
    size = sum(map(len, islice(lines, start, None)))
    first = max(start - 1, 0)       # the piece before the block may be cut short too
    if lines and (size >= LINE_PIECE or len(lines[first]) == LINE_PIECE) and max(
            map(len, islice(lines, first, None))) == LINE_PIECE:
        for i in range(first + 1, len(lines)):
            if len(lines[i - 1]) == LINE_PIECE and lines[i - 1][-1:] != b"\n":
                continued.add(i)
    return size


def _skip_message(pieces: Iterator[bytes], size: int, at_start: bool) -> tuple[int, bytes]:
    """Read on, keeping nothing, to the next message: the skipped size and its From_ line."""
    after_blank = False
    for piece in pieces:
        if after_blank and is_from_line(piece):
            return size, piece
        size += len(piece)
        after_blank = at_start and piece in BLANK_LINES
        at_start = piece[-1:] == b"\n"
    return size, b""


def _body(lines: list[bytes], continued: set[int]) -> bytes:
    if lines and lines[-1] in BLANK_LINES and len(lines) - 1 not in continued:
        lines.pop()
    if continued:   # a piece that continues a line is no line start to unquote
        return b"".join(line[1:] if i not in continued and QUOTED_FROM.match(line) else line
                        for i, line in enumerate(lines))
    return b"".join([line[1:] if QUOTED_FROM.match(line) else line for line in lines])


class ReaderPool:
    """Open readers kept between ``open_ref`` calls, each where its last message ended.

    A plan's refs into one large compressed file come in increasing offset
    order within each inject worker, so a reader that goes on from the last
    message decompresses the file once instead of once per message. Workers
    interleave anywhere in a file, hence several readers per file; the least
    recently used one is closed when there are too many. A reader is lent to
    one thread at a time. A file changed on disk gets new readers, so a ref
    reads what the file holds now.
    """

    def __init__(self, per_file: int = 8, in_all: int = 32):
        self.per_file = per_file
        self.in_all = in_all
        self._idle: list[_OpenMbox] = []  # least recently used first
        self._lock = threading.Lock()

    def message_at(self, path: str, offset: int, limit: int) -> RawMessage | None:
        """The message whose From_ line is at ``offset``, or None when none starts there.

        Raises CorruptData or OSError as reading the file does.
        """
        held = self._take(path, offset, limit)
        try:
            raw = held.reader.message() if held.reader.seek(offset) else None
        except BaseException:
            held.stream.close()
            raise
        if raw is None:  # a failed seek leaves the reader nowhere known
            held.stream.close()
        else:
            self._give_back(held)
        return raw

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for held in idle:
            held.stream.close()

    def _take(self, path: str, offset: int, limit: int) -> _OpenMbox:
        identity = _identity(os.stat(path))
        with self._lock:
            stale = [h for h in self._idle if h.path == path and h.identity != identity]
            usable = [h for h in self._idle if h.path == path and h.identity == identity
                      and h.reader.can_seek(offset)]
            # the closest one before ``offset`` has the least to skip
            best = max(usable, key=lambda h: h.reader.current if h.reader.current <= offset else -1,
                       default=None)
            self._idle = [h for h in self._idle if h is not best and h not in stale]
        for held in stale:
            held.stream.close()
        if best is not None:
            return best
        stream = open_stream(path)
        return _OpenMbox(path, identity, stream, MboxReader(stream, limit))

    def _give_back(self, held: _OpenMbox) -> None:
        with self._lock:
            self._idle.append(held)
            same_file = [h for h in self._idle if h.path == held.path]
            dropped = same_file[: max(0, len(same_file) - self.per_file)]
            self._idle = [h for h in self._idle if h not in dropped]
            excess = max(0, len(self._idle) - self.in_all)
            dropped += self._idle[:excess]
            del self._idle[:excess]
        for old in dropped:
            old.stream.close()


@dataclass(eq=False, slots=True)
class _OpenMbox:
    path: str
    identity: tuple[int, int, int, int]  # of the file when opened
    stream: BinaryIO
    reader: MboxReader


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class MboxStore(Store):
    kind = "mbox"

    def __init__(self, spec: str, path: str):
        super().__init__(spec)
        self._pattern = path if GLOB_CHARS.search(path) else None
        self._single: str | None = None
        if self._pattern:
            fixed = path[: GLOB_CHARS.search(path).start()]  # type: ignore[union-attr]
            self.root = StoreRoot(os.path.dirname(fixed) or ".", spec)
            if next(glob.iglob(path, recursive=True), None) is None:
                raise StoreError(f"{spec}: no file matches {path}")
        else:
            self.root, self._single = root_and_file(path, spec)
        self._ends: dict[str, int] = {}
        self._readers = ReaderPool()

    def _files(self) -> Iterator[Found | Refused]:
        if self._single:
            yield self.root.examine(os.path.join(self.root.path, self._single))
        elif self._pattern:
            for match in sorted(glob.iglob(self._pattern, recursive=True)):
                if os.path.isdir(match) and not os.path.islink(match):
                    yield from self.root.walk(match)
                else:
                    yield self.root.examine(match)
        else:
            yield from self.root.walk()

    def units(self) -> Iterator[Unit | Unreadable]:
        for found in self._files():
            if isinstance(found, Refused):
                yield Unreadable(Unit(found.rel, ""), found.rel, found.reason)
                continue
            folder = "INBOX" if self._single else mbox_folder(found.rel)
            yield Unit(found.rel, stamp(found.stat), folder, size=found.stat.st_size)

    def end_offset(self, unit: Unit) -> int | None:
        """Where the last full read of ``unit`` ended, to pass as ``resume`` next time."""
        return self._ends.get(unit.ref)

    def read(self, units: Iterable[Unit]) -> Iterator[Item | Unreadable]:
        for unit in units:
            self._ends.pop(unit.ref, None)
            try:
                path = self.root.locate(unit.ref)
            except UnreadableItem as exc:
                yield Unreadable(unit, exc.where, exc.reason)
                continue
            yield from self._read_file(unit, path, unit.resume)

    def _read_file(self, unit: Unit, path: str, start: int) -> Iterator[Item | Unreadable]:
        reader = None
        try:
            with open_stream(path) as stream:
                reader = MboxReader(stream, self.max_message_size)
                if reader.seek(start):
                    yield from self._items(unit, reader)
                    self._ends[unit.ref] = reader.end
                    return
        except (CorruptData, OSError) as exc:
            where = f"{unit.ref}:{reader.current}" if reader and reader.in_message else unit.ref
            yield Unreadable(unit, where, failure_reason(exc))
            return
        if start:
            yield from self._read_file(unit, path, 0)  # rewritten, not appended to
        else:
            yield Unreadable(unit, unit.ref, NOT_MBOX)

    def _items(self, unit: Unit, reader: MboxReader) -> Iterator[Item | Unreadable]:
        for raw in reader.messages():
            ref = f"{unit.ref}:{raw.offset}"
            reason = self._not_a_message_reason(raw.data)
            if reason or raw.data is None:
                yield Unreadable(unit, ref, reason or "")
            else:
                yield Item(unit, ref, raw.data, from_line_date(raw.from_line))

    def _not_a_message_reason(self, data: bytes | None) -> str | None:
        return too_large(self.max_message_size) if data is None else not_a_message_reason(data)

    def open_ref(self, ref: str) -> bytes:
        rel, _, offset_text = ref.rpartition(":")
        if not rel or not re.fullmatch(r"[0-9]+", offset_text):
            raise UnreadableItem(ref, "not an mbox reference (PATH:OFFSET)")
        offset = int(offset_text)
        path = self.root.locate(rel)
        try:
            raw = self._readers.message_at(path, offset, self.max_message_size)
        except (CorruptData, OSError) as exc:
            raise UnreadableItem(ref, failure_reason(exc)) from None
        if raw is None:
            raise UnreadableItem(ref, f"no message starts at offset {offset}")
        reason = self._not_a_message_reason(raw.data)
        if reason or raw.data is None:
            raise UnreadableItem(ref, reason or "")
        return raw.data

    def close(self) -> None:
        self._readers.close()
