"""What a correct diff of the incident finds, classed as SPEC.md says while it is written."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from restore.demo.model import Mail, Timeline

CLASSES = ("present", "missing", "outside-window", "duplicate", "unroutable", "unreadable")


@dataclass(frozen=True, slots=True)
class ArchiveCopy:
    """One archive item and the class each of its recipients must get."""

    store: str                          # archive STORE spec holding it
    ref: str                            # path relative to the store root; mbox: PATH:OFFSET
    key: str = ""                       # X-Incident-Key ("" when unreadable)
    message_id: str | None = None
    received: datetime | None = None    # topmost Received: of this copy
    classes: tuple[tuple[str, str], ...] = ()   # (user or rejected address, class)
    unreadable: str = ""                # the reason, for a corrupt item

    def to_json(self) -> str:
        obj: dict[str, object] = {"store": self.store, "ref": self.ref}
        if self.unreadable:
            obj["unreadable"] = self.unreadable
        else:
            obj.update(key=self.key, message_id=self.message_id,
                       received=self.received.isoformat() if self.received else None,
                       classes=[list(pair) for pair in self.classes])
        return json.dumps(obj, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> ArchiveCopy:
        obj = json.loads(line)
        if "unreadable" in obj:
            return cls(obj["store"], obj["ref"], unreadable=obj["unreadable"])
        return cls(obj["store"], obj["ref"], obj["key"], obj["message_id"],
                   datetime.fromisoformat(obj["received"]),
                   tuple((user, klass) for user, klass in obj["classes"]))


@dataclass
class Truth:
    """What a correct diff of the incident finds.

    Every (recipient, archive copy) pair has one class; an unreadable item
    counts once. Copies of one message received at the same second (the
    gateway archived the same bytes twice) may legitimately swap which one
    is ``duplicate``, so compare classes per (user, key) as multisets
    (``classes_by_user_key``), not per ref.
    """

    since: datetime
    until: datetime
    counts: dict[str, int]                  # class -> count, every class present
    users: dict[str, dict[str, int]]        # recipient -> class -> count (no unreadable)
    missing: set[tuple[str, str]]           # (user, X-Incident-Key) to restore
    unreadable: list[tuple[str, str, str]]  # (store, ref, reason)
    copies_file: Path                       # one ArchiveCopy per line

    def copies(self) -> Iterator[ArchiveCopy]:
        with self.copies_file.open(encoding="utf-8") as fh:
            for line in fh:
                yield ArchiveCopy.from_json(line)

    def classes_by_user_key(self) -> dict[tuple[str, str], list[str]]:
        """(user, key) -> sorted classes of its archive copies."""
        out: dict[tuple[str, str], list[str]] = {}
        for copy in self.copies():
            for user, klass in copy.classes:
                out.setdefault((user, copy.key), []).append(klass)
        return {pair: sorted(classes) for pair, classes in out.items()}

    def to_json(self) -> str:
        return json.dumps({
            "window": {"since": self.since.isoformat(), "until": self.until.isoformat()},
            "counts": self.counts,
            "users": {user: dict(sorted(c.items())) for user, c in sorted(self.users.items())},
            "missing": sorted([user, key] for user, key in self.missing),
            "unreadable": [{"store": s, "ref": r, "reason": why}
                           for s, r, why in self.unreadable],
            "copies": str(self.copies_file),
        }, indent=2, ensure_ascii=False)


@dataclass
class Incident:
    root: Path
    replica: str              # store spec of the replica, templated per user
    archives: list[str]       # store specs of the gateway archive
    alias_map: Path | None
    gap_since: datetime       # last replication (exclusive)
    gap_until: datetime       # inbound mail back (inclusive)
    truth: Truth
    users: list[str]          # addresses with a mailbox on the replica


def _normalize(address: str) -> str:
    local, _, domain = address.strip().strip("<>").strip().rpartition("@")
    return f"{local}@{domain.lower()}"


class TruthRecorder:
    """Classes each archive copy as SPEC.md says, as it is written, and streams it out."""

    def __init__(self, path: Path, timeline: Timeline, mailboxes: list[str],
                 aliases: dict[str, str]):
        self.path = path
        self.timeline = timeline
        self.mailboxes = set(mailboxes)
        self.aliases = aliases
        self.counts: Counter[str] = Counter()
        self.users: dict[str, Counter[str]] = {}
        self.missing: set[tuple[str, str]] = set()
        self.unreadable: list[tuple[str, str, str]] = []
        # only messages archived more than once can have duplicates; tracking
        # just those keeps memory flat
        self._classed: set[tuple[str, str]] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out = path.open("w", encoding="utf-8")

    def recipients(self, mail: Mail) -> list[str]:
        users: list[str] = []
        for value in mail.envelope:
            for address in value.split(","):
                user = _normalize(address)
                user = self.aliases.get(user, user)
                if user not in users:
                    users.append(user)
        return users

    def _class(self, user: str, mail: Mail, received: int) -> str:
        if user not in self.mailboxes:
            return "unroutable"
        if len(mail.copies) > 1:
            if (user, mail.key) in self._classed:
                return "duplicate"
            self._classed.add((user, mail.key))
        if user in mail.kept:
            return "present"
        return "missing" if self.timeline.in_gap(received) else "outside-window"

    def copy(self, store: str, ref: str, mail: Mail, copy: int) -> None:
        received = mail.received + mail.copies[copy]
        classes = []
        for user in self.recipients(mail):
            klass = self._class(user, mail, received)
            classes.append((user, klass))
            self.counts[klass] += 1
            self.users.setdefault(user, Counter())[klass] += 1
            if klass == "missing":
                self.missing.add((user, mail.key))
        record = ArchiveCopy(store, ref, mail.key, mail.message_id,
                             datetime.fromtimestamp(received, UTC), tuple(classes))
        self._out.write(record.to_json() + "\n")

    def unreadable_item(self, store: str, ref: str, reason: str) -> None:
        self.counts["unreadable"] += 1
        self.unreadable.append((store, ref, reason))
        self._out.write(ArchiveCopy(store, ref, unreadable=reason).to_json() + "\n")

    def finish(self) -> Truth:
        self._out.close()
        return Truth(
            since=datetime.fromtimestamp(self.timeline.since, UTC),
            until=datetime.fromtimestamp(self.timeline.until, UTC),
            counts={klass: self.counts[klass] for klass in CLASSES},
            users={user: dict(counts) for user, counts in self.users.items()},
            missing=self.missing,
            unreadable=self.unreadable,
            copies_file=self.path,
        )
