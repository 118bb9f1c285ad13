"""The contract every store reader keeps.

A store is read in two steps so that the catalog can skip what it has seen:

1. ``units()`` lists the store's units cheaply (a stat, a directory listing,
   an IMAP UID SEARCH): for Maildir and eml a unit is one message file, for an
   mbox file it is the whole file, for IMAP one message (folder, UIDVALIDITY,
   UID). Each unit carries a ``stamp``: while the stamp is unchanged the
   unit's bytes are unchanged, so the catalog reuses what it recorded.
2. ``read(units)`` yields the unit's messages as ``Item`` (bytes in hand) or
   ``Unreadable`` (with the reason). It never raises for one bad unit; it
   raises ``StoreError`` only when the store as a whole is unusable.

``open_ref(ref)`` re-opens one item by the ``ref`` a plan line carries.

Two optional hooks let the catalog go faster; their defaults suit any store:

* ``unit_groups(recorded)`` lists the units in groups, each with a stamp of
  its own (a Maildir's ``cur/`` directory): while a group's stamp is
  unchanged, its units and their stamps are, and the catalog reuses them
  without listing. ``recorded`` holds the stamps of the groups the last
  scan found (key -> stamp), for a store that must look into a directory
  to tell whether it is a group. The default is one group of all
  ``units()`` with no stamp.
* ``parallel_safe``: ``read`` may run in forked worker processes, each given
  some of the units. True only for stores that hold no connection or open
  file between calls (file stores).

Stores laid out per user (a Maildir tree, IMAP) say who has a mailbox
(``users()``); opened for some users only (``StoreOptions.selection``:
--user, --users, --exclude-user, --shard) they list only those users'
mailboxes, and ``lists_group`` tells the catalog that a group of another
user, not listed, is not gone. ``end_offset`` lets an mbox that only grew
be read on from where the last scan ended. ``known`` hands a store that
asks for it (``wants_known``) the users the catalog already holds mail of.
An item bigger than ``max_message_size`` (decompressed) is ``Unreadable``
(``too_large``), found out while it is read, never held whole. A user
name found in a path or a user list is a mailbox only when
``mailnames.invalid_mailbox_reason`` finds nothing wrong with it.

Stores are read-only: nothing under a store is ever opened for writing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from restore.selection import EVERYONE, UserSelection


# Unit and Item are NamedTuples, not frozen dataclasses: just as immutable, and
# cheaper to make, which counts where a cold scan makes several per message.
class Unit(NamedTuple):
    ref: str                 # stable key inside the store (Maildir: path without :2,flags)
    stamp: str               # changes whenever the unit's bytes may have changed;
                             # "" only as listed by ``UnitGroup.unstamped``
    folder: str = "INBOX"    # decoded folder name, "/"-separated ("Sent", "Archive/2017")
    user: str | None = None  # owner from path variables / IMAP login; None if not per-user
    resume: int = 0          # mbox: byte offset to resume reading from (append-only growth)
    size: int = 0            # bytes on disk (compressed size for compressed files)
    path: str = ""           # file stores: the file the listing found and checked, relative
                             # to the root ("" if not listed); ``read`` opens it without a search


class Item(NamedTuple):
    """One message read from a store."""

    unit: Unit
    ref: str                  # what a plan's ``ref`` holds: relative path, or PATH:OFFSET for mbox
    data: bytes               # message bytes (mbox: From_ line dropped, mboxrd unquoted)
    delivered: float | None   # the store's own delivery time (From_ line, file mtime, INTERNALDATE)
    headers_only: bool = False  # IMAP replica: only header fields were fetched


@dataclass(frozen=True, slots=True)
class Unreadable:
    unit: Unit
    where: str    # path (relative to the store root) or PATH:OFFSET
    reason: str


@dataclass(frozen=True, slots=True)
class UnitGroup:
    """Units listed together, e.g. one Maildir directory.

    Every unit ``units()`` yields has a ref starting with ``key + "/"``, and no
    other unit of the store has (``key`` None: the group is the whole store).
    While ``stamp`` is unchanged (and not None) the group holds the same units
    with the same stamps as when it was last listed.
    """

    key: str | None
    stamp: str | None
    units: Callable[[], Iterable[Unit | Unreadable]]
    # Optional, for a group read whole (new to the catalog): its units listed
    # without a stat each, stamp "". ``read`` stamps each such unit from the
    # file it opens: the unit of the Item or Unreadable it yields carries the
    # stamp, or, when the entry turns out to be no message file at all (what
    # a stamped listing reports), none.
    unstamped: Callable[[], Iterable[Unit | Unreadable]] | None = None


# Well above real mail (providers cap messages at 25 to 150 MB, base64 included)
# and what one item may hold in memory while it is read: a 2 MB .eml.gz that
# expands to 1 GB is refused once 256 MiB of it are out, never read whole.
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024 * 1024


def too_large(limit: int) -> str:
    """The reason an item bigger than ``limit`` bytes (decompressed) is unreadable."""
    size = f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit:,} bytes"
    return f"too large: more than {size} (--max-message-size)"


class Store(ABC):
    """A place messages live. ``spec`` is the STORE argument as the user wrote it.

    A message bigger than ``max_message_size`` bytes (decompressed) is
    unreadable (``too_large``), found out while it is read, never held whole.
    """

    kind: str = ""
    parallel_safe: bool = False
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    def __init__(self, spec: str):
        self.spec = spec

    @abstractmethod
    def units(self) -> Iterator[Unit | Unreadable]:
        """List units cheaply; yield Unreadable for an entry that cannot even be listed."""

    @abstractmethod
    def read(self, units: Iterable[Unit]) -> Iterator[Item | Unreadable]:
        """Read the given units (from ``unit.resume`` for mbox)."""

    @abstractmethod
    def open_ref(self, ref: str) -> bytes:
        """Bytes of the item a plan line names; raises UnreadableItem."""

    def unit_groups(
        self, recorded: Mapping[str, str] | None = None
    ) -> Iterator[UnitGroup | Unreadable]:
        """The units in groups with stamps of their own; by default one group, always listed."""
        yield UnitGroup(None, None, self.units)

    def end_offset(self, unit: Unit) -> int | None:
        """Where the last complete read of ``unit`` ended, for ``Unit.resume`` next time.

        None (the default) means a changed unit is read again whole. The mbox
        store answers, so a file that only grew is read from its old end; when
        it was rewritten instead, its first item's offset is below ``resume``.
        """
        return None

    def users(self) -> set[str] | None:
        """Users that have a mailbox here, when the store is laid out per user; else None."""
        return None

    # Whether ``known`` is worth calling: the store reads ahead for users new to the catalog.
    wants_known = False

    def known(self, users: set[str]) -> None:
        """The users the catalog already holds mail of, before a scan (a hint: little changed)."""

    def lists_group(self, key: str) -> bool:
        """Whether this listing covers the group ``key`` a scan recorded earlier.

        A store opened for some users only (``StoreOptions.selection``) lists
        their groups alone; another user's group it did not list is not gone,
        and keeps its rows in the catalog. By default a listing covers all.
        """
        return True

    def close(self) -> None:
        """Release connections; a no-op for file stores."""

    def describe(self) -> str:
        return self.spec


@dataclass
class StoreOptions:
    """What opening a store may need besides its spec."""

    # IMAP: from --password-file / MAILRESTORE_PASSWORD / prompt
    password: str | None = None
    insecure: bool = False               # IMAP: skip TLS certificate verification
    # IMAP: which users to read (else recipients from the archive)
    users: list[str] | None = None
    selection: UserSelection = EVERYONE  # per-user stores list only these users' mailboxes
    timeout: float = 60.0
    match: str = "auto"                  # IMAP: "strict" fetches whole messages, not headers only
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE   # file stores: bigger items are unreadable
