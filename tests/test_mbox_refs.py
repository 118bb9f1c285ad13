"""Re-opening mbox items by ref: same bytes as ``read``, each file decompressed about once."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from crosscheck import assert_mbox_agrees

from restore.errors import UnreadableItem
from restore.stores import Item, open_store
from restore.stores import mbox as mbox_module


class CountingOpener:
    """Stands in for ``open_stream``: counts streams opened and closed, and the
    decompressed bytes the store reads from them."""

    def __init__(self, real):
        self.real = real
        self.opened = self.closed = self.bytes_read = 0

    def __call__(self, path):
        self.opened += 1
        return _CountedStream(self.real(path), self)

    @property
    def open_now(self) -> int:
        return self.opened - self.closed


class _CountedStream:
    def __init__(self, stream, counter: CountingOpener):
        self._stream = stream
        self._counter = counter

    def read(self, size=-1):
        data = self._stream.read(size)
        self._counter.bytes_read += len(data)
        return data

    def readline(self, size=-1):
        line = self._stream.readline(size)
        self._counter.bytes_read += len(line)
        return line

    def close(self):
        if not self._stream.closed:
            self._counter.closed += 1
        self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getattr__(self, name):  # seekable, seek, fileno, closed
        return getattr(self._stream, name)


@pytest.fixture
def opener(monkeypatch) -> CountingOpener:
    counter = CountingOpener(mbox_module.open_stream)
    monkeypatch.setattr(mbox_module, "open_stream", counter)
    return counter


def hostile_messages(mail_factory, count: int, seed: int = 7) -> list[bytes]:
    """Messages of varied sizes whose bodies need mboxrd quoting or end without a newline."""
    rnd = random.Random(seed)
    bodies = ["Hello.\n", "\nFrom here on, quoted.\n>From already quoted\n", "no final newline",
              "line\n\n\nFrom the archive\n\n", "x" * 3000 + "\n"]
    return [mail_factory.make_message(subject=f"m{i}", body=rnd.choice(bodies) * rnd.randint(1, 4))
            for i in range(count)]


def read_items(store) -> list[Item]:
    [unit] = store.units()
    items = list(store.read([unit]))
    assert all(isinstance(i, Item) for i in items)
    return items


@pytest.mark.parametrize("compress", [None, "gz", "zst"])
def test_open_ref_gives_what_read_gave_in_any_order_and_from_many_threads(tmp_path, mail_factory,
                                                                          compress):
    path = tmp_path / f"day.mbox{'.' + compress if compress else ''}"
    mail_factory.write_mbox(path, hostile_messages(mail_factory, 300), compress=compress)
    store = open_store(f"mbox:{path}")
    items = read_items(store)
    assert len(items) == 300
    assert assert_mbox_agrees(path) == [i.data for i in items]
    expected = {i.ref: i.data for i in items}

    shuffled = list(expected)
    random.Random(1).shuffle(shuffled)
    assert all(store.open_ref(ref) == expected[ref] for ref in shuffled)

    # the inject shape: each worker walks its own refs in increasing order, interleaved with others
    walks = [list(expected)[w::4] for w in range(4)]
    with ThreadPoolExecutor(4) as pool:
        walked = list(pool.map(lambda refs: [store.open_ref(r) for r in refs], walks))
        scattered = list(pool.map(store.open_ref, shuffled))
    assert walked == [[expected[r] for r in refs] for refs in walks]
    assert scattered == [expected[r] for r in shuffled]
    store.close()


@pytest.mark.parametrize("compress", [None, "zst"])
def test_every_offset_answers_as_a_fresh_read_would(tmp_path, mail_factory, compress):
    # offsets inside a line, at body "From " lines, at the end and past it: the pooled
    # readers going forward must answer exactly as a reader started from offset 0
    path = tmp_path / "small.mbox"
    mail_factory.write_mbox(path, hostile_messages(mail_factory, 6, seed=3), compress=compress)
    size = _decompressed_size(path)

    def answer(store, offset):
        try:
            return store.open_ref(f"small.mbox:{offset}")
        except UnreadableItem as exc:
            return exc.reason

    pooled = open_store(f"mbox:{path}")
    for offset in range(0, size + 3, 7 if compress else 1):
        fresh = open_store(f"mbox:{path}")
        assert answer(pooled, offset) == answer(fresh, offset), offset
        fresh.close()
    pooled.close()


def _decompressed_size(path) -> int:
    with mbox_module.open_stream(path) as stream:
        return len(stream.read())


def test_bad_offsets_are_unreadable_and_spoil_nothing(tmp_path, mail_factory):
    msgs = hostile_messages(mail_factory, 5)
    offsets = mail_factory.write_mbox(tmp_path / "box.zst", msgs, compress="zst")
    store = open_store(f"mbox:{tmp_path / 'box.zst'}")
    msgs = [i.data for i in read_items(store)]
    assert store.open_ref(f"box.zst:{offsets[1]}") == msgs[1]  # a reader now waits at offsets[2]
    for offset in [offsets[2] + 1, offsets[2] - 1, offsets[4] + 3, 10**9]:
        with pytest.raises(UnreadableItem, match="no message starts at offset"):
            store.open_ref(f"box.zst:{offset}")
    assert [store.open_ref(f"box.zst:{o}") for o in reversed(offsets)] == msgs[::-1]


def _zst_day(tmp_path, mail_factory, n):
    """A zstd mbox of ``n`` hostile messages: (their bytes as read, offsets, full size, store)."""
    msgs = hostile_messages(mail_factory, n)
    offsets = mail_factory.write_mbox(tmp_path / "day.mbox.zst", msgs, compress="zst")
    size = _decompressed_size(tmp_path / "day.mbox.zst")
    store = open_store(f"mbox:{tmp_path / 'day.mbox.zst'}")
    return [i.data for i in read_items(store)], offsets, size, store


def test_refs_in_increasing_order_decompress_the_file_once(tmp_path, mail_factory, opener):
    msgs, offsets, size, store = _zst_day(tmp_path, mail_factory, 500)
    opener.opened = opener.bytes_read = 0

    got = [store.open_ref(f"day.mbox.zst:{o}") for o in offsets]

    assert got == msgs
    assert opener.opened == 1 and opener.bytes_read <= size  # re-reading from 0 each time: ~250x


def test_workers_at_different_speeds_each_keep_a_reader(tmp_path, mail_factory, opener):
    msgs, offsets, size, store = _zst_day(tmp_path, mail_factory, 400)
    opener.bytes_read = 0
    walks = [list(range(w, 400, 4)) for w in range(4)]  # worker w's messages, increasing

    got = {}
    while any(walks):
        # worker 3 gets 4 messages done per round, worker 0 one
        for speed, walk in enumerate(walks, 1):
            for n in walk[:speed]:
                got[n] = store.open_ref(f"day.mbox.zst:{offsets[n]}")
            del walk[:speed]

    assert [got[n] for n in range(400)] == msgs
    assert opener.bytes_read <= 4 * size


def test_readers_are_bounded_and_closed(tmp_path, mail_factory, opener):
    for n in range(40):
        mail_factory.write_mbox(tmp_path / f"box{n}.zst", hostile_messages(mail_factory, 2),
                                compress="zst")
    store = open_store(f"mbox:{tmp_path}")
    for n in range(40):
        store.open_ref(f"box{n}.zst:0")
    assert opener.open_now == 32
    store.close()
    assert opener.open_now == 0


def test_a_file_replaced_on_disk_is_read_anew(tmp_path, mail_factory):
    path = tmp_path / "box.zst"
    old = [mail_factory.make_message(subject="old", message_id=f"<{n}@x>") for n in range(3)]
    new = [mail_factory.make_message(subject="new", message_id=f"<{n}@x>") for n in range(3)]
    offsets = mail_factory.write_mbox(path, old, compress="zst")
    store = open_store(f"mbox:{path}")
    assert store.open_ref(f"box.zst:{offsets[1]}") == old[1]  # a reader now waits at offsets[2]

    mail_factory.write_mbox(tmp_path / "rotated.zst", new, compress="zst")
    os.replace(tmp_path / "rotated.zst", path)

    assert store.open_ref(f"box.zst:{offsets[2]}") == new[2]
