"""Who an archive message belongs to: path variables, envelope headers, alias map.

Recipients are compared with angle brackets stripped and the domain
lowercased; the local part is kept as written. The alias map is applied once
(no chains). A recipient that could escape a mail root when put into a path
(``/``, ``..``, NUL, control characters, empty parts) is rejected with a
reason and never used in a path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from restore.errors import UsageError
from restore.mailnames import invalid_mailbox_reason, normalize_address

DEFAULT_RECIPIENT_HEADERS = ("X-Envelope-To", "Envelope-To", "X-Original-To", "Delivered-To")

# One bare address, as MTAs write envelope headers: no need for the full parser.
_PLAIN_ADDRESS = re.compile(r'\s*<?([^\s<>,;:"()\[\]\\@]+@[^\s<>,;:"()\[\]\\@]+)>?\s*')


def header_addresses(values: Iterable[str]) -> list[str]:
    """Addresses named by envelope-header values (comma lists, <brackets>, comments)."""
    values = [v for v in values if v]
    plain = [_PLAIN_ADDRESS.fullmatch(v) for v in values]
    if all(plain):
        return [normalize_address(m.group(1)) for m in plain if m]
    # Imported here, not at the top: most envelope headers are plain
    # (see _general_date in identity).
    from email.utils import getaddresses

    out: list[str] = []
    for _name, addr in getaddresses(values):
        if addr:
            out.append(normalize_address(addr))
    return out


@dataclass(frozen=True, slots=True)
class Rejected:
    address: str
    reason: str


class AliasMap:
    """``alias@dom  user@dom`` lines; ``#`` comments. Applied once, never chained."""

    def __init__(self, mapping: Mapping[str, str] | None = None):
        self.mapping = dict(mapping or {})

    @classmethod
    def load(cls, path: str | Path) -> AliasMap:
        mapping: dict[str, str] = {}
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UsageError(f"--alias-map {path}: {exc.strerror or exc}") from None
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) != 2:
                raise UsageError(
                    f"--alias-map {path}:{lineno}: expected 'alias@domain user@domain'")
            mapping[normalize_address(fields[0])] = normalize_address(fields[1])
        return cls(mapping)

    def __call__(self, address: str) -> str:
        return self.mapping.get(address, address)

    def __bool__(self) -> bool:
        return bool(self.mapping)


def resolve_users(
    path_user: str | None,
    envelope: Mapping[str, list[str]],
    headers: Iterable[str] = DEFAULT_RECIPIENT_HEADERS,
    aliases: AliasMap | None = None,
) -> tuple[list[str], list[Rejected]]:
    """The users an archive message belongs to, and the recipients rejected.

    ``envelope`` maps lower-cased header names to their values. Path variables
    win; otherwise the first header of ``headers`` present names the users.
    """
    aliases = aliases or AliasMap()
    rejected: list[Rejected] = []
    if path_user:
        candidates = [normalize_address(path_user)]
    else:
        candidates = []
        empty: list[Rejected] = []
        for name in headers:
            values = envelope.get(name.lower())
            if values:
                candidates = header_addresses(values)
                if candidates:
                    break
                # present but naming nobody ("Delivered-To: <>"): said if no later header names one
                empty.append(Rejected(values[0], f"{name} names no address"))
        if not candidates:
            rejected = empty[:1]
    users: list[str] = []
    for addr in candidates:
        user = aliases(addr)
        reason = invalid_mailbox_reason(user)
        if reason:
            rejected.append(Rejected(user, reason))
        elif user not in users:
            users.append(user)
    return users, rejected
