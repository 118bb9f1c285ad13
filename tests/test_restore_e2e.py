"""End to end: `mailrestore restore` and `inject` as an administrator runs them.

The replica is a real Dovecot whose users' Maildirs are the incident's
replica Maildirs: `diff` reads them as files, the restore writes into them
over IMAP or straight into the Maildir, and every check reads the result
back through Dovecot, as the users' mail clients will.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from crosscheck import assert_maildir_agrees, maildirs
from dovecot import ROOT_MAIL_ID, Dovecot
from imapclient import IMAPClient

from restore.demo import Incident, build_incident
from restore.identity import fingerprint_of
from restore.plan import PlanEntry, read_plan
from restore.stores import open_store
from restore.times import iso

INCIDENT_KEY = re.compile(rb"^X-Incident-Key: (\S+)", re.MULTILINE | re.IGNORECASE)
FORMATS = {"eml.zst": ("eml",), "mbox.zst": ("mbox",), "maildir": ("maildir",)}


# -- running the CLI ------------------------------------------------------------


def cli_env(tmp_path: Path, password: str = Dovecot.master_pass) -> dict[str, str]:
    """The CLI's environment: its catalog and journal live in tmp_path, not in ~."""
    env = dict(os.environ, MAILRESTORE_PASSWORD=password)
    for name in ("CACHE", "STATE", "DATA", "CONFIG"):
        env[f"XDG_{name}_HOME"] = str(tmp_path / "xdg" / name.lower())
    return env


def mailrestore(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "restore", *args], env=env, capture_output=True,
                          text=True, timeout=120)


# -- a replica that is a Dovecot --------------------------------------------------


def serve_replica(server: Dovecot, incident: Incident) -> str:
    """Make the incident's replica Maildirs the Dovecot users' mail; the replica's STORE spec."""
    replica = Path(incident.root) / "replica"
    for user in incident.users:
        local, _, domain = user.rpartition("@")
        shutil.copytree(replica / domain / local / "Maildir", server.maildir(user))
        server.add_user(user)
    if os.getuid() == 0:  # Dovecot refuses mail owned by root: it is the mail uid's
        for dirpath, _, files in os.walk(server.base / "mail"):
            for path in (dirpath, *(os.path.join(dirpath, f) for f in files)):
                os.chown(path, ROOT_MAIL_ID, ROOT_MAIL_ID)
    return f"maildir:{server.base}/mail/%u/Maildir"


def master_url(server: Dovecot, port: int | None = None, scheme: str = "imap") -> str:
    return f"{scheme}://{server.master_user}@{server.host}:{port or server.port}"


@dataclass(frozen=True)
class Stored:
    uid: int
    key: str
    internaldate: float
    body: bytes


@dataclass(frozen=True)
class Folder:
    uidvalidity: int
    messages: list[Stored]


def read_mailbox(server: Dovecot, user: str) -> dict[str, Folder]:
    """Every folder of ``user`` as Dovecot serves it (read-only: nothing changes)."""
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=30)
    client.normalise_times = False
    try:
        client.login(user, server.password_of(user))
        folders = {}
        for flags, _, name in client.list_folders():
            if b"\\Noselect" in flags:  # the parent of Archive/2017 holds no mail
                continue
            status = client.select_folder(name, readonly=True)
            fetched = client.fetch(client.search(), ["INTERNALDATE", "BODY.PEEK[]"])
            messages = []
            for uid, item in sorted(fetched.items()):
                body = item[b"BODY[]"]
                found = INCIDENT_KEY.search(body)
                messages.append(Stored(uid, found.group(1).decode() if found else "",
                                       item[b"INTERNALDATE"].timestamp(), body))
            folders[name] = Folder(status[b"UIDVALIDITY"], messages)
        return folders
    finally:
        client.logout()


def keys_in(mailbox: dict[str, Folder]) -> Counter[str]:
    return Counter(m.key for folder in mailbox.values() for m in folder.messages)


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def read_plan_file(path: Path) -> list[PlanEntry]:
    with path.open(encoding="utf-8") as fh:
        entries = list(read_plan(fh))
    assert all(isinstance(e, PlanEntry) for e in entries), entries
    return entries


def archive_bytes(entry: PlanEntry) -> bytes:
    store = open_store(entry.source)
    try:
        return store.open_ref(entry.ref)
    finally:
        store.close()


@pytest.fixture
def replica_server(dovecot_available: None):
    """A Dovecot of the test's own: the incident's user names are the same in every test."""
    with Dovecot([]) as server:
        yield server


