"""Read store files that may be gzip- or zstd-compressed, without trusting names.

The format is told by the first bytes (gateways and Dovecot's zlib plugin do
not always name their files ``.gz``/``.zst``). Concatenated gzip members and
zstd frames are read one after the other, as ``zcat``/``zstdcat`` do.

Damage is never silently accepted: a stream that ends inside a member or a
frame, bad checksums and data that does not decompress raise
``CorruptData`` with a reason a mail administrator can act on ("truncated
zstd frame"). Callers turn it into an ``Unreadable`` item.

Files are opened with ``O_RDONLY`` only (plus ``O_NONBLOCK`` so that a FIFO
left in a store cannot hang the run), and must be regular files.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import zlib
from typing import BinaryIO

import zstandard

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# zstd offers no cap on the output of one decompress() call, so input is fed
# in small slices to keep one call's output (and memory) bounded.
ZSTD_INPUT_SLICE = 16 * 1024
GZIP_OUTPUT_LIMIT = 256 * 1024
READ_SIZE = 64 * 1024


class CorruptData(Exception):
    """Compressed data that cannot be read in full; ``str(exc)`` is the reason."""


def detect(head: bytes) -> str | None:
    """``"gzip"``, ``"zstd"`` or None (not compressed) from a file's first bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a regular file read-only; raises OSError, or CorruptData if not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptData("not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_stream(path: str | os.PathLike[str]) -> BinaryIO:
    """A buffered reader of the file's decompressed bytes.

    Plain files come back seekable; compressed ones can only be read forward.
    Reads raise CorruptData on damaged or truncated data, OSError on I/O errors.
    """
    raw = open_regular(path)
    try:
        head = raw.peek(len(ZSTD_MAGIC))[: len(ZSTD_MAGIC)]  # type: ignore[attr-defined]
        kind = detect(head)
        if kind is None:
            return raw
        return io.BufferedReader(_DecompressingReader(raw, kind), READ_SIZE)
    except BaseException:
        raw.close()
        raise


def read_all(path: str | os.PathLike[str], limit: int) -> bytes | None:
    """The whole decompressed content of one file, or None once it is more than ``limit`` bytes."""
    with open_stream(path) as stream:
        return _read_limited(stream, limit)


def decompress(data: bytes, limit: int) -> bytes | None:
    """The decompressed content of a whole file already read, or None beyond ``limit`` bytes.

    ``data`` itself when it is not compressed. Raises CorruptData as
    reading the file through ``open_stream`` would.
    """
    kind = detect(data)
    if kind is None:
        return data if len(data) <= limit else None
    if kind == "zstd":
        # The common case, one frame that declares its size, in one call with
        # this thread's decompressor: zstd writes no more than the size declared.
        try:
            size = zstandard.frame_content_size(data)
            if 0 <= size <= limit:
                return _zstd_decompressor().decompress(data, allow_extra_data=False)
        except zstandard.ZstdError:
            pass    # several frames, trailing data or damage: the stream says which
    with io.BufferedReader(_DecompressingReader(io.BytesIO(data), kind), READ_SIZE) as stream:
        return _read_limited(stream, limit)


def _read_limited(stream: BinaryIO, limit: int) -> bytes | None:
    """Read a chunk at a time: a small file that expands hugely (a
    decompression bomb) costs ``limit`` bytes of memory at most."""
    chunks, size = [], 0
    while chunk := stream.read(READ_SIZE):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# A zstd decompressor costs more to make than a small message takes to
# decompress (benchmarks/README.md): each thread keeps one for the frames
# ``decompress`` reads in one call. A stream's frames each get their own:
# streams are read interleaved.
_reused = threading.local()


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    decompressor = getattr(_reused, "zstd", None)
    if decompressor is None:
        decompressor = _reused.zstd = zstandard.ZstdDecompressor()
    return decompressor


class _Member:
    """One gzip member or zstd frame being decompressed."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "gzip":
            self._gzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        else:
            self._zstd = zstandard.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Decompress what ``data`` allows; returns (output, input not consumed yet)."""
        try:
            if self.kind == "gzip":
                out = self._gzip.decompress(data, GZIP_OUTPUT_LIMIT)
                rest = self._gzip.unused_data if self._gzip.eof else self._gzip.unconsumed_tail
                return out, rest
            chunk, rest = data[:ZSTD_INPUT_SLICE], data[ZSTD_INPUT_SLICE:]
            out = self._zstd.decompress(chunk)
            if self._zstd.eof:
                rest = self._zstd.unused_data + rest
            return out, rest
        except (zlib.error, zstandard.ZstdError) as exc:
            raise CorruptData(f"corrupt {self.kind} data ({exc})") from None

    @property
    def finished(self) -> bool:
        return self._gzip.eof if self.kind == "gzip" else self._zstd.eof


class _DecompressingReader(io.RawIOBase):
    """Raw stream of decompressed bytes over a compressed file, member after member."""

    def __init__(self, raw: BinaryIO, kind: str):
        self._raw = raw
        self._kind = kind
        self._member: _Member | None = None
        self._pending = b""       # compressed input not yet given to a member
        self._output = b""        # decompressed; bytes before ``_taken`` were returned
        self._taken = 0
        self._input_done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        while self._taken == len(self._output):
            if not self._advance():
                return 0
        n = min(len(buffer), len(self._output) - self._taken)
        buffer[:n] = self._output[self._taken : self._taken + n]
        self._taken += n
        return n

    def _advance(self) -> bool:
        """Produce more output, or return False at a clean end of the stream."""
        self._fill(1)
        if self._member is None or self._member.finished:
            if not self._pending:
                return False
            self._fill(len(ZSTD_MAGIC))  # the next member's magic may straddle two reads
            if detect(self._pending) != self._kind:
                raise CorruptData(f"trailing data after the {self._kind} stream")
            self._member = _Member(self._kind)
        # with the input used up, an empty feed drains what zlib still holds back
        self._output, self._pending = self._member.feed(self._pending)
        self._taken = 0
        if not (self._output or self._pending or self._member.finished) and self._input_done:
            raise CorruptData(f"truncated {self._kind_noun()}")
        return True

    def _fill(self, at_least: int) -> None:
        while len(self._pending) < at_least and not self._input_done:
            more = self._raw.read(READ_SIZE)
            self._input_done = not more
            self._pending += more

    def _kind_noun(self) -> str:
        return "gzip stream" if self._kind == "gzip" else "zstd frame"

    def close(self) -> None:
        self._raw.close()
        super().close()
