#!/usr/bin/env python3
"""Where the time goes, from a py-spy profile: shares by kind of work.

    python benchmarks/pyspy_summary.py PROFILE.txt [--top 12]

PROFILE.txt is `py-spy record --idle --native --format raw` output (what
bench_incident.py --profile writes): one collapsed stack per line, leaf last,
then its sample count. Each sample goes to the first category that matches:
fsync (SQLite's apart), waiting (a thread blocked on a lock, queue, pipe or
child: idle), the GIL (a thread of a busy process waiting to run Python
again, or handing it over), network, SQLite (its own I/O too), file system
calls (kernel work and waiting for the disk), decompression, hashing, the C
header scan, and what is left: Python itself. With --idle every thread is
sampled all the time, so shares are of thread time, not of wall time; the
busy shares leave the waiting out.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

SYNC = re.compile(r"^(fsync|fdatasync|syncfs)\b")
WAITING_PY = re.compile(r"[(/](threading|queues|connection|selectors|popen_fork)\.py|"
                        r"concurrent/futures/(_base\.py|thread\.py\)$)")
NETWORK = re.compile(r"[(/](socket|ssl|imaplib)\.py|"
                     r"^(send|recv|sendto|recvfrom|__libc_send|__libc_recv|SSL_\w+)\b")
SYSCALL = re.compile(
    r"^(__libc_|__GI___libc_)?(open|open64|openat|openat64|read|pread64|write|pwrite64|close|"
    r"stat|stat64|fstat|fstat64|lstat|newfstatat|fstatat|fstatat64|statx|rename|renameat|"
    r"link|linkat|unlink|unlinkat|getdents|getdents64|utime|utimensat|futimens|fchown|chown|"
    r"mkdir|mkdirat|fdopendir|opendir|readdir|readdir64|closedir|lseek|lseek64|fcntl|"
    r"fcntl64|ftruncate|ftruncate64|access|faccessat)\b")
NATIVE: list[tuple[str, re.Pattern[str]]] = [
    ("decompression", re.compile(r"ZSTD_|zstd\.c|^Decompressor_|^DecompressionObj|inflate|zlib")),
    ("hashing", re.compile(r"blake2|sha\d|md5|_hashlib", re.I)),
    ("header scan (C)", re.compile(r"_headerscan")),
    ("waiting (locks, queues, pipes, children)",
     re.compile(r"pthread_cond|sem_\w*wait|futex|epoll_wait|\bpoll\b|\bselect\b|wait4|waitpid")),
]


def categorize(frames: list[str]) -> str:
    """The kind of work of one stack (frames outermost first)."""
    leaf = frames[-1] if frames else ""
    if SYNC.match(leaf):
        return ("fsync by SQLite (journal, catalog)"
                if any("sqlite" in f.lower() for f in frames) else "fsync (messages, directories)")
    inner = python_leaf(frames)  # threading.py is the outermost frame of every thread: not that
    if WAITING_PY.search(inner):
        return "waiting (locks, queues, pipes, children)"
    if any(f.startswith(("take_gil", "drop_gil", "pthread_cond_")) for f in frames[-3:]):
        # a thread back from a call (or in plain Python) that must wait for the interpreter
        return "GIL (waiting for it, handing it over)"
    if NETWORK.search(inner) or NETWORK.search(leaf):
        return "network (socket, TLS)"
    if any("sqlite" in f.lower() for f in frames):
        return "SQLite"
    if SYSCALL.match(leaf):
        return "file system calls"
    for name, rule in NATIVE:
        if any(rule.search(f) for f in frames):
            return name
    return "Python"


def python_leaf(frames: list[str]) -> str:
    """The innermost frame that is Python code (file.py:line)."""
    for frame in reversed(frames):
        if ".py:" in frame:
            return re.sub(r":\d+\)$", ")", frame)
    return frames[-1] if frames else "?"


def summarize(path: str, top: int = 12) -> str:
    kinds: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    total = 0
    with open(path, errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = [f for f in stack.split(";") if not f.startswith("process ")]
            kind = categorize(frames)
            kinds[kind] += n
            total += n
            if kind == "Python":
                leaves[python_leaf(frames)] += n
            elif kind == "file system calls":
                calls[f"{re.sub(r' .*', '', frames[-1])} in {python_leaf(frames)}"] += n
    busy = total - sum(n for k, n in kinds.items() if k.startswith("waiting"))
    out = [f"{path}: {total} samples ({busy} busy)", "",
           "| kind | share of thread time | share of busy time |", "|---|---:|---:|"]
    for kind, n in kinds.most_common():
        busy_share = "" if kind.startswith("waiting") else f"{100 * n / max(1, busy):.1f} %"
        out.append(f"| {kind} | {100 * n / max(1, total):.1f} % | {busy_share} |")
    out += ["", f"File system calls: top {top} (call, innermost Python frame; share of busy time)",
            ""]
    out += [f"    {100 * n / max(1, busy):5.1f} %  {call}" for call, n in calls.most_common(top)]
    out += ["", f"Python: top {top} innermost Python frames (share of busy time)", ""]
    out += [f"    {100 * n / max(1, busy):5.1f} %  {frame}" for frame, n in leaves.most_common(top)]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile", nargs="+")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    print("\n\n".join(summarize(p, args.top) for p in args.profile))


if __name__ == "__main__":
    main()
