"""inject: exactly once, in order, in parallel, through failures and kill -9."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from crashy import message_ids, read_eml, write_archive
from crosscheck import assert_maildir_agrees, maildirs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from restore.errors import TargetError, TargetUnavailable, TransientError
from restore.inject import inject
from restore.journal import Journal, Row, State, entry_key
from restore.plan import PlanEntry, write_plan
from restore.targets.base import Message, Outcome, nothing
from restore.targets.maildir import MaildirSession, MaildirTarget

USERS = ["alice@example.com", "bob@example.com", "carol@example.com"]
DELIVERY_COUNTER = re.compile(r"Q(\d+)R")


def make_mailboxes(root: Path, users: Sequence[str]) -> str:
    for user in users:
        local, _, domain = user.partition("@")
        for sub in ("cur", "new", "tmp"):
            (root / domain / local / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
    return f"{root}/%d/%n/Maildir"


def maildir_of(root: Path, user: str) -> Path:
    local, _, domain = user.partition("@")
    return root / domain / local / "Maildir"


def delivered(root: Path) -> dict[str, list[tuple[str, float]]]:
    """Per user: (Message-ID, mtime) of each message in INBOX/new, in delivery order."""
    out = {}
    for maildir in maildirs(root):
        user = f"{maildir.parent.name}@{maildir.parent.parent.name}"
        new = [m for m in assert_maildir_agrees(maildir) if (m.folder, m.subdir) == ("", "new")]
        new.sort(key=lambda m: int(DELIVERY_COUNTER.search(m.key).group(1)))
        out[user] = [(re.search(rb"Message-ID: (<[^>]+>)", m.data).group(1).decode(), m.delivered)
                     for m in new]
    return out


@pytest.fixture
def setup(tmp_path: Path):
    entries = write_archive(tmp_path / "archive", USERS, 12)
    spec = make_mailboxes(tmp_path / "vmail", USERS)
    return entries, MaildirTarget(spec), tmp_path


def run(entries, target, journal, **kw):
    kw.setdefault("read_source", read_eml)
    return inject(entries, target, journal, **kw)


def test_rerun_after_success_appends_nothing(setup):
    entries, target, tmp = setup
    with Journal(tmp / "j.sqlite", target.spec) as journal:
        first = run(entries, target, journal, jobs=2, batch_size=5)
    with Journal(tmp / "j.sqlite", target.spec) as journal:
        second = run(entries, target, journal, jobs=2)
    assert (first.appended, first.already_present, first.failed) == (36, 0, 0)
    assert (second.appended, second.already_present, second.failed) == (0, 36, 0)
    counts = message_ids(tmp / "vmail")
    assert len(counts) == 36 and set(counts.values()) == {1}


def test_each_mailbox_is_written_in_received_order_with_received_mtime(setup):
    entries, target, tmp = setup
    run(list(reversed(entries)), target, None, jobs=3, batch_size=4)
    received = {e.message_id: e.received for e in entries}
    for user, messages in delivered(tmp / "vmail").items():
        assert [mtime for _, mtime in messages] == sorted(received[m] for m, _ in messages), user
        assert all(mtime == received[mid] for mid, mtime in messages)


def test_parallel_run_gives_the_same_mailboxes_as_a_serial_one(tmp_path):
    entries = write_archive(tmp_path / "archive", USERS, 10)
    results = []
    for jobs in (1, 4):
        root = tmp_path / f"vmail{jobs}"
        result = run(entries, MaildirTarget(make_mailboxes(root, USERS)), None, jobs=jobs,
                     batch_size=3)
        timeless = {k: v for k, v in result.as_dict().items() if k not in ("seconds", "rate")}
        results.append((timeless, delivered(root)))
    assert results[0] == results[1]


def test_an_unreadable_archive_item_fails_only_that_message(setup):
    entries, target, tmp = setup
    broken = entries[4]
    (tmp / "archive" / broken.ref).unlink()
    with Journal(tmp / "j.sqlite", target.spec) as journal:
        result = run(entries, target, journal, jobs=2)
        assert journal.status(broken.user)[(broken.folder, entry_key(broken))].state is State.FAILED
    assert (result.appended, result.failed) == (35, 1)
    [problem] = result.as_dict()["problems"]
    assert problem["user"] == broken.user and problem["ref"] == broken.ref
    assert "cannot read" in problem["reason"]
    write_archive(tmp / "archive", USERS, 12)  # the item is back: the next run takes only it
    with Journal(tmp / "j.sqlite", target.spec) as journal:
        again = run(entries, target, journal)
    assert (again.appended, again.already_present, again.failed) == (1, 35, 0)


def test_a_user_without_mailbox_fails_and_the_others_go_on(setup):
    entries, target, tmp = setup
    entries = entries + write_archive(tmp / "archive", ["dave@example.com"], 2)
    result = run(entries, target, None, jobs=2)
    doc = result.as_dict()
    assert (doc["appended"], doc["failed"]) == (36, 2)
    dave = next(u for u in doc["users"] if u["user"] == "dave@example.com")
    assert (dave["appended"], dave["failed"]) == (0, 2)
    assert {p["reason"] for p in doc["problems"]} == {"no mailbox"}


def test_dry_run_writes_nothing_and_shows_what_remains(setup):
    entries, target, tmp = setup
    journal_path = tmp / "state" / "j.sqlite"
    before = message_ids(tmp / "vmail")
    result = run(entries, target, Journal.open_readonly(journal_path), dry_run=True)
    assert (result.appended, result.already_present) == (36, 0)
    assert message_ids(tmp / "vmail") == before and not (tmp / "state").exists()
    with Journal(journal_path, target.spec) as journal:
        run(entries[:10], target, journal)
    files = sorted((tmp / "state").iterdir())
    result = run(entries, target, Journal.open_readonly(journal_path), dry_run=True)
    assert (result.appended, result.already_present, result.dry_run) == (26, 10, True)
    assert sorted((tmp / "state").iterdir()) == files


def test_a_message_in_doubt_is_not_written_twice(setup):
    """A run killed between writing a message and journaling it as done."""
    entries, target, tmp = setup
    entry = entries[0]
    key = (entry.user, entry.folder, entry_key(entry))
    with Journal(tmp / "j.sqlite", target.spec) as journal:
        with target.session(entry.user) as session:
            msg = Message(read_eml(entry), entry.received, entry.message_id, entry.fingerprint)
            name = session.prepare(entry.folder, msg)
            journal.mark_pending([Row(*key, name)])
            assert session.append(entry.folder, [Message(msg.data, msg.received, msg.message_id,
                                                         msg.fingerprint, planned_id=name)])[0].ok
        other = entries[1]  # journaled pending, but the crash came before the write
        journal.mark_pending([Row(other.user, other.folder, entry_key(other), "1.M1P1Q1Rx.h,S=1")])
        result = run(entries, target, journal)
        assert journal.status(entry.user)[key[1:]].target_id == name
    assert (result.appended, result.already_present) == (35, 1)
    assert set(message_ids(tmp / "vmail").values()) == {1}


class FlakyTarget(MaildirTarget):
    """A Maildir whose connection 'drops' in the middle of appends, after writing part."""

    def __init__(self, spec: str, drops: int):
        super().__init__(spec)
        self.drops = drops

    def session(self, user: str) -> MaildirSession:
        session = super().session(user)
        target = self

        class Dropping(MaildirSession):
            def append(self, folder: str, batch: Sequence[Message],
                       ready: Callable[[], None] = nothing) -> list[Outcome]:
                if target.drops:
                    target.drops -= 1
                    super().append(folder, batch[: len(batch) // 2], ready)
                    raise TransientError("connection reset")
                return super().append(folder, batch, ready)

            def stage(self, folder: str, batch: Sequence[Message]):
                # inject stages into tmp/ and commits in groups: drop half way through staging
                if target.drops:
                    target.drops -= 1
                    super().stage(folder, batch[: len(batch) // 2]).close()
                    raise TransientError("connection reset")
                return super().stage(folder, batch)

        session.__class__ = Dropping
        return session


def test_dropped_connections_are_retried_without_doubles(tmp_path):
    entries = write_archive(tmp_path / "archive", USERS, 12)
    target = FlakyTarget(make_mailboxes(tmp_path / "vmail", USERS), drops=4)
    with Journal(tmp_path / "j.sqlite", target.spec) as journal:
        # as many retries as drops: all four may hit one user, whatever the threads' timing
        result = run(entries, target, journal, jobs=2, batch_size=5, retry_delays=(0, 0, 0, 0))
    assert (result.appended, result.failed) == (36, 0)
    counts = message_ids(tmp_path / "vmail")
    assert len(counts) == 36 and set(counts.values()) == {1}


def test_a_target_that_keeps_failing_ends_the_run(tmp_path):
    entries = write_archive(tmp_path / "archive", USERS, 4)
    target = FlakyTarget(make_mailboxes(tmp_path / "vmail", USERS), drops=100)
    with pytest.raises(TargetUnavailable):
        run(entries, target, None, jobs=2, retry_delays=(0, 0))


def test_an_unusable_target_ends_the_run_before_writing(tmp_path):
    entries = write_archive(tmp_path / "archive", USERS, 2)
    root = tmp_path / "vmail"
    target = MaildirTarget(make_mailboxes(root, USERS))
    root.rename(tmp_path / "gone")  # the mail root vanished (unmounted) after the start
    with pytest.raises(TargetError):
        run(entries, target, None, jobs=2)


def test_progress_counts_every_message_once(setup):
    entries, target, _ = setup
    seen: list[int] = []
    run(entries, target, None, jobs=3, progress=seen.append)
    assert sum(seen) == len(entries)


# -- kill -9 at random moments, then a clean run: every message exactly once ----


def test_kill_9_at_any_moment_then_rerun_leaves_every_message_exactly_once(tmp_path):
    users = [f"user{i}@example.com" for i in range(8)]
    entries = write_archive(tmp_path / "archive", users, 60)
    spec = make_mailboxes(tmp_path / "vmail", users)
    plan = tmp_path / "plan.jsonl"
    with plan.open("w", encoding="utf-8") as fh:
        write_plan(fh, entries)
    command = [sys.executable, str(Path(__file__).with_name("crashy.py")),
               str(plan), spec, str(tmp_path / "j.sqlite"), "2", "7"]
    rng = random.Random(20171208)
    killed = 0
    for _ in range(8):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, 0.3))  # the import alone takes ~0.15s
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
    assert killed, "no trial was killed mid-run: the plan is too small for this machine"
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    counts = message_ids(tmp_path / "vmail")
    assert sorted(counts) == sorted(e.message_id for e in entries)
    assert {mid: n for mid, n in counts.items() if n != 1} == {}
    with Journal(tmp_path / "j.sqlite", f"maildir:{spec}") as journal:
        assert all(r.state is State.DONE for u in users for r in journal.status(u).values())


# -- injecting a plan twice equals injecting it once ----------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    jobs=st.integers(1, 3),
    batch=st.integers(1, 5),
    split=st.floats(0, 1),
)
def test_injecting_twice_equals_injecting_once(counts, jobs, batch, split):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        users = [f"u{i}@example.com" for i in range(len(counts))]
        entries: list[PlanEntry] = []
        for user, n in zip(users, counts, strict=True):
            entries += write_archive(root / "archive", [user], n)
        once, twice = root / "once", root / "twice"
        run(entries, MaildirTarget(make_mailboxes(once, users)), None, jobs=jobs, batch_size=batch)
        target = MaildirTarget(make_mailboxes(twice, users))
        with Journal(root / "j.sqlite", target.spec) as journal:
            run(entries[: int(len(entries) * split)], target, journal, jobs=jobs, batch_size=batch)
            run(entries, target, journal, jobs=jobs, batch_size=batch)
            result = run(entries, target, journal, jobs=jobs, batch_size=batch)
        assert result.appended == 0 and result.already_present == len(entries)
        strip = {u: [m for m, _ in msgs] for u, msgs in delivered(once).items()}
        assert {u: sorted(m for m, _ in msgs) for u, msgs in delivered(twice).items()} == \
            {u: sorted(ms) for u, ms in strip.items()}
        assert message_ids(once) == message_ids(twice)
