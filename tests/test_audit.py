"""`mailrestore audit`: the cron consistency check, run as cron runs it (a subprocess).

Cron mails whatever a job prints, so a clean audit must print nothing at all;
scripts and monitoring read the exit code, the JSON and the Nagios line.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from restore.audit import default_lock_path, exclusive
from restore.demo import build_incident

NOW = datetime(2017, 12, 8, 12, 0, tzinfo=UTC)
ALICE = "alice@example.com"
BOB = "bob@example.com"
NAGIOS_LINE = re.compile(
    r"^MAILRESTORE (OK|WARNING|CRITICAL) - .+ \| missing=(\d+);(\d+);(\d+);0;(?: \S+=\d+;;;0;)*$")


def audit_env(tmp_path: Path) -> dict[str, str]:
    """The lock and any default cache stay inside the test's tmp_path."""
    env = dict(os.environ)
    for name, sub in (("HOME", "home"), ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache")):
        env[name] = str(tmp_path / sub)
    env.pop("COLUMNS", None)
    return env


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "restore", *args],
        capture_output=True, text=True, env={**audit_env(tmp_path), **env}, timeout=120,
        check=False,
    )


class Stores:
    """An eml gateway archive and a per-user Maildir replica, built message by message."""

    def __init__(self, tmp_path: Path, mail_factory):
        self.tmp_path = tmp_path
        self.factory = mail_factory
        self.archive_dir = tmp_path / "gateway"
        self.replica_dir = tmp_path / "vmail"
        self.archive = f"eml:{self.archive_dir}"
        self.replica = "maildir:" + mail_factory.write_maildir_tree(
            self.replica_dir, {ALICE: {"INBOX": []}, BOB: {"INBOX": []}})
        self.archive_dir.mkdir()
        self.catalog = str(tmp_path / "catalog.sqlite")

    def mail(self, user: str, received: datetime, delivered: bool) -> str:
        """Archive one message for ``user``; with ``delivered`` the replica has it too."""
        data = self.factory.make_message(received=received, envelope_to=user, date=received)
        self.factory.write_eml_tree(self.archive_dir, [data])
        if delivered:
            local, _, domain = user.partition("@")
            self.factory.write_maildir(self.replica_dir / domain / local / "Maildir",
                                       {"INBOX": [data]})
        [mid] = re.findall(rb"^Message-ID: (\S+)", data, re.MULTILINE)
        return mid.decode()

    def audit(self, *extra: str, now: datetime | None = NOW,
              **env: str) -> subprocess.CompletedProcess[str]:
        args = ["audit", "--archive", self.archive, "--replica", self.replica,
                "--catalog", self.catalog]
        if now is not None:
            args += ["--now", now.isoformat()]
        return run_cli(self.tmp_path, *args, *extra, **env)

    def deliver_only(self, user: str, received: datetime) -> None:
        """Mail on the replica that the archive never saw."""
        local, _, domain = user.partition("@")
        data = self.factory.make_message(received=received, envelope_to=user, date=received)
        self.factory.write_maildir(self.replica_dir / domain / local / "Maildir", {"INBOX": [data]})

    def delete(self, message_id: str) -> None:
        """The user deletes a delivered message."""
        [path] = [p for p in self.replica_dir.rglob("*") if p.is_file()
                  and message_id.encode() in p.read_bytes()]
        path.unlink()

    def message_files(self) -> list[Path]:
        return [p for root in (self.archive_dir, self.replica_dir) for p in root.rglob("*")
                if p.is_file()]


@pytest.fixture
def stores(tmp_path, mail_factory) -> Stores:
    return Stores(tmp_path, mail_factory)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


# -- the cron contract: silent when clean, a short report when not -----------------


