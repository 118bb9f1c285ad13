"""Names that become paths or wire text: addresses, mailboxes, folders, Maildir files.

Mail names come from strangers (an envelope header, a plan edited by hand,
a directory on a replica), so every name that reaches a path is checked
here first: ``invalid_mailbox_reason`` and ``invalid_folder_reason`` say
why a name may not be used, and ``is_inside`` is the one "does this path
stay under its root" test the stores and the Maildir target share.

Folders are "/"-separated text inside mailrestore ("Archive/2017"). On disk
a Maildir++ folder is ``.Archive.2017`` with non-ASCII in IMAP modified
UTF-7 (RFC 3501 5.1.3, via ``imapclient.imap_utf7``); an mbox file
``Sent.mbox.gz`` is folder "Sent"; an IMAP server names levels with its own
delimiter.

Dovecot-style path templates (``/var/vmail/%d/%n/Maildir``): ``%u`` is the
full address, ``%n`` its local part, ``%d`` its domain, ``%%`` a literal
``%``. A template is split at the first path component holding a variable:
the part before is the fixed ``root``; each later component is either a
literal name or a pattern that captures variables from a directory name.
Readers walk the tree component by component (so a directory name is
matched whole and never interpreted as a path), and writers ``expand`` a
user back into a path. A user is ``%u`` when the template has it, else
``%n@%d``, else ``%n``.
"""

from __future__ import annotations

import itertools
import os
import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from restore.errors import UsageError

MAX_ADDRESS = 254
MAX_NAME = 255          # bytes in one directory entry's name


# -- file names that are not UTF-8 ------------------------------------------------
#
# A file name is bytes; Python lists it as text with each byte that is not
# UTF-8 as a lone surrogate (os.fsdecode), which SQLite, JSON and a terminal
# all refuse. Every ref, folder and location a store hands out is therefore
# the name's *text*: such a byte written ``\xff``, and a backslash that would
# read as one written ``\x5c``. ``name_text`` and ``fs_name`` are exact
# inverses, and a name that is UTF-8 without such a backslash (nearly every
# name) is its own text.

_ESCAPED = re.compile(r"\\x(5c|[89a-f][0-9a-f])")
_NEEDS_ESCAPE = re.compile(r"[\udc80-\udcff]|\\(?=x(?:5c|[89a-f][0-9a-f]))")


def name_text(name: str) -> str:
    """A file name (as ``os.listdir`` gives it) as text that SQLite, JSON and terminals accept."""
    if "\\" not in name and (name.isascii() or not _has_surrogate(name)):
        return name
    return _NEEDS_ESCAPE.sub(lambda m: "\\x5c" if m.group() == "\\"
                             else f"\\x{ord(m.group()) - 0xDC00:02x}",
                             name)


def fs_name(text: str) -> str:
    """The file name ``name_text`` made ``text`` from."""
    if "\\" not in text:
        return text
    return _ESCAPED.sub(
        lambda m: "\\" if m.group(1) == "5c" else chr(0xDC00 + int(m.group(1), 16)), text
    )


