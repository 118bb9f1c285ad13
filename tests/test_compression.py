"""Compressed store files: told by magic bytes, streamed, damage never silently accepted."""

from __future__ import annotations

import gzip
import os

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from restore.stores.compression import CorruptData, decompress, detect, open_stream, read_all
from restore.stores.sniff import not_a_message_reason

LIMIT = 2**30
DATA = b"Subject: x\n\n" + bytes(range(256)) * 400


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


COMPRESSORS = {"gz": gzip.compress, "zst": zst}


def test_format_is_told_by_magic_bytes_not_by_name(tmp_path):
    disguised = tmp_path / "message.txt"
    disguised.write_bytes(zst(DATA))
    plain_named_gz = tmp_path / "message.gz"
    plain_named_gz.write_bytes(DATA)
    assert detect(disguised.read_bytes()) == "zstd"
    assert read_all(disguised, LIMIT) == DATA
    assert read_all(plain_named_gz, LIMIT) == DATA


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_concatenated_members_are_read_in_turn(tmp_path, kind):
    path = tmp_path / f"box.{kind}"
    compress = COMPRESSORS[kind]
    path.write_bytes(compress(b"first\n") + compress(b"second\n") + compress(DATA))
    assert read_all(path, LIMIT) == b"first\nsecond\n" + DATA


@pytest.mark.parametrize(
    ("kind", "reason"), [("gz", "truncated gzip stream"), ("zst", "truncated zstd frame")]
)
@pytest.mark.parametrize("keep", [0.99, 0.5, 0.05])
def test_truncated_stream_is_unreadable_not_shortened(tmp_path, kind, reason, keep):
    whole = COMPRESSORS[kind](DATA)
    path = tmp_path / "cut"
    path.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(CorruptData, match=reason):
        read_all(path, LIMIT)


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_truncated_second_member_is_unreadable(tmp_path, kind):
    compress = COMPRESSORS[kind]
    path = tmp_path / "cut"
    path.write_bytes(compress(DATA) + compress(DATA)[:-6])
    with pytest.raises(CorruptData, match="truncated"):
        read_all(path, LIMIT)


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_corrupt_data_is_unreadable_with_reason(tmp_path, kind):
    damaged = bytearray(COMPRESSORS[kind](DATA))
    damaged[len(damaged) // 2] ^= 0xFF
    path = tmp_path / "damaged"
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptData, match="corrupt"):
        read_all(path, LIMIT)


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_trailing_garbage_is_unreadable(tmp_path, kind):
    path = tmp_path / "tail"
    path.write_bytes(COMPRESSORS[kind](DATA) + b"not compressed")
    with pytest.raises(CorruptData, match="trailing data"):
        read_all(path, LIMIT)


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_highly_compressed_data_is_read_in_full(tmp_path, kind):
    path = tmp_path / "zeros"
    path.write_bytes(COMPRESSORS[kind](b"\0" * 3_000_000 + b"end"))
    with open_stream(path) as stream:
        assert len(stream.read(4096)) == 4096
    assert read_all(path, LIMIT) == b"\0" * 3_000_000 + b"end"


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_data_that_expands_past_the_limit_is_refused_unread(tmp_path, kind):
    path = tmp_path / "bomb"
    path.write_bytes(COMPRESSORS[kind](b"\0" * 3_000_000))
    assert read_all(path, 3_000_000) == b"\0" * 3_000_000
    assert read_all(path, 2_999_999) is None
    # the same from bytes in hand, with the frame's size declared or not
    unsized = zstandard.ZstdCompressor().compressobj()
    for data in (path.read_bytes(), unsized.compress(b"\0" * 3_000_000) + unsized.flush()):
        assert decompress(data, 2_999_999) is None
        assert decompress(data, 3_000_000) == b"\0" * 3_000_000


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_each_file_reads_alike_whatever_was_read_before_it(kind):
    """Decompressing state is reused from file to file: damage in one never leaks into the next."""
    compress = COMPRESSORS[kind]
    damaged = bytearray(compress(DATA))
    damaged[len(damaged) // 2] ^= 0xFF
    files = [compress(b"one\n"), compress(DATA)[:-7], bytes(damaged), compress(b"two\n"),
             compress(b"three\n") + compress(b"four\n"), compress(b"five\n") + b"junk", DATA]
    got = []
    for data in files * 2:
        try:
            got.append(decompress(data, LIMIT))
        except CorruptData as exc:
            got.append(str(exc).split(" (")[0])
    assert got == [b"one\n", f"truncated {'gzip stream' if kind == 'gz' else 'zstd frame'}",
                   f"corrupt {'gzip' if kind == 'gz' else 'zstd'} data", b"two\n",
                   b"three\nfour\n",
                   f"trailing data after the {'gzip' if kind == 'gz' else 'zstd'} stream",
                   DATA] * 2


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(CorruptData, match="not a regular file"):
        read_all(fifo, LIMIT)


@settings(max_examples=40, deadline=None)
@given(
    parts=st.lists(st.binary(max_size=3000), min_size=1, max_size=4),
    kind=st.sampled_from(["gz", "zst"]),
    read_size=st.integers(min_value=1, max_value=5000),
)
def test_stream_reads_back_any_members_in_any_read_sizes(tmp_path_factory, parts, kind, read_size):
    path = tmp_path_factory.mktemp("h") / "f"
    path.write_bytes(b"".join(COMPRESSORS[kind](p) for p in parts))
    got = bytearray()
    with open_stream(path) as stream:
        while chunk := stream.read(read_size):
            got += chunk
    assert bytes(got) == b"".join(parts)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b" \n\n", "only white space"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"Dear diary,\ntoday nothing happened.\n", "no header block"),
        (b"Subject: ok\r\n\r\nbody with \x00 is still a message\r\n", None),
        (b"From alice@example.com Fri Dec  8 21:13:05 2017\nSubject: hi\n\nbody\n", None),
        (b"X-Odd-Header : value\n\nbody\n", None),
    ],
)
def test_not_a_message_reason(data, reason):
    got = not_a_message_reason(data)
    if reason is None:
        assert got is None
    else:
        assert reason in got
