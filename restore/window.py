"""Finding the gaps: where the archive has mail the replica lacks, beyond its users' deletions.

The archive's (user, message) pairs, in received-time order, are a sequence
of "present" and "absent". Outside a gap an absent pair is a message its
user deleted, which happens at a low background rate; inside a gap nearly
every pair is absent (the present ones arrived late, through a backup MX).

Each pair scores the log-likelihood ratio of "inside a gap, where a pair is
absent with probability THETA" against "ordinary deletions at its user's
background rate": ``log(THETA / rate)`` when absent, and
``-log((1 - rate) / (1 - THETA))`` when present. The runs where the running
score climbs from zero to a peak are the candidate gaps, from the first
absent pair to the one at the peak: a late arrival costs less than an absent
pair gains, so a few do not split a gap, and an absent pair joins a gap only
if fewer than gain/cost present pairs lie between them, or if it was
received within ``SKEW`` of the gap's first or last absent pair (delivery
delays and clocks reorder mail by that much).

Under ordinary deletions (each pair absent independently at its user's
rate) the likelihood ratio from any start is a martingale of mean 1, so by
Ville's inequality the chance that any window, starting at any of the N
pairs, reaches a score s is at most ``N * exp(-s)``: a candidate is a gap
when its score reaches ``log(N / ALPHA)``. It is tested at each absent share
of ``TEST_SHARES`` (a real gap is mostly absent, not just two thirds), the
best counting, less ``log(len(TEST_SHARES))`` for having tried them.
Deletions are not independent, though: one user clears a day of mail, or
many users delete one spam wave within minutes. So the score tested is what
is left without the candidate's busiest user and, of the others' mail, its
busiest ``2 * BURST`` seconds.

The background rates (see ``Background``) are measured in the hours that are
not mostly absent, then again outside the gaps that search finds, and the
search is repeated once with them.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from restore.times import EARLIEST, LATEST, iso

THETA = 2 / 3           # the absent share a gap is scored for: a third may have arrived late
TEST_SHARES = (2 / 3, 0.8, 0.9, 0.97)   # shares a candidate is tested at; the best counts
ALPHA = 0.01            # the chance that ordinary deletions make a gap anywhere in a timeline
BURST = 600             # seconds: the busiest two adjacent blocks this long are left out
SKEW = 120              # seconds: absent mail this close to a gap's first or last joins it
MAX_RATE = 0.5          # a background rate beyond this tells nothing apart
RATE_Z = 1.0            # the background rate's bound: one standard error above
SHRINK = 100            # pairs' worth of the common rate in each user's own rate
STABLE = math.log(1.1)  # rates within 10 % of the last search's: no second search


@dataclass(frozen=True, slots=True)
class Window:
    since: float | None       # exclusive
    until: float | None       # inclusive
    source: str               # "auto", "given", "auto+given", "remembered"
    evidence: str
    # A window a journal remembers: when its first run started. The replica
    # seen to hold a message since then is the one that lives on.
    remembered_at: float | None = None

    def contains(self, ts: float | None) -> bool:
        if ts is None or self.since is None or self.until is None:
            return False
        return self.since < ts <= self.until

    @property
    def empty(self) -> bool:
        return self.since is None or self.until is None

    def to_json(self) -> dict:
        doc = {"since": iso(self.since), "until": iso(self.until), "source": self.source,
               "evidence": self.evidence}
        if self.remembered_at is not None:
            doc["remembered_at"] = iso(self.remembered_at)
        return doc


Pair = tuple[float, str, bool]                  # received, user, present
Timeline = Callable[[], Iterable[Pair]]         # a fresh pass over the pairs, in time order


@dataclass(slots=True)
class Counts:
    """Pairs and absent pairs per user, indexed by the user's number.

    ``detect`` numbers the users as the timeline first shows them: a
    timeline has as many users as the archive (20,000 and more), and two
    machine integers a user take a tenth of a list in a dict.
    """

    pairs: array
    absent: array

    @classmethod
    def zeros(cls, users: int) -> Counts:
        return cls(array("q", bytes(8 * users)), array("q", bytes(8 * users)))

    def copy(self) -> Counts:
        return Counts(array("q", self.pairs), array("q", self.absent))

    def __len__(self) -> int:
        return len(self.pairs)

    def rate(self, user: int) -> float:
        """The user's absent share; 1 with no pairs (sorted last)."""
        n = self.pairs[user]
        return self.absent[user] / n if n else 1.0


