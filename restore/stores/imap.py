"""IMAP store reader: users' mailboxes on a server, read through an admin login.

``imap://admin@mail.example.com`` reads the mailboxes of
``StoreOptions.users`` (``--users FILE``, or for a replica the archive's
recipients), acting for each user through the admin (Dovecot master user or
SASL PLAIN authorization identity, see ``restore.imapconn``). Without
``users`` it reads the URL's LOGIN's own mailbox. A user whose login is
refused has no mailbox here and is left out of ``users()`` (one whose name
the server cannot take, see ``imapconn.try_login``, is also listed
unreadable with the reason); when every login is refused the password is the
likelier culprit, and the store cannot be read at all (``StoreError``).

A unit is one message: its ref is ``USER/FOLDER/UIDVALIDITY/UID``, the folder
decoded from modified UTF-7 with "/" between levels, so a recreated folder
(new UIDVALIDITY) gives new refs and the catalog never fetches a UID twice.
The stamp only says what was fetched: identity needs just the header block
of a message with a Message-ID, so that is all that is fetched
(``Item.headers_only``), and the whole message only for one without, or for
every message when the match mode is ``strict`` (equal bodies).

Read-only: folders are EXAMINEd, messages fetched with ``BODY.PEEK``, so no
flag changes and nothing is expunged. One connection per user, kept for
``read()`` after ``units()`` listed it (a few stay open, in listing order).
A connection that drops is opened afresh once; dropping again is a
``StoreError``.

Thousands of users: a login and a folder listing cost a round trip or more
each, and the server's work per login dwarfs a small mailbox's. So
``units()`` lists the next ``PREFETCH_USERS`` users at once, each on a
connection of its own, and for a user new to the catalog (``known``)
fetches the header blocks of the small folders (at most ``HEADER_BATCH``
messages) while it is logged in, for ``read()`` to hand out: one login per
user, several users at a time. A user the catalog knows is only listed, so
a re-scan still fetches only what is new.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TypeVar

from imapclient.exceptions import IMAPClientError

from restore.errors import PermanentError, StoreError, TransientError, UnreadableItem, UsageError
from restore.imapconn import (
    close_quietly,
    connect,
    connection_guard,
    parse_imap_url,
    server_text,
    try_login,
)
from restore.imapmailbox import (
    HEADER,
    HEADER_BATCH,
    HEADER_KEY,
    WHOLE,
    WHOLE_BATCH,
    WHOLE_KEY,
    MailboxSession,
    lacks_message_id,
)
from restore.mailnames import invalid_mailbox_reason
from restore.stores.base import Item, Store, StoreOptions, Unit, Unreadable

PREFETCH_USERS = 8    # users listed at once, each on its own connection
PREFETCH_KEPT = 5000  # header blocks kept for read(); a scan that reads none (warm) keeps no more
MAX_SESSIONS = 16     # connections kept open; units arrive user by user, so few are needed

INTERNALDATE = b"INTERNALDATE"
# Server replies that are garbage rather than refusals: one folder or batch fails, not the run.
BAD_REPLY = (IMAPClientError, UnicodeError, ValueError)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MessageRef:
    """``USER/FOLDER/UIDVALIDITY/UID``: a user name never holds "/", a folder may."""

    user: str
    folder: str
    uidvalidity: int
    uid: int

    def __str__(self) -> str:
        return f"{self.user}/{self.folder}/{self.uidvalidity}/{self.uid}"

    @classmethod
    def parse(cls, ref: str) -> MessageRef:
        user, _, rest = ref.partition("/")
        folder, _, numbers = rest.rpartition("/")
        folder, _, uidvalidity = folder.rpartition("/")
        if not (user and folder and uidvalidity.isdigit() and numbers.isdigit()):
            raise UnreadableItem(ref, "not an IMAP message reference (USER/FOLDER/UIDVALIDITY/UID)")
        return cls(user, folder, int(uidvalidity), int(numbers))


def _epoch(value: object) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


class ImapStore(Store):
    """``imap://[LOGIN@]HOST[:PORT]`` or ``imaps://…`` as a store to read."""

    kind = "imap"

    def __init__(self, spec: str, options: StoreOptions):
        super().__init__(spec)
        self.address = parse_imap_url(spec)
        if options.password is None:
            raise UsageError(
                f"no IMAP password for {spec}: give --password-file FILE or set "
                "MAILRESTORE_PASSWORD")
        if options.users is None and not self.address.login:
            raise UsageError(
                f"no mailbox to read on {spec}: give imap://LOGIN@HOST or --users FILE")
        self._password = options.password
        self._insecure = options.insecure
        self._timeout = options.timeout
        self._whole = options.match == "strict"
        self._login_only = options.users is None  # the URL's LOGIN reads its own mailbox
        wanted = options.users if options.users is not None else [self.address.login]
        # a name that could not be a mailbox (path separators, control characters)
        # never reaches a ref; it is simply not a user here
        self._wanted = [u for u in dict.fromkeys(wanted) if u and not invalid_mailbox_reason(u)]
        self._sessions: OrderedDict[str, MailboxSession] = OrderedDict()
        self._refusals: dict[str, str] = {}
        self._unaddressable: dict[str, str] = {}
        self._present: set[str] | None = None
        self._folders: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()  # open_ref may be called from inject's workers
        self._prefetched: dict[str, Item | Unreadable] = {}    # by ref, for read()
        self._prefetched_by_user: OrderedDict[str, list[str]] = OrderedDict()
        self._prefetched_pending: dict[str, list[str]] = {}     # fetched, user not yet listed
        self._known: set[str] = set()     # users the catalog holds mail of: nothing fetched ahead

    wants_known = True

    def known(self, users: set[str]) -> None:
        self._known = set(users)

    # -- users and units -------------------------------------------------------

    def users(self) -> set[str]:
        if self._present is None:
            self._present = {u for u in self._wanted if self._session(u) is not None}
            self._check_any_login()
        return set(self._present)

    def units(self) -> Iterator[Unit | Unreadable]:
        present: set[str] = set()
        for user, found in self._listings():
            if found is None:       # the login was refused
                if user in self._unaddressable:     # said once: the diff names it unroutable
                    yield Unreadable(Unit(user, "", user=user), user, self._unaddressable[user])
                continue
            present.add(user)
            self._keep_prefetched(user)
            yield from found
        self._present = present
        self._check_any_login()

    def _listings(self) -> Iterator[tuple[str, list[Unit | Unreadable] | None]]:
        """Each wanted user's units, in order; several users listed at once when there are."""
        if len(self._wanted) < 2:
            for user in self._wanted:
                yield user, self._list(user)
            return
        with ThreadPoolExecutor(PREFETCH_USERS, thread_name_prefix="imap-list") as pool:
            wanted = iter(self._wanted)
            ahead: deque[tuple[str, Future[list[Unit | Unreadable] | None]]] = deque()

            def fill() -> None:
                while len(ahead) < 2 * PREFETCH_USERS and (user := next(wanted, None)):
                    ahead.append((user, pool.submit(self._list_ahead, user)))

            fill()
            while ahead:
                user, listed = ahead.popleft()
                fill()
                yield user, listed.result()

    def _keep_prefetched(self, user: str) -> None:
        """Hand out ``user``'s prefetched headers; forget the oldest users' beyond the bound."""
        self._prefetched_by_user[user] = self._prefetched_pending.pop(user, [])
        kept = sum(len(r) for r in self._prefetched_by_user.values())
        while kept > PREFETCH_KEPT and len(self._prefetched_by_user) > 1:
            _, old = self._prefetched_by_user.popitem(last=False)
            kept -= len(old)
            for ref in old:
                self._prefetched.pop(ref, None)

    def _list_ahead(self, user: str) -> list[Unit | Unreadable] | None:
        """``user``'s units on a connection of its own, small folders' headers fetched too.

        None when the login is refused. Anything else going wrong (a dropped
        connection, a garbled reply) leaves the user to ``_list``, one user at
        a time on the shared connections, with its retry.
        """
        try:
            client = connect(self.address, insecure=self._insecure, timeout=self._timeout,
                             error=StoreError)
        except StoreError:
            return self._list(user)
        try:
            refusal = try_login(client, self.address, user, self._password, error=StoreError)
            if refusal is not None:
                self._refusals[user] = refusal
                return None
            session = MailboxSession(client)
            with connection_guard(self.address.where):
                folders = session.folders()
                found: list[Unit | Unreadable] = []
                for folder, name in folders.items():
                    uidvalidity, uids = session.uids(name)
                    units = self._units(user, folder, uidvalidity, uids)
                    found += units
                    if user not in self._known and 0 < len(uids) <= HEADER_BATCH:
                        batch = {MessageRef.parse(u.ref).uid: u for u in units}
                        fetched = self._fetch(session, name, uidvalidity, batch)
                        self._prefetched.update((item.unit.ref, item) for item in fetched)
                        self._prefetched_pending.setdefault(user, []).extend(
                            item.unit.ref for item in fetched)
            self._folders[user] = folders
            return found
        except (StoreError, TransientError, PermanentError, *BAD_REPLY):
            return self._list(user)     # and there, a name the server cannot take is said once
        finally:
            close_quietly(client)

    def _list(self, user: str) -> list[Unit | Unreadable] | None:
        """``user``'s units, one round trip after another on the shared connection."""
        if self._session(user) is None:
            return None
        try:
            folders = self._folder_names(user)
        except BAD_REPLY as exc:
            return [
                Unreadable(Unit(user, "", user=user), user, f"cannot list folders: {_reason(exc)}")
            ]
        found: list[Unit | Unreadable] = []
        for folder, name in folders.items():
            try:
                uidvalidity, uids = self._attempt(user, partial(MailboxSession.uids, name=name))
            except BAD_REPLY as exc:
                where = f"{user}/{folder}"
                found.append(Unreadable(Unit(where, "", folder, user), where,
                                        f"cannot open folder: {_reason(exc)}"))
                continue
            found += self._units(user, folder, uidvalidity, uids)
        return found

    def _units(self, user: str, folder: str, uidvalidity: int, uids: list[int]) -> list[Unit]:
        stamp = "whole" if self._whole else "header"
        return [Unit(str(MessageRef(user, folder, uidvalidity, uid)), stamp, folder, user)
                for uid in sorted(uids)]

    def _check_any_login(self) -> None:
        """Every login refused: a wrong password, not a server without any of these mailboxes."""
        if self._wanted and not self._present:
            first, admin = self._wanted[0], self.address.login
            who = first if len(self._wanted) == 1 else f"all {len(self._wanted)} users"
            if admin not in (None, first):
                who += f" (as {admin})"
            if self._login_only:
                hint = "wrong password? To read users' mailboxes as an admin, give --users FILE"
            elif len(self._wanted) == 1:
                hint = "wrong password, or no mailbox here?"
            else:
                hint = "wrong password, or none of them has a mailbox here?"
            raise StoreError(f"IMAP login to {self.address.where} refused for {who}: "
                             f"{self._refusals.get(first, 'refused')} ({hint})")

    # -- reading ----------------------------------------------------------------

    def read(self, units: Iterable[Unit]) -> Iterator[Item | Unreadable]:
        folders: dict[tuple[str, str, int], dict[int, Unit]] = {}
        for unit in units:
            ready = self._prefetched.pop(unit.ref, None)
            if ready is not None:
                yield ready
                continue
            try:
                ref = MessageRef.parse(unit.ref)
            except UnreadableItem as exc:
                yield Unreadable(unit, exc.where, exc.reason)
                continue
            folders.setdefault((ref.user, ref.folder, ref.uidvalidity), {})[ref.uid] = unit
        for (user, folder, uidvalidity), members in folders.items():
            yield from self._read_folder(user, folder, uidvalidity, members)

    def _read_folder(
        self, user: str, folder: str, uidvalidity: int, members: dict[int, Unit]
    ) -> Iterator[Item | Unreadable]:
        try:
            name = self._folder_names(user).get(folder)
        except BAD_REPLY as exc:
            name, gone = None, f"cannot list folders: {_reason(exc)}"
        else:
            gone = "folder no longer exists"
        if name is None:
            yield from (Unreadable(unit, unit.ref, gone) for unit in members.values())
            return
        uids = list(members)
        size = WHOLE_BATCH if self._whole else HEADER_BATCH
        for start in range(0, len(uids), size):
            batch = {uid: members[uid] for uid in uids[start:start + size]}
            try:
                # whole batches only: a retried batch must not yield an item twice
                yield from self._attempt(user, partial(
                    self._fetch, name=name, uidvalidity=uidvalidity, batch=batch))
            except BAD_REPLY as exc:
                reason = f"fetch failed: {_reason(exc)}"
                yield from (Unreadable(unit, unit.ref, reason) for unit in batch.values())

    def _fetch(
        self, session: MailboxSession, name: str, uidvalidity: int, batch: dict[int, Unit]
    ) -> list[Item | Unreadable]:
        if session.examine(name) != uidvalidity:
            reason = "folder was recreated since it was listed (new UIDVALIDITY); scan again"
            return [Unreadable(unit, unit.ref, reason) for unit in batch.values()]
        part, key = (WHOLE, WHOLE_KEY) if self._whole else (HEADER, HEADER_KEY)
        response = session.client.fetch(list(batch), [part, INTERNALDATE])
        out: list[Item | Unreadable] = []
        bodies_needed: dict[int, float | None] = {}
        for uid, unit in batch.items():
            got = response.get(uid, {})
            data = got.get(key)
            if data is None:
                out.append(Unreadable(unit, unit.ref, "no such message (expunged?)"))
            elif not self._whole and lacks_message_id(data):
                bodies_needed[uid] = _epoch(got.get(INTERNALDATE))
            else:
                out.append(Item(unit, unit.ref, data, _epoch(got.get(INTERNALDATE)),
                                headers_only=not self._whole))
        needed = list(bodies_needed)
        for start in range(0, len(needed), WHOLE_BATCH):
            chunk = needed[start:start + WHOLE_BATCH]
            response = session.client.fetch(chunk, [WHOLE])
            for uid in chunk:
                unit, data = batch[uid], response.get(uid, {}).get(WHOLE_KEY)
                out.append(Unreadable(unit, unit.ref, "no such message (expunged?)") if data is None
                           else Item(unit, unit.ref, data, bodies_needed[uid]))
        return out

    def open_ref(self, ref: str) -> bytes:
        target = MessageRef.parse(ref)
        with self._lock:
            if self._session(target.user) is None:
                raise UnreadableItem(ref, f"no mailbox for {target.user} on {self.address.where}")
            try:
                name = self._folder_names(target.user).get(target.folder)
                if name is None:
                    raise UnreadableItem(ref, "folder no longer exists")
                data = self._attempt(target.user,
                                     partial(self._fetch_one, name=name, target=target))
            except BAD_REPLY as exc:
                raise UnreadableItem(ref, _reason(exc)) from None
        if data is None:
            raise UnreadableItem(ref, "no such message (expunged, or folder recreated?)")
        return data

    @staticmethod
    def _fetch_one(session: MailboxSession, name: str, target: MessageRef) -> bytes | None:
        if session.examine(name) != target.uidvalidity:
            return None
        return session.client.fetch([target.uid], [WHOLE]).get(target.uid, {}).get(WHOLE_KEY)

    # -- connections ---------------------------------------------------------------

    def _folder_names(self, user: str) -> dict[str, str]:
        names = self._folders.get(user)
        if names is None:
            names = self._folders[user] = self._attempt(user, MailboxSession.folders)
        return names

    def _session(self, user: str) -> MailboxSession | None:
        """``user``'s connection, opened when needed; None when the login is refused."""
        session = self._sessions.get(user)
        if session is not None:
            self._sessions.move_to_end(user)
            return session
        client = connect(self.address, insecure=self._insecure, timeout=self._timeout,
                         error=StoreError)
        try:
            refusal = try_login(client, self.address, user, self._password, error=StoreError)
        except PermanentError as exc:       # a name this server cannot take
            close_quietly(client)
            self._refusals[user] = self._unaddressable[user] = exc.reason
            return None
        except BaseException:
            close_quietly(client)
            raise
        if refusal is not None:
            close_quietly(client)
            self._refusals[user] = refusal
            return None
        session = self._sessions[user] = MailboxSession(client)
        while len(self._sessions) > MAX_SESSIONS:
            _, oldest = self._sessions.popitem(last=False)
            close_quietly(oldest.client)
        return session

    def _attempt(self, user: str, action: Callable[[MailboxSession], T]) -> T:
        """``action`` on ``user``'s connection; when it drops, once more on a fresh one."""
        lost: TransientError | None = None
        for _ in range(2):
            session = self._session(user)
            if session is None:
                raise StoreError(f"IMAP login to {self.address.where} refused for {user} while "
                                 f"reading: {self._refusals.get(user, 'refused')}")
            try:
                with connection_guard(self.address.where):
                    return action(session)
            except TransientError as exc:
                lost = exc
                close_quietly(self._sessions.pop(user).client)
        raise StoreError(f"{lost}; lost again after reconnecting once")

    def close(self) -> None:
        while self._sessions:
            close_quietly(self._sessions.popitem()[1].client)


def _reason(exc: BaseException) -> str:
    return server_text(exc) if isinstance(exc, IMAPClientError) else str(exc) or type(exc).__name__
