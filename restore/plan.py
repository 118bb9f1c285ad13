"""The JSONL plan: one message to restore per line (SPEC.md "Plan file"), and its seal.

A plan is input too: it can be edited by hand or by scripts, so every line is
validated on read, and a bad line is reported with its number and reason.

Sealed plans. ``diff --plan`` writes a header object as the first line::

    {"mailrestore_plan": 2, "archives": ["eml:/srv/gateway"], "match": "auto", "made": "..."}

``inject`` reads only items of those archives (``Seal``): a line whose
source is another store, or whose item resolves outside its archive, or
whose item no longer has the line's fingerprint, is refused with the reason.
So a plan edited into ``"source": "eml:/etc", "ref": "shadow"`` writes
nothing. Scripts that filter a plan keep the header line (it has no
``user``); a plan without one is refused unless ``inject --archive`` names
the archives. Several headers (plans concatenated) add up their archives.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO

from restore import private
from restore.errors import RefusedItem, UsageError
from restore.identity import MATCH_MODES, is_same_message
from restore.mailnames import invalid_folder_reason, invalid_mailbox_reason
from restore.times import NoOffset, iso, parse_iso

PLAN_FORMAT = 2
HEADER_FIELD = "mailrestore_plan"
CHANGED = "archive item changed since the diff: run diff again"
NO_FINGERPRINT = "no fingerprint: the line cannot be checked against its archive item"


@dataclass(frozen=True, slots=True)
class PlanEntry:
    user: str
    folder: str
    source: str          # the archive STORE spec, e.g. "eml:/srv/gateway"
    ref: str             # re-opens the item inside source (mbox: PATH:OFFSET)
    received: float      # epoch seconds; ISO 8601 with offset in the file
    size: int
    message_id: str | None
    fingerprint: str
    digest: str = ""     # the fingerprint with the body (identity's strict key); "" if unknown

    def to_json(self) -> str:
        fields = {**asdict(self), "received": iso(self.received)}
        if not self.digest:
            del fields["digest"]
        return json.dumps(fields, ensure_ascii=False, separators=(", ", ": "))


@dataclass(frozen=True, slots=True)
class PlanHeader:
    """A plan's first line: the archives it was made from, and the diff's identity rule."""

    archives: tuple[str, ...]
    match: str = "auto"
    made: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps({HEADER_FIELD: PLAN_FORMAT, "archives": list(self.archives),
                           "match": self.match, "made": iso(self.made)}, ensure_ascii=False,
                          separators=(", ", ": "))


def _parse_header(obj: dict, where: str) -> PlanHeader:
    if obj.get(HEADER_FIELD) != PLAN_FORMAT:
        raise UsageError(f"{where}: plan format {obj.get(HEADER_FIELD)!r}, this mailrestore "
                         f"reads {PLAN_FORMAT}: make the plan again with diff --plan")
    archives = obj.get("archives")
    if not isinstance(archives, list) or not archives or not all(
            isinstance(a, str) and a for a in archives):
        raise UsageError(f"{where}: the header's archives must be a list of STOREs")
    match = obj.get("match", "auto")
    if match not in MATCH_MODES:
        raise UsageError(f"{where}: the header's match {match!r} is not one of {', '.join(MATCH_MODES)}")
    try:
        made = parse_iso(str(obj["made"])) if obj.get("made") else 0.0
    except ValueError:
        made = 0.0
    return PlanHeader(tuple(archives), match, made)


def parse_line(line: str, lineno: int = 0, name: str = "plan") -> PlanEntry | PlanHeader:
    """One plan line -> PlanEntry (or the header); raises UsageError naming the line and the reason."""
    where = f"{name}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object")
    try:    # JSON may escape a lone surrogate ("\\ud800"), which no file name, journal or report holds
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{where}: not valid text (a lone surrogate escaped in the JSON)") from None
    if HEADER_FIELD in obj:
        return _parse_header(obj, where)
    missing = [f for f in ("user", "source", "ref", "received") if not obj.get(f)]
    if missing:
        raise UsageError(f"{where}: missing field(s) {', '.join(missing)}")
    user = str(obj["user"])
    reason = invalid_mailbox_reason(user)
    if reason:
        raise UsageError(f"{where}: user {user!r} rejected: {reason}")
    folder = str(obj.get("folder") or "INBOX")
    reason = invalid_folder_reason(folder)
    if reason:
        raise UsageError(f"{where}: folder {folder!r} rejected: {reason}")
    try:
        received = parse_iso(str(obj["received"]))
    except NoOffset:
        raise UsageError(f"{where}: received {obj['received']!r} has no UTC offset") from None
    except ValueError:
        raise UsageError(f"{where}: received {obj['received']!r} is not an ISO 8601 time") from None
    try:
        size = int(obj.get("size") or 0)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{where}: size {obj.get('size')!r} is not a number") from None
    if size < 0:
        raise UsageError(f"{where}: size {size} is negative")
    mid = obj.get("message_id")
    return PlanEntry(
        user=user,
        folder=folder,
        source=str(obj["source"]),
        ref=str(obj["ref"]),
        received=received,
        size=size,
        message_id=str(mid) if mid else None,
        fingerprint=str(obj.get("fingerprint") or ""),
        digest=str(obj.get("digest") or ""),
    )


def read_plan(fh: IO[str], name: str = "plan",
              headers: list[PlanHeader] | None = None) -> Iterator[PlanEntry | UsageError]:
    """Yield entries; a bad line is yielded as its UsageError so the run goes on.

    Header lines are not yielded: they are appended to ``headers`` when given.
    """
    for lineno, line in enumerate(fh, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            got = parse_line(line, lineno, name)
        except UsageError as exc:
            yield exc
            continue
        if isinstance(got, PlanHeader):
            if headers is not None:
                headers.append(got)
        else:
            yield got


def write_plan(fh: IO[str], entries: Iterable[PlanEntry], header: PlanHeader | None = None) -> int:
    """Write the header line (when given), then one line per entry; the number of entries."""
    if header is not None:
        fh.write(header.to_json() + "\n")
    n = 0
    for entry in entries:
        fh.write(entry.to_json() + "\n")
        n += 1
    return n


@dataclass
class LoadedPlan:
    """A plan file read whole: its entries, bad lines (each names its line) and header."""

    entries: list[PlanEntry]
    bad: list[UsageError]
    header: PlanHeader | None


def load_plan(path: str) -> LoadedPlan:
    """Read a plan file; several header lines (plans concatenated) add up their archives."""
    entries: list[PlanEntry] = []
    bad: list[UsageError] = []
    headers: list[PlanHeader] = []
    try:
        with open(path, encoding="utf-8-sig") as fh:    # a byte-order mark, as Notepad writes, is no line
            for got in read_plan(fh, name=path, headers=headers):
                (bad if isinstance(got, UsageError) else entries).append(got)  # type: ignore[arg-type]
    except OSError as exc:
        raise UsageError(f"plan {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"plan {path}: not UTF-8 text (a plan is JSON Lines)") from None
    header = None
    if headers:
        if len({h.match for h in headers}) > 1:
            raise UsageError(f"plan {path}: its header lines name different --match rules "
                             f"({', '.join(sorted({h.match for h in headers}))}): inject them apart")
        archives = tuple(dict.fromkeys(a for h in headers for a in h.archives))
        header = PlanHeader(archives, headers[0].match, headers[0].made)
    return LoadedPlan(entries, bad, header)


def save_plan(path: str, entries: Iterable[PlanEntry], header: PlanHeader | None = None) -> int:
    """Write a plan atomically: a crash never leaves half a plan behind."""
    tmp = f"{path}.tmp"
    try:
        with private.open_text(tmp) as fh:
            n = write_plan(fh, entries, header)
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"--plan {path}: {exc.strerror or exc}") from None
    return n


class Seal:
    """Which archive items a plan may have inject read, and whether one still is what was planned.

    ``archives`` are the plan header's (or ``inject --archive``'s). A line's
    source must name one of them (the same store, however spelled); its item
    is then opened in that archive, which refuses a ref leading outside it,
    and must still have the line's fingerprint.
    """

    def __init__(self, archives: Sequence[str], match: str = "auto"):
        self.archives = tuple(archives)
        self.match = match
        self._by_identity = {archive_identity(a): a for a in self.archives}

    def archive_of(self, entry: PlanEntry) -> str:
        """The archive (as the header spells it) holding ``entry``; RefusedItem if none does."""
        if not entry.fingerprint:
            raise RefusedItem(entry.ref, NO_FINGERPRINT)
        try:
            identity = archive_identity(entry.source)
        except UsageError:
            identity = None
        archive = self._by_identity.get(identity) if identity else None
        if archive is None:
            raise RefusedItem(entry.ref, f"source {entry.source!r} is not one of the plan's archives")
        return archive

    @staticmethod
    def check(entry: PlanEntry, data: bytes) -> None:
        """RefusedItem unless ``data`` has the fingerprint (and digest) the diff recorded.

        Both are computed as the scan computes them: the fingerprint from
        Message-ID, Date and From (or the whole message), the digest from
        those and the body, so a body replaced under the same headers is caught.
        """
        if not is_same_message(data, entry.fingerprint, entry.digest):
            raise RefusedItem(entry.ref, CHANGED)


def archive_identity(spec: str) -> str:
    """What makes two spellings of a STORE the same archive: the real path, or the canonical URL."""
    from restore.stores import split_spec

    kind, where = split_spec(spec)
    if kind in ("imap", "imaps"):
        from restore.imapconn import parse_imap_url

        return parse_imap_url(where).canonical
    return f"{kind}:{os.path.realpath(where)}"