def upper_rate(absent: int, pairs: int) -> float:
    """One-sided upper confidence bound (Wilson score) of an absence rate."""
    if pairs <= 0:
        return MAX_RATE
    z2 = RATE_Z * RATE_Z
    share = absent / pairs
    centre = share + z2 / (2 * pairs)
    spread = RATE_Z * math.sqrt(share * (1 - share) / pairs + z2 / (4 * pairs * pairs))
    return (centre + spread) / (1 + z2 / pairs)


@dataclass(frozen=True, slots=True)
class Background:
    """How often each user's mail is absent when there is no gap: their deletions.

    Users differ: one clears most of their mail, most delete little. Each
    user's rate is their own share of absent mail, shrunk toward ``common``
    (by ``SHRINK`` pairs' worth), so a user with little mail gets about the
    common rate. ``common`` is the pooled rate of the half of the users who
    delete least, one standard error up (a Wilson bound), so a few heavy
    deleters do not raise it.
    """

    rates: array                # by user number
    common: float
    pairs: int
    absent: int

    @classmethod
    def measure(cls, counts: Counts, order: array | None = None) -> Background:
        """``order``: each user's place among equal rates (by default their number)."""
        users = list(range(len(counts)))
        if order is not None:
            for user, place in enumerate(order):
                users[place] = user
        # Stable: of users with equal rates, the first in ``order`` count among the least.
        users.sort(key=counts.rate)
        least = users[:(len(users) + 1) // 2]
        common = upper_rate(sum(counts.absent[u] for u in least),
                            sum(counts.pairs[u] for u in least))
        del users, least
        rates = array("d", (min((a + SHRINK * common) / (n + SHRINK), MAX_RATE)
                            for n, a in zip(counts.pairs, counts.absent, strict=True)))
        return cls(rates, common, sum(counts.pairs), sum(counts.absent))

    def describe(self) -> str:
        share = self.absent / self.pairs if self.pairs else 0.0
        return (f"background absence rates measured per user ({_percent(share)} overall: "
                f"{self.absent:,} of {self.pairs:,} messages outside the gaps)")


@dataclass(frozen=True, slots=True)
class Scoring:
    """Per-pair log-likelihood ratio of "inside a gap" against "that user's deletions"."""

    # log(rate), log(1 - rate): an absent pair gains log(THETA / rate), a present one
    # costs log((1 - rate) / (1 - THETA)), and a tally is scored at any share from them.
    # Two floats a user, as many users as the archive has: the gain and cost are
    # worked out pair by pair rather than held as two more.
    log_rate: array             # by user number
    log_keep: array
    threshold: float            # log(pairs / ALPHA): what a gap's evidence must reach

    @classmethod
    def of(cls, background: Background, pairs: int) -> Scoring:
        log_rate = array("d", (math.log(max(r, 1e-12)) for r in background.rates))
        log_keep = array("d", (math.log(1 - r) for r in background.rates))
        return cls(log_rate, log_keep, math.log(max(pairs, 1) / ALPHA))

    def log10_p(self, evidence: float, pairs: int) -> float:
        """log10 of ``pairs * exp(-evidence)``: a bound on the chance of such a gap by deletions."""
        return min(0.0, (math.log(max(pairs, 1)) - evidence) / math.log(10))


@dataclass(frozen=True, slots=True)
class Cluster:
    """A stretch of absent-dominated mail, and how strongly it says "gap"."""

    since: float                # the last present pair before it (exclusive bound)
    until: float                # its last absent pair (inclusive bound)
    first_absent: float
    after: float | None         # the first present pair after it: inbound mail is back
    pairs: int
    absent: int
    users: Counts = field(repr=False, compare=False)    # by user number
    busiest: int | None         # the user whose pairs weigh most in its favour
    evidence: float             # its score without the busiest user and burst
    log10_p: float

    @property
    def late(self) -> int:
        return self.pairs - self.absent

    @property
    def users_absent(self) -> int:
        return sum(1 for a in self.users.absent if a)

    @property
    def users_active(self) -> int:
        return sum(1 for n in self.users.pairs if n)


@dataclass(frozen=True, slots=True)
class Detection:
    """Every gap found, the background they were tested against, and the best near miss."""

    gaps: list[Cluster]
    background: Background
    pairs: int
    strongest_rejected: Cluster | None

    def windows(self) -> list[Window]:
        return [Window(g.since, g.until, "auto", self.evidence(g)) for g in self.gaps]

    def evidence(self, gap: Cluster) -> str:
        after = (f"inbound mail reaches the replica again at {iso(gap.after)}"
                 if gap.after is not None else "no mail reached the replica after it")
        late = (f"; {gap.late:,} inside are present (late arrivals through a backup MX, or "
                f"reordered at its edges)" if gap.late else "")
        return (
            f"auto: {gap.absent:,} of {gap.pairs:,} archive messages received after the "
            f"replica's last replicated message at {iso(gap.since)} are absent from the "
            f"replica, for {gap.users_absent} of {gap.users_active} users, against "
            f"{self.background.describe()}; {_p(gap.log10_p)} even without its busiest user "
            f"and busiest {2 * BURST // 60} minutes; the last absent one was received at "
            f"{iso(gap.until)}; {after}{late}"
        )

    def no_gap(self) -> str:
        if self.strongest_rejected is None:
            return "no archive message is absent from the replica: no gap"
        c = self.strongest_rejected
        return (
            f"no gap found: the strongest cluster of absent mail ({c.absent:,} of {c.pairs:,} "
            f"messages, {c.users_absent} of {c.users_active} active users, {iso(c.first_absent)} "
            f"to {iso(c.until)}) looks like deletions, not a failover: {_p(c.log10_p)} against "
            f"{self.background.describe()}; give --since/--until to restore it anyway"
        )


def _percent(rate: float) -> str:
    return f"{100 * rate:.2g}%"


def _p(log10_p: float) -> str:
    if log10_p <= -300:
        return "p < 1e-300"
    if log10_p < -3:
        return f"p < 1e-{math.floor(-log10_p)}"
    return f"p = {10 ** log10_p:.2g}"


def detect(timeline: Timeline) -> Detection:
    """Every gap in a received-time-ordered (time, user, present) sequence.

    A few passes over ``timeline()``; memory grows with the number of users,
    never with the number of pairs. Users are numbered as first seen, and
    what is kept per user is held in arrays by that number.
    """
    number: dict[str, int] = {}
    totals, ordinary, order = _count(timeline(), number)
    pairs = sum(totals.pairs)
    single_user = len(number) == 1
    # Measured first in the hours that are not mostly absent, then outside the gaps found.
    background = Background.measure(ordinary, order)
    del ordinary, order
    for final in (False, True):
        scoring = Scoring.of(background, pairs)
        candidates, best = _scan(timeline(), scoring, number)
        tested = _test(timeline, scoring, candidates + ([best] if best else []), single_user, pairs,
                       number)
        gaps = [c for c in tested if c.evidence >= scoring.threshold]
        if final or not gaps:
            break
        outside = totals.copy()
        for gap in gaps:
            for user, (n, a) in enumerate(zip(gap.users.pairs, gap.users.absent, strict=True)):
                outside.pairs[user] -= n
                outside.absent[user] -= a
        remeasured = Background.measure(outside)
        del outside
        if all(abs(math.log(r / b)) <= STABLE
               for r, b in zip(remeasured.rates, background.rates, strict=True)):
            break               # the same rates would find the same gaps
        background = remeasured
    rejected = [c for c in tested if c.evidence < scoring.threshold]
    return Detection(gaps, background, pairs, max(rejected, key=lambda c: c.evidence, default=None))


def _count(stream: Iterable[Pair], number: dict[str, int]) -> tuple[Counts, Counts, array]:
    """Pairs and absent pairs per user: in all, and in the hours not mostly absent.

    Numbers each user in ``number`` as first seen. The third array is each
    user's place in the order the ordinary hours first show them (those they
    never show after): ``Background.measure`` breaks ties by it.
    """
    totals, ordinary, hour = Counts.zeros(0), Counts.zeros(0), Counts.zeros(0)
    order = array("q")
    placed = 0
    touched: list[int] = []     # this hour's users, as first seen in it
    current = -1
    pairs = absent = 0

    def close() -> None:
        nonlocal placed
        usual = 2 * absent <= pairs
        for user in touched:
            n, a = hour.pairs[user], hour.absent[user]
            hour.pairs[user] = hour.absent[user] = 0
            totals.pairs[user] += n
            totals.absent[user] += a
            if usual:
                if order[user] < 0:
                    order[user], placed = placed, placed + 1
                ordinary.pairs[user] += n
                ordinary.absent[user] += a
        touched.clear()

    for ts, name, present in stream:
        if int(ts // 3600) != current:
            close()
            current, pairs, absent = int(ts // 3600), 0, 0
        user = number.get(name)
        if user is None:
            user = number[name] = len(number)
            for counts in (totals, ordinary, hour):
                counts.pairs.append(0)
                counts.absent.append(0)
            order.append(-1)
        if not hour.pairs[user]:
            touched.append(user)
        hour.pairs[user] += 1
        pairs += 1
        if not present:
            hour.absent[user] += 1
            absent += 1
    close()
    for user, place in enumerate(order):
        if place < 0:
            order[user], placed = placed, placed + 1
    return totals, ordinary, order


@dataclass(slots=True)
class _Run:
    since: float | None
    first: float
    last: float
    peak: float


def _scan(stream: Iterable[Pair], scoring: Scoring,
          number: dict[str, int]) -> tuple[list[_Run], _Run | None]:
    """The runs where the cumulative score climbs from zero to its peak.

    A run ends when the score falls back to zero, or ``threshold`` below its
    peak: a stretch of present mail that strong is delivery working, so it
    splits two gaps rather than joining them. Returns the runs that could
    pass the test (peak at the threshold or more) and the best of the rest.
    """
    log_rate, log_keep, drop = scoring.log_rate, scoring.log_keep, scoring.threshold
    log_theta, log_other = math.log(THETA), math.log(1 - THETA)
    candidates: list[_Run] = []
    best: _Run | None = None
    score = peak = 0.0
    first = last = 0.0
    since: float | None = None
    last_present: float | None = None
    present_before: float | None = None     # the last present pair before this second
    second = -math.inf
    recent: deque[tuple[float, float | None]] = deque()    # absent pairs of the last SKEW
    for ts, name, present in stream:
        user = number[name]
        if ts != second:
            second, present_before = ts, last_present
            while recent and recent[0][0] < ts - SKEW:
                recent.popleft()
        if present:
            last_present = ts
            if score > 0:
                score -= log_keep[user] - log_other
                if score <= 0 or score < peak - drop:
                    run = _Run(since, first, last, peak)
                    if peak >= drop:
                        candidates.append(run)
                    elif best is None or peak > best.peak:
                        best = run
                    score = 0.0
            continue
        if score <= 0:
            score = peak = 0.0
            # Delivery delays reorder mail near a gap's edge: absent mail just before counts in.
            first, since = recent[0] if recent else (ts, present_before)
        recent.append((ts, present_before))
        score += log_theta - log_rate[user]
        if score > peak or ts <= last + SKEW:
            peak, last = max(peak, score), ts
    if score > 0:
        run = _Run(since, first, last, peak)
        if peak >= drop:
            candidates.append(run)
        elif best is None or peak > best.peak:
            best = run
    return candidates, best


def _test(timeline: Timeline, scoring: Scoring, runs: list[_Run], single_user: bool,
          total_pairs: int, number: dict[str, int]) -> list[Cluster]:
    """Tally each run's window per user and per burst; score what the busiest leave.

    Ordinary deletions cluster: one user clears a day of mail, or many delete
    the same spam wave within minutes. So a run's evidence is its score
    without its busiest user (unless the archive has only one) and without
    the busiest ``2 * BURST`` seconds (two adjacent blocks) of the others.
    A second pass sums the blocks (see ``_Tally``).
    """
    runs = sorted(runs, key=lambda r: r.first)
    bounds = [(r.since if r.since is not None and r.since < r.first else r.first - 1, r.last)
              for r in runs]
    tallies = [_Tally.of(len(number)) for _ in runs]
    log_rate, log_keep = scoring.log_rate, scoring.log_keep
    i = 0
    waiting: list[_Tally] = []              # runs passed, their first present after unseen
    for ts, name, present in timeline():
        while i < len(runs) and ts > bounds[i][1]:
            waiting.append(tallies[i])
            i += 1
        if present and waiting:
            for tally in waiting:
                tally.after = ts
            waiting = []
        if i == len(runs):
            if not waiting:
                break
            continue
        lo, hi = bounds[i]
        if lo < ts <= hi:
            user = number[name]
            tallies[i].add(ts, user, present, log_keep[user] if present else log_rate[user])
    for tally in tallies:
        tally.leave_out(single_user)
    i = 0
    for ts, name, present in timeline():     # the pairs go to the same runs as above
        while i < len(runs) and ts > bounds[i][1]:
            tallies[i].close_block()
            i += 1
        if i == len(runs):
            break
        lo, hi = bounds[i]
        if lo < ts <= hi:
            user = number[name]
            log_chance = log_keep[user] if present else log_rate[user]
            tallies[i].add_to_block(ts, user, present, log_chance)
    for tally in tallies:
        tally.close_block()
    found = []
    for run, (lo, hi), tally in zip(runs, bounds, tallies, strict=True):
        evidence, busiest = max(tally.evidence(theta, single_user) for theta in TEST_SHARES)
        evidence -= math.log(len(TEST_SHARES))
        found.append(Cluster(
            since=lo, until=hi, first_absent=run.first, after=tally.after,
            pairs=int(tally.total[0] + tally.total[1]), absent=int(tally.total[0]),
            users=tally.counts(),
            busiest=busiest, evidence=evidence, log10_p=scoring.log10_p(evidence, total_pairs)))
    return found


Sums = Sequence[float]  # absent pairs, present pairs, and the sum of their log(rate or 1 - rate)


def _score(sums: Sums, theta: float) -> float:
    """The log-likelihood ratio of these pairs for a gap with absent share ``theta``."""
    absent, present, log_background = sums
    return absent * math.log(theta) + present * math.log(1 - theta) - log_background


@dataclass(slots=True)
class _Tally:
    """A run's pairs, summed: in all and per user (first pass), per block (second pass).

    The blocks are summed one at a time, as the pairs come in time order,
    leaving out the busiest user (at each share tested) as ``evidence``
    does: keeping every user's pairs per block would take memory in
    proportion to the pairs.
    """

    # Per user, by number: absent pairs, present pairs, the sum of their
    # log(rate or 1 - rate); ``seen`` lists the users in the order they came.
    absent: array
    present: array
    log_background: array
    seen: array
    total: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    after: float | None = None
    left_out: dict[float, int | None] = field(default_factory=dict)     # share -> user
    blocks: dict[float, dict[int, float]] = field(default_factory=dict)  # share -> block -> score
    block: int | None = None
    cells: dict[int, list[float]] = field(default_factory=dict)    # the current block's, per user

    @classmethod
    def of(cls, users: int) -> _Tally:
        return cls(array("d", bytes(8 * users)), array("d", bytes(8 * users)),
                   array("d", bytes(8 * users)), array("q"))

    def add(self, ts: float, user: int, present: bool, log_background: float) -> None:
        if not self.absent[user] and not self.present[user]:
            self.seen.append(user)
        self.total[1 if present else 0] += 1
        self.total[2] += log_background
        (self.present if present else self.absent)[user] += 1
        self.log_background[user] += log_background

    def counts(self) -> Counts:
        """Pairs and absent pairs per user."""
        return Counts(array("q", (int(a + p) for a, p in zip(self.absent, self.present,
                                                              strict=True))),
                      array("q", (int(a) for a in self.absent)))

    def leave_out(self, single_user: bool) -> None:
        """Once every pair is added: whom the blocks leave out at each share."""
        for theta in TEST_SHARES:
            busiest = self._busiest(theta)[1]
            self.left_out[theta] = None if single_user else busiest
            self.blocks[theta] = {}

    def add_to_block(self, ts: float, user: int, present: bool, log_background: float) -> None:
        block = int(ts // BURST)
        if block != self.block:
            self.close_block()
            self.block = block
        sums = self.cells.setdefault(user, [0.0, 0.0, 0.0])
        sums[1 if present else 0] += 1
        sums[2] += log_background

    def close_block(self) -> None:
        if self.block is None:
            return
        for theta, left_out in self.left_out.items():
            kept = [sums for user, sums in self.cells.items() if user != left_out]
            if kept:
                score = 0.0
                for sums in kept:
                    score += _score(sums, theta)
                self.blocks[theta][self.block] = score
        self.block, self.cells = None, {}

    def _busiest(self, theta: float) -> tuple[float, int | None]:
        """The highest score of one user's pairs, and whose (the first seen of equals)."""
        best, busiest = 0.0, None
        for user in self.seen:
            score = _score((self.absent[user], self.present[user], self.log_background[user]),
                           theta)
            if busiest is None or score > best:
                best, busiest = score, user
        return best, busiest

    def evidence(self, theta: float, single_user: bool) -> tuple[float, int | None]:
        """The score without the busiest user, then without the others' busiest two blocks."""
        best, busiest = self._busiest(theta)
        left = _score(self.total, theta)
        if not single_user and busiest is not None:
            left -= max(0.0, best)
        blocks = self.blocks[theta]
        burst = max((s + blocks.get(b + 1, 0.0) for b, s in blocks.items()), default=0.0)
        return left - max(0.0, burst), busiest


def combine(auto: Window | None, since: float | None, until: float | None) -> Window:
    """Apply --since/--until over the detected window (either may be given alone)."""
    if since is not None and until is not None:
        return Window(since, until, "given", "given with --since and --until")
    if auto is not None and auto.empty and (since is not None or until is not None):
        # No gap detected: one bound alone means "everything after / before it".
        return Window(since if since is not None else EARLIEST,
                      until if until is not None else LATEST,
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
