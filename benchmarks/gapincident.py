"""A failover incident shaped like the one in issue #11, of any size, built fast.

N/50 users in a Dovecot-style tree (`maildir:ROOT/%d/%n/Maildir`), each with
50 messages received in a 12-hour gap that the replica lacks, and 7 more per
user (14 %) that both the archive and the replica hold: 5 in the 12 hours
before the gap, 2 in the 2 hours after it, when inbound mail was back. At
N = 1,000,000: 20,000 users, 1,140,000 archive items, 140,000 replica files.

The gateway archive holds every inbound message as the gateway saw it, with
the recipient in X-Original-To, in one of these layouts:

    eml, eml.gz, eml.zst   archive/YYYY-MM-DD/HH/<received>.<hex>.eml[.gz|.zst]
    mbox.zst               archive/YYYY-MM-DD/HH.mbox.zst (one stream per hour)
    maildir                archive/cur/<dovecot name>:2,S (one archive mailbox)

Messages are synthetic but shaped like real mail, about 3 KB (log-normal
sizes): two Received hops, a DKIM signature, From/To/Subject/Date in the
sender's zone, a unique Message-ID and a text body. The replica's copy has
what local delivery adds on top (Return-Path, Delivered-To, one Received).
Everything derives from (seed, user, k), so the expected Message-IDs of every
mailbox can be recomputed for the check after a restore, without storing them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import zstandard

GAP_PER_USER = 50
BEFORE_PER_USER = 5
AFTER_PER_USER = 2
SINCE = int(datetime(2017, 12, 8, 11, 15, tzinfo=UTC).timestamp())   # the last replication
UNTIL = SINCE + 12 * 3600                                            # inbound mail back
BEFORE_SPAN = 12 * 3600
AFTER_SPAN = 2 * 3600
FORMATS = ("eml.zst", "eml", "eml.gz", "mbox.zst", "maildir")
DOMAINS = ("example.com", "example.org", "corp.example.net")
GATEWAY = "gw1.bench.example"
MAILSTORE = "mail1.bench.example"
MEAN_SIZE = 3000

SENDER_DOMAINS = ("partner.example", "supplier.example.net", "lists.example.org", "vendor.example",
                  "kunde.example.de", "consult.example.in", "bank.example.com", "travel.example")
FIRST = ("Martin", "Ana", "Jörg", "Priya", "Chen", "Fatima", "Olga", "Tom", "Aiko", "Lucas")
LAST = ("Kowalski", "Souza", "Müller", "Raman", "Wei", "Haddad", "Ivanova", "Brown", "Sato")
WORDS = ("invoice quarterly report meeting schedule contract review draft budget shipment "
         "delivery update agenda proposal minutes offer renewal ticket server migration backup "
         "weekend lunch travel approval deadline customer order payment reminder project team "
         "release notes figures attached please find below regards thanks question answer "
         "call tomorrow monday office plan status risk action item owner due").split()
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
ZONES = (0, 60, -300, 330, -480, 120, 540)
MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]*>)")


@dataclass(frozen=True)
class Shape:
    gap: int            # messages missing from the replica (rounded down to 50 per user)
    fmt: str = "eml.zst"
    seed: int = 11

    @property
    def users(self) -> int:
        return max(1, self.gap // GAP_PER_USER)

    @property
    def per_user(self) -> int:
        return GAP_PER_USER + BEFORE_PER_USER + AFTER_PER_USER

    @property
    def missing(self) -> int:
        return self.users * GAP_PER_USER

    @property
    def present(self) -> int:
        return self.users * (BEFORE_PER_USER + AFTER_PER_USER)

    @property
    def archive_items(self) -> int:
        return self.users * self.per_user

    @property
    def label(self) -> str:
        n = self.gap
        if n % 1_000_000 == 0:
            return f"{n // 1_000_000}m"
        return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def user_address(u: int) -> tuple[str, str]:
    return f"user{u:06d}", DOMAINS[u % len(DOMAINS)]


def received_times(shape: Shape, u: int) -> list[int]:
    """The received times of user u's messages: k < 50 in the gap, then before, then after."""
    rng = random.Random(shape.seed * 1_000_003 + u)
    gap = [SINCE + 1 + rng.randrange(UNTIL - SINCE) for _ in range(GAP_PER_USER)]
    before = [SINCE - rng.randrange(BEFORE_SPAN) for _ in range(BEFORE_PER_USER)]
    after = [UNTIL + 1 + rng.randrange(AFTER_SPAN) for _ in range(AFTER_PER_USER)]
    return gap + before + after


