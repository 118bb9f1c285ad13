"""``--report FILE.csv``: one row per user, for support staff and their spreadsheets.

Columns: user, missing, restored, already present, failed, unroutable, and
the first and last received time of the user's mail in the gap. A diff
fills what it knows (restored and failed stay empty: nothing was written);
an inject fills what the plan and the run know (unroutable stays empty: a
plan holds only routable mail); a restore fills every column.

The file follows RFC 4180 (comma, CRLF, double quotes where needed), in
UTF-8, with a header row. Times are UTC as ``2017-12-08 21:13:05``, which
spreadsheets read as a date. A user name comes from mail headers: one that
a spreadsheet would take for a formula (``=``, ``+``, ``-``, ``@``) is
written with a leading ``'``, so opening the report never runs anything.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from restore import private
from restore.errors import UsageError
from restore.times import plain

if TYPE_CHECKING:
    from restore.diff import DiffResult
    from restore.inject import InjectResult
    from restore.plan import PlanEntry

HEADER = ("user", "missing", "restored", "already present", "failed", "unroutable",
          "first received (UTC)", "last received (UTC)")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class UserRow:
    user: str
    missing: int | None = None
    restored: int | None = None
    already_present: int | None = None
    failed: int | None = None
    unroutable: int | None = None
    first: float | None = None        # received time of the user's first and last mail in the gap
    last: float | None = None

    def cells(self) -> list[str]:
        numbers = (self.missing, self.restored, self.already_present, self.failed, self.unroutable)
        return [_text(self.user), *("" if n is None else str(n) for n in numbers),
                _time(self.first), _time(self.last)]


Rows = dict[str, UserRow]


def from_diff(result: DiffResult) -> Rows:
    """Every user the diff paired: missing, present, unroutable, and the span of the missing."""
    rows: Rows = {}
    for user, counts in result.users.items():
        rows[user] = UserRow(user, missing=counts["missing"], already_present=counts["present"],
                             unroutable=0)
    for problem in result.problems:
        if problem.kind == "unroutable" and problem.user is not None:
            row = rows.setdefault(problem.user, UserRow(problem.user, 0, None, 0, None, 0))
            row.unroutable = (row.unroutable or 0) + 1
    for found in result.missing_by_user(show_ids=0):
        rows[found["user"]].first, rows[found["user"]].last = found["oldest"], found["newest"]
    return rows


def from_plan(entries: Iterable[PlanEntry]) -> Rows:
    """Per user of a plan: its messages (missing) and the span of their received times."""
    rows: Rows = {}
    for entry in entries:
        row = rows.setdefault(entry.user, UserRow(entry.user, missing=0))
        row.missing = (row.missing or 0) + 1
        row.first = entry.received if row.first is None else min(row.first, entry.received)
        row.last = entry.received if row.last is None else max(row.last, entry.received)
    return rows


def add_inject(rows: Rows, result: InjectResult) -> Rows:
    """What a run wrote per user; a dry run restored nothing and failed nothing yet."""
    for user, counts in result.users.items():
        row = rows.setdefault(user, UserRow(user))
        row.already_present = (row.already_present or 0) + counts.already_present
        if not result.dry_run:
            row.restored = counts.appended
            row.failed = counts.failed
    if not result.dry_run:
        for row in rows.values():
            row.restored = row.restored or 0
            row.failed = row.failed or 0
    return rows


def write(path: str, rows: Mapping[str, UserRow]) -> int:
    """Write the report, users in order; the number of user rows."""
    try:
        with private.open_text(path, newline="") as fh:    # csv writes its own line ends
            out = csv.writer(fh)        # the excel dialect: RFC 4180's commas, quotes and CRLF
            out.writerow(HEADER)
            out.writerows(rows[user].cells() for user in sorted(rows))
    except OSError as exc:
        raise UsageError(f"--report {path}: {exc.strerror or exc}") from None
    return len(rows)


def _text(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_START) else value


def _time(ts: float | None) -> str:
    return "" if ts is None else plain(ts)
