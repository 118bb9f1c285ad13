"""IMAP target: APPEND with INTERNALDATE = received time, one connection per user.

Speed comes from MULTIAPPEND (RFC 3502) with LITERAL+: one command, and one
round trip, carries a user's whole batch (up to ``CHUNK_MESSAGES`` messages
or ``CHUNK_BYTES``; inject makes batches that fit, ``batch_messages``
and ``batch_bytes``), so the server writes it in one transaction, with one
round of fsyncs, instead of one APPEND per message. MULTIAPPEND is atomic,
so when the server refuses a chunk (one message too big, the quota reached
half way) the chunk is appended again one message at a time: only the
messages the server refuses fail.

INTERNALDATE is read back (a FETCH of the new UIDs, the folder EXAMINEd:
read-only, so \\Recent and flags stay untouched) until one chunk shows that
the server keeps the dates it is sent; later sessions of the run then spare
themselves the EXAMINE and the FETCH, two round trips per user, but for a
chunk with a date outside 1970-2038, which servers storing 32-bit file times
change. A server that stored other dates goes on being checked, and each
message it misdates carries a warning. A batch of several chunks EXAMINEs
its folder anyway: Dovecot then keeps the mailbox open instead of reopening
it for every APPEND. Folders are only ever created, never renamed or
deleted, so an existing folder keeps its UIDVALIDITY; INBOX always exists.

Undo (``remove``) needs UIDPLUS: each message is removed by its recorded
UID, after checking UIDVALIDITY and the fingerprint of what that UID holds,
with ``UID STORE +FLAGS.SILENT (\\Deleted)`` and ``UID EXPUNGE`` of exactly
those UIDs. Without UIDPLUS only a plain EXPUNGE exists, which would also
remove whatever users had marked deleted: undo is then refused. A folder
the run created is deleted again only when it is empty and has no subfolder.

What APPEND sends and answers (CRLF, APPENDUID, the keywords a folder
keeps) is ``restore.targets.imap_wire``'s.
"""

from __future__ import annotations

import imaplib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from imapclient import IMAPClient
from imapclient.datetime_util import datetime_to_INTERNALDATE
from imapclient.imapclient import seq_to_parenstr

from restore.errors import TargetError, TransientError
from restore.identity import fingerprint_of, is_same_message
from restore.imapconn import (
    close_quietly,
    connect,
    connection_guard,
    parse_imap_url,
    refused,
    server_text,
    try_login,
)
from restore.mailnames import is_keyword
from restore.targets.base import (
    CHANGED,
    MOVED,
    Message,
    Outcome,
    Target,
    TargetSession,
    folder_gone,
    nothing,
)
from restore.targets.imap_wire import (
    keyword_refusal,
    last_line,
    lost_keywords,
    parse_appenduid,
    to_crlf,
)

CHUNK_MESSAGES = 1000
CHUNK_BYTES = 4 * 1024 * 1024
FETCH_CHUNK = 20  # candidates whose full bytes are fetched at once by find()

_RECORDED = re.compile(r"APPENDUID (\d+) (\d+)")     # a target id: where one message went
_SYSTEM_FLAGS = {"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft"}


class ImapTarget(Target):
    """``imap://[LOGIN@]HOST[:PORT]`` or ``imaps://…`` as a place to append to."""

    kind = "imap"
    batch_messages = CHUNK_MESSAGES
    # A batch is sized by its plan sizes (the archive's line ends); CRLF on the wire makes it
    # larger, and a batch just over CHUNK_BYTES would go as two MULTIAPPENDs (two round trips
    # and two of the server's commits) and EXAMINE its folder for the second.
    batch_bytes = CHUNK_BYTES - CHUNK_BYTES // 8

    def __init__(self, spec: str, password: str, insecure: bool = False, timeout: float = 60.0):
        self.spec = spec
        self.address = parse_imap_url(spec)
        self._password = password
        self._insecure = insecure
        self._timeout = timeout
        self._reached = False  # a session has been opened: later outages are transient
        self.dates_kept = threading.Event()   # the server kept the INTERNALDATE it was sent

    def session(self, user: str) -> ImapSession:
        """A logged-in session for ``user``.

        Raises TargetError when the server cannot be used (unreachable at
        first contact, TLS not verified, login refused) and TransientError
        when a server reached before is away now (restarting).
        """
        unreachable = TransientError if self._reached else None
        client = connect(self.address, insecure=self._insecure, timeout=self._timeout,
                         error=TargetError, unreachable=unreachable)
        try:
            refusal = try_login(client, self.address, user, self._password, error=TargetError,
                                unreachable=unreachable)
        except BaseException:
            close_quietly(client)
            raise
        if refusal is not None:
            close_quietly(client)
            raise TargetError(refused(self.address, user, refusal))
        self._reached = True
        return ImapSession(client, self.address.where, self.dates_kept)

    def probe(self, user: str) -> str | None:
        try:
            session = self.session(user)
        except (TargetError, TransientError) as exc:
            return str(exc)
        session.close()
        return None


