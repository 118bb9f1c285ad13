"""Which users a run is about: --user MASK, --users FILE, --exclude-user MASK, --shard K/N.

One predicate, ``UserSelection``, answers "is this user's mail part of the
run?" everywhere a user appears: the archive's recipients when the diff
makes its (user, message) pairs, the mailboxes a replica lists or reads,
and the lines of a plan. A user is selected when

* no ``--user`` and no ``--users`` is given, or the user matches one of
  the ``--user`` masks or is named in the ``--users`` file, and
* the user matches no ``--exclude-user`` mask, and
* with ``--shard K/N``, the user's shard is K.

Masks are shell-style, as in doveadm's ``-u``: ``*`` any run of
characters, ``?`` one, ``[...]`` a set; ``*@example.com``, ``alice*``.
They are compared with addresses as mailrestore keeps them (SPEC.md): the
domain lowercased, the local part as written, so a mask's domain is
lowercased too and its local part is matched case-sensitively.

The shard of a user is a stable hash, so every user belongs to exactly one
of N shards whatever host computes it, and other tools can compute it too:
the first 8 bytes of the SHA-256 of the address as mailrestore keeps it
(``normalize_address``: the domain lowercased), UTF-8 encoded, read as a
big-endian unsigned integer, modulo N::

    int.from_bytes(hashlib.sha256(b"alice@example.com").digest()[:8], "big") % N

Mail with no recipient at all (the diff's "no recipient" unroutable pairs)
has the empty user: it belongs to the shard of ``b""``, so exactly one shard
reports it. Further criteria belong here as more fields, each narrowing
``__call__``; callers keep asking one question.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from restore.errors import UsageError
from restore.mailnames import normalize_address

_WILDCARD = re.compile(r"[*?\[]")


def normalize_mask(mask: str) -> str:
    """A mask spelt as addresses are kept: ``*@Example.COM`` -> ``*@example.com``."""
    return normalize_address(mask)


def is_pattern(mask: str) -> bool:
    return _WILDCARD.search(mask) is not None


@dataclass(frozen=True)
class UserSelection:
    include: tuple[str, ...] = ()                  # --user masks
    named: frozenset[str] = frozenset()            # --users FILE: users, one a line
    exclude: tuple[str, ...] = ()                  # --exclude-user masks
    named_from: str | None = None                  # the --users file, for messages
    shard: tuple[int, int] | None = None           # --shard K/N: (K, N)
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _exclude_regex: re.Pattern[str] | None = field(default=None, init=False, repr=False,
                                                   compare=False)

    def __post_init__(self) -> None:
        # One compiled alternation per side: a diff asks once per recipient.
        object.__setattr__(self, "_regex", _compile(self.include))
        object.__setattr__(self, "_exclude_regex", _compile(self.exclude))

    @classmethod
    def from_options(cls, users: Iterable[str] = (), users_file: str | None = None,
                     exclude: Iterable[str] = (), shard: str | None = None) -> UserSelection:
        """The selection the command line asks for; UsageError for an empty mask, an unreadable
        file or a shard that is not K/N."""
        include = tuple(_checked(m, "--user") for m in users)
        excluded = tuple(_checked(m, "--exclude-user") for m in exclude)
        named = frozenset(read_users_file(users_file)) if users_file else frozenset()
        return cls(include, named, excluded, users_file, parse_shard(shard) if shard else None)

    @property
    def everyone(self) -> bool:
        """True when nothing narrows the run: every user is selected."""
        return not (self.include or self.named_from or self.exclude or self.shard)

    @property
    def keeps_unaddressed(self) -> bool:
        """Whether mail with no recipient is part of the run: with no user filter, in one shard."""
        if self.include or self.named_from or self.exclude:
            return False
        return self.shard is None or shard_of("", self.shard[1]) == self.shard[0]

    def __call__(self, user: str) -> bool:
        if self.include or self.named_from:
            if user not in self.named and not (self._regex and self._regex.fullmatch(user)):
                return False
        if self.shard is not None and shard_of(user, self.shard[1]) != self.shard[0]:
            return False
        return not (self._exclude_regex and self._exclude_regex.fullmatch(user))

    def listed(self) -> list[str] | None:
        """The users this selection names one by one, or None when it is open-ended.

        What a store that cannot list its users (IMAP) can read: the --users
        file and the --user values without wildcards, less the excluded ones.
        """
        if not (self.include or self.named_from) or any(is_pattern(m) for m in self.include):
            return None
        return sorted(u for u in self.named | set(self.include) if self(u))

    def select(self, users: Iterable[str]) -> list[str]:
        return [u for u in users if self(u)]

    def describe(self) -> str:
        """The selection as the options that made it, for reports: ``--user '*@a.org'``."""
        words = [f"--user {m}" for m in self.include]
        if self.named_from:
            words.append(f"--users {self.named_from}")
        words += [f"--exclude-user {m}" for m in self.exclude]
        if self.shard:
            words.append(f"--shard {self.shard_label}")
        return " ".join(words) or "every user"

    @property
    def shard_label(self) -> str | None:
        """``K/N`` as given to --shard, None without one (the reports' ``shard`` field)."""
        return f"{self.shard[0]}/{self.shard[1]}" if self.shard else None


def _compile(masks: tuple[str, ...]) -> re.Pattern[str] | None:
    if not masks:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(m)})" for m in masks))


def _checked(mask: str, option: str) -> str:
    normalized = normalize_mask(mask)
    if not normalized:
        raise UsageError(f"{option} {mask!r}: empty mask")
    return normalized


EVERYONE = UserSelection()


def shard_of(user: str, shards: int) -> int:
    """The shard (0 to ``shards`` - 1) ``user`` belongs to; see the module docstring."""
    digest = hashlib.sha256(normalize_address(user).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 0 <= K < N; UsageError otherwise."""
    k, slash, n = text.strip().partition("/")
    if not (slash and k.isdigit() and n.isdigit()) or not 0 <= int(k) < int(n):
        raise UsageError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/4")
    return int(k), int(n)


def read_users_file(path: str) -> list[str]:
    """Users one a line; ``#`` starts a comment; blank lines are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"--users {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--users {path}: not UTF-8 text") from None
    users = [normalize_address(line.split("#", 1)[0]) for line in lines]
    return [u for u in users if u]
