"""User filters: --user MASK, --users FILE, --exclude-user MASK.

The promise an administrator relies on: a run narrowed to some users reads
and writes nothing of anybody else's, and its counts still add up.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from dovecot import Dovecot
from test_restore_e2e import (
    cli_env,
    incident_keys,
    keys_in,
    mailrestore,
    master_url,
    read_mailbox,
    serve_replica,
    snapshot,
)

from restore.demo import build_incident
from restore.errors import UsageError
from restore.selection import EVERYONE, UserSelection, read_users_file

# -- the predicate ----------------------------------------------------------------


def test_masks_are_shell_style_and_exclusions_win():
    users = UserSelection.from_options(["*@Example.COM", "bob"], None, ["eve*"])
    assert users("alice@example.com") and users("bob")
    assert not users("eve@example.com")          # excluded, though the first mask matches
    assert not users("bob@example.org")          # "bob" is a whole name, not a prefix
    assert not users("alice@example.org")
    assert UserSelection.from_options(["a?ice@*"])("alice@example.com")
    assert not UserSelection.from_options(["[bc]*"])("alice@example.com")


def test_everyone_unless_narrowed():
    assert EVERYONE.everyone and EVERYONE("anyone@example.com")
    only_out = UserSelection.from_options(exclude=["spam*"])
    assert not only_out.everyone
    assert only_out("alice@example.com") and not only_out("spamtrap@example.com")


def test_users_file_names_users_and_an_imap_store_reads_them(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text("# the helpdesk's list\nalice@Example.COM   # her\n\n<bob@example.com>\n"
                    "carol@example.com\n", encoding="utf-8")
    assert read_users_file(str(path)) == ["alice@example.com", "bob@example.com",
                                          "carol@example.com"]
    users = UserSelection.from_options(["dave@example.com"], str(path), ["carol@*"])
    assert users("alice@example.com") and users("dave@example.com")
    assert not users("carol@example.com") and not users("erin@example.com")
    assert users.listed() == ["alice@example.com", "bob@example.com", "dave@example.com"]
    # a wildcard cannot be listed: the users come from the archive's recipients instead
    assert UserSelection.from_options(["a*"], str(path)).listed() is None


def test_bad_filters_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--users .*missing.txt"):
        UserSelection.from_options(users_file=str(tmp_path / "missing.txt"))
    with pytest.raises(UsageError, match="--user '': empty mask"):
        UserSelection.from_options([""])


# -- diff: another user's pairs are not made ----------------------------------------


def diff_json(env: dict[str, str], incident, *extra: str) -> dict:
    done = mailrestore(env, "diff", "--archive", incident.archives[0], "--replica",
                       incident.replica, "--alias-map", str(incident.alias_map), "--json", *extra)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def test_diff_of_some_users_counts_only_theirs_and_adds_up(tmp_path):
    incident = build_incident(tmp_path / "incident")
    env = cli_env(tmp_path)
    everyone = diff_json(env, incident)
    w = everyone["window"]
    window = ("--since", w["since"], "--until", w["until"])
    some = diff_json(env, incident, *window, "--user", "alice*", "--user", "bob@*",
                     "--exclude-user", "nobody@*")

    assert [u["user"] for u in some["users"]] == ["alice@example.com", "bob@example.com"]
    by_user = {u["user"]: u for u in everyone["users"]}
    for row in some["users"]:
        assert row == by_user[row["user"]]
    classes = ("present", "missing", "outside-window", "duplicate")
    assert {c: some["counts"][c] for c in classes} == {
        c: sum(u[c] for u in some["users"]) for c in classes}
    # unroutable recipients are nobody selected: not paired, not reported
    assert some["counts"]["unroutable"] == 0
    assert not [p for p in some["problems"] if p["class"] == "unroutable"]
    # unreadable archive items belong to no user: still reported
    assert some["counts"]["unreadable"] == everyone["counts"]["unreadable"]


def test_a_filtered_diff_leaves_the_other_users_in_the_catalog(tmp_path):
    incident = build_incident(tmp_path / "incident")
    env = cli_env(tmp_path)
    catalog = str(tmp_path / "catalog.sqlite")
    diff_json(env, incident, "--catalog", catalog)
    diff_json(env, incident, "--catalog", catalog, "--user", "alice@example.com")

    # the replica was listed for alice only; nobody else's mail was forgotten
    scanned = mailrestore(env, "scan", incident.replica, "--catalog", catalog, "--json")
    assert json.loads(scanned.stdout)["catalog"] == {
        "units_read": 0, "units_unchanged": json.loads(scanned.stdout)["messages"],
        "units_gone": 0}


# -- writing: a user filter writes no other mailbox -----------------------------------


def test_restore_into_maildir_writes_only_the_selected_mailboxes(tmp_path):
    incident = build_incident(tmp_path / "incident")
    env = cli_env(tmp_path)
    replica = Path(incident.root) / "replica" / "example.com"
    others = {p.name: snapshot(p) for p in replica.iterdir() if p.name != "carol"}
    kept = incident_keys(replica.parent)

    done = mailrestore(env, "restore", "--archive", incident.archives[0], "--replica",
                       incident.replica, "--alias-map", str(incident.alias_map),
                       "--to", incident.replica, "--user", "carol@example.com", "--json")

    assert done.returncode == 1, done.stderr      # the archive's unreadable items
    assert {p.name: snapshot(p) for p in replica.iterdir() if p.name != "carol"} == others
    carol = {(u, k) for u, k in incident.truth.missing if u == "carol@example.com"}
    assert incident_keys(replica.parent) - kept == Counter(carol)
    assert json.loads(done.stdout)["appended"] == len(carol)


def test_inject_leaves_out_plan_lines_of_other_users(tmp_path):
    incident = build_incident(tmp_path / "incident")
    env = cli_env(tmp_path)
    plan = tmp_path / "gap.jsonl"
    diff_json(env, incident, "--plan", str(plan))
    # the plan's lines after its header (which names the archives)
    lines = [json.loads(line) for line in plan.read_text().splitlines()[1:]]
    replica = Path(incident.root) / "replica"
    kept = incident_keys(replica)

    done = mailrestore(env, "inject", str(plan), "--to", incident.replica, "--json",
                       "--exclude-user", "alice@*", "--exclude-user", "bob@*")

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    skipped = sum(1 for line in lines if line["user"].startswith(("alice@", "bob@")))
    assert skipped > 0
    assert (report["not_selected"], report["failed"]) == (skipped, 0)
    assert report["appended"] == len(lines) - skipped
    written = incident_keys(replica) - kept
    assert written and not {u for u, _ in written} & {"alice@example.com", "bob@example.com"}


@pytest.fixture
def replica_server(dovecot_available: None):
    with Dovecot([]) as server:
        yield server


def test_restore_over_imap_reads_and_writes_only_the_selected_users(tmp_path, replica_server):
    incident = build_incident(tmp_path / "incident", users=4)
    serve_replica(replica_server, incident)
    imap = master_url(replica_server)
    before = {user: read_mailbox(replica_server, user) for user in incident.users}
    env = cli_env(tmp_path)
    catalog = tmp_path / "catalog.sqlite"
    users = tmp_path / "users.txt"
    users.write_text("bob@example.com\ncarol@example.com  # and her\n", encoding="utf-8")

    done = mailrestore(env, "restore", "--archive", incident.archives[0], "--replica", imap,
                       "--alias-map", str(incident.alias_map), "--to", imap, "--users", str(users),
                       "--exclude-user", "carol@*", "--catalog", str(catalog), "--json")

    assert done.returncode == 1, done.stderr      # the archive's unreadable items
    for user in incident.users:
        added = keys_in(read_mailbox(replica_server, user)) - keys_in(before[user])
        wanted = {k for u, k in incident.truth.missing if u == user} if user == "bob@example.com" \
            else set()
        assert added == Counter(wanted), user
    assert json.loads(done.stdout)["appended"] == sum(
        1 for u, _ in incident.truth.missing if u == "bob@example.com")
    # only bob's mailbox was read from the replica
    with sqlite3.connect(catalog) as db:
        read = {u for (u,) in db.execute(
            "SELECT DISTINCT m.user FROM messages m JOIN stores s ON s.id = m.store"
            " WHERE s.spec LIKE 'imap%'")}
    assert read == {"bob@example.com"}
