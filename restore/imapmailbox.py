"""One user's IMAP mailbox, read through a logged-in connection: folders, UIDs, identity keys.

Shared by the IMAP store (which lists and fetches) and the IMAP target
(whose check of what a mailbox holds reads it through inject's own
session, one login per user), so that neither imports the other.
"""

from __future__ import annotations

from imapclient import IMAPClient

from restore.identity import normalize_message_id, split_message
from restore.mailnames import imap_folder

HEADER_BATCH = 500    # UIDs per FETCH of header blocks: few round trips, little memory
WHOLE_BATCH = 50      # UIDs per FETCH of whole messages: bounds memory, not round trips

HEADER, HEADER_KEY = b"BODY.PEEK[HEADER]", b"BODY[HEADER]"
WHOLE, WHOLE_KEY = b"BODY.PEEK[]", b"BODY[]"
UNSELECTABLE = {"\\noselect", "\\nonexistent"}


def lacks_message_id(header: bytes) -> bool:
    """Whether identity must digest the body: no usable Message-ID (as ``facts_of`` decides)."""
    headers, _ = split_message(header)
    value = next((v for name, v in headers if name == "message-id"), None)
    return normalize_message_id(value) is None


class MailboxSession:
    """A logged-in connection acting for one user, and the folder it has open."""

    def __init__(self, client: IMAPClient):
        # Folder names stay as the server spells them (modified UTF-7): decoded
        # here leniently, and sent back to the server untouched.
        client.folder_encode = False
        self.client = client
        self.folder: str | None = None
        self.uidvalidity = 0

    def examine(self, name: str) -> int:
        """Open ``name`` read-only (EXAMINE: no flag changes, no expunge); its UIDVALIDITY."""
        if self.folder != name:
            self.folder = None
            info = self.client.select_folder(name, readonly=True)
            self.folder, self.uidvalidity = name, int(info[b"UIDVALIDITY"])
        return self.uidvalidity

    def uids(self, name: str) -> tuple[int, list[int]]:
        """UIDVALIDITY and every UID of folder ``name``."""
        uidvalidity = self.examine(name)
        return uidvalidity, list(self.client.search("ALL"))

    def folders(self) -> dict[str, str]:
        """Selectable folders of the user's own namespace: display name -> server name."""
        client = self.client
        foreign: tuple[str, ...] = ()
        if b"NAMESPACE" in client.capabilities():
            _, other, shared = client.namespace()
            # other users' and shared folders are not this user's mail
            foreign = tuple(_text(prefix) for prefix, _ in (other or ()) + (shared or ()) if prefix)
        found: dict[str, str] = {}
        for flags, delimiter, name in client.list_folders():
            raw = _text(name)
            if {_text(f).lower() for f in flags} & UNSELECTABLE or raw.startswith(foreign):
                continue
            found[imap_folder(raw, _text(delimiter) if delimiter else None)] = raw
        return found


def mailbox_keys(client: IMAPClient, match: str) -> set[str]:
    """The identity keys (under ``match``) of every message of the logged-in user, any folder.

    What a store read of this mailbox would give the catalog, read through a
    connection the caller already has (inject's session: one login per user).
    """
    from restore.identity import facts_of

    whole = match == "strict"
    part, key = (WHOLE, WHOLE_KEY) if whole else (HEADER, HEADER_KEY)

    def identity(data: bytes, headers_only: bool) -> str:
        facts = facts_of(data, headers_only=headers_only)
        return {"auto": facts.key, "message-id": facts.mid_key}.get(match, facts.strict_key)

    encode, client.folder_encode = client.folder_encode, False
    try:
        session = MailboxSession(client)
        keys: set[str] = set()
        for name in session.folders().values():
            _, uids = session.uids(name)
            for start in range(0, len(uids), WHOLE_BATCH if whole else HEADER_BATCH):
                chunk = uids[start:start + (WHOLE_BATCH if whole else HEADER_BATCH)]
                response = client.fetch(chunk, [part])
                bodies = []
                for uid in chunk:
                    data = response.get(uid, {}).get(key)
                    if data is None:
                        continue
                    if not whole and lacks_message_id(data):
                        bodies.append(uid)      # identity needs its body
                    else:
                        keys.add(identity(data, headers_only=not whole))
                for at in range(0, len(bodies), WHOLE_BATCH):
                    fetched = client.fetch(bodies[at:at + WHOLE_BATCH], [WHOLE])
                    keys.update(identity(item[WHOLE_KEY], headers_only=False)
                                for item in fetched.values() if WHOLE_KEY in item)
        return keys
    finally:
        client.folder_encode = encode


def _text(value: bytes | str | int) -> str:
    """A name from a server reply; modified UTF-7 is ASCII, anything else is kept byte for byte."""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)
