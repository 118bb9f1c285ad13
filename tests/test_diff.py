"""End to end: the diff of a generated incident finds exactly what the incident's truth says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from restore.cli import cli
from restore.demo import build_incident
from restore.plan import read_plan
from restore.stores import open_store

KEY = re.compile(rb"^X-Incident-Key: *(\S+)", re.MULTILINE)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def diff_args(incident, tmp_path: Path, *extra: str) -> list[str]:
    args = ["diff", "--replica", incident.replica, "--catalog", str(tmp_path / "catalog.sqlite")]
    for spec in incident.archives:
        args += ["--archive", spec]
    if incident.alias_map:
        args += ["--alias-map", str(incident.alias_map)]
    return args + list(extra)


def planned_keys(plan: Path) -> set[tuple[str, str]]:
    keys = set()
    stores = {}
    with plan.open() as fh:
        for entry in read_plan(fh):
            assert not isinstance(entry, Exception), entry
            store = stores.setdefault(entry.source, open_store(entry.source))
            [key] = KEY.findall(store.open_ref(entry.ref))
            keys.add((entry.user, key.decode()))
    return keys


@pytest.mark.parametrize("formats,compress", [
    (("eml",), "zst"),
    (("mbox",), "zst"),
    (("maildir",), None),
    (("eml", "mbox", "maildir"), "gz"),
])
def test_diff_matches_the_truth(tmp_path, formats, compress):
    incident = build_incident(tmp_path / "incident", archive_formats=formats, compress=compress)
    plan = tmp_path / "gap.jsonl"
    code, out = run(*diff_args(incident, tmp_path, "--json", "--plan", str(plan)))
    doc = json.loads(out)
    truth = incident.truth
    assert doc["counts"] == {**truth.counts, "deleted": 0}
    assert code == 1                                   # missing mail is a finding
    by_user = {u["user"]: u for u in doc["users"]}
    for user, classes in truth.users.items():
        if user in by_user:
            for cls in ("present", "missing", "outside-window", "duplicate"):
                assert by_user[user][cls] == classes.get(cls, 0), (user, cls)
    assert planned_keys(plan) == set(truth.missing)
    assert doc["window"]["source"] == "auto"


def datetime_of(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_window_is_found_around_the_real_gap(tmp_path):
    incident = build_incident(tmp_path / "incident")
    _, out = run(*diff_args(incident, tmp_path, "--json"))
    window = json.loads(out)["window"]
    since, until = datetime_of(window["since"]), datetime_of(window["until"])
    # bounded by the last replicated message and the last absent one inside the gap
    assert since <= incident.gap_since.timestamp() < until <= incident.gap_until.timestamp()
    assert "absent from the replica" in window["evidence"]


def test_given_window_overrides_detection_and_is_reported(tmp_path):
    incident = build_incident(tmp_path / "incident")
    _, out = run(*diff_args(incident, tmp_path, "--json",
                            "--since", incident.gap_since.isoformat(),
                            "--until", incident.gap_until.isoformat()))
    doc = json.loads(out)
    assert doc["window"]["source"] == "given"
    assert doc["counts"]["missing"] == incident.truth.counts["missing"]


def test_counts_add_up_in_the_human_report(tmp_path):
    incident = build_incident(tmp_path / "incident")
    code, out = run(*diff_args(incident, tmp_path))
    assert code == 1
    totals = re.search(r"Totals: ([\d,]+) present, ([\d,]+) missing.*?([\d,]+) outside the window, "
                       r"([\d,]+) duplicate, ([\d,]+) unroutable: ([\d,]+) \(user, message\) pairs",
                       out, re.S)
    assert totals, out
    numbers = [int(n.replace(",", "")) for n in totals.groups()]
    assert sum(numbers[:5]) == numbers[5]
    assert "truncated" in out and "unroutable" in out and "Window:" in out


def test_without_a_gap_nothing_is_missing_and_exit_is_zero(tmp_path):
    incident = build_incident(tmp_path / "incident", twists=False)
    # compare the archive with itself: everything present
    code, out = run("diff", "--archive", incident.archives[0], "--replica", incident.replica,
                    "--catalog", str(tmp_path / "c.sqlite"), "--json",
                    "--since", "2000-01-01T00:00:00", "--until", "2000-01-02T00:00:00")
    doc = json.loads(out)
    assert doc["counts"]["missing"] == 0


def test_unroutable_recipient_becomes_missing_with_create_missing(tmp_path):
    incident = build_incident(tmp_path / "incident")
    _, out = run(*diff_args(incident, tmp_path, "--json", "--create-missing"))
    doc = json.loads(out)
    rejected = [p for p in doc["problems"] if p["class"] == "unroutable"]
    assert rejected and all("rejected" in p["reason"] for p in rejected), \
        "invalid names stay unroutable even with --create-missing"
    assert doc["counts"]["unroutable"] < incident.truth.counts["unroutable"]


def test_fail_on_missing_says_whether_the_gap_is_closed(tmp_path):
    """The demo always has unreadable and unroutable items: only --fail-on missing can say 0."""
    incident = build_incident(tmp_path / "incident")
    assert run(*diff_args(incident, tmp_path, "--fail-on", "missing"))[0] == 1
    assert run(*diff_args(incident, tmp_path, "--fail-on", "none"))[0] == 0
    code, _ = run("restore", *diff_args(incident, tmp_path)[1:], "--to", incident.replica,
                  "--state", str(tmp_path / "journal.sqlite"))
    assert code == 1                                   # unreadable and unroutable items
    assert run(*diff_args(incident, tmp_path))[0] == 1
    assert run(*diff_args(incident, tmp_path, "--fail-on", "missing"))[0] == 0
    assert run(*diff_args(incident, tmp_path, "--fail-on", "missing,unreadable"))[0] == 1
    assert run(*diff_args(incident, tmp_path, "--fail-on", "outside-window"))[0] == 1


@pytest.mark.parametrize("value", ["mising", "missing,,bogus", "", "deleted"])
def test_fail_on_an_unknown_class_is_a_usage_error(tmp_path, value):
    done = mailrestore("diff", "--archive", f"eml:{tmp_path}", "--replica", f"maildir:{tmp_path}",
                       "--catalog", str(tmp_path / "c.sqlite"), "--fail-on", value)
    assert done.returncode == 2, done.stderr
    assert "--fail-on" in done.stderr and "outside-window" in done.stderr
    assert "Traceback" not in done.stderr


def mailrestore(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "restore", *args], capture_output=True, text=True)


def test_bad_store_syntax_is_a_usage_error(tmp_path):
    done = mailrestore("diff", "--archive", "nonsense:/x", "--replica", "maildir:/y",
                       "--catalog", str(tmp_path / "c.sqlite"))
    assert done.returncode == 2
    assert "bad STORE 'nonsense:/x'" in done.stderr and "Traceback" not in done.stderr


def test_missing_store_cannot_run(tmp_path):
    done = mailrestore("diff", "--archive", f"eml:{tmp_path / 'nowhere'}", "--replica",
                       f"maildir:{tmp_path / 'md'}", "--catalog", str(tmp_path / "c.sqlite"))
    assert done.returncode == 3
    assert "nowhere" in done.stderr and "Traceback" not in done.stderr


def test_plan_sources_are_absolute_so_inject_works_from_anywhere(tmp_path, monkeypatch):
    incident = build_incident(tmp_path / "incident")
    monkeypatch.chdir(tmp_path / "incident")
    plan = tmp_path / "gap.jsonl"
    run("diff", "--archive", "eml:gateway", "--replica", "maildir:replica/%d/%n/Maildir",
        "--alias-map", "aliases", "--catalog", str(tmp_path / "c.sqlite"), "--plan", str(plan))
    with plan.open() as fh:
        sources = {entry.source for entry in read_plan(fh)}
    assert sources == {f"eml:{tmp_path / 'incident' / 'gateway'}"}
    assert len(planned_keys(plan)) == incident.truth.counts["missing"]


# -- --match: what counts as the same message ---------------------------------------


def test_match_rule_decides_which_copies_count_as_the_same_message(tmp_path, mail_factory):
    # Three archived messages, each delivered to the replica in a changed form:
    # a forwarder rewrote one's From, one lost its Message-ID's twin body, and
    # one has no Message-ID at all. Each --match rule finds its own share missing.
    from datetime import UTC, datetime

    when = datetime(2017, 12, 8, 17, 0, tzinfo=UTC)
    make = mail_factory.make_message

    def msg(**kw) -> bytes:
        return make(to="alice@example.com", envelope_to="alice@example.com", received=when, **kw)

    rewritten = {"message_id": "<rewritten@example.org>", "subject": "r"}
    edited = {"message_id": "<edited@example.org>", "subject": "e"}
    archive = [msg(**rewritten, sender="Bob <bob@example.org>"), msg(**edited, body="Hello.\n"),
               msg(message_id=None, subject="anonymous", body="one\n")]
    replica = [msg(**rewritten, sender="Bob via list <list@example.net>"),
               msg(**edited, body="Hi!\n"),
               msg(message_id=None, subject="anonymous", body="one\n")]
    mail_factory.write_maildir(tmp_path / "archive", {"INBOX": archive})
    mail_factory.write_maildir(tmp_path / "replica", {"INBOX": replica})
    window = ["--since", "2017-12-08T16:00:00Z", "--until", "2017-12-08T18:00:00Z"]
    missing = {}
    for rule in ("auto", "message-id", "strict"):
        code, out = run("diff", "--archive", f"maildir:{tmp_path / 'archive'}",
                        "--replica", f"maildir:{tmp_path / 'replica'}", *window, "--match", rule,
                        "--catalog", str(tmp_path / "catalog.sqlite"), "--json")
        missing[rule] = json.loads(out)["counts"]["missing"]
        assert code == (1 if missing[rule] else 0), out
    assert missing == {"auto": 1,           # the rewritten From is another message
                       "message-id": 0,     # the same Message-IDs: all present
                       "strict": 2}         # ... and the edited body is another message too