def _has_surrogate(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# -- addresses and mailboxes ---------------------------------------------------

def normalize_address(addr: str) -> str:
    """``<Alice@Example.COM>`` -> ``Alice@example.com``."""
    addr = addr.strip().strip("<>").strip()
    local, at, domain = addr.rpartition("@")
    if not at:
        return addr
    return f"{local}@{domain.lower()}"


def invalid_mailbox_reason(user: str) -> str | None:
    """Why ``user`` may not name a mailbox (it could escape the mail root), or None."""
    if not user:
        return "empty address"
    if len(user) > MAX_ADDRESS:
        return f"longer than {MAX_ADDRESS} characters"
    if "\x00" in user:
        return "contains a NUL byte"
    if any(unicodedata.category(c) == "Cc" for c in user):   # C0, DEL and C1 (U+0080-U+009F)
        return "contains a control character"
    if not user.isascii() and _has_surrogate(user):    # a directory name that is not UTF-8
        return "not UTF-8"
    if "/" in user or "\\" in user:
        return "contains a path separator"
    if ".." in user:
        return "contains '..'"
    if any(c.isspace() for c in user):
        return "contains white space"
    local, at, domain = user.rpartition("@")
    if at and (not local or not domain):
        return "empty local part or domain"
    parts = (local, domain) if at else (user,)
    if any(p.startswith(".") for p in parts):
        return "a part starts with '.'"
    return None


def imap_login_name(user: str, *, utf8: bool) -> str:
    """``user`` as an IMAP server can take it in a login; ValueError with the reason if it cannot.

    A server with UTF8=ACCEPT (RFC 6855) takes the address as it is; else a
    domain that is not ASCII goes in its IDNA form (``exämple.com`` ->
    ``xn--exmple-cua.com``), as mail servers name such domains, and a local
    part that is not ASCII has no name the server could take.
    """
    if utf8 or user.isascii():
        return user
    local, at, domain = user.rpartition("@")
    if not at or not local.isascii():
        raise ValueError("the local part is not ASCII and the server offers no UTF8=ACCEPT")
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError as exc:
        raise ValueError(f"{domain!r} is not a valid domain name ({exc})") from None


# -- folders -------------------------------------------------------------------

def invalid_folder_reason(folder: str) -> str | None:
    """Why a folder name may not be used in a path, or None if it is safe."""
    if not folder or folder.strip() != folder:
        return "empty or padded with spaces"
    if any(unicodedata.category(c) == "Cc" for c in folder):   # C0, DEL and C1
        return "contains a control character"
    parts = folder.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "empty, '.' or '..' path component"
    if any(p.startswith(".") for p in parts):
        return "component starts with '.'"
    return None


def encode_mutf7(name: str) -> str:
    """IMAP modified UTF-7 (RFC 3501 5.1.3), the encoding of Maildir++ folder names."""
    if "&" not in name and all(" " <= c <= "~" for c in name):
        return name     # printable ASCII stands for itself
    # Imported here: imapclient is a large import, and most folder names never need it.
    from imapclient import imap_utf7

    return imap_utf7.encode(name).decode("ascii")


# Every shift ("&") closed by "-": imap_utf7 would decode an unclosed one anyway.
_SHIFTS_CLOSED = re.compile(r"(?:[^&]|&[A-Za-z0-9+,]*-)*")


def decode_mutf7(name: str) -> str:
    """Modified UTF-7 to text; a name that is not well-formed is kept as written.

    Lenient because the names come from disks and servers that other
    software wrote: a Maildir folder named in UTF-8 or with a stray "&" is
    still a folder, shown as it is rather than refused.
    """
    if "&" not in name or not name.isascii() or not _SHIFTS_CLOSED.fullmatch(name):
        return name
    from imapclient import imap_utf7  # imported here: see encode_mutf7

    try:
        decoded = imap_utf7.decode(name.encode("ascii"))
        decoded.encode("utf-8")     # a lone surrogate is no text
    except (UnicodeError, ValueError):
        return name
    return decoded


def maildir_folder(dirname: str) -> str:
    """``.Archive.2017`` -> ``Archive/2017``; the Maildir itself (``""``) -> ``INBOX``."""
    if not dirname:
        return "INBOX"
    return "/".join(decode_mutf7(part) for part in dirname.lstrip(".").split("."))


def maildir_dirname(folder: str) -> str | None:
    """Maildir++ directory of ``folder`` (None for INBOX, the Maildir itself).

    Raises ValueError with the reason when the name is unsafe.
    """
    reason = invalid_folder_reason(folder)
    if reason:
        raise ValueError(reason)
    if folder.upper() == "INBOX":
        return None
    name = "." + ".".join(encode_mutf7(part) for part in folder.split("/"))
    if len(name.encode()) > MAX_NAME:
        raise ValueError("folder name too long for a directory name")
    return name


def mbox_folder(rel: str) -> str:
    """``Sent.mbox.gz`` -> ``Sent``; ``inbox`` -> ``INBOX``."""
    name = rel
    for suffix in (".gz", ".zst", ".mbox"):
        name = name.removesuffix(suffix)
    return "INBOX" if name.lower() == "inbox" else name


def imap_folder(raw: str, delimiter: str | None) -> str:
    """A server's folder name as text with "/" between levels.

    ``Archiv.&AMQ-rger`` -> ``Archiv/Ärger``.
    """
    if raw.upper() == "INBOX":
        return "INBOX"
    parts = raw.split(delimiter) if delimiter else [raw]
    return "/".join(decode_mutf7(part) for part in parts)


# -- Maildir file names --------------------------------------------------------

INFO_SEPARATOR = ":2,"
# IMAP system flags that Maildir stores as info letters (kept sorted by letter).
FLAG_LETTERS = {"\\draft": "D", "\\flagged": "F", "\\answered": "R", "\\seen": "S",
                "\\deleted": "T"}

_deliveries = itertools.count(1)


def message_stem(name: str) -> str:
    """A message file name without its ``:2,FLAGS`` suffix: what a flag change keeps."""
    return name.partition(INFO_SEPARATOR)[0]


def unique_name(size: int) -> str:
    """A Maildir file name never used: ``time.M<usec>P<pid>Q<n>R<rand>.<host>,S=<size>``."""
    import socket  # here: only a Maildir delivery needs it, not every command's start

    now = time.time()
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072").replace(",", r"\054")
    return (
        f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_deliveries)}"
        f"R{os.urandom(6).hex()}.{host},S={size}"
    )


