"""The incident's memory: the window(s) a target's journal remembers, and which journal that is.

Detection looks at the replica as it is now, and after a restore the gap is
filled: looked for again, it is gone, and what users delete later could
pass for another one. So the first diff or restore that uses a target's
journal records the window(s) it used, and later diff, restore and audit
runs against that journal reuse them, unless --since/--until are given; a
restore given them remembers its own window(s) instead, since a re-run must
keep to what was restored.

Which journal: ``--state FILE``; else the default journal of ``--to
TARGET``; else (diff and audit) that of the replica, which is the usual
target of a restore; a target is named by its canonical spelling
(``restore.targets.canonical_target``), as inject's journal is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from restore.errors import UsageError
from restore.journal import Journal
from restore.journalfile import default_journal_path
from restore.targets import canonical_target
from restore.window import Window


@dataclass
class Memory:
    """The journal a run uses, and the window(s) it remembered when the run began."""

    path: Path | None           # None: no journal (a replica that cannot be a target: mbox, eml)
    target: str | None          # its canonical target; None: a --state FILE of any target
    windows: list[Window]
    replaced: list[Window] = field(default_factory=list)    # remembered before a run replaced them

    @classmethod
    def of(cls, state: str | None, target: str | None, replica: str) -> Memory:
        """Read what the run's journal remembers (nothing when it does not exist yet)."""
        owner = canonical_target(target) if target else None
        if state:
            path = Path(state)
        else:
            if owner is None:
                try:
                    owner = canonical_target(replica)
                except UsageError:
                    return cls(None, None, [])
            path = default_journal_path(owner)
        if not path.exists():
            return cls(path, owner, [])
        journal = Journal(path, owner, readonly=True)
        try:
            return cls(path, owner, journal.remembered_windows())
        finally:
            journal.close()

    def record(self, windows: list[Window], *, by: str, at: float) -> list[Window]:
        """Remember the ``windows`` a run used, in place of what was remembered.

        Returns those not remembered before. The run started ``at``: what it
        saw on the replica counts as seen since the window was remembered.
        """
        known = {(w.since, w.until) for w in self.windows}
        used = [w for w in windows if not w.empty]
        new = [w for w in used if (w.since, w.until) not in known]
        if self.path is not None and (new or len(used) != len(self.windows)):
            journal = Journal(self.path, self.target)
            try:
                journal.remember_windows(used, by=by, at=at)
                self.replaced = [w for w in self.windows
                                 if (w.since, w.until) not in {(u.since, u.until) for u in used}]
                self.windows = journal.remembered_windows()
            finally:
                journal.close()
        return new
