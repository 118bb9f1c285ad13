"""The token bucket behind --max-rate: the rate holds from the first message, across threads."""

from __future__ import annotations

import threading
import time

import pytest

from restore.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_starts_empty_so_a_short_run_keeps_the_rate_too():
    clock = Clock()
    bucket = TokenBucket(10, burst=5, clock=clock)
    assert bucket.reserve(10) == pytest.approx(1.0)
    # The next taker waits behind the first: 10 + 5 messages take 1.5 s.
    assert bucket.reserve(5) == pytest.approx(1.5)


def test_idle_time_buys_one_burst_at_most():
    clock = Clock()
    bucket = TokenBucket(10, burst=5, clock=clock)
    clock.now += 3600
    assert bucket.reserve(5) == 0
    assert bucket.reserve(5) == pytest.approx(0.5)


def test_a_take_larger_than_the_burst_is_paid_by_waiting():
    clock = Clock()
    bucket = TokenBucket(2, burst=1, clock=clock)
    clock.now += 10
    assert bucket.reserve(7) == pytest.approx(3.0)


def test_threads_sharing_a_bucket_keep_its_rate_together():
    bucket = TokenBucket(400, burst=10)
    started = time.monotonic()

    def writer() -> None:
        for _ in range(10):
            bucket.take(5)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 200 messages at 400 a second: not sooner than half a second (lower bound only).
    assert time.monotonic() - started >= 200 / 400 * 0.99


def test_a_stop_ends_the_wait_and_says_so():
    bucket = TokenBucket(1, burst=1)
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert bucket.take(100, stop) is False
    assert time.monotonic() - started < 50


def test_rate_must_be_positive():
    with pytest.raises(ValueError):
        TokenBucket(0, burst=1)