def in_gap(k: int) -> bool:
    return k < GAP_PER_USER


def digest(shape: Shape, u: int, k: int) -> bytes:
    return hashlib.blake2b(f"{shape.seed}/{u}/{k}".encode(), digest_size=32).digest()


def message_id(u: int, k: int, received: int, d: bytes) -> str:
    return f"<{received - 40 - d[0]}.{d[8:14].hex()}.{u:06d}{k:02d}@{SENDER_DOMAINS[d[1] % 8]}>"


def expected_ids(shape: Shape, u: int) -> list[str]:
    """The Message-IDs user u's mailbox holds after an exact restore."""
    times = received_times(shape, u)
    return [message_id(u, k, t, digest(shape, u, k)) for k, t in enumerate(times)]


def rfc2822(ts: int, zone_minutes: int = 0) -> str:
    tt = time.gmtime(ts + zone_minutes * 60)
    sign = "+" if zone_minutes >= 0 else "-"
    hours, minutes = divmod(abs(zone_minutes), 60)
    return (f"{DAYS[tt.tm_wday]}, {tt.tm_mday} {MONTHS[tt.tm_mon - 1]} {tt.tm_year} "
            f"{tt.tm_hour:02d}:{tt.tm_min:02d}:{tt.tm_sec:02d} {sign}{hours:02d}{minutes:02d}")


def _text_pool(size: int = 1 << 18) -> bytes:
    rng = random.Random(5)
    lines, total = [], 0
    while total < size:
        words, length = [], 0
        target = rng.randint(40, 76)
        while length < target:
            word = rng.choice(WORDS)
            words.append(word)
            length += len(word) + 1
        line = " ".join(words).capitalize() + ("." if rng.random() < 0.3 else "")
        if rng.random() < 0.08:
            line += "\n"  # paragraph break
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()


TEXT = _text_pool()
B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64ish(d: bytes, length: int) -> str:
    stream = hashlib.shake_128(d).digest(length)
    return bytes(B64[b & 63] for b in stream).decode()


def archive_copy(shape: Shape, u: int, k: int, received: int) -> bytes:
    """The message as the gateway archived it."""
    d = digest(shape, u, k)
    local, domain = user_address(u)
    user = f"{local}@{domain}"
    sdomain = SENDER_DOMAINS[d[1] % 8]
    first, last = FIRST[d[2] % len(FIRST)], LAST[d[3] % len(LAST)]
    sender = f"{first.lower()}.{last.lower()}@{sdomain}".encode("ascii", "ignore").decode()
    zone = ZONES[d[4] % len(ZONES)]
    sent = received - 40 - d[0]
    relay = f"mx{d[5] % 4 + 1}.{sdomain}"
    ip = f"192.0.2.{d[6] % 250 + 1}"
    qid = d[16:21].hex().upper()
    words = [WORDS[b % len(WORDS)] for b in d[22:27]]
    subject = ("Re: " if d[7] & 1 else "") + " ".join(words).capitalize()
    head = (
        f"X-Original-To: {user}\n"
        f"Received: from {relay} ({relay} [{ip}])\n\tby {GATEWAY} (Postfix) with ESMTPS id {qid}\n"
        f"\tfor <{user}>; {rfc2822(received)}\n"
        f"Received: from [10.{d[8]}.{d[9]}.{d[10]}] (client.{sdomain} [10.{d[8]}.{d[9]}.{d[10]}])\n"
        f"\tby {relay} with ESMTPSA id {d[11:15].hex()}; {rfc2822(sent + 2, zone)}\n"
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={sdomain}; s=s1;\n"
        f"\th=from:to:subject:date:message-id:mime-version:content-type;\n"
        f"\tbh={_b64ish(d[:8], 43)}=;\n"
        f"\tb={_b64ish(d, 70)}\n\t {_b64ish(d[1:], 70)}\n\t {_b64ish(d[2:], 70)}\n"
        f"\t {_b64ish(d[3:], 70)}\n\t {_b64ish(d[4:], 60)}==\n"
        f"From: {first} {last} <{sender}>\n"
        f"To: {user}\n"
        f"Subject: {subject}\n"
        f"Date: {rfc2822(sent, zone)}\n"
        f"Message-ID: {message_id(u, k, received, d)}\n"
        f"MIME-Version: 1.0\n"
        f"Content-Type: text/plain; charset=utf-8\n"
        f"Content-Transfer-Encoding: 8bit\n\n"
    ).encode()
    # log-normal sizes around MEAN_SIZE, from 1.2 KB to 24 KB
    gauss = (int.from_bytes(d[27:30], "big") / (1 << 24)
             + int.from_bytes(d[29:32], "big") / (1 << 24)
             + d[12] / 256 - 1.5) * 2  # ~N(0, 1): sum of three uniforms, rescaled
    body_len = max(200, min(22000, int((MEAN_SIZE - len(head)) * 2.718 ** (0.45 * gauss - 0.1))))
    start = TEXT.find(b"\n", int.from_bytes(d[14:17], "big") % (len(TEXT) - 24000)) + 1
    end = TEXT.find(b"\n", start + body_len) + 1
    return head + TEXT[start:end] + f"\n-- \n{first} {last}\n".encode()


