"""Which users a run is about: ``--user MASK``, ``--users FILE``, ``--exclude-user MASK``.

One predicate, ``UserSelection``, answers "is this user's mail part of the
run?" everywhere a user appears: the archive's recipients when the diff
makes its (user, message) pairs, the mailboxes a replica lists or reads,
and the lines of a plan. A user is selected when

* no ``--user`` and no ``--users`` is given, or the user matches one of
  the ``--user`` masks or is named in the ``--users`` file, and
* the user matches no ``--exclude-user`` mask.

Masks are shell-style, as in doveadm's ``-u``: ``*`` any run of
characters, ``?`` one, ``[...]`` a set; ``*@example.com``, ``alice*``.
They are compared with addresses as mailrestore keeps them (SPEC.md): the
domain lowercased, the local part as written, so a mask's domain is
lowercased too and its local part is matched case-sensitively.

Further criteria (a shard of a stable hash of the user, say) belong here as
more fields, each narrowing ``__call__``; callers keep asking one question.
"""

from __future__ import annotations

import fnmatch
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
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _exclude_regex: re.Pattern[str] | None = field(default=None, init=False, repr=False,
                                                   compare=False)

    def __post_init__(self) -> None:
        # One compiled alternation per side: a diff asks once per recipient.
        object.__setattr__(self, "_regex", _compile(self.include))
        object.__setattr__(self, "_exclude_regex", _compile(self.exclude))

    @classmethod
    def from_options(cls, users: Iterable[str] = (), users_file: str | None = None,
                     exclude: Iterable[str] = ()) -> UserSelection:
        """The selection the command line asks for; UsageError for an empty mask or an unreadable file."""
        include = tuple(_checked(m, "--user") for m in users)
        excluded = tuple(_checked(m, "--exclude-user") for m in exclude)
        named = frozenset(read_users_file(users_file)) if users_file else frozenset()
        return cls(include, named, excluded, users_file)

    @property
    def everyone(self) -> bool:
        """True when nothing narrows the run: every user is selected."""
        return not (self.include or self.named_from or self.exclude)

    def __call__(self, user: str) -> bool:
        if self.include or self.named_from:
            if user not in self.named and not (self._regex and self._regex.fullmatch(user)):
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
        return " ".join(words) or "every user"


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