# -- 1. the whole job, from each archive format, into IMAP and into Maildir -------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("target_kind", ["imap", "maildir"])
def test_restore_puts_each_missing_message_back_once_with_its_received_time(
    tmp_path, replica_server, fmt, target_kind
):
    incident = build_incident(tmp_path / "incident", users=4, archive_formats=FORMATS[fmt])
    replica = serve_replica(replica_server, incident)
    target = master_url(replica_server) if target_kind == "imap" else replica
    before = {user: read_mailbox(replica_server, user) for user in incident.users}
    env = cli_env(tmp_path)
    plan = tmp_path / "gap.jsonl"

    done = mailrestore(env, "restore", *(f"--archive={a}" for a in incident.archives),
                       "--replica", replica, "--alias-map", str(incident.alias_map),
                       "--to", target, "--plan", str(plan), "--jobs", "2", "--json")

    # exit 1: the incident's archive has unreadable and unroutable items, reported
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert (report["appended"], report["failed"]) == (len(incident.truth.missing), 0)
    assert "Traceback" not in done.stderr
    received = {(user, copy.key): copy.received.timestamp()
                for copy in incident.truth.copies() for user, klass in copy.classes
                if klass == "missing"}
    entries = read_plan_file(plan)
    for user in incident.users:
        after = read_mailbox(replica_server, user)
        for name, folder in before[user].items():
            # nothing that was there moved, changed or went; the folder keeps its UIDVALIDITY
            assert after[name].uidvalidity == folder.uidvalidity, (user, name)
            assert after[name].messages[:len(folder.messages)] == folder.messages, (user, name)
        added = keys_in(after) - keys_in(before[user])
        wanted = {key for who, key in incident.truth.missing if who == user}
        assert added == Counter(wanted), user  # each restored message exactly once
        restored = {m.key: m for f in after.values() for m in f.messages if m.key in wanted}
        for entry in (e for e in entries if e.user == user):
            data = archive_bytes(entry)
            key = INCIDENT_KEY.search(data).group(1).decode()
            assert entry.received == received[user, key]
            assert restored[key].internaldate == received[user, key]
            assert lf(restored[key].body) == lf(data)


# -- 6. a hand-edited plan cannot write outside the mail root ---------------------


def plan_line(**fields: object) -> str:
    line = {"user": "alice@example.com", "folder": "INBOX", "source": "", "ref": "",
            "received": "2017-12-08T21:13:05+00:00", "size": 0, "message_id": None,
            "fingerprint": ""}
    line.update(fields)
    return json.dumps(line)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def diffed_incident(tmp_path: Path) -> tuple[Incident, dict[str, str], Path]:
    """A four-user incident, the CLI's environment, and the plan its diff wrote."""
    incident = build_incident(tmp_path / "incident", users=4)
    env = cli_env(tmp_path)
    plan = tmp_path / "gap.jsonl"
    mailrestore(env, "diff", "--archive", incident.archives[0], "--replica", incident.replica,
                "--alias-map", str(incident.alias_map), "--plan", str(plan))
    return incident, env, plan


def test_a_hostile_plan_writes_nothing_outside_the_mail_root(tmp_path):
    incident, env, plan = diffed_incident(tmp_path)
    header, *good = plan.read_text(encoding="utf-8").splitlines()
    archive = incident.archives[0]
    secret = b"Subject: not in the archive\n\nsecret\n"
    (tmp_path / "secret.eml").write_bytes(secret)
    # The fingerprint the secret has: the paths alone must stop these lines.
    fingerprint = fingerprint_of(secret)
    hostile = [
        plan_line(user="../../etc@x", source=archive, ref="2017/12/08/x.eml.zst"),
        plan_line(user="/etc/passwd@x", source=archive, ref="x"),
        plan_line(folder="../../x", source=archive, ref="x"),
        plan_line(folder=".hidden", source=archive, ref="x"),
        plan_line(folder="/tmp/abs", source=archive, ref="x"),
        plan_line(source=archive, ref="../../secret.eml", fingerprint=fingerprint),  # really there
        plan_line(source=archive, ref=str(tmp_path / "secret.eml"), fingerprint=fingerprint[::-1]),
    ]
    plan.write_text("\n".join([header, *hostile, *good]) + "\n", encoding="utf-8")
    outside = tree(tmp_path) - tree(tmp_path / "incident" / "replica")

    done = mailrestore(env, "inject", str(plan), "--to", incident.replica, "--json")

    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["appended"] == len(good) == len(incident.truth.missing)
    assert report["failed"] == len(hostile)
    reasons = [p["reason"] for p in report["problems"]]
    for rejected in ("'../../etc@x'", "'/etc/passwd@x'", "'../../x'", "'.hidden'", "'/tmp/abs'"):
        assert sum(rejected in r for r in reasons) == 1, (rejected, reasons)
    outside_refs = ("../../secret.eml", str(tmp_path / "secret.eml"))
    bad_refs = [p for p in report["problems"] if p["ref"] in outside_refs]
    assert len(bad_refs) == 2
    assert all("resolves outside the archive" in p["reason"] for p in bad_refs)
    # only the journal (under XDG_STATE_HOME) and the mailboxes grew
    grown = {p for p in tree(tmp_path) - outside if not p.startswith("incident/replica/")}
    assert all(p.startswith("xdg/") for p in grown), grown
    replica_files = [p for p in (tmp_path / "incident" / "replica").rglob("*") if p.is_file()]
    assert not any(b"secret" in p.read_bytes() for p in replica_files)