def info_suffix(flags: Sequence[str], keyword_letters: Mapping[str, str] | None = None
                ) -> tuple[str, list[str]]:
    """``":2,FSa"`` for the flags Maildir can store, and the flags it cannot.

    ``keyword_letters``: the letter (a..z) of each keyword in the folder's
    ``dovecot-keywords``; a keyword without one cannot be stored.
    """
    letters, unknown = set(), []
    keyword_letters = keyword_letters or {}
    for flag in flags:
        letter = FLAG_LETTERS.get(flag.lower()) or keyword_letters.get(flag)
        if letter:
            letters.add(letter)
        else:
            unknown.append(flag)
    return (":2," + "".join(sorted(letters)) if letters else ""), unknown


# An IMAP keyword is an atom (RFC 3501): printable ASCII but ( ) { % * " \ ] and space.
_KEYWORD = re.compile(r"[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]+")


def keyword_problem(name: str) -> str | None:
    """Why ``name`` cannot be an IMAP keyword, or None when it can."""
    if not name:
        return "empty"
    if name.startswith("\\"):
        return "a system flag, not a keyword"
    if _KEYWORD.fullmatch(name):
        return None
    bad = next(ch for ch in name if not _KEYWORD.fullmatch(ch))
    return (f"{bad!r} is not allowed (a keyword is printable ASCII without spaces "
            'and ( ) { % * " \\ ])')


def is_keyword(flag: str) -> bool:
    return keyword_problem(flag) is None


# -- paths ---------------------------------------------------------------------

def is_inside(real: str, real_root: str) -> bool:
    """Whether ``real`` (symlinks resolved) is ``real_root`` or lies under it."""
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


VARIABLE = re.compile(r"%(.)")
# A local part or domain never holds '@' in a directory name we accept;
# a full address may.
CAPTURE = {"u": r"[^/]+", "n": r"[^/@]+", "d": r"[^/@]+"}


def is_template(path: str) -> bool:
    """Whether ``path`` holds a user variable (``%u``, ``%n``, ``%d``)."""
    return any(m.group(1) in CAPTURE for m in VARIABLE.finditer(path))


@dataclass(frozen=True, slots=True)
class Component:
    """One path component below the root: a literal name or a capturing pattern."""

    literal: str | None
    pattern: re.Pattern[str] | None

    def match(self, name: str) -> dict[str, str] | None:
        """Variables captured from a directory ``name``, or None if it does not fit."""
        if self.pattern is None:
            return {} if name == self.literal else None
        m = self.pattern.fullmatch(name)
        return {k: v for k, v in m.groupdict().items() if v is not None} if m else None


class PathTemplate:
    """A per-user mail path template (see the module docstring)."""

    def __init__(self, template: str):
        self.template = template
        for m in VARIABLE.finditer(template):
            if m.group(1) not in CAPTURE and m.group(1) != "%":
                raise UsageError(f"{template}: unsupported variable %{m.group(1)} (use %u, %n, %d)")
        names = {m.group(1) for m in VARIABLE.finditer(template)}
        if not names & {"u", "n"}:
            raise UsageError(f"{template}: a per-user template needs %u or %n")
        parts = template.split("/")
        first = next(i for i, part in enumerate(parts) if is_template(part))
        fixed = "/".join(parts[:first]).replace("%%", "%")
        self.root = fixed or ("/" if template.startswith("/") else ".")
        self.components = [_component(part) for part in parts[first:] if part]

    def user(self, variables: dict[str, str]) -> str:
        """The user named by the variables captured along one path."""
        if "u" in variables:
            return normalize_address(variables["u"])
        if "d" in variables:
            return normalize_address(f"{variables['n']}@{variables['d']}")
        return variables["n"]

    def expand(self, user: str) -> str:
        """The path of ``user``'s mailbox; raises ValueError when ``user`` cannot be one."""
        reason = invalid_mailbox_reason(user)
        if reason:
            raise ValueError(f"{user!r}: {reason}")
        local, at, domain = user.rpartition("@")
        if not at:
            local = user
        if "%d" in self.template and not domain:
            raise ValueError(f"{user!r}: no domain, but the path template needs %d")
        values = {"u": user, "n": local, "d": domain, "%": "%"}
        return VARIABLE.sub(lambda m: values[m.group(1)], self.template)

    def __repr__(self) -> str:
        return f"PathTemplate({self.template!r})"


def _component(part: str) -> Component:
    if not is_template(part):
        return Component(part.replace("%%", "%"), None)
    regex, seen = [], set()
    for piece in re.split(r"(%.)", part):
        if len(piece) == 2 and piece[0] == "%" and piece[1] in CAPTURE:
            name = piece[1]
            regex.append(f"(?P={name})" if name in seen else f"(?P<{name}>{CAPTURE[name]})")
            seen.add(name)
        else:
            regex.append(re.escape(piece.replace("%%", "%")))
    return Component(None, re.compile("".join(regex)))
