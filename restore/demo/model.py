"""The incident's world: its fixed dates, its timeline, and one message's fate."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

DOMAIN = "example.com"
# Fixed dates keep the output stable from run to run: the timeline ends at
# midnight after the incident day, and inbound mail came back at 23:15.
TIMELINE_END = datetime(2017, 12, 9, tzinfo=UTC)
GAP_UNTIL = datetime(2017, 12, 8, 23, 15, tzinfo=UTC)
DAY = 86400
HOUR = 3600

INBOX = ""                      # Maildir++ folder directories, relative to the Maildir
ARCHIVE_FOLDER = ".Archive.2017"
TROUBLE_FOLDER = ".&AMQ-rger"   # "Ärger" in modified UTF-7
SENT_FOLDER = ".Sent"


@dataclass(frozen=True, slots=True)
class Timeline:
    start: int
    end: int
    since: int
    until: int

    def in_gap(self, t: int) -> bool:
        return self.since < t <= self.until

    def early(self, f: float) -> int:
        """Well before the gap (at least 6 hours): where user deletions may lie."""
        return self.start + int((self.since - 6 * HOUR - self.start) * f)

    def gap(self, f: float) -> int:
        return self.since + max(1, int((self.until - self.since) * f))

    def after(self, f: float) -> int:
        return self.until + max(1, int((self.end - self.until) * f))


@dataclass(frozen=True, slots=True)
class Delivery:
    """How the replica holds one user's delivered copy."""

    folder: str = INBOX
    when: int = 0              # delivery time: the file mtime and the LMTP Received:
    state: str = "seen"        # "seen", "unseen" (both in cur/) or "new"
    spam: bool = False         # the filter tagged the Subject
    via_backup_mx: bool = False


@dataclass(slots=True)
class Mail:
    key: str
    received: int              # when the gateway received it
    sender: str                # envelope sender
    envelope: list[str]        # X-Envelope-To values, one header each
    original: str              # the message as sent: headers, blank line, body; LF
    message_id: str | None
    queue_id: str
    copies: tuple[int, ...] = (0,)   # seconds after `received` each archive copy was taken
    archive_format: str = ""         # where the first copy goes, when that format is in use
    kept: dict[str, Delivery] = field(default_factory=dict)  # user -> replica copy