def test_clean_audit_prints_nothing_and_exits_0(stores):
    stores.mail(ALICE, ago(hours=2), delivered=True)
    stores.mail(BOB, ago(hours=20), delivered=True)
    stores.mail(ALICE, ago(days=3), delivered=False)     # long gone: deleted, not our business
    done = stores.audit()
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_missing_mail_is_reported_per_user_with_a_next_step(stores):
    first = stores.mail(ALICE, ago(hours=20), delivered=False)
    second = stores.mail(ALICE, ago(hours=3), delivered=False)
    stores.mail(ALICE, ago(hours=2), delivered=True)
    bobs = stores.mail(BOB, ago(hours=5), delivered=False)
    done = stores.audit()
    assert done.returncode == 1, done.stderr
    report = done.stdout
    assert "3 archived message(s)" in report
    assert (f"{ALICE}: 2 missing, received 2017-12-07 16:00:00 UTC to 2017-12-08 09:00:00 UTC"
            in report)
    assert f"{BOB}: 1 missing" in report
    for mid in (first, second, bobs):
        assert mid in report
    assert "Next:" in report
    assert "--now 2017-12-08T12:00:00+00:00 --window 24h --grace 15m --plan gap.jsonl" in report
    assert len(report.splitlines()) < 15, "a cron mail, not a dump"


def test_the_next_step_lists_exactly_the_missing_mail(stores, tmp_path):
    lost = {stores.mail(ALICE, ago(hours=3), delivered=False),
            stores.mail(BOB, ago(hours=7), delivered=False)}
    stores.mail(ALICE, ago(hours=30), delivered=False)     # before the window: not to restore
    stores.mail(BOB, ago(hours=2), delivered=True)
    deleted = stores.mail(BOB, ago(hours=4), delivered=True)
    assert stores.audit().returncode == 1
    stores.delete(deleted)                                  # by its user: not to restore
    done = stores.audit()
    assert done.returncode == 1
    [command] = [line for line in done.stdout.splitlines()
                 if line.strip().startswith("mailrestore audit --")]
    plan = tmp_path / "gap.jsonl"
    args = shlex.split(command)[1:]
    args[args.index("gap.jsonl")] = str(plan)
    again = run_cli(tmp_path, *args, "--catalog", stores.catalog)
    assert again.returncode == 1, again.stderr
    header, *lines = plan.read_text().splitlines()
    assert "mailrestore_plan" in json.loads(header)
    assert {json.loads(line)["message_id"] for line in lines} == lost


def test_hostile_message_ids_print_as_they_are(stores):
    hostile = "<[/]x[bold]:smile:@evil.example>"
    data = stores.factory.make_message(message_id=hostile, received=ago(hours=1), envelope_to=ALICE)
    stores.factory.write_eml_tree(stores.archive_dir, [data])
    done = stores.audit()
    assert done.returncode == 1, done.stderr
    assert f"      {hostile}\n" in done.stdout


def test_only_a_few_message_ids_per_user(stores):
    ids = [stores.mail(ALICE, ago(hours=h), delivered=False) for h in range(1, 9)]
    done = stores.audit()
    assert done.returncode == 1
    assert f"{ALICE}: 8 missing" in done.stdout
    assert sum(mid in done.stdout for mid in ids) == 3


