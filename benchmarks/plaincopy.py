#!/usr/bin/env python3
"""The floor for Maildir delivery with mailrestore's durability guarantee.

    python benchmarks/plaincopy.py JOBS.json

JOBS.json maps a target Maildir to a list of [source file, received time]
pairs. Each message is delivered the way SPEC.md asks of a Maildir target,
with nothing else: read the source, create tmp/NAME with O_EXCL, write, set
the mtime to the received time, fsync, give it the Maildir's owner, rename
into new/; new/ is fsynced every DIR_FSYNC_EVERY messages and at the end of
each mailbox, so a message counted as delivered survives a power cut. No
journal, no parsing, one mailbox after the other.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

DIR_FSYNC_EVERY = 50  # mailrestore inject fsyncs new/ once per batch of this size


def deliver_all(target: str, messages: list[tuple[str, float]]) -> int:
    owner = os.stat(target)
    chown = os.getuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0)
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    tmp_dir, new_dir = os.path.join(target, "tmp"), os.path.join(target, "new")
    new_fd = os.open(new_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for seq, (source, received) in enumerate(messages, 1):
            with open(source, "rb") as fh:
                data = fh.read()
            now = time.time()
            name = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{seq}.{host},S={len(data)}"
            tmp = os.path.join(tmp_dir, name)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.utime(fd, (received, received))
                os.fsync(fd)
                if chown:
                    os.fchown(fd, owner.st_uid, owner.st_gid)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(new_dir, name))
            if seq % DIR_FSYNC_EVERY == 0:
                os.fsync(new_fd)
        os.fsync(new_fd)
    finally:
        os.close(new_fd)
    return len(messages)


def main() -> None:
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    done = sum(deliver_all(target, [(src, float(t)) for src, t in messages])
               for target, messages in jobs.items())
    print(f"{done} delivered")


if __name__ == "__main__":
    main()
