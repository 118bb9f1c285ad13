"""Store readers: ``open_store("maildir:/var/vmail/%d/%n/Maildir")`` and friends."""

from __future__ import annotations

import os

from restore.errors import UsageError
from restore.stores.base import Item, Store, StoreOptions, Unit, Unreadable

__all__ = ["Item", "Store", "StoreOptions", "Unit", "Unreadable", "absolute_spec", "item_location",
           "open_store", "split_spec"]

KINDS = ("maildir", "mbox", "eml", "imap", "imaps")


def split_spec(spec: str) -> tuple[str, str]:
    """``"eml:/srv/gw"`` -> ``("eml", "/srv/gw")``; IMAP URLs keep their whole text."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise UsageError(
            f"bad STORE {spec!r}: expected maildir:PATH, mbox:PATH, eml:PATH, "
            "imap://[LOGIN@]HOST[:PORT] or imaps://[LOGIN@]HOST[:PORT]"
        )
    if kind in ("imap", "imaps"):
        if not rest.startswith("//") or len(rest) <= 2:
            raise UsageError(f"bad STORE {spec!r}: expected {kind}://[LOGIN@]HOST[:PORT]")
        return kind, spec
    return kind, rest


def absolute_spec(spec: str) -> str:
    """The spec with a file store's path made absolute, so a plan works from any directory."""
    kind, where = split_spec(spec)
    if kind in ("imap", "imaps") or os.path.isabs(where):
        return spec
    return f"{kind}:{os.path.abspath(where)}"


def open_store(spec: str, options: StoreOptions | None = None) -> Store:
    """Open a store for reading; raises UsageError for bad syntax, StoreError if absent."""
    kind, where = split_spec(spec)
    options = options or StoreOptions()
    store: Store
    if kind == "maildir":
        from restore.stores.maildir import MaildirStore

        store = MaildirStore(spec, where, options.selection)
    elif kind == "mbox":
        from restore.stores.mbox import MboxStore

        store = MboxStore(spec, where)
    elif kind == "eml":
        from restore.stores.eml import EmlStore

        store = EmlStore(spec, where)
    else:
        from restore.stores.imap import ImapStore

        store = ImapStore(spec, options)
    store.max_message_size = options.max_message_size
    return store


def item_location(spec: str, location: str) -> str:
    """An item's location an administrator can open: a path where the store has one."""
    kind, root = split_spec(spec)
    if kind in ("maildir", "mbox", "eml") and "%" not in root and os.path.isdir(root):
        return os.path.join(root, location)
    return f"{location} (in {spec})"
