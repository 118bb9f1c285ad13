"""The contract every target keeps.

A target only ever appends. It never deletes, overwrites, renames or reorders
anything already in a mailbox, never changes an existing folder's
UIDVALIDITY, and never writes outside its mail root. The one exception is
``remove`` and ``remove_created``, which only ``mailrestore undo`` calls,
for what its run's journal says that run wrote.

``Target.session(user)`` opens one user's mailbox (one IMAP connection, or
the user's Maildir). A session is used by one worker thread at a time.

``session.append(folder, batch)`` appends messages in the order given and
returns one ``Outcome`` per message, in the same order:
  - ``Outcome(ok=True, target_id=...)``: written; ``target_id`` says where
    (``"APPENDUID 1700000000 42"``, or the Maildir file name);
  - ``Outcome(ok=False, reason=...)``: refused for good (quota, too big).
``ready()``, when given, is called once before the target can hold any
message of the batch: the caller makes its journal's pending rows durable
there. A target that can take the batch's bytes before it holds them (IMAP
MULTIAPPEND: nothing is appended before the command's last line) calls it
once they are sent, so that the sync and the transfer overlap; any other
calls it first. When ``ready()`` raises (``JournalError``), nothing of the
batch is appended.
It raises ``TransientError`` when the connection died (the caller retries
the unfinished part on a fresh session) and ``TargetError`` when the target
is unusable as a whole (login refused, no such mail root).

``session.find(folder, message)`` answers, for an entry the journal left in
doubt after a crash, whether the target already holds that message, and
returns its target id or None. ``planned_id`` is what ``prepare`` promised.

``session.prepare(folder, message)`` returns an id to record in the journal
*before* writing (Maildir: the unique file name it will use; IMAP: "").

Flags. ``Message.flags`` are IMAP flags, system flags (``\\Seen``) and
keywords (``$Restored``), from --flags and --keyword. A target stores each
it can (Maildir: system flags as info letters in ``cur/``, keywords as the
letters of the folder's ``dovecot-keywords`` file; IMAP: with the APPEND).
A folder that will not keep a keyword refuses the messages that carry it
before anything is written (IMAP's PERMANENTFLAGS, a full keywords file);
a flag that was written but not kept gives ``Outcome(ok=True, warning=...)``.

Batches. ``Target.batch_messages`` and ``batch_bytes`` size inject's
batches to what the target writes best in one go (IMAP: one MULTIAPPEND).

Durability in groups. A target whose writes can be made durable together
(Maildir: one ``syncfs`` for many files instead of an fsync each) also
offers ``session.stage(folder, batch)``: it writes the batch where no
reader sees it yet (Maildir: ``tmp/``), without making it durable, and
returns a ``Staged``; ``target.commit(staged)`` then makes many staged
batches (of any sessions, in the order given) durable, visible and durable
again, and returns one list of Outcomes per batch. A staged batch owns what
its commit needs: the session that staged it may be closed meanwhile. A
message is visible only once its bytes are durable, and ``commit`` returns
only once its visibility is durable too. Targets that write durably in
``append`` alone (IMAP: the server syncs) return None from ``stage``.

``session.take_created()`` returns what the session created since the last
call (folders; for Maildir also the directories, ``maildirfolder`` and
``dovecot-keywords`` files, as paths relative to the mail root), oldest
first, for the journal.

``target.probe(user)`` says, writing nothing, why ``user``'s mailbox could
not be written (no mailbox, and it would not be created), or None: what a
dry run checks.

``session.held_keys(match)`` returns the identity keys (``--match``) of
every message in the user's mailbox, any folder, read through the session
itself, or None when the target leaves that to a scan into the catalog
(Maildir: files are listed faster than logins are made). inject's target
check then costs no login of its own (IMAP: one login per user, not two).

For undo:
  - ``session.remove(folder, batch, dry_run)``, ``batch`` being (target id,
    fingerprint, digest) as the journal recorded them, removes each message
    that is still where it was written and still is that message
    (``identity.is_same_message``), and
    returns one reason per message for what it left alone (None: removed,
    or with ``dry_run`` would be): ``MOVED`` or ``CHANGED`` when it is no
    longer the message the run wrote;
  - ``session.remove_created(path, dry_run)`` removes a folder the run
    created (see ``take_created``) if it is empty, else says why not.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Why undo leaves a message alone, whatever the target.
MOVED = "no longer where it was written (moved or deleted since): left alone"
CHANGED = "changed since it was written: left alone"


def nothing() -> None:
    """``append``'s ``ready`` when the caller has nothing to make durable."""


def folder_gone(folder: str) -> str:
    """Why undo leaves alone what a run wrote into a folder that no longer exists."""
    return f"folder {folder!r} no longer exists: left alone"


@dataclass(frozen=True, slots=True)
class Message:
    """One message to append."""

    data: bytes              # bytes as in the archive; the target converts line endings
    received: float          # epoch seconds: INTERNALDATE / file mtime
    message_id: str | None   # for the in-doubt check
    fingerprint: str         # identity key (restore.identity), for the in-doubt check
    flags: tuple[str, ...] = ()
    planned_id: str = ""     # from prepare(), recorded in the journal before writing


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    target_id: str = ""
    reason: str = ""
    warning: str = ""        # e.g. "server ignored INTERNALDATE"


class Staged:
    """A batch ``stage`` wrote but did not yet make durable or visible; ``Target.commit`` does."""

    size: int                # messages in the batch


class TargetSession(ABC):
    @abstractmethod
    def prepare(self, folder: str, message: Message) -> str: ...

    @abstractmethod
    def append(self, folder: str, batch: Sequence[Message],
               ready: Callable[[], None] = nothing) -> list[Outcome]: ...

    @abstractmethod
    def find(self, folder: str, message: Message) -> str | None: ...

    def stage(self, folder: str, batch: Sequence[Message]) -> Staged | None:
        return None

    def held_keys(self, match: str) -> set[str] | None:
        return None

    def take_created(self) -> list[str]:
        return []

    @abstractmethod
    def remove(self, folder: str, batch: Sequence[tuple[str, str, str]], dry_run: bool = False
               ) -> list[str | None]: ...

    @abstractmethod
    def remove_created(self, path: str, dry_run: bool = False) -> str | None: ...

    def close(self) -> None:
        pass

    def __enter__(self) -> TargetSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Target(ABC):
    spec: str
    kind: str
    stages: bool = False     # sessions stage and ``commit`` makes them durable, in groups
    batch_messages: int = 50                # inject's batch: at most this many messages ...
    batch_bytes: int | None = None          # ... and bytes (None: any)

    @abstractmethod
    def session(self, user: str) -> TargetSession: ...

    @abstractmethod
    def probe(self, user: str) -> str | None: ...

    def commit(self, staged: Sequence[Staged]) -> list[list[Outcome]]:
        raise NotImplementedError(f"{self.kind} targets do not stage")

    def describe(self) -> str:
        return self.spec
