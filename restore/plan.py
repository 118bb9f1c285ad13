"""The JSONL plan: one message to restore per line (SPEC.md "Plan file").

A plan is input too: it can be edited by hand or by scripts, so every line is
validated on read, and a bad line is reported with its number and reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import IO

from restore.errors import UsageError
from restore.mailnames import invalid_folder_reason, invalid_mailbox_reason
from restore.times import NoOffset, iso, parse_iso


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

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "received": iso(self.received)}, ensure_ascii=False,
                          separators=(", ", ": "))


def parse_line(line: str, lineno: int = 0, name: str = "plan") -> PlanEntry:
    """One plan line -> PlanEntry; raises UsageError naming the line and the reason."""
    where = f"{name}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object")
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
    except (TypeError, ValueError):
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
    )


def read_plan(fh: IO[str], name: str = "plan") -> Iterator[PlanEntry | UsageError]:
    """Yield entries; a bad line is yielded as its UsageError so the run goes on."""
    for lineno, line in enumerate(fh, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            yield parse_line(line, lineno, name)
        except UsageError as exc:
            yield exc


def write_plan(fh: IO[str], entries: Iterable[PlanEntry]) -> int:
    n = 0
    for entry in entries:
        fh.write(entry.to_json() + "\n")
        n += 1
    return n


def load_plan(path: str) -> tuple[list[PlanEntry], list[UsageError]]:
    """A plan file's entries, and its bad lines (each names its line and reason)."""
    entries: list[PlanEntry] = []
    bad: list[UsageError] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for got in read_plan(fh, name=path):
                (bad if isinstance(got, UsageError) else entries).append(got)  # type: ignore[arg-type]
    except OSError as exc:
        raise UsageError(f"plan {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"plan {path}: not UTF-8 text (a plan is JSON Lines)") from None
    return entries, bad


def save_plan(path: str, entries: Iterable[PlanEntry]) -> int:
    """Write a plan atomically: a crash never leaves half a plan behind."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            n = write_plan(fh, entries)
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"--plan {path}: {exc.strerror or exc}") from None
    return n