def replica_copy(archived: bytes, u: int, received: int) -> bytes:
    """The copy local delivery wrote into the user's Maildir."""
    local, domain = user_address(u)
    user = f"{local}@{domain}"
    sender = re.search(rb"\nFrom: [^<\n]*<([^>\n]*)>", archived)
    return (f"Return-Path: <{sender.group(1).decode() if sender else ''}>\n"
            f"Delivered-To: {user}\n"
            f"Received: from {GATEWAY} by {MAILSTORE} (Dovecot) with LMTP id {u:x}{received:x}\n"
            f"\tfor <{user}>; {rfc2822(received + 1)}\n").encode() + archived


# ------------------------------------------------------------- writing

def put(path: str, data: bytes, mtime: int) -> None:
    """Write a new file with plain os calls and no fsync: the build must be fast."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.utime(fd, (mtime, mtime))
    finally:
        os.close(fd)


def hour_of(ts: int) -> tuple[str, str]:
    tt = time.gmtime(ts)
    return f"{tt.tm_year:04d}-{tt.tm_mon:02d}-{tt.tm_mday:02d}", f"{tt.tm_hour:02d}"


def hours() -> list[tuple[str, str]]:
    """Every (day, hour) directory the archive can have mail in."""
    first, last = SINCE - BEFORE_SPAN, UNTIL + AFTER_SPAN + 1
    return sorted({hour_of(ts) for ts in range(first - first % 3600, last + 3600, 3600)})


def dovecot_name(ts: int, seq: int, host: str, size: int, flags: str | None) -> str:
    name = f"{ts}.M{seq % 1000000}P{1000 + seq % 30000}Q{seq}.{host},S={size}"
    return name if flags is None else f"{name}:2,{flags}"


def compress(fmt: str, data: bytes, zstd: zstandard.ZstdCompressor) -> bytes:
    if fmt.endswith(".zst"):
        return zstd.compress(data)
    if fmt.endswith(".gz"):
        return gzip.compress(data, compresslevel=6, mtime=0)
    return data


def build_users(shape: Shape, root: str, first: int, last: int) -> tuple[int, int]:
    """Write users [first, last): their replica Maildirs and, except for mbox, their archive
    items. Returns (archive bytes, replica bytes)."""
    zstd = zstandard.ZstdCompressor(level=3)
    archive_bytes = replica_bytes = 0
    suffix = "" if shape.fmt in ("mbox.zst", "maildir") else "." + shape.fmt
    for u in range(first, last):
        local, domain = user_address(u)
        maildir = os.path.join(root, "replica", domain, local, "Maildir")
        for part in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(maildir, part))
        for k, received in enumerate(received_times(shape, u)):
            archived = archive_copy(shape, u, k, received)
            seq = u * 100 + k
            if not in_gap(k):
                copy = replica_copy(archived, u, received)
                fresh = received > UNTIL  # mail after the gap is still unread in new/
                name = dovecot_name(received + 1, seq, "mail1", len(copy), None if fresh else "S")
                put(os.path.join(maildir, "new" if fresh else "cur", name), copy, received + 1)
                replica_bytes += len(copy)
            if shape.fmt == "mbox.zst":
                continue
            if shape.fmt == "maildir":
                path = os.path.join(root, "archive", "cur",
                                    dovecot_name(received, seq, "gw1", len(archived), "S"))
                data = archived
            else:
                day, hour = hour_of(received)
                data = compress(shape.fmt, archived, zstd)
                path = os.path.join(root, "archive", day, hour,
                                    f"{received}.{digest(shape, u, k)[:6].hex()}.eml{suffix}")
            put(path, data, received)
            archive_bytes += len(data)
    return archive_bytes, replica_bytes


def build_mbox_hour(shape: Shape, root: str, day: str, hour: str) -> int:
    """One hour of the archive as one zstd-compressed mbox, messages in received order."""
    mine = []
    for u in range(shape.users):
        for k, received in enumerate(received_times(shape, u)):
            if hour_of(received) == (day, hour):
                mine.append((received, u, k))
    if not mine:
        return 0
    mine.sort()
    zstd = zstandard.ZstdCompressor(level=3)
    path = os.path.join(root, "archive", day, f"{hour}.mbox.zst")
    with open(path, "wb") as fh, zstd.stream_writer(fh) as out:
        for received, u, k in mine:
            message = archive_copy(shape, u, k, received)
            tt = time.gmtime(received)
            out.write(f"From MAILER-DAEMON {time.strftime('%a %b %e %H:%M:%S %Y', tt)}\n".encode())
            out.write(re.sub(rb"(?m)^(>*From )", rb">\1", message))
            out.write(b"\n")
    os.utime(path, (mine[-1][0], mine[-1][0]))
    return os.stat(path).st_size


def sample_sizes(shape: Shape, count: int = 400) -> dict[str, float]:
    """Average bytes per archive item, per replica file and per file on disk, from a sample."""
    zstd = zstandard.ZstdCompressor(level=3)
    rng = random.Random(3)
    archive = stored = replica = size = 0
    block = 4096
    for _ in range(count):
        u, k = rng.randrange(max(1, shape.users)), rng.randrange(shape.per_user)
        message = archive_copy(shape, u, k, SINCE + 60)
        data = compress(shape.fmt, message, zstd)
        archive += len(data)
        stored += -(-len(data) // block) * block
        size += len(message)
        replica += -(-(len(message) + 200) // block) * block  # + what delivery adds
    return {"archive_item": archive / count, "archive_item_on_disk": stored / count,
            "message": size / count, "maildir_file_on_disk": replica / count}


# ------------------------------------------------------------- checking

def read_message_id(path: str) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(8192)
    found = MESSAGE_ID.search(head.split(b"\n\n", 1)[0] if b"\n\n" in head else head)
    return found.group(1).decode("ascii", "replace") if found else None


def check_users(shape: Shape, root: str, first: int, last: int) -> dict[str, Any]:
    """Count each expected Message-ID in users [first, last)'s Maildirs (cur/ and new/)."""
    missing = doubled = unexpected = found = 0
    examples: list[str] = []
    for u in range(first, last):
        local, domain = user_address(u)
        maildir = os.path.join(root, domain, local, "Maildir")
        seen: Counter[str | None] = Counter()
        for part in ("cur", "new"):
            try:
                names = os.listdir(os.path.join(maildir, part))
            except FileNotFoundError:
                names = []
            for name in names:
                seen[read_message_id(os.path.join(maildir, part, name))] += 1
        found += sum(seen.values())
        wanted = set(expected_ids(shape, u))
        for mid in wanted:
            if seen[mid] == 0:
                missing += 1
                if len(examples) < 5:
                    examples.append(f"{local}@{domain}: {mid} missing")
            elif seen[mid] > 1:
                doubled += seen[mid] - 1
                if len(examples) < 5:
                    examples.append(f"{local}@{domain}: {mid} x{seen[mid]}")
        unexpected += sum(n for mid, n in seen.items() if mid not in wanted)
    return {"found": found, "missing": missing, "doubled": doubled, "unexpected": unexpected,
            "examples": examples}


def user_chunks(users: int, size: int = 200) -> Iterator[tuple[int, int]]:
    for first in range(0, users, size):
        yield first, min(users, first + size)
