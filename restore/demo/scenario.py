"""The story of the incident: who gets which mail, what the replica kept, the twists.

``build_incident(root)`` plays it, deterministically from a seed, through the
writers (``writers.py``) while the truth recorder (``truth.py``) classes
every archive copy as it is written.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from restore.demo.author import Author, archive_text, delivered_text
from restore.demo.model import (
    ARCHIVE_FOLDER,
    DAY,
    DOMAIN,
    GAP_UNTIL,
    HOUR,
    INBOX,
    SENT_FOLDER,
    TIMELINE_END,
    TROUBLE_FOLDER,
    Delivery,
    Mail,
    Timeline,
)
from restore.demo.truth import Incident, TruthRecorder
from restore.demo.writers import ARCHIVES, Compression, Replica, item_name

USER_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank",
              "grace", "heidi", "ivan", "judy", "mallory", "oscar")


# ------------------------------------------------------------------- the plot


@dataclass(frozen=True, slots=True)
class _Cast:
    """Who plays which part in the twists (needs at least four users)."""

    users: list[str]

    @property
    def quiet(self) -> str:
        """Gets no mail at all during the gap."""
        return self.users[-1]

    @property
    def tidy(self) -> str:
        """Deleted much of their older mail, which must not widen the window."""
        return self.users[-2]


def _twists(author: Author, cast: _Cast, tl: Timeline) -> list[Mail]:
    """The hard cases; each key ends with the class(es) the copies must get.

    In-gap twists only involve users[0..2], so the quiet user stays quiet.
    """
    u0, u1, u2, u3 = cast.users[:4]
    mails: list[Mail] = []

    def mail(key: str, t: int, to: list[str], copies: tuple[int, ...] = (0,),
             keep: dict[str, Delivery] | None = None, **compose: object) -> Mail:
        m = author.compose(f"twist-{key}", t, to, **compose)  # type: ignore[arg-type]
        m.copies = copies
        m.kept = {user: d if d.when else replace(d, when=t) for user, d in (keep or {}).items()}
        mails.append(m)
        return m

    inbox = Delivery()
    # To two users, Bcc a third: classed once per envelope recipient
    mail("multi-gap-missing", tl.gap(0.3), [u0, u1], envelope=[f"<{u0}>, <{u1}>, <{u2}>"])
    mail("multi-early-present-and-outside-window", tl.early(0.4), [u0], cc=(u1,), keep={u0: inbox},
         envelope=[f"<{u0}>", f"{u1.partition('@')[0]}@EXAMPLE.COM"])
    # the gateway archived the same bytes twice, or the message came again a minute later
    mail("dup-same-bytes-gap-missing", tl.gap(0.5), [u2], copies=(0, 0))
    mail("dup-rereceived-gap-missing", tl.gap(0.45), [u1], copies=(0, 60))
    mail("dup-rereceived-before-present", tl.since - 2 * HOUR, [u0], copies=(0, 60),
         keep={u0: inbox})
    # no Message-ID: identified by a digest of headers and body
    mail("no-message-id-gap-missing", tl.gap(0.2), [u1], without_message_id=True)
    mail("no-message-id-before-present", tl.since - 3 * HOUR, [u2], without_message_id=True,
         keep={u2: Delivery(folder=ARCHIVE_FOLDER)})
    # two different messages sharing one Message-ID stay two
    shared = author.message_id()
    mail("shared-message-id-before-present", tl.since - 4 * HOUR, [u1], message_id=shared,
         keep={u1: inbox})
    mail("shared-message-id-gap-missing", tl.gap(0.6), [u1], message_id=shared)
    # the spam filter tagged the delivered copy's Subject
    mail("spam-tagged-present", tl.since - HOUR, [u2], keep={u2: Delivery(spam=True)})
    # deleted by the user long before the gap
    mail("deleted-early-outside-window", tl.early(0.2), [u3])
    # received in the gap, queued on the backup MX, delivered after it
    for n, (user, f) in enumerate(((u0, 0.7), (u1, 0.95)), 1):
        late = Delivery(when=tl.after(0.3 * n), state="new", via_backup_mx=True)
        mail(f"late-arrival-{n}-present", tl.gap(f), [user], keep={user: late})
    # an alias the alias map resolves
    info = f"info@{DOMAIN}"
    mail("alias-gap-missing", tl.gap(0.4), [info])
    mail("alias-before-present", tl.since - 5 * HOUR, [info], envelope=[info], keep={u1: inbox})
    # recipients with no mailbox, or names that would escape the mail root
    mail("former-colleague-unroutable", tl.gap(0.55), [f"former.colleague@{DOMAIN}"])
    mail("path-traversal-unroutable", tl.gap(0.65), [f"../../etc@{DOMAIN}"])
    mail("slash-unroutable-and-present", tl.after(0.5), [u0],
         envelope=[f"<{u0}>", f"<a/b@{DOMAIN}>"], keep={u0: Delivery(state="new")})
    # body lines starting with "From ": mboxrd quoting must round-trip
    for m in (mail("from-lines-present", tl.since - 6 * HOUR, [u2], from_lines=True,
                   keep={u2: inbox}),
              mail("from-lines-gap-missing", tl.gap(0.35), [u0], from_lines=True)):
        m.archive_format = "mbox"
    return mails


def _sent_items(author: Author, replica: Replica, users: list[str], tl: Timeline) -> None:
    """Outgoing mail, on the replica only: the gateway archives inbound mail."""
    for user in users:
        for n in range(2):
            t = tl.early(0.3 + 0.4 * n)
            m = author.compose(f"sent-{user.partition('@')[0]}-{n}", t, ["partner@partner.example"],
                               sender=(user.partition("@")[0].capitalize(), user))
            replica.deliver(user, Delivery(folder=SENT_FOLDER, when=t), m.original.encode())


class _Plot:
    """Decides what happens to each ordinary message: archived where, kept where."""

    def __init__(self, rng: random.Random, cast: _Cast, tl: Timeline, twists: bool):
        self.rng = rng
        self.cast = cast
        self.tl = tl
        self.twists = twists

    def arrivals(self, per_user_per_day: int) -> Iterator[list[tuple[int, int]]]:
        """Per day, sorted (received, user index) of ordinary mail."""
        rng, tl = self.rng, self.tl
        quiet = self.cast.quiet if self.twists else None
        for day_start in range(tl.start, tl.end, DAY):
            day = []
            for i, user in enumerate(self.cast.users):
                for _ in range(per_user_per_day):
                    t = rng.randrange(day_start, day_start + DAY)
                    if user != quiet or not tl.in_gap(t):
                        day.append((t, i))
            day.sort()
            yield day

    def fate(self, user: str, t: int) -> Delivery | None:
        """The replica copy of an ordinary message, or None when it has none."""
        rng, tl = self.rng, self.tl
        if tl.in_gap(t):
            return None
        if self.twists and t < tl.since - 6 * HOUR:
            tidy = user == self.cast.tidy and t < tl.since - 12 * HOUR
            if rng.random() < (0.6 if tidy else 0.02):
                return None
        if t > tl.until:
            return Delivery(when=t, state="new")
        folder = INBOX
        if t < tl.since - DAY:
            roll = rng.random()
            folder = ARCHIVE_FOLDER if roll < 0.12 else TROUBLE_FOLDER if roll < 0.16 else INBOX
        return Delivery(folder=folder, when=t, state="unseen" if rng.random() < 0.1 else "seen")


# ------------------------------------------------------------------ build it


def build_incident(root: Path, *, users: int = 6, per_user_per_day: int = 20, days: int = 3,
                   gap_hours: float = 5.5, seed: int = 1,
                   archive_formats: tuple[str, ...] = ("eml",), compress: str | None = "zst",
                   twists: bool = True) -> Incident:
    """Write an incident under ``root`` (missing or empty) and return it with its truth."""
    root = Path(root).absolute()
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty")
    if not archive_formats or any(f not in ARCHIVES for f in archive_formats):
        raise ValueError(f"archive_formats must be some of {', '.join(ARCHIVES)}")
    if len(set(archive_formats)) != len(archive_formats):
        raise ValueError("archive_formats lists a format twice")
    end = int(TIMELINE_END.timestamp())
    until = int(GAP_UNTIL.timestamp())
    tl = Timeline(start=end - days * DAY, end=end, since=until - int(gap_hours * HOUR), until=until)
    if users < 1 or days < 1 or per_user_per_day < 0 or tl.since < tl.start:
        raise ValueError("need users >= 1, days >= 1 and a gap that starts inside the timeline")
    if twists and (users < 4 or tl.since - tl.start < 12 * HOUR or gap_hours < 1):
        raise ValueError("twists need users >= 4, a gap of 1 hour or more, and 12 hours before it")

    rng = random.Random(seed)
    author = Author(rng)
    names = [f"{USER_NAMES[i] if users <= len(USER_NAMES) else f'user{i:04d}'}@{DOMAIN}"
             for i in range(users)]
    cast = _Cast(names)
    compression = Compression(compress)
    archives = [ARCHIVES[f][1](root / ARCHIVES[f][0], compression) for f in archive_formats]
    replica = Replica(root / "replica", names)
    alias_map = None
    aliases: dict[str, str] = {}
    if twists:
        aliases = {f"info@{DOMAIN}": names[1]}
        alias_map = root / "aliases"
        alias_map.write_text("# alias              user\n"
                             + "".join(f"{a}  {u}\n" for a, u in aliases.items()), encoding="utf-8")
    recorder = TruthRecorder(root / "truth" / "copies.jsonl", tl, names, aliases)
    plot = _Plot(rng, cast, tl, twists)

    twist_mails = _twists(author, cast, tl) if twists else []
    if twists:
        _sent_items(author, replica, names, tl)
    # every archive copy in received order, so the earliest copy gets the class
    # and mbox days are written one stream each: (received, is twist, index, copy)
    ordinary = ((t, 0, i, 0) for day in plot.arrivals(per_user_per_day) for t, i in day)
    twist_copies = sorted((m.received + offset, 1, i, copy) for i, m in enumerate(twist_mails)
                          for copy, offset in enumerate(m.copies))
    twist_archive: dict[tuple[int, int], int] = {}   # (twist index, copy) -> archive index
    number = 0
    for t, is_twist, index, copy in heapq.merge(ordinary, twist_copies):
        if is_twist:
            mail = twist_mails[index]
        else:
            number += 1
            user = names[index]
            mail = author.compose(f"m{number:06d}", t, [user], from_lines=rng.random() < 0.03)
            delivery = plot.fate(user, t)
            if delivery:
                mail.kept[user] = delivery
        if len(archives) == 1:
            where = 0
        elif not copy and mail.archive_format in archive_formats:
            where = archive_formats.index(mail.archive_format)
        elif copy and mail.copies[copy] == mail.copies[copy - 1]:
            where = (twist_archive[index, copy - 1] + 1) % len(archives)  # same bytes, other format
        else:
            where = rng.randrange(len(archives))
        if is_twist:
            twist_archive[index, copy] = where
        archive = archives[where]
        ref = archive.add(archive_text(mail, copy).encode(), t, item_name(mail.key, copy),
                          mail.sender)
        recorder.copy(archive.spec, ref, mail, copy)
        if copy == 0:
            for user, delivery in mail.kept.items():
                replica.deliver(user, delivery, delivered_text(mail, user, delivery).encode())

    if twists:
        victim = author.compose("corrupt", tl.gap(0.25), [names[0]])
        for ref, reason in archives[0].add_corrupt(archive_text(victim, 0).encode(),
                                                   victim.received, item_name(victim.key, 0)):
            recorder.unreadable_item(archives[0].spec, ref, reason)
    for archive in archives:
        archive.close()
    return Incident(root=root, replica=replica.spec, archives=[a.spec for a in archives],
                    alias_map=alias_map, gap_since=datetime.fromtimestamp(tl.since, UTC),
                    gap_until=datetime.fromtimestamp(tl.until, UTC), truth=recorder.finish(),
                    users=names)