@dataclass(slots=True)
class _Pending:
    """A message ready for the wire, with where its Outcome goes."""

    index: int
    data: bytes
    flags: tuple[str, ...]
    internal_date: datetime


class ImapSession(TargetSession):
    """One logged-in connection; used by one thread at a time."""

    def __init__(self, client: IMAPClient, where: str, dates_kept: threading.Event | None = None):
        self._client = client
        self._where = where
        self._dates_kept = dates_kept or threading.Event()
        capabilities = set(client.capabilities())
        self._multiappend = {b"MULTIAPPEND", b"LITERAL+"} <= capabilities
        self._uidplus = b"UIDPLUS" in capabilities
        self._delimiter: str | None = None
        self._existing: set[str] = set()
        self._selected: str | None = None
        self._selected_for_append = "INBOX"
        self._uidvalidity = 0
        self._permanent_flags: tuple[bytes, ...] = ()
        self._created: list[str] = []

    def take_created(self) -> list[str]:
        created, self._created = self._created, []
        return created

    def prepare(self, folder: str, message: Message) -> str:
        return ""

    def held_keys(self, match: str) -> set[str]:
        from restore.imapmailbox import mailbox_keys

        with connection_guard(self._where):
            try:
                return mailbox_keys(self._client, match)
            finally:
                self._selected = None   # it EXAMINEd folders of its own

    def close(self) -> None:
        close_quietly(self._client)

    # -- append ------------------------------------------------------------

    def append(self, folder: str, batch: Sequence[Message],
               ready: Callable[[], None] = nothing) -> list[Outcome]:
        ready = _once(ready)
        outcomes: list[Outcome | None] = [None] * len(batch)
        pending: list[_Pending] = []
        for index, message in enumerate(batch):
            try:
                pending.append(_prepare(index, message))
            except ValueError as exc:
                outcomes[index] = Outcome(ok=False, reason=str(exc))
        chunks = list(_chunks(pending))
        with connection_guard(self._where):
            try:
                mailbox = self._open_for_append(
                    folder, examine=len(chunks) > 1 or any(map(self._check_wanted, chunks)))
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                reason = f"cannot open folder {folder!r}: {server_text(exc)}"
                return [outcome or Outcome(ok=False, reason=reason) for outcome in outcomes]
            refusal = keyword_refusal(self._permanent_flags,
                                      {flag for item in pending for flag in item.flags})
            if refusal:
                reason = f"folder {folder!r}: {refusal}"
                return [outcome or Outcome(ok=False, reason=reason) for outcome in outcomes]
            for chunk in chunks:
                if self._multiappend and len(chunk) > 1:
                    results = self._append_together(mailbox, chunk, ready)
                else:
                    ready()
                    results = self._append_each(mailbox, chunk)
                if self._check_wanted(chunk) and self._check_dates(chunk, results):
                    self._dates_kept.set()
                for item, outcome in zip(chunk, results, strict=True):
                    outcomes[item.index] = outcome
        return [outcome or Outcome(ok=False, reason="not appended") for outcome in outcomes]

    def _append_together(self, mailbox: str, chunk: list[_Pending],
                         ready: Callable[[], None]) -> list[Outcome]:
        """One MULTIAPPEND; if refused, one APPEND each to find who is refused."""
        try:
            status, data = self._send_multiappend(mailbox, chunk, ready)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:  # BAD: something in the chunk the server rejects
            return self._append_each(mailbox, chunk)
        if status != "OK":
            return self._append_each(mailbox, chunk)
        uidvalidity, uids = parse_appenduid(last_line(data))
        if len(uids) != len(chunk):
            return [Outcome(ok=True, warning="server gave no APPENDUID") for _ in chunk]
        return [Outcome(ok=True, target_id=f"APPENDUID {uidvalidity} {uid}") for uid in uids]

    def _send_multiappend(self, mailbox: str, chunk: list[_Pending],
                          ready: Callable[[], None]) -> tuple[str, list]:
        """Send the MULTIAPPEND in one write, ``ready()``, end it and wait for its answer.

        With LITERAL+ nothing waits for the server mid-command, so the whole
        command goes out at once: imapclient's ``multiappend`` writes three
        pieces per message, each a system call and a small packet that wakes
        the server to read it. The server appends nothing before the
        command's last line (RFC 3502: all or none), so ``ready()`` (the
        journal's sync) runs while the server is still taking the messages in.
        """
        parts = [b"", b"APPEND", self._client._normalise_folder(mailbox)]
        for item in chunk:
            if item.flags:
                parts.append(seq_to_parenstr(item.flags).encode("ascii"))
            parts.append(f'"{datetime_to_INTERNALDATE(item.internal_date)}" '
                         f"{{{len(item.data)}+}}\r\n".encode("ascii") + item.data)
        imap = self._client._imap
        tag = imap._new_tag()
        parts[0] = tag
        imap.send(b" ".join(parts))
        try:
            ready()
        except BaseException:
            # The command is never ended, so none of it is appended; the connection,
            # left in the middle of it, goes.
            imap.shutdown()
            raise
        imap.send(b"\r\n")
        return imap._command_complete("APPEND", tag)

    def _append_each(self, mailbox: str, chunk: list[_Pending]) -> list[Outcome]:
        results = []
        for item in chunk:
            try:
                response = self._client.append(mailbox, item.data, item.flags, item.internal_date)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                results.append(Outcome(ok=False, reason=server_text(exc)))
                continue
            uidvalidity, uids = parse_appenduid(response)
            if len(uids) == 1:
                results.append(Outcome(ok=True, target_id=f"APPENDUID {uidvalidity} {uids[0]}"))
            else:
                results.append(Outcome(ok=True, warning="server gave no APPENDUID"))
        return results

    def _check_wanted(self, chunk: list[_Pending]) -> bool:
        """Whether to read ``chunk`` back: dates not known to be kept, out of range, or keywords."""
        return not self._dates_kept.is_set() or any(
            not 0 <= item.internal_date.timestamp() < 2**31
            or any(not flag.startswith("\\") for flag in item.flags) for item in chunk)

    def _check_dates(self, chunk: list[_Pending], results: list[Outcome]) -> bool:
        """Warn where the server stored another INTERNALDATE than the one sent, or lost a
        keyword; True when it kept everything."""
        wanted = {}
        for position, (item, outcome) in enumerate(zip(chunk, results, strict=True)):
            if outcome.ok and outcome.target_id:
                uid = int(outcome.target_id.rsplit(" ", 1)[1])
                wanted[uid] = (position, item)
        if not wanted:
            return False
        self._examine(self._selected_for_append)
        keywords = any(not flag.startswith("\\") for item in chunk for flag in item.flags)
        try:
            stored = self._client.fetch(sorted(wanted),
                                        ["INTERNALDATE", "FLAGS"] if keywords else ["INTERNALDATE"])
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            stored = {}  # each message then carries "could not be read back"
        kept = True
        for uid, (position, item) in wanted.items():
            got = stored.get(uid, {}).get(b"INTERNALDATE")
            if got is None:
                warning = "INTERNALDATE could not be read back"
            elif abs(got.timestamp() - item.internal_date.timestamp()) >= 1:
                warning = (
                    f"server ignored INTERNALDATE: stored {got.isoformat()}, "
                    f"sent {item.internal_date.isoformat()}"
                )
            else:
                warning = lost_keywords(item.flags, stored.get(uid, {}).get(b"FLAGS"))
            if warning:
                kept = False
                outcome = results[position]
                results[position] = Outcome(ok=True, target_id=outcome.target_id, warning=warning)
        return kept

    # -- find --------------------------------------------------------------

    def find(self, folder: str, message: Message) -> str | None:
        """The target id of a copy of ``message`` already in ``folder``, else None."""
        with connection_guard(self._where):
            try:
                mailbox = self._open_existing(folder)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                return None
            if mailbox is None:
                return None
            candidates = self._candidates(message)
            for start in range(0, len(candidates), FETCH_CHUNK):
                fetched = self._client.fetch(candidates[start:start + FETCH_CHUNK], ["BODY.PEEK[]"])
                for uid, item in sorted(fetched.items()):
                    body = item.get(b"BODY[]")
                    if body is not None and fingerprint_of(body) == message.fingerprint:
                        return f"APPENDUID {self._uidvalidity} {uid}"
        return None

    def _candidates(self, message: Message) -> list[int]:
        """UIDs that may hold ``message``: same Message-ID, else same size around the same day."""
        if message.message_id:
            try:
                return list(self._search(["HEADER", "Message-ID", message.message_id]))
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                pass  # a Message-ID the server cannot search for: fall back to size and date
        size = len(to_crlf(message.data))
        try:
            day = datetime.fromtimestamp(message.received, tz=UTC).date()
        except (OverflowError, OSError, ValueError):
            return []
        # SINCE/BEFORE compare dates in the server's zone: allow a day either side.
        return list(self._search([
            "SINCE", day - timedelta(days=1), "BEFORE", day + timedelta(days=2),
            "LARGER", size - 1, "SMALLER", size + 1,
        ]))

    def _search(self, criteria: list[str | int | date]) -> list[int]:
        text = [c for c in criteria if isinstance(c, str)]
        charset = None if all(t.isascii() for t in text) else "UTF-8"
        return self._client.search(criteria, charset=charset)

    # -- folders -----------------------------------------------------------

    def _open_for_append(self, folder: str, examine: bool = True) -> str:
        """``folder`` (a "/"-separated name) as the server names it, created when missing,
        and EXAMINEd when ``examine``."""
        mailbox = self._server_name(folder)
        if mailbox != "INBOX" and mailbox not in self._existing and \
                not self._client.folder_exists(mailbox):
            if self._create(mailbox):
                self._created.append(folder)
        self._existing.add(mailbox)
        self._selected_for_append = mailbox
        if examine:
            self._examine(mailbox)
        return mailbox

    def _open_existing(self, folder: str) -> str | None:
        """EXAMINE ``folder`` if it exists; None if it does not."""
        mailbox = self._server_name(folder)
        if mailbox not in self._existing and not self._client.folder_exists(mailbox):
            return None
        self._examine(mailbox)
        return mailbox

    def _examine(self, mailbox: str) -> None:
        self._existing.add(mailbox)
        if mailbox != self._selected:
            selected = self._client.select_folder(mailbox, readonly=True)
            self._selected = mailbox
            self._uidvalidity = selected.get(b"UIDVALIDITY", 0)
            self._permanent_flags = tuple(selected.get(b"PERMANENTFLAGS", ()))

    def _create(self, mailbox: str) -> bool:
        """Create ``mailbox``; False when another session created it meanwhile."""
        try:
            self._client.create_folder(mailbox)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            # another session may have created it meanwhile ([ALREADYEXISTS])
            if not self._client.folder_exists(mailbox):
                raise
            return False
        # Clients that list only subscribed folders would not show the restored mail.
        try:
            self._client.subscribe_folder(mailbox)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            pass    # cosmetic: the mail is in place either way
        return True

    # -- undo --------------------------------------------------------------

    def remove(self, folder: str, batch: Sequence[tuple[str, str, str]], dry_run: bool = False
               ) -> list[str | None]:
        if not self._uidplus:
            raise TargetError(f"IMAP server {self._where} lacks UIDPLUS: undo removes messages "
                              "only by UID EXPUNGE (a plain EXPUNGE would also remove what users "
                              "deleted); nothing removed")
        outcomes: list[str | None] = [None] * len(batch)
        with connection_guard(self._where):
            mailbox = self._server_name(folder)
            if not self._client.folder_exists(mailbox):
                return [folder_gone(folder)] * len(batch)
            selected = self._client.select_folder(mailbox, readonly=dry_run)
            self._selected = None   # not EXAMINEd: an append would open it again
            uidvalidity = selected.get(b"UIDVALIDITY", 0)
            wanted: dict[int, tuple[int, str, str]] = {}
            for index, (target_id, fingerprint, digest) in enumerate(batch):
                recorded = _RECORDED.fullmatch(target_id)
                if recorded is None:
                    outcomes[index] = "no UID recorded (the server gave no APPENDUID): left alone"
                elif int(recorded.group(1)) != uidvalidity:
                    outcomes[index] = "folder recreated since (UIDVALIDITY changed): left alone"
                else:
                    wanted[int(recorded.group(2))] = (index, fingerprint, digest)
            doomed: list[int] = []
            order = sorted(wanted)
            for start in range(0, len(order), FETCH_CHUNK):
                chunk = order[start:start + FETCH_CHUNK]
                fetched = self._client.fetch(chunk, ["BODY.PEEK[]"])
                for uid in chunk:
                    index, fingerprint, digest = wanted[uid]
                    body = fetched.get(uid, {}).get(b"BODY[]")
                    if body is None:
                        outcomes[index] = MOVED
                    elif not is_same_message(body, fingerprint, digest):
                        outcomes[index] = CHANGED
                    else:
                        doomed.append(uid)
            if doomed and not dry_run:
                self._client.add_flags(doomed, [b"\\Deleted"], silent=True)
                self._client.uid_expunge(doomed)
        return outcomes

    def remove_created(self, path: str, dry_run: bool = False) -> str | None:
        with connection_guard(self._where):
            mailbox = self._server_name(path)
            if mailbox == "INBOX" or not self._client.folder_exists(mailbox):
                return None
            if dry_run:
                return None     # emptied first by the undo itself, or it says then why not
            status = self._client.folder_status(mailbox, [b"MESSAGES"])
            if status.get(b"MESSAGES", 0):
                return f"folder {path!r} is not empty: left alone"
            delimiter = self._delimiter or "/"
            if self._client.list_folders("", f"{mailbox}{delimiter}%"):
                return f"folder {path!r} has subfolders: left alone"
            # Not selected while deleted; EXAMINE, since CLOSE would expunge what users deleted.
            self._examine("INBOX")
            try:
                self._client.unsubscribe_folder(mailbox)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                pass
            self._client.delete_folder(mailbox)
            self._existing.discard(mailbox)
        return None

    def _server_name(self, folder: str) -> str:
        if folder.upper() == "INBOX":
            return "INBOX"
        if self._delimiter is None:
            listing = self._client.list_folders("", "INBOX")
            delimiter = listing[0][1] if listing else b"/"
            self._delimiter = (delimiter or b"/").decode("ascii", "replace")
        return folder.replace("/", self._delimiter) if self._delimiter != "/" else folder


def _prepare(index: int, message: Message) -> _Pending:
    """Wire form of a message; ValueError when it cannot be sent at all."""
    for flag in message.flags:
        if flag.lower() not in _SYSTEM_FLAGS and not is_keyword(flag):
            raise ValueError(f"invalid IMAP flag {flag!r}")
    try:
        internal_date = datetime.fromtimestamp(message.received, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"received time {message.received!r} is out of range") from None
    if not 1 <= internal_date.year <= 9999:
        raise ValueError(f"received time {message.received!r} is out of range")
    return _Pending(index, to_crlf(message.data), tuple(message.flags), internal_date)


def _once(call: Callable[[], None]) -> Callable[[], None]:
    """``call``, run by the first call of the result that gets through it."""
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            call()
            done = True
    return once


def _chunks(pending: list[_Pending]) -> Iterator[list[_Pending]]:
    chunk: list[_Pending] = []
    size = 0
    for item in pending:
        if chunk and (len(chunk) >= CHUNK_MESSAGES or size + len(item.data) > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(item.data)
    if chunk:
        yield chunk
