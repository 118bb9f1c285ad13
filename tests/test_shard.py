"""--shard K/N and report merge: N hosts split one restore, and their reports add up.

The promise: every user belongs to exactly one shard whatever host computes
it, N shards run at once (as GNU parallel, a Slurm array or a Kubernetes
Indexed Job run them) write every missing message exactly once, and the
merged report's totals are a single run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
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
)

from restore.demo import build_incident
from restore.errors import UsageError
from restore.merge import merge
from restore.selection import UserSelection, parse_shard, shard_of

SHARDS = 4


# -- the hash ---------------------------------------------------------------------------


def test_the_shard_is_the_documented_hash_of_the_address():
    # What another tool computes from the docstring of restore.selection.
    for user in ("alice@example.com", "bob@example.org", "zoë@example.de", ""):
        expected = int.from_bytes(hashlib.sha256(user.encode()).digest()[:8], "big") % 7
        assert shard_of(user, 7) == expected
    # kept as the tool keeps addresses: the domain's case does not move a user
    assert shard_of("Alice@EXAMPLE.com", 5) == shard_of("Alice@example.com", 5)


def test_every_user_is_in_exactly_one_shard():
    users = [f"user{i}@example.com" for i in range(2000)]
    shards = [UserSelection.from_options(shard=f"{k}/{SHARDS}") for k in range(SHARDS)]
    for user in users:
        assert sum(shard(user) for shard in shards) == 1
    sizes = Counter(shard_of(u, SHARDS) for u in users)
    assert min(sizes.values()) > 2000 / SHARDS * 0.8    # spread evenly enough to split work
    # mail for nobody is one shard's
    assert sum(shard.keeps_unaddressed for shard in shards) == 1


@pytest.mark.parametrize("text", ["4/4", "-1/4", "1", "a/b", "1/0", ""])
def test_a_shard_is_k_of_n(text):
    with pytest.raises(UsageError, match="K/N"):
        parse_shard(text)


def test_a_shard_narrows_the_other_filters():
    users = UserSelection.from_options(["*@example.com"], shard="1/3")
    assert not users.everyone and users.shard_label == "1/3"
    assert "--shard 1/3" in users.describe()
    for user in ("alice@example.com", "bob@example.com", "carol@example.org"):
        assert users(user) == (user.endswith("@example.com") and shard_of(user, 3) == 1)


# -- merging reports ----------------------------------------------------------------------


def test_findings_without_a_user_count_once_and_windows_are_compared():
    unreadable = {"class": "unreadable", "where": "eml:/gw/x.eml", "reason": "truncated"}
    docs = [
        {"shard": f"{k}/2", "window": {"since": "2017-12-08T11:00:00+00:00", "until": until},
         "counts": {"missing": 3 + k, "present": 1, "unreadable": 1},
         "users": [{"user": f"u{k}@example.com", "missing": 3 + k}],
         "problems": [unreadable]}
        for k, until in ((0, "2017-12-08T23:00:00+00:00"), (1, "2017-12-08T23:05:00+00:00"))]
    merged = merge(docs, ["a.json", "b.json"])
    assert merged["counts"] == {"missing": 7, "present": 2, "unreadable": 1}
    assert merged["problems"] == [unreadable]
    assert [u["user"] for u in merged["users"]] == ["u0@example.com", "u1@example.com"]
    assert [s["shard"] for s in merged["merge"]["shards"]] == ["0/2", "1/2"]
    assert any("different windows" in w for w in merged["merge"]["warnings"])


def test_a_missing_shard_warns_and_a_shard_given_twice_is_refused():
    doc = {"shard": "0/3", "appended": 2, "already_present": 0, "failed": 0, "users": [],
           "problems": []}
    assert any("1/3, 2/3 missing" in w for w in merge([doc], ["a"])["merge"]["warnings"])
    with pytest.raises(UsageError, match="shard 0/3 is in both a and b"):
        merge([doc, doc], ["a", "b"])
    with pytest.raises(UsageError, match="different reports"):
        merge([doc, {"shard": "1/3", "counts": {}}], ["a", "b"])


# -- N shards at once, on one machine with GNU parallel -------------------------------------


def run_shards(tmp_path: Path, env: dict[str, str], args: list[str]) -> list[dict]:
    """``restore ARGS --shard K/4`` for K = 0..3 at once under GNU parallel; their --json."""
    if shutil.which("parallel") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("GNU parallel is missing (.ci/run installs it)")
        pytest.skip("GNU parallel is not installed")
    out = tmp_path / "shards"
    out.mkdir()
    # Each shard has its own catalog and journal, as on its own host.
    command = [sys.executable, "-m", "restore", "restore", *args, "--shard", f"{{}}/{SHARDS}",
               "--catalog", f"{out}/catalog-{{}}.sqlite", "--state", f"{out}/journal-{{}}.sqlite",
               "--json"]
    template = " ".join(_quote(a) for a in command) + f" > {out}/shard-{{}}.json"
    done = subprocess.run(["parallel", "--will-cite", "-j", str(SHARDS), "--joblog",
                           str(out / "jobs.log"), template, ":::", *map(str, range(SHARDS))],
                          env=env, capture_output=True, text=True, timeout=300)
    log = (out / "jobs.log").read_text().splitlines()[1:]
    assert sorted(int(line.split("\t")[6]) for line in log) <= [1] * SHARDS, done.stderr
    assert len(log) == SHARDS, done.stderr
    return [json.loads((out / f"shard-{k}.json").read_text()) for k in range(SHARDS)]


def _quote(arg: str) -> str:
    # {} is parallel's; everything else goes to the shell as it is.
    return "'" + arg.replace("'", "'\\''") + "'" if "{}" not in arg else arg


def single_diff(env: dict[str, str], incident) -> dict:
    done = mailrestore(env, "diff", "--archive", incident.archives[0], "--replica",
                       incident.replica, "--alias-map", str(incident.alias_map), "--json")
    assert done.returncode == 1, done.stderr
    return json.loads(done.stdout)


def merged_report(env: dict[str, str], tmp_path: Path, docs: list[dict]) -> dict:
    files = []
    for k, doc in enumerate(docs):
        files.append(str(tmp_path / f"r{k}.json"))
        Path(files[-1]).write_text(json.dumps(doc))
    done = mailrestore(env, "report", "merge", *files, "--json")
    assert done.returncode == 1, done.stderr      # the incident's unreadable items
    return json.loads(done.stdout)


def assert_adds_up_to(merged: dict, single: dict) -> None:
    assert merged["counts"] == single["counts"]
    assert merged["appended"] == single["counts"]["missing"] and merged["failed"] == 0
    # inject's users are those it wrote to: the users with missing mail
    assert {u["user"]: u["appended"] for u in merged["users"]} == {
        u["user"]: u["missing"] for u in single["users"] if u["missing"]}
    assert {s["shard"] for s in merged["merge"]["shards"]} == {
        f"{k}/{SHARDS}" for k in range(SHARDS)
    }
    assert merged["merge"]["warnings"] == []


def test_four_shards_at_once_restore_a_maildir_tree_exactly_once(tmp_path):
    incident = build_incident(tmp_path / "incident", users=8)
    env = cli_env(tmp_path)
    single = single_diff(env, incident)
    w = single["window"]
    before = incident_keys(Path(incident.root) / "replica")

    docs = run_shards(tmp_path, env, [
        "--archive", incident.archives[0], "--replica", incident.replica, "--to", incident.replica,
        "--alias-map", str(incident.alias_map), "--since", w["since"], "--until", w["until"]])

    after = incident_keys(Path(incident.root) / "replica")
    assert after - before == Counter(incident.truth.missing)
    assert_adds_up_to(merged_report(env, tmp_path, docs), single)


def test_four_shards_at_once_restore_into_one_dovecot_exactly_once(tmp_path, dovecot_available):
    incident = build_incident(tmp_path / "incident", users=8)
    with Dovecot([]) as server:
        replica = serve_replica(server, incident)
        env = cli_env(tmp_path)
        single = single_diff(env, incident)
        w = single["window"]
        before = {user: keys_in(read_mailbox(server, user)) for user in incident.users}

        docs = run_shards(tmp_path, env, [
            "--archive", incident.archives[0], "--replica", replica, "--to", master_url(server),
            "--alias-map", str(incident.alias_map), "--since", w["since"], "--until", w["until"]])

        for user in incident.users:
            added = keys_in(read_mailbox(server, user)) - before[user]
            assert added == Counter(k for u, k in incident.truth.missing if u == user), user
    assert_adds_up_to(merged_report(env, tmp_path, docs), single)
