"""Take a run back: remove exactly the messages one inject or restore run appended.

The journal says what run RUN appended and where (``Journal.written``). For
each of them, user by user and folder by folder, the target checks that the
message is still where the run put it and still has its fingerprint, and
only then removes it (``TargetSession.remove``). A message a user has since
moved, changed or deleted is left alone and listed; mail the run did not
write is never touched, since nothing else is ever looked up. Then the
folders the run created are removed again if they are empty, newest first,
so the target returns to what it was before the run.

Undo is a run of its own in the journal: the rows it removed become
``undone``, so a second undo of the same run removes nothing, and injecting
the plan again writes the messages again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby

from restore.errors import PermanentError, Problem, TargetError, UsageError
from restore.journal import Journal, RunInfo, RunStatus, Written
from restore.targets.base import Target, TargetSession

BATCH = 200


@dataclass
class UndoResult:
    run: int                       # the run taken back
    dry_run: bool = False
    removed: int = 0               # messages removed (with dry_run: that would be)
    folders: list[str] = field(default_factory=list)   # created folders removed
    left: list[Problem] = field(default_factory=list)  # left alone, and why
    journal: str = ""
    undo_run: int | None = None    # the journal's id of this undo

    def as_dict(self) -> dict[str, object]:
        return {"run": self.run, "dry_run": self.dry_run, "removed": self.removed,
                "folders_removed": self.folders, "left": len(self.left),
                "journal": self.journal or None, "undo_run": self.undo_run,
                "problems": [p.as_inject_dict() for p in self.left]}


def undo(journal: Journal, target: Target, run_id: int, info: RunInfo, *,
         dry_run: bool = False) -> UndoResult:
    """Remove what run ``run_id`` appended to ``target``; see the module docstring."""
    record = journal.run(run_id)
    if record is None:
        raise UsageError(
            f"journal {journal.path} has no run {run_id} (mailrestore runs lists them)")
    if record.command == "undo":
        raise UsageError(f"run {run_id} is an undo: it appended nothing to take back")
    result = UndoResult(run_id, dry_run, journal=str(journal.path))
    if not dry_run:
        result.undo_run = journal.begin_run(info)
    try:
        _remove_messages(journal, target, result)
        _remove_folders(journal, target, result)
    except BaseException as exc:
        if result.undo_run is not None:
            interrupted = isinstance(exc, KeyboardInterrupt)
            journal.end_run(result.undo_run,
                            RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED,
                            130 if interrupted else getattr(exc, "exit_code", 70),
                            removed=result.removed, left_alone=len(result.left))
        raise
    if result.undo_run is not None:
        journal.end_run(result.undo_run, RunStatus.FAILED if result.left else RunStatus.DONE,
                        1 if result.left else 0, removed=result.removed,
                        left_alone=len(result.left))
    return result


def _remove_messages(journal: Journal, target: Target, result: UndoResult) -> None:
    for user in journal.users_written(result.run):
        rows = journal.written(result.run, user)
        try:
            session = target.session(user)
        except PermanentError as exc:
            result.left += [Problem(r.target_id or r.ref, f"{exc.reason}: left alone", user=user)
                            for r in rows]
            continue
        try:
            for folder, group in groupby(rows, key=lambda r: r.folder):
                for chunk in _chunks(list(group)):
                    outcomes = session.remove(folder,
                                              [(r.target_id, r.key, r.digest) for r in chunk],
                                              result.dry_run)
                    gone = [r for r, why in zip(chunk, outcomes, strict=True) if why is None]
                    result.left += [Problem(_where(r), why, user=user)
                                    for r, why in zip(chunk, outcomes, strict=True) if why]
                    if not result.dry_run:
                        journal.mark_undone(gone, result.undo_run or 0)
                    result.removed += len(gone)
        finally:
            session.close()


def _remove_folders(journal: Journal, target: Target, result: UndoResult) -> None:
    created = journal.created_by(result.run)
    gone: list[tuple[str, str]] = []
    session: TargetSession | None = None
    session_user = None
    try:
        for user, path in created:
            if session_user != user:
                if session is not None:
                    session.close()
                session, session_user = None, user
                try:
                    session = target.session(user)
                except (PermanentError, TargetError) as exc:
                    reason = exc.reason if isinstance(exc, PermanentError) else str(exc)
                    result.left.append(Problem(path, f"{reason}: left alone", user=user))
                    continue
            if session is None:
                result.left.append(Problem(path, "mailbox not opened: left alone", user=user))
                continue
            why = session.remove_created(path, result.dry_run)
            if why is None:
                gone.append((user, path))
                result.folders.append(path)
            else:
                result.left.append(Problem(path, why, user=user))
    finally:
        if session is not None:
            session.close()
    if gone and not result.dry_run:
        journal.forget_created(result.run, gone)


def _where(row: Written) -> str:
    return f"{row.folder}/{row.target_id}" if row.target_id else f"{row.folder} ({row.ref})"


def _chunks(rows: list[Written]) -> Iterator[list[Written]]:
    for start in range(0, len(rows), BATCH):
        yield rows[start:start + BATCH]