# -- --dry-run, and a second run ---------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
            for p in root.rglob("*") if p.is_file()}


def incident_keys(replica: Path) -> Counter[tuple[str, str]]:
    """(user, X-Incident-Key) of every message on a Maildir replica, read with mailbox.Maildir."""
    found: Counter[tuple[str, str]] = Counter()
    for maildir in maildirs(replica):
        user = f"{maildir.parent.name}@{maildir.parent.parent.name}"
        for stored in assert_maildir_agrees(maildir):
            key = re.search(rb"^X-Incident-Key: (\S+)", stored.data, re.M).group(1).decode()
            found[user, key] += 1
    return found


def test_dry_run_writes_nothing_and_a_second_run_appends_nothing(tmp_path):
    incident, env, plan = diffed_incident(tmp_path)
    missing = len(incident.truth.missing)
    state = tmp_path / "state" / "journal.sqlite"
    replica = tmp_path / "incident" / "replica"
    before = snapshot(replica)
    kept = incident_keys(replica)
    inject = ["inject", str(plan), "--to", incident.replica, "--state", str(state)]

    # wide enough that the listing's columns are not cut short
    dry = mailrestore({**env, "COLUMNS": "250"}, *inject, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert snapshot(replica) == before and not (tmp_path / "state").exists()
    assert "nothing written" in dry.stdout
    listed = [line for line in dry.stdout.splitlines() if "│" in line]
    for entry in read_plan_file(plan):  # it lists what it would write
        assert any(entry.user in row and iso(entry.received)[:19] in row for row in listed), entry
    dry_json = json.loads(mailrestore(env, *inject, "--dry-run", "--json").stdout)
    assert dry_json["appended"] == missing

    first = json.loads(mailrestore(env, *inject, "--json").stdout)
    assert (first["appended"], first["already_present"]) == (missing, 0)
    assert incident_keys(replica) - kept == Counter(incident.truth.missing)
    after_first = snapshot(replica)
    second = mailrestore(env, *inject, "--json")
    assert second.returncode == 0
    again = json.loads(second.stdout)
    assert (again["appended"], again["already_present"]) == (0, missing)
    assert snapshot(replica) == after_first


# -- 7. the JSON a script relies on ---------------------------------------------


def assert_inject_fields(doc: dict) -> None:
    """SPEC.md's `inject --json` / `restore --json` fields, with their types."""
    for field in ("appended", "already_present", "failed"):
        assert isinstance(doc[field], int), field
    for user in doc["users"]:
        assert isinstance(user["user"], str)
        assert isinstance(user["appended"], int) and isinstance(user["failed"], int)
    for problem in doc["problems"]:
        assert {"user", "ref", "reason"} <= set(problem), problem
    assert doc["appended"] == sum(u["appended"] for u in doc["users"])


def test_inject_and_restore_json_have_the_spec_fields(tmp_path):
    incident = build_incident(tmp_path / "incident", users=4)
    env = cli_env(tmp_path)
    common = ["--archive", incident.archives[0], "--replica", incident.replica,
              "--alias-map", str(incident.alias_map)]
    plan = tmp_path / "gap.jsonl"
    mailrestore(env, "diff", *common, "--plan", str(plan))
    with plan.open("a", encoding="utf-8") as fh:  # one message whose archive item is gone
        fh.write(plan_line(source=incident.archives[0], ref="2017/12/08/gone.eml.zst") + "\n")

    injected = json.loads(mailrestore(env, "inject", str(plan), "--to", incident.replica,
                                      "--state", str(tmp_path / "inject.sqlite"), "--json").stdout)
    assert_inject_fields(injected)
    assert injected["failed"] == 1
    [problem] = injected["problems"]
    assert (problem["user"], problem["ref"]) == ("alice@example.com", "2017/12/08/gone.eml.zst")

    again = build_incident(tmp_path / "again", users=4)
    restored = json.loads(mailrestore(
        env, "restore", "--archive", again.archives[0], "--replica", again.replica,
        "--alias-map", str(again.alias_map), "--to", again.replica, "--json").stdout)
    assert_inject_fields(restored)
    assert restored["appended"] == len(again.truth.missing)
    # the diff's findings are problems too, each naming where and why
    findings = again.truth.counts["unreadable"] + again.truth.counts["unroutable"]
    assert len(restored["problems"]) == findings