def test_mail_inside_the_grace_period_may_still_be_in_flight(stores):
    stores.mail(ALICE, ago(minutes=5), delivered=False)
    stores.mail(BOB, ago(hours=1), delivered=True)
    done = stores.audit("--grace", "15m")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_mail_older_than_the_window_is_not_reported(stores):
    stores.mail(ALICE, ago(hours=30), delivered=False)
    stores.mail(BOB, ago(hours=1), delivered=True)
    done = stores.audit("--window", "24h")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_window_edges_exclude_now_minus_window_and_include_now_minus_grace(stores):
    stores.mail(ALICE, ago(hours=6), delivered=False)                # exactly now - window: out
    inside = stores.mail(ALICE, ago(hours=6) + timedelta(seconds=1), delivered=False)
    at_grace = stores.mail(BOB, ago(minutes=10), delivered=False)   # exactly now - grace: in
    stores.mail(BOB, ago(minutes=10) + timedelta(seconds=1), delivered=False)
    done = stores.audit("--window", "6h", "--grace", "10m", "--format", "json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["counts"]["missing"] == 2
    assert {(m["user"], tuple(m["message_ids"])) for m in doc["missing"]} == {
        (ALICE, (inside,)), (BOB, (at_grace,))}


@pytest.mark.parametrize("now_option", [(), ("--now", "auto")])
def test_without_now_the_audit_checks_up_to_the_current_time(stores, now_option):
    now = datetime.now(UTC).replace(microsecond=0)
    late = stores.mail(ALICE, now - timedelta(hours=1), delivered=False)
    stores.mail(BOB, now - timedelta(hours=2), delivered=True)
    done = stores.audit(*now_option, now=None)
    assert done.returncode == 1, done.stderr
    assert f"{ALICE}: 1 missing" in done.stdout
    assert late in done.stdout


# -- auditing a past period --------------------------------------------------------


def test_now_audits_the_day_of_an_incident(tmp_path):
    incident = build_incident(tmp_path / "incident", users=4, per_user_per_day=6, days=1)
    now = incident.gap_until + timedelta(hours=1)
    since, until = now - timedelta(hours=12), now
    # Every archive copy the replica lacks and received in the audited window:
    # the gap's mail, and any mail a user deleted that day (the audit cannot tell).
    expected = sum(
        1 for copy in incident.truth.copies() if copy.received is not None
        for _, klass in copy.classes
        if klass in ("missing", "outside-window") and since < copy.received <= until)
    assert expected >= incident.truth.counts["missing"] > 0
    args = ["audit", "--replica", incident.replica, "--catalog", str(tmp_path / "catalog.sqlite"),
            "--alias-map", str(incident.alias_map), "--now", now.isoformat(),
            "--window", "12h", "--grace", "0m", "--format", "json"]
    for spec in incident.archives:
        args += ["--archive", spec]
    done = run_cli(tmp_path, *args)
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["counts"]["missing"] == expected
    assert sum(m["missing"] for m in doc["missing"]) == expected
    assert doc["window"]["since"] == since.isoformat()
    assert doc["window"]["until"] == until.isoformat()


# -- options -----------------------------------------------------------------------


@pytest.mark.parametrize("window,grace",
                         [("90s", "30s"), ("30m", "1m"), ("2h", "15m"), ("2d", "1h")])
def test_durations_in_seconds_minutes_hours_days(stores, window, grace):
    stores.mail(ALICE, ago(seconds=45), delivered=False)
    done = stores.audit("--window", window, "--grace", grace, "--format", "json")
    doc = json.loads(done.stdout)
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    span = int(window[:-1]) * seconds[window[-1]]
    gap = int(grace[:-1]) * seconds[grace[-1]]
    assert doc["window"]["since"] == (NOW - timedelta(seconds=span)).isoformat()
    assert doc["window"]["until"] == (NOW - timedelta(seconds=gap)).isoformat()
    assert done.returncode == (1 if gap <= 45 < span else 0)


@pytest.mark.parametrize("option,value", [
    ("--window", "5 parsecs"), ("--window", ""), ("--grace", "soon"), ("--grace", "-5m"),
])
def test_a_garbage_duration_is_a_usage_error_naming_the_option(stores, option, value):
    done = stores.audit(option, value)
    assert done.returncode == 2
    assert option in done.stderr
    assert done.stdout == ""


def test_a_usage_error_is_unknown_to_nagios(stores):
    done = stores.audit("--window", "5 parsecs", "--format", "nagios")
    assert done.returncode == 3
    [line] = done.stdout.splitlines()
    assert line.startswith("MAILRESTORE UNKNOWN - ") and "--window" in line


@pytest.mark.parametrize("window,grace", [("1h", "1h"), ("1h", "2h")])
def test_grace_must_be_shorter_than_the_window(stores, window, grace):
    done = stores.audit("--window", window, "--grace", grace)
    assert done.returncode == 2
    assert "--grace" in done.stderr


def test_a_bad_now_is_a_usage_error(stores):
    done = stores.audit("--now", "yesterday-ish", now=None)
    assert done.returncode == 2
    assert "--now" in done.stderr


def test_a_store_that_does_not_exist_cannot_be_audited(stores, tmp_path):
    done = run_cli(tmp_path, "audit", "--archive", f"eml:{tmp_path / 'nowhere'}",
                   "--replica", stores.replica, "--catalog", stores.catalog)
    assert done.returncode == 3
    assert "nowhere" in done.stderr


@pytest.mark.parametrize("fmt", ["text", "nagios"])
def test_a_replica_with_no_mailboxes_is_no_all_clear(stores, tmp_path, fmt):
    """A failed mount leaves an empty mail root: every message unroutable, nothing checked."""
    stores.mail(ALICE, ago(hours=2), delivered=True)
    (tmp_path / "unmounted").mkdir()
    done = run_cli(tmp_path, "audit", "--archive", stores.archive, "--now", NOW.isoformat(),
                   "--replica", f"maildir:{tmp_path / 'unmounted'}/%d/%n/Maildir",
                   "--catalog", stores.catalog, "--format", fmt)
    assert done.returncode == 3
    said = done.stdout if fmt == "nagios" else done.stderr
    assert "unmounted" in said and "Nothing was checked" in said
    if fmt == "nagios":
        assert said.startswith("MAILRESTORE UNKNOWN - ")


def test_a_recipient_without_mailbox_does_not_stop_the_audit(stores):
    stores.mail(ALICE, ago(hours=2), delivered=True)
    stores.mail("nobody@example.com", ago(hours=2), delivered=False)
    done = stores.audit()
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# -- JSON and Nagios -------------------------------------------------------------------


def test_json_has_the_diff_fields_and_the_missing_list(stores):
    lost = stores.mail(ALICE, ago(hours=4), delivered=False)
    stores.mail(ALICE, ago(hours=3), delivered=True)
    done = stores.audit("--format", "json")
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert {"window", "counts", "users", "problems", "missing"} <= doc.keys()
    assert doc["window"]["since"] == ago(hours=24).isoformat()
    assert doc["window"]["until"] == ago(minutes=15).isoformat()
    assert "--window 24h" in doc["window"]["evidence"]
    assert doc["counts"]["missing"] == 1
    assert doc["counts"]["present"] == 1
    assert {"user": ALICE, "missing": 1, "present": 1} == {
        k: v for k, v in next(u for u in doc["users"] if u["user"] == ALICE).items()
        if k in ("user", "missing", "present")}
    assert doc["missing"] == [{"user": ALICE, "missing": 1, "oldest": ago(hours=4).isoformat(),
                               "newest": ago(hours=4).isoformat(), "message_ids": [lost]}]


def test_json_when_clean_exits_0(stores):
    stores.mail(ALICE, ago(hours=4), delivered=True)
    done = stores.audit("--format", "json")
    assert done.returncode == 0
    doc = json.loads(done.stdout)
    assert doc["counts"]["missing"] == 0
    assert doc["missing"] == []


@pytest.mark.parametrize("missing,state,code", [
    (0, "OK", 0), (1, "WARNING", 1), (2, "WARNING", 1), (3, "CRITICAL", 2), (4, "CRITICAL", 2),
])
def test_nagios_status_line_follows_the_thresholds(stores, missing, state, code):
    stores.mail(BOB, ago(hours=1), delivered=True)
    for hours in range(missing):
        stores.mail(ALICE, ago(hours=hours + 2), delivered=False)
    done = stores.audit("--format", "nagios", "--warning", "1", "--critical", "3")
    assert done.returncode == code
    [line] = done.stdout.splitlines()
    match = NAGIOS_LINE.match(line)
    assert match, line
    assert match.groups() == (state, str(missing), "1", "3")
    if missing:
        assert f"{missing} message{'s' if missing > 1 else ''} missing (1 user)" in line


def test_nagios_store_not_found_is_unknown(stores, tmp_path):
    done = run_cli(tmp_path, "audit", "--archive", stores.archive,
                   "--replica", f"maildir:{tmp_path / 'gone'}/%d/%n/Maildir",
                   "--catalog", stores.catalog, "--format", "nagios")
    assert done.returncode == 3
    [line] = done.stdout.splitlines()
    assert line.startswith("MAILRESTORE UNKNOWN - ")
    assert "gone" in line


@pytest.mark.parametrize("bad", [["--warning", "abc"], ["--window", "24h", "--bogus"]])
def test_nagios_usage_error_is_unknown_not_critical(stores, tmp_path, bad):
    done = run_cli(tmp_path, "audit", "--archive", stores.archive, "--replica", stores.replica,
                   "--catalog", stores.catalog, "--format", "nagios", *bad)
    assert done.returncode == 3
    [line] = done.stdout.splitlines()
    assert line.startswith("MAILRESTORE UNKNOWN - ")


# -- deletions: mail seen in its mailbox, then gone ------------------------------------


def test_mail_a_user_deleted_after_an_audit_saw_it_is_deleted_not_missing(stores):
    gone = stores.mail(ALICE, ago(hours=5), delivered=True)
    stores.mail(ALICE, ago(hours=4), delivered=True)
    stores.mail(BOB, ago(hours=3), delivered=True)
    assert stores.audit().returncode == 0
    stores.delete(gone)
    done = stores.audit()
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    doc = json.loads(stores.audit("--format", "json").stdout)
    counts = doc["counts"]
    assert (counts["missing"], counts["deleted"], counts["present"]) == (0, 1, 2)
    assert next(u for u in doc["users"] if u["user"] == ALICE)["deleted"] == 1
    assert doc["missing"] == []
    nagios = stores.audit("--format", "nagios")
    assert nagios.returncode == 0
    assert nagios.stdout.startswith("MAILRESTORE OK - 0 messages missing")
    assert "deleted=1;;;0;" in nagios.stdout
    verbose = stores.audit("--verbose")
    assert verbose.returncode == 0
    assert "0 missing, 1 deleted by its user" in verbose.stdout


def test_mail_that_never_reached_its_mailbox_is_reported_on_every_run(stores):
    lost = stores.mail(ALICE, ago(hours=3), delivered=False)
    stores.mail(BOB, ago(hours=2), delivered=True)
    for _ in range(2):
        done = stores.audit()
        assert done.returncode == 1, done.stderr
        assert lost in done.stdout and f"{ALICE}: 1 missing" in done.stdout


def test_a_failover_after_the_audit_saw_the_mail_is_a_loss_not_deletions(tmp_path, mail_factory):
    """Seven users' mail, every one seen delivered; then the store fails over and loses 4 hours."""
    users = [f"{name}@example.com" for name in ("ann", "ben", "cat", "dan", "eve", "fay", "gus")]
    stores = Stores(tmp_path, mail_factory)
    lost_from, lost_until = ago(hours=10), ago(hours=6)
    lost = []
    for k in range(46):
        for u, user in enumerate(users):
            received = ago(hours=23, minutes=-30 * k - 4 * u)
            mid = stores.mail(user, received, delivered=True)
            if lost_from < received <= lost_until:
                lost.append(mid)
    assert stores.audit().returncode == 0
    gone = [p for p in stores.replica_dir.rglob("*") if p.is_file()
            and any(mid.encode() in p.read_bytes() for mid in lost)]
    assert len(gone) == len(lost) == 56
    for path in gone:
        path.unlink()
    done = stores.audit("--format", "json")
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert (doc["counts"]["missing"], doc["counts"]["deleted"]) == (56, 0)
    text = stores.audit()
    assert "56 archived message(s)" in text.stdout and "A failover? auto: 56 of 56" in text.stdout


def test_an_empty_archive_while_the_replica_gets_mail_is_unknown(stores):
    stores.deliver_only(ALICE, ago(hours=3))
    done = stores.audit()
    assert done.returncode == 3
    assert "archive empty or not mounted" in done.stderr and stores.archive in done.stderr
    assert done.stdout == ""
    nagios = stores.audit("--format", "nagios")
    assert nagios.returncode == 3
    assert nagios.stdout.startswith("MAILRESTORE UNKNOWN - archive empty or not mounted")


def test_a_quiet_window_with_no_mail_anywhere_is_all_clear(stores):
    stores.mail(ALICE, ago(days=3), delivered=True)
    stores.deliver_only(BOB, ago(days=3))
    done = stores.audit()
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# -- --fail-on: what makes the audit speak ---------------------------------------------


def unreadable_item(stores: Stores) -> None:
    (stores.archive_dir / "broken.eml.zst").write_bytes(b"\x28\xb5\x2f\xfd truncated")


def test_by_default_only_missing_mail_makes_the_audit_speak(stores):
    stores.mail(ALICE, ago(hours=2), delivered=True)
    stores.mail("nobody@example.com", ago(hours=2), delivered=False)
    unreadable_item(stores)
    done = stores.audit()
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_fail_on_unreadable_reports_the_item_and_exits_1(stores):
    stores.mail(ALICE, ago(hours=2), delivered=True)
    unreadable_item(stores)
    done = stores.audit("--fail-on", "missing,unreadable")
    assert done.returncode == 1, done.stderr
    assert "1 unreadable (--fail-on)" in done.stdout and "broken.eml.zst" in done.stdout
    assert "not in their mailbox" not in done.stdout      # nothing is missing


def test_fail_on_none_never_speaks(stores):
    stores.mail(ALICE, ago(hours=2), delivered=False)
    done = stores.audit("--fail-on", "none")
    assert (done.returncode, done.stdout) == (0, "")


def test_nagios_counts_every_fail_on_class(stores):
    stores.mail(ALICE, ago(hours=2), delivered=False)
    unreadable_item(stores)
    done = stores.audit("--format", "nagios", "--fail-on", "missing,unreadable",
                        "--warning", "1", "--critical", "2")
    assert done.returncode == 2
    [line] = done.stdout.splitlines()
    assert line.startswith("MAILRESTORE CRITICAL - 2 findings, 1 missing, 1 unreadable")
    assert line.endswith("| missing=1;1;2;0; unreadable=1;;;0; deleted=0;;;0;")
    assert NAGIOS_LINE.match(line)


def test_fail_on_a_class_the_audit_does_not_know_is_unknown_to_nagios(stores):
    done = stores.audit("--format", "nagios", "--fail-on", "gone")
    assert done.returncode == 3
    assert done.stdout.startswith("MAILRESTORE UNKNOWN - ") and "--fail-on" in done.stdout


# -- overlapping cron runs -----------------------------------------------------------


@pytest.fixture
def held_lock(stores, tmp_path, monkeypatch):
    """Another audit of the same stores is running (this test process holds its lock)."""
    monkeypatch.setenv("XDG_STATE_HOME", audit_env(tmp_path)["XDG_STATE_HOME"])
    lock = default_lock_path([stores.archive], stores.replica)
    with exclusive(lock):
        yield lock


def test_a_second_overlapping_audit_does_nothing_and_says_so(stores, held_lock):
    stores.mail(ALICE, ago(hours=2), delivered=False)
    done = stores.audit()
    assert done.returncode == 3
    assert str(held_lock) in done.stderr
    assert "did nothing" in done.stderr
    assert done.stdout == ""


def test_an_overlapping_audit_is_unknown_to_nagios(stores, held_lock):
    done = stores.audit("--format", "nagios")
    assert done.returncode == 3
    [line] = done.stdout.splitlines()
    assert line.startswith("MAILRESTORE UNKNOWN - ")
    assert str(held_lock) in line


def test_the_lock_is_released_when_an_audit_ends(stores):
    stores.mail(ALICE, ago(hours=2), delivered=True)
    assert stores.audit().returncode == 0
    assert stores.audit().returncode == 0


@pytest.mark.parametrize("fmt,unknown", [("text", ""), ("nagios", "MAILRESTORE UNKNOWN - ")])
def test_a_lock_that_cannot_be_taken_is_could_not_run(stores, tmp_path, fmt, unknown):
    not_a_dir = tmp_path / "state-is-a-file"
    not_a_dir.write_text("")
    stores.mail(ALICE, ago(hours=2), delivered=False)
    done = stores.audit("--format", fmt, XDG_STATE_HOME=str(not_a_dir))
    assert done.returncode == 3
    said = done.stdout if fmt == "nagios" else done.stderr
    assert said.startswith(unknown) and str(not_a_dir) in said and "did nothing" in said
    assert "Traceback" not in done.stderr


# -- cheap re-audit ------------------------------------------------------------------


def test_a_re_audit_of_unchanged_stores_reads_no_message_file(stores):
    lost = stores.mail(ALICE, ago(hours=4), delivered=False)
    stores.mail(ALICE, ago(hours=3), delivered=True)
    stores.mail(BOB, ago(hours=2), delivered=True)
    first = stores.audit("--format", "json")
    assert first.returncode == 1
    # Replace every message by garbage of the same size and mtime: a store
    # re-read would now find unreadable items and lose the delivered copies.
    for path in stores.message_files():
        st = path.stat()
        path.write_bytes(b"\0" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = stores.audit("--format", "json")
    assert again.returncode == 1
    assert json.loads(again.stdout) == json.loads(first.stdout)
    assert json.loads(again.stdout)["missing"][0]["message_ids"] == [lost]
