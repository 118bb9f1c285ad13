"""Finding the gap in the two timelines, and applying --since/--until over it.

The timelines here are what diff.py feeds the detector: every (user, archive
message) pair with its received time and whether the replica has it, in
received-time order, presents first within a second.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from restore.window import Window, best_run, combine, extend_run, window_from_run

T0 = datetime(2017, 12, 6, tzinfo=UTC).timestamp()
HOUR = 3600.0
USERS = [f"user{i}@example.com" for i in range(10)]

Pair = tuple[float, str, bool]          # received, user, present


def mail_flow(hours: int = 72, every: float = 600.0, users: list[str] = USERS) -> list[tuple[float, str]]:
    """Each user gets a message every ``every`` seconds, users a minute apart."""
    return sorted((T0 + k * every + i * 60.0, user)
                  for k in range(int(hours * HOUR / every)) for i, user in enumerate(users))


def with_gap(flow, gap_start: float, gap_end: float) -> list[Pair]:
    """Everything received in (gap_start, gap_end] is absent from the replica."""
    return [(ts, user, not gap_start < ts <= gap_end) for ts, user in flow]


def detect(pairs: list[Pair]) -> Window:
    """The detection as diff.py runs it: core run, end extension, users in its span."""
    ordered = sorted(pairs, key=lambda p: (p[0], not p[2]))
    run = best_run((ts, present) for ts, _, present in ordered)
    if run is None:
        return window_from_run(None, 0, 0)
    end = run.last_absent
    run = extend_run(run, ((ts, present) for ts, _, present in ordered if ts > end))
    span = [p for p in pairs if run.first_absent <= p[0] <= run.last_absent]
    absent_users = len({user for _, user, present in span if not present})
    return window_from_run(run, absent_users, len({user for _, user, _ in span}))


def restored(window: Window, pairs: list[Pair]) -> list[Pair]:
    return [p for p in pairs if not p[2] and window.contains(p[0])]


GAP_START = T0 + 30 * HOUR + 90      # between two deliveries: the last replication
GAP_END = T0 + 37 * HOUR + 30


def test_clean_gap_has_the_right_bounds():
    pairs = with_gap(mail_flow(), GAP_START, GAP_END)
    absent = [p for p in pairs if not p[2]]
    window = detect(pairs)
    assert window.source == "auto"
    assert window.since == max(ts for ts, _, present in pairs if present and ts <= GAP_START)
    assert window.until == max(ts for ts, _, _ in absent)
    assert restored(window, pairs) == absent
    assert "10 of 10 users" in window.evidence


def test_no_absent_mail_means_no_gap():
    window = detect(with_gap(mail_flow(hours=4), 0, 0))
    assert window.empty and "no gap" in window.evidence
    assert not window.contains(T0 + HOUR)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 400), max_size=4, unique=True), st.data())
def test_late_arrivals_do_not_split_the_gap(spacing_seeds, data):
    """A few gap messages reached the replica late (backup MX): the rest is still restored."""
    pairs = with_gap(mail_flow(), GAP_START, GAP_END)
    gap = [i for i, p in enumerate(pairs) if not p[2]]
    # Late arrivals anywhere in the gap, at least four absent messages apart.
    late: list[int] = []
    for position in sorted(data.draw(st.sets(st.integers(0, len(gap) - 1), max_size=4))):
        if not late or position - late[-1] >= 4:
            late.append(position)
    for position in late:
        ts, user, _ = pairs[gap[position]]
        pairs[gap[position]] = (ts, user, True)
    window = detect(pairs)
    still_absent = [p for p in pairs if not p[2]]
    assert restored(window, pairs) == still_absent
    last_replicated = max(ts for ts, _, present in pairs if present and ts <= GAP_START)
    assert window.since >= last_replicated        # not widened into the history before


def test_late_arrival_as_second_message_of_the_gap_keeps_the_first():
    pairs = with_gap(mail_flow(), GAP_START, GAP_END)
    gap = [i for i, p in enumerate(pairs) if not p[2]]
    ts, user, _ = pairs[gap[1]]
    pairs[gap[1]] = (ts, user, True)
    window = detect(pairs)
    assert window.contains(pairs[gap[0]][0])


def test_late_arrivals_near_the_end_do_not_cut_it_short():
    pairs = with_gap(mail_flow(), GAP_START, GAP_END)
    gap = [i for i, p in enumerate(pairs) if not p[2]]
    # The backup MX delivered more and more of the last hour of the gap.
    for n, i in enumerate(gap[-60:]):
        if n % 3 != 0:
            ts, user, _ = pairs[i]
            pairs[i] = (ts, user, True)
    window = detect(pairs)
    assert restored(window, pairs) == [p for p in pairs if not p[2]]


def test_present_and_absent_in_the_same_second_at_the_start():
    """Replication stopped inside a second: the absent message of that second is restored."""
    flow = mail_flow(hours=12)
    cut = flow[200][0]
    pairs = [(ts, user, ts < cut or (ts == cut and user == "present@example.com")
              or ts > cut + 3 * HOUR) for ts, user in flow]
    pairs.append((cut, "present@example.com", True))
    window = detect(pairs)
    assert window.contains(cut)
    assert restored(window, pairs) == [p for p in pairs if not p[2]]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 10 * 30 * 6 - 20), min_size=1, max_size=12, unique=True))
def test_scattered_deletions_before_the_gap_do_not_widen_it(deleted_positions):
    """Users deleted a few old messages: the window still starts at the last replication."""
    pairs = with_gap(mail_flow(), GAP_START, GAP_END)
    before_gap = [i for i, p in enumerate(pairs) if p[0] <= GAP_START]
    # Deletions anywhere before the gap, except in its last 20 messages.
    for position in deleted_positions:
        ts, user, _ = pairs[before_gap[position]]
        pairs[before_gap[position]] = (ts, user, False)
    window = detect(pairs)
    last_replicated = max(ts for ts, _, present in pairs if present and ts <= GAP_START)
    assert window.since == last_replicated
    assert window.until == max(ts for ts, _, present in pairs if not present)
    assert not any(window.contains(pairs[before_gap[p]][0]) for p in deleted_positions)


def test_a_lone_user_deleting_a_day_of_mail_is_no_gap():
    pairs = [(ts, user, not (user == USERS[3] and T0 + 24 * HOUR < ts <= T0 + 48 * HOUR))
             for ts, user in mail_flow()]
    window = detect(pairs)
    assert window.empty
    assert not window.contains(T0 + 30 * HOUR)
    assert "looks like deletions" in window.evidence
    assert "--since/--until" in window.evidence


def test_window_from_run_refuses_a_minority_of_users():
    run = best_run([(T0, True)] + [(T0 + i, False) for i in range(1, 7)] + [(T0 + 7, True)])
    assert run is not None
    refused = window_from_run(run, users_absent=4, users_active=10)
    assert refused.empty
    assert "6 messages, 4 of 10 active users" in refused.evidence
    assert "looks like deletions" in refused.evidence
    assert window_from_run(run, users_absent=1, users_active=10).empty
    assert not window_from_run(run, users_absent=5, users_active=10).empty
    # One user alone is no failover, unless the archive only has that user.
    assert window_from_run(run, users_absent=1, users_active=1, users_total=6).empty
    assert window_from_run(run, users_absent=1, users_active=1, users_total=1) == Window(
        T0, T0 + 6, "auto", window_from_run(run, 1, 1, 1).evidence)


def test_a_small_cluster_of_absent_mail_is_no_gap():
    run = best_run([(T0, True), (T0 + 1, False), (T0 + 2, False), (T0 + 3, True)])
    assert run is not None
    assert window_from_run(run, users_absent=2, users_active=2).empty


def test_gap_until_the_end_of_the_timeline():
    pairs = with_gap(mail_flow(hours=12), T0 + 10 * HOUR, T0 + 99 * HOUR)
    window = detect(pairs)
    assert window.until == max(ts for ts, _, _ in pairs)
    assert "no mail reached the replica after it" in window.evidence


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
