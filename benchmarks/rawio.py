#!/usr/bin/env python3
"""The raw limits of the disk, for the incident benchmark to quote beside mailrestore.

    python benchmarks/rawio.py read ROOT [--readers 2] [--decompress]
    python benchmarks/rawio.py write ROOT --boxes B --files N [--procs 4] --sync file|syncfs

read: R processes walk ROOT (sorted, one directory at a time, like `find`)
and reader i opens and reads every R-th file (`cat`). With --decompress each
.zst/.gz file (an mbox stream too) is also decompressed, and the seconds spent
in the decompressor are summed separately. Prints one JSON line: files, bytes,
decompressed bytes, decompress_s.

write: P processes write N files of ~3 KB, N/B into each of B Maildirs
ROOT/bNNNNN/ (created first and not timed: a restore finds them existing),
each file written to tmp/ and renamed into new/,
the way a Maildir delivery does. --sync file: fsync the file, then fsync new/
after the rename (one file and one directory fsync per message). --sync
syncfs: no fsync; one syncfs() of the filesystem per 1,000 files per process
and at the end. Prints one JSON line: files, seconds.
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import json
import os
import sys
import time
from multiprocessing import Pool

import zstandard

SYNCFS_EVERY = 1000


def walk_files(root: str) -> list[str]:
    out: list[str] = []
    todo = [root]
    while todo:
        directory = todo.pop()
        with os.scandir(directory) as entries:
            names = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in entries)
        for name, is_dir in reversed(names):
            if is_dir:
                if name != "tmp":
                    todo.append(os.path.join(directory, name))
        out.extend(os.path.join(directory, name) for name, is_dir in names if not is_dir)
    return out


def decompress(path: str, data: bytes, zstd: zstandard.ZstdDecompressor) -> int:
    """Bytes after decompression; one decompressor per process, reused as a tool would."""
    if path.endswith(".zst"):
        try:
            return len(zstd.decompress(data))  # a frame that records its size: one call
        except zstandard.ZstdError:
            pass
        total = 0
        with zstd.stream_reader(data) as reader:
            while chunk := reader.read(1 << 20):
                total += len(chunk)
        return total
    if path.endswith(".gz"):
        return len(gzip.decompress(data))
    return len(data)


def read_share(args: tuple[str, int, int, bool]) -> tuple[int, int, int, float]:
    root, index, readers, unpack = args
    files = size = unpacked = 0
    unpack_s = 0.0
    zstd = zstandard.ZstdDecompressor()
    for k, path in enumerate(walk_files(root)):
        if k % readers != index:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        files += 1
        size += len(data)
        if unpack:
            started = time.perf_counter()
            unpacked += decompress(path, data, zstd)
            unpack_s += time.perf_counter() - started
    return files, size, unpacked, unpack_s


def message_bytes(size: int = 3000) -> bytes:
    line = b"The quick brown fox restores the gap of the mail store, exactly once.\n"
    head = b"From: raw@bench.invalid\nSubject: raw write\nMessage-ID: <%d@raw>\n\n"
    return head + line * ((size - len(head)) // len(line) + 1)


def write_share(args: tuple[str, list[str], int, str]) -> int:
    root, boxes, per_box, sync = args
    libc = ctypes.CDLL(None, use_errno=True)
    data = message_bytes()
    done = 0
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for box in boxes:
            tmp, new = os.path.join(root, box, "tmp"), os.path.join(root, box, "new")
            new_fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for _ in range(per_box):
                    name = f"{int(time.time())}.P{os.getpid()}Q{done}.raw,S={len(data)}"
                    fd = os.open(
                        os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
                    )
                    try:
                        os.write(fd, data)
                        if sync == "file":
                            os.fsync(fd)
                    finally:
                        os.close(fd)
                    os.rename(os.path.join(tmp, name), os.path.join(new, name))
                    done += 1
                    if sync == "file":
                        os.fsync(new_fd)
                    elif done % SYNCFS_EVERY == 0 and libc.syncfs(root_fd) != 0:
                        raise OSError(ctypes.get_errno(), "syncfs failed")
            finally:
                os.close(new_fd)
        if sync == "syncfs" and libc.syncfs(root_fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed")
    finally:
        os.close(root_fd)
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    rd = sub.add_parser("read")
    rd.add_argument("root")
    rd.add_argument("--readers", type=int, default=2)
    rd.add_argument("--decompress", action="store_true")
    wr = sub.add_parser("write")
    wr.add_argument("root")
    wr.add_argument("--boxes", type=int, required=True)
    wr.add_argument("--files", type=int, required=True)
    wr.add_argument("--procs", type=int, default=4)
    wr.add_argument("--sync", choices=("file", "syncfs"), required=True)
    args = ap.parse_args()
    started = time.perf_counter()
    if args.mode == "read":
        with Pool(args.readers) as pool:
            parts = pool.map(read_share, [(args.root, i, args.readers, args.decompress)
                                          for i in range(args.readers)])
        files, size, unpacked, unpack_s = (sum(col) for col in zip(*parts, strict=True))
        print(json.dumps({"files": files, "bytes": size, "decompressed_bytes": unpacked,
                          "decompress_s": round(unpack_s, 3),
                          "seconds": round(time.perf_counter() - started, 3)}))
        return
    boxes = [f"b{k:05d}" for k in range(args.boxes)]
    for box in boxes:
        for part in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(args.root, box, part), exist_ok=True)
    started = time.perf_counter()  # the Maildirs exist before a restore too
    shares = [(args.root, boxes[i::args.procs], args.files // args.boxes, args.sync)
              for i in range(args.procs)]
    with Pool(args.procs) as pool:
        done = sum(pool.map(write_share, shares))
    print(json.dumps({"files": done, "seconds": round(time.perf_counter() - started, 3)}))
    sys.exit(0 if done else 1)


if __name__ == "__main__":
    main()
