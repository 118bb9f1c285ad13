"""Finding the gaps in the two timelines, and applying --since/--until over them.

The timelines here are what diff.py feeds the detector: every (user, archive
message) pair with its received time (whole seconds, as in a Received:
header) and whether the replica has it, in received-time order, presents
first within a second.

The property tests generate incidents: users with their own mail rates,
ordinary deletions (scattered, one user clearing hours of mail, a burst of
several users deleting within three minutes), zero to three failovers, mail
that reached the replica late through a backup MX, and delivery delays that
interleave present and absent mail at a gap's edges.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from restore.window import BURST, Detection, Window, combine, detect

T0 = int(datetime(2017, 12, 6, tzinfo=UTC).timestamp())
HOUR = 3600
MINUTE = 60
SPAN = 48 * HOUR
EDGE = 3                 # late arrivals stay off a gap's first and last lost messages
MARGIN = 20              # pairs between a gap's edge and any deletion

Pair = tuple[float, str, bool]          # received, user, present


def run(pairs: list[Pair]) -> Detection:
    ordered = sorted(pairs, key=lambda p: (p[0], not p[2]))
    return detect(lambda: iter(ordered))


def windows(pairs: list[Pair]) -> list[Window]:
    return run(pairs).windows()


def restored(found: list[Window], pairs: list[Pair]) -> list[Pair]:
    return sorted(p for p in pairs if not p[2] and any(w.contains(p[0]) for w in found))


# -- the generator ---------------------------------------------------------------------------


@dataclass
class Incident:
    pairs: list[Pair]
    lost: list[list[int]]                        # per failover: indices of its lost pairs
    heavy: str                                   # the user who cleared hours of mail
    deleted: set[int] = field(default_factory=set)

    def restored_fully(self) -> list[Pair]:
        lost = {i for gap in self.lost for i in gap}
        return [
            (ts, u, True) if i in lost else (ts, u, p) for i, (ts, u, p) in enumerate(self.pairs)
        ]

    def bounds(self, gap: list[int]) -> tuple[float, float]:
        """(last present pair before the first lost one, last lost one): the exact window."""
        first = min(self.pairs[i][0] for i in gap)
        before = [ts for ts, _, present in self.pairs if present and ts < first]
        return (max(before) if before else first - 1, max(self.pairs[i][0] for i in gap))

    def size(self, gap: list[int]) -> tuple[int, int]:
        """Lost pairs beyond the busiest user and the busiest 20 minutes, and presents inside.

        The heavy deleter's lost mail is not counted: their own background rate is high.
        """
        since, until = self.bounds(gap)
        lost = [self.pairs[i] for i in gap if self.pairs[i][1] != self.heavy]
        if not lost:
            return 0, 0
        per_user: dict[str, int] = {}
        per_block: dict[int, int] = {}
        for ts, user, _ in lost:
            per_user[user] = per_user.get(user, 0) + 1
            per_block[int(ts // BURST)] = per_block.get(int(ts // BURST), 0) + 1
        burst = max(n + per_block.get(b + 1, 0) for b, n in per_block.items())
        inside = sum(1 for ts, _, present in self.pairs if present and since < ts <= until)
        return len(lost) - max(per_user.values()) - burst, inside


@st.composite
def incidents(draw, failovers: tuple[int, int] = (0, 3), min_gap_minutes: int = 20) -> Incident:
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    users = [f"user{i}@example.com" for i in range(draw(st.integers(2, 8)))]
    rates = {u: draw(st.integers(1, 12)) for u in users}           # messages per hour
    deletion = draw(st.sampled_from([0.0, 0.001, 0.005, 0.02, 0.05]))
    late = draw(st.sampled_from([0.0, 0.05, 0.3]))
    skew = draw(st.sampled_from([0, 20, 90]))                     # seconds of delivery delay
    gaps = _place_gaps(rng, draw(st.integers(*failovers)), min_gap_minutes)
    arrivals = sorted((T0 + rng.randrange(SPAN), u) for u in users for _ in range(rates[u] * 48))
    # Clustered deletions, away from the failovers: one user clears hours of mail, and
    # five of seven users delete one message each within three minutes (a spam wave).
    tidy_user, tidy_from = rng.choice(users), T0 + rng.randrange(SPAN - 12 * HOUR)
    tidy = (tidy_from, tidy_from + rng.randrange(2 * HOUR, 12 * HOUR))
    wave = T0 + rng.randrange(SPAN - 3 * MINUTE)
    wave_mail = [(wave + rng.randrange(3 * MINUTE), users[n % len(users)], n < 5) for n in range(7)]
    arrivals += [(ts, u) for ts, u, _ in wave_mail]
    arrivals.sort()

    pairs: list[Pair] = []
    lost: list[list[int]] = [[] for _ in gaps]
    for ts, user in arrivals:
        arrived = ts + rng.randrange(skew + 1)              # when it reached the mail store
        hit = next((n for n, (a, b) in enumerate(gaps) if a < arrived <= b), None)
        if hit is not None:
            lost[hit].append(len(pairs))
        pairs.append((float(ts), user, hit is None))
    ordered = sorted(range(len(pairs)), key=lambda i: (pairs[i][0], not pairs[i][2]))
    pairs = [pairs[i] for i in ordered]
    where = {old: new for new, old in enumerate(ordered)}
    lost = [sorted(where[i] for i in gap) for gap in lost]
    incident = Incident(pairs, [gap for gap in lost if gap], heavy=tidy_user)
    for gap, (start, end) in zip(lost, gaps, strict=True):
        # Late arrivals stay off the few lost messages after the edges' delivery delays.
        inner = [i for i in gap if start < pairs[i][0] <= end - skew]
        for i in inner[EDGE:-EDGE]:
            if rng.random() < late:                         # queued on the backup MX
                ts, user, _ = pairs[i]
                pairs[i] = (ts, user, True)
        gap[:] = [i for i in gap if not pairs[i][2]]
    near = {j for gap in incident.lost for edge in (gap[0], gap[-1])
            for j in range(edge - MARGIN, edge + MARGIN + 1)}
    clear = [(a - HOUR, b + HOUR) for a, b in gaps]
    wave_keys = {(ts, u) for ts, u, gone in wave_mail if gone}
    for i, (ts, user, present) in enumerate(pairs):
        if not present or i in near or any(a <= ts <= b for a, b in clear):
            continue
        if ((ts, user) in wave_keys or rng.random() < deletion
                or (user == tidy_user and tidy[0] <= ts <= tidy[1])):
            pairs[i] = (ts, user, False)
            incident.deleted.add(i)
    return incident


def _place_gaps(rng: random.Random, n: int, min_minutes: int) -> list[tuple[int, int]]:
    """n failovers inside the timeline, at least two hours apart."""
    gaps: list[tuple[int, int]] = []
    while len(gaps) < n:
        length = rng.randrange(min_minutes * MINUTE, 8 * HOUR)
        start = T0 + rng.randrange(2 * HOUR, SPAN - length - HOUR)
        if all(start > b + 2 * HOUR or start + length < a - 2 * HOUR for a, b in gaps):
            gaps.append((start, start + length))
    return sorted(gaps)


# -- properties ------------------------------------------------------------------------------

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True)


SPLIT = 40       # present pairs between two failovers that surely tell them apart


@PROPERTY
@given(incidents())
def test_every_window_is_a_real_gap_with_its_exact_bounds(incident):
    """Nothing a user deleted is restored, and each gap found has the bounds of the failover.

    Two failovers with little mail reaching the replica between them may be one window.
    """
    found = windows(incident.pairs)
    gap_bounds = [incident.bounds(gap) for gap in incident.lost]
    joined = set(gap_bounds)
    for n, (since, until) in enumerate(gap_bounds):
        for later_since, later_until in gap_bounds[n + 1:]:
            between = sum(1 for ts, _, present in incident.pairs if present
                          and until < ts <= later_since)
            if between >= SPLIT:
                break
            joined.add((since, later_until))
    assert {(w.since, w.until) for w in found} <= joined
    deleted = {incident.pairs[i] for i in incident.deleted}
    assert not deleted & set(restored(found, incident.pairs))
    for gap, bounds in zip(incident.lost, gap_bounds, strict=True):
        beyond, inside = incident.size(gap)
        if beyond >= 12 and 2 * inside <= beyond:         # the size diff(1) promises
            assert bounds in {(w.since, w.until) for w in found}


@PROPERTY
@given(incidents(failovers=(1, 3), min_gap_minutes=60))
def test_gaps_of_an_hour_or_more_are_all_found(incident):
    """Failovers of an hour or more, mail for every user: every lost message is restored."""
    found = windows(incident.pairs)
    lost = sorted(incident.pairs[i] for gap in incident.lost for i in gap)
    findable = [gap for gap in incident.lost if incident.size(gap)[0] >= 12
                and 2 * incident.size(gap)[1] <= incident.size(gap)[0]]
    assert len(found) >= len(findable)
    if len(findable) == len(incident.lost):
        assert restored(found, incident.pairs) == lost
        assert [w.source for w in found] == ["auto"] * len(incident.lost)


@PROPERTY
@given(incidents())
def test_after_a_full_restore_no_gap_is_found(incident):
    detection = run(incident.restored_fully())
    assert detection.gaps == []
    assert (
        "looks like deletions" in detection.no_gap() or "no archive message" in detection.no_gap()
    )


@PROPERTY
@given(incidents(failovers=(0, 0)))
def test_without_a_failover_no_gap_is_found(incident):
    assert windows(incident.pairs) == []


@PROPERTY
@given(incidents(failovers=(2, 2), min_gap_minutes=60))
def test_two_failovers_give_two_windows_and_nothing_between_them(incident):
    assume(len(incident.lost) == 2)         # each failover had mail to lose
    found = windows(incident.pairs)
    first, second = (incident.bounds(gap) for gap in incident.lost)
    between = sum(1 for ts, _, present in incident.pairs if present and first[1] < ts <= second[0])
    if between >= SPLIT and all(incident.size(gap)[0] >= 12
                                and 2 * incident.size(gap)[1] <= incident.size(gap)[0]
                                for gap in incident.lost):
        assert [(w.since, w.until) for w in found] == [first, second]
    if len(found) == 2:
        between = [p for p in incident.pairs if found[0].until < p[0] <= found[1].since]
        assert not any(w.contains(p[0]) for w in found for p in between)


# -- cases ------------------------------------------------------------------------------------

USERS = [f"user{i}@example.com" for i in range(10)]


def mail_flow(hours: int = 72, every: int = 600,
              users: list[str] = USERS) -> list[tuple[float, str]]:
    """Each user gets a message every ``every`` seconds, users a minute apart."""
    return sorted((float(T0 + k * every + i * 60), user)
                  for k in range(hours * HOUR // every) for i, user in enumerate(users))


def with_gap(flow, gap_start: float, gap_end: float) -> list[Pair]:
    """Everything received in (gap_start, gap_end] is absent from the replica."""
    return [(ts, user, not gap_start < ts <= gap_end) for ts, user in flow]


GAP_START = T0 + 30 * HOUR + 90      # between two deliveries: the last replication
GAP_END = T0 + 37 * HOUR + 30


def test_clean_gap_has_the_right_bounds_and_says_how_strong_it_is():
    pairs = with_gap(mail_flow(), GAP_START, GAP_END)
    absent = [p for p in pairs if not p[2]]
    [window] = windows(pairs)
    assert window.source == "auto"
    assert window.since == max(ts for ts, _, present in pairs if present and ts <= GAP_START)
    assert window.until == max(ts for ts, _, _ in absent)
    assert restored([window], pairs) == sorted(absent)
    assert f"{len(absent)} of {len(absent)} archive messages" in window.evidence
    assert "for 10 of 10 users" in window.evidence
    assert "p < 1e-300" in window.evidence and "background absence rate" in window.evidence


def test_no_absent_mail_means_no_gap():
    detection = run(with_gap(mail_flow(hours=4), 0, 0))
    assert detection.gaps == [] and "no gap" in detection.no_gap()


def test_late_arrival_as_second_message_of_the_gap_keeps_the_first():
    pairs = with_gap(mail_flow(), GAP_START, GAP_END)
    gap = [i for i, p in enumerate(pairs) if not p[2]]
    ts, user, _ = pairs[gap[1]]
    pairs[gap[1]] = (ts, user, True)
    [window] = windows(pairs)
    assert window.contains(pairs[gap[0]][0])
    assert "1 inside are present (late arrivals" in window.evidence


def test_late_arrivals_near_the_end_do_not_cut_it_short():
    pairs = with_gap(mail_flow(), GAP_START, GAP_END)
    gap = [i for i, p in enumerate(pairs) if not p[2]]
    # The backup MX delivered more and more of the last hour of the gap.
    for n, i in enumerate(gap[-60:]):
        if n % 3 != 0:
            ts, user, _ = pairs[i]
            pairs[i] = (ts, user, True)
    found = windows(pairs)
    assert restored(found, pairs) == sorted(p for p in pairs if not p[2])


def test_present_and_absent_in_the_same_second_at_the_start():
    """Replication stopped inside a second: the absent message of that second is restored."""
    flow = mail_flow(hours=12)
    cut = flow[200][0]
    pairs = [(ts, user, ts < cut or ts > cut + 3 * HOUR) for ts, user in flow]
    pairs.append((cut, "present@example.com", True))
    [window] = windows(pairs)
    assert window.contains(cut)
    assert restored([window], pairs) == sorted(p for p in pairs if not p[2])


def test_a_lone_user_deleting_a_day_of_mail_is_no_gap():
    pairs = [(ts, user, not (user == USERS[3] and T0 + 24 * HOUR < ts <= T0 + 48 * HOUR))
             for ts, user in mail_flow()]
    detection = run(pairs)
    assert detection.gaps == []
    assert "looks like deletions" in detection.no_gap() and "--since/--until" in detection.no_gap()


def test_a_lone_user_at_night_is_no_gap_but_in_a_single_user_archive_it_is():
    night = [(float(T0 + 2 * HOUR + k * 300), USERS[0]) for k in range(40)]
    day = mail_flow(hours=2) + mail_flow(hours=2, users=USERS[:1]) + night
    day += [(ts + 6 * HOUR, user) for ts, user in mail_flow(hours=20)]
    pairs = [(ts, user, not T0 + 2 * HOUR <= ts < T0 + 6 * HOUR) for ts, user in day]
    assert windows(pairs) == []
    alone = [p for p in pairs if p[1] == USERS[0]]
    [window] = windows(alone)
    assert restored([window], alone) == sorted(p for p in alone if not p[2])


def test_a_wave_of_deletions_by_many_users_within_minutes_is_no_gap():
    """Seven users, five deleted one message each in one three-minute stretch."""
    pairs = [(ts, user, True) for ts, user in mail_flow(users=USERS[:7])]
    wave = T0 + 20 * HOUR + 5
    pairs += [(float(wave + 30 * n), USERS[n], n >= 5) for n in range(7)]
    assert windows(pairs) == []


def test_a_gap_until_the_end_of_the_timeline():
    pairs = with_gap(mail_flow(hours=12), T0 + 10 * HOUR, T0 + 99 * HOUR)
    [window] = windows(pairs)
    assert window.until == max(ts for ts, _, _ in pairs)
    assert "no mail reached the replica after it" in window.evidence


def test_an_archive_the_replica_entirely_lacks_is_one_gap():
    pairs = with_gap(mail_flow(hours=6), 0, T0 + 99 * HOUR)
    [window] = windows(pairs)
    assert restored([window], pairs) == sorted(pairs)


@pytest.mark.parametrize("rate", [0.0, 0.004, 0.02, 0.05])
def test_the_smallest_documented_gap_is_found(rate):
    """12 lost beyond the busiest user and 20 minutes, half as many late: found, exactly."""
    rng = random.Random(7)
    flow = mail_flow(hours=48, every=1200, users=USERS[:6])
    start = T0 + 20 * HOUR + 30
    pairs = [(ts, user, not start < ts <= start + 5040) for ts, user in flow]
    lost = [i for i, p in enumerate(pairs) if not p[2]]
    for n, i in enumerate(lost[3:-3]):
        if n % 4 == 1:                                      # late, through the backup MX
            pairs[i] = (pairs[i][0], pairs[i][1], True)
    lost = [i for i in lost if not pairs[i][2]]
    for i, (ts, user, present) in enumerate(pairs):
        if present and not lost[0] - MARGIN <= i <= lost[-1] + MARGIN and rng.random() < rate:
            pairs[i] = (ts, user, False)
    incident = Incident(pairs, [lost], heavy="nobody")
    assert incident.size(lost) == (12, 6)
    assert [(w.since, w.until) for w in windows(pairs)] == [incident.bounds(lost)]


# -- combine: --since / --until over the detected window ------------------------------------

AUTO = Window(T0 + 10, T0 + 20, "auto", "auto: detected")


def test_both_bounds_given_override_detection():
    assert combine(AUTO, T0 + 1, T0 + 2) == Window(T0 + 1, T0 + 2, "given",
                                                   "given with --since and --until")
    assert combine(None, T0 + 1, T0 + 2).source == "given"


def test_since_given_keeps_the_detected_until():
    window = combine(AUTO, T0 + 5, None)
    assert (window.since, window.until, window.source) == (T0 + 5, T0 + 20, "auto+given")
    assert "--since given" in window.evidence and "auto: detected" in window.evidence


def test_until_given_keeps_the_detected_since():
    window = combine(AUTO, None, T0 + 30)
    assert (window.since, window.until, window.source) == (T0 + 10, T0 + 30, "auto+given")
    assert "--until given" in window.evidence


def test_no_bound_given_is_the_detected_window():
    assert combine(AUTO, None, None) is AUTO


def test_window_bounds_are_since_exclusive_until_inclusive():
    assert not AUTO.contains(T0 + 10)
    assert AUTO.contains(T0 + 10.5)
    assert AUTO.contains(T0 + 20)
    assert not AUTO.contains(T0 + 20.5)
    assert not AUTO.contains(None)
    assert AUTO.to_json()["since"] == "2017-12-06T00:00:10+00:00"


def test_p_value_bound_is_pairs_times_exp_minus_evidence():
    detection = run(with_gap(mail_flow(hours=24, users=USERS[:3]), T0 + 10 * HOUR, T0 + 11 * HOUR))
    [gap] = detection.gaps
    assert math.isclose(gap.log10_p, (math.log(detection.pairs) - gap.evidence) / math.log(10))
