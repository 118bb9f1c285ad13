"""Finding the gap: where the archive has mail the replica lacks, for most users.

The archive's (user, message) pairs, in received-time order, are a sequence
of "present" and "absent". Before the gap nearly everything is present (an
absent message there was deleted by its user); inside it nearly everything
is absent, except late arrivals that a backup MX queued and delivered after
the gap; after it, everything is present again.

So the gap is found in two steps. Its core is the best-scoring run when an
absent pair scores +1 and a present one costs ``PRESENT_COST``: scattered
deletions do not make one, and its start is sharp. Then its end is pushed on
over any stretch that is still at least a quarter absent
(``TAIL_PRESENT_COST``), because late arrivals thin out the absent mail near
the end of a gap without ending it. A run only counts as a gap when it
touches most of the users that had mail during it, so one user who deleted a
day of mail does not become a failover.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

PRESENT_COST = 3
EARLIEST = 0.0                        # the open bounds of a half-given window
LATEST = 4102444800.0                 # 2100-01-01
TAIL_PRESENT_COST = 1 / 3
MIN_USER_SHARE = 0.5
MIN_GAP_MESSAGES = 5


@dataclass(frozen=True, slots=True)
class Run:
    """The best candidate gap found in the timeline."""

    first_absent: float
    last_absent: float
    last_present_before: float | None   # the last replication, as far as the replica shows
    first_present_after: float | None   # inbound mail reaching the replica again
    absent: int
    present: int


@dataclass(frozen=True, slots=True)
class Window:
    since: float | None       # exclusive
    until: float | None       # inclusive
    source: str               # "auto", "given", "auto+given", "none"
    evidence: str

    def contains(self, ts: float | None) -> bool:
        if ts is None or self.since is None or self.until is None:
            return False
        return self.since < ts <= self.until

    @property
    def empty(self) -> bool:
        return self.since is None or self.until is None

    def to_json(self) -> dict:
        return {"since": iso(self.since), "until": iso(self.until), "source": self.source,
                "evidence": self.evidence}


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def best_run(timeline: Iterable[tuple[float, bool]]) -> Run | None:
    """Best absent-dominated run of a received-time-ordered (time, present) sequence."""
    best: Run | None = None
    best_score = 0
    score = 0
    start = last_absent = 0.0
    before: float | None = None
    last_present: float | None = None
    absent = present = 0
    open_run = False
    for ts, is_present in timeline:
        if is_present:
            last_present = ts
            if open_run:
                score -= PRESENT_COST
                present += 1
                # A run survives one late arrival right after its first absent
                # messages: closing it there would start the gap after them and
                # leave them outside the window, never restored.
                if score <= -PRESENT_COST:
                    open_run = False
            if best is not None and best.first_present_after is None and ts > best.last_absent:
                best = _with_after(best, ts)
            continue
        if not open_run:
            open_run, score, start, before, absent, present = True, 0, ts, last_present, 0, 0
        score += 1
        absent += 1
        last_absent = ts
        if score > best_score:
            best_score = score
            best = Run(start, last_absent, before, None, absent, present)
    return best


def _with_after(run: Run, ts: float) -> Run:
    return Run(run.first_absent, run.last_absent, run.last_present_before, ts, run.absent, run.present)


def extend_run(run: Run, later: Iterable[tuple[float, bool]]) -> Run:
    """Push the end of ``run`` over what follows it while that is still partly absent.

    ``later`` is the (time, present) sequence received after ``run.last_absent``.
    """
    score = best = 0.0
    absent = present = 0
    extended = run
    for ts, is_present in later:
        if is_present:
            score -= TAIL_PRESENT_COST
            present += 1
            if extended.first_present_after is None:
                extended = _with_after(extended, ts)
            if score < -1:          # a whole absent message's worth of presence: mail is back
                break
            continue
        score += 1
        absent += 1
        if score > best:
            best = score
            extended = Run(run.first_absent, ts, run.last_present_before, None,
                           run.absent + absent, run.present + present)
    return extended


def window_from_run(run: Run | None, users_absent: int, users_active: int,
                    users_total: int | None = None) -> Window:
    """Turn the best run into a window, or say why there is no gap.

    A failover hits every mailbox that gets mail while it lasts, so a gap
    needs at least ``MIN_GAP_MESSAGES`` absent messages, for at least half of
    the users active then and for two users or more (unless the archive has
    only one user): a user tidying up a thread at night is no failover.
    """
    if run is None:
        return Window(None, None, "auto", "no archive message is absent from the replica: no gap")
    need_users = 1 if users_total == 1 else 2
    if (users_absent < max(need_users, MIN_USER_SHARE * users_active)
            or run.absent < MIN_GAP_MESSAGES):
        return Window(
            None, None, "auto",
            f"no gap found: the largest cluster of absent mail ({run.absent} messages, "
            f"{users_absent} of {users_active} active users, {iso(run.first_absent)} to "
            f"{iso(run.last_absent)}) looks like deletions, not a failover; "
            "give --since/--until to restore it anyway",
        )
    since = run.last_present_before
    if since is None or since >= run.first_absent:
        # A present message in the same second as the first absent one: the
        # window's since is exclusive, so it must lie before that second.
        since = run.first_absent - 1
    after = (f"inbound mail reaches the replica again at {iso(run.first_present_after)}"
             if run.first_present_after is not None else "no mail reached the replica after it")
    evidence = (
        f"auto: {run.absent} archive messages for {users_absent} of {users_active} users "
        f"are absent from the replica after its last replicated message at {iso(since)}; "
        f"the last absent one was received at {iso(run.last_absent)}; {after}"
        + (f"; {run.present} inside arrived late (backup MX) and are present" if run.present else "")
    )
    return Window(since, run.last_absent, "auto", evidence)


def combine(auto: Window | None, since: float | None, until: float | None) -> Window:
    """Apply --since/--until over the detected window (either may be given alone)."""
    if since is not None and until is not None:
        return Window(since, until, "given", "given with --since and --until")
    if auto is not None and auto.empty and (since is not None or until is not None):
        # No gap detected: one bound alone means "everything after / before it".
        return Window(since if since is not None else EARLIEST, until if until is not None else LATEST,
                      "given", f"{'--since' if since is not None else '--until'} given, the other "
                      f"bound open ({auto.evidence})")
    if auto is None:
        return Window(since, until, "given", "given")
    if since is None and until is None:
        return auto
    return Window(
        since if since is not None else auto.since,
        until if until is not None else auto.until,
        "auto+given",
        f"{'--since' if since is not None else '--until'} given; the other bound "
        f"detected ({auto.evidence})",
    )
