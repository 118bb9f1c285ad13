"""inject at scale: a plan read one user at a time, archive items read by reader processes.

What an administrator relies on: a plan of any size, in any order, is
injected exactly once, each user's mail together and in received-time
order; the temporary index a scattered plan needs is private and goes away;
and reading archive items in other processes changes nothing of what is
written or refused.
"""

from __future__ import annotations

import json
import os
import random
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from crashy import message_ids, write_archive
from test_inject import delivered, make_mailboxes

from restore.catalog import Catalog
from restore.journal import RunInfo
from restore.pipeline import InjectSettings, Job, PlanFileSource, inject_plan
from restore.plan import BOM, PlanHeader, Seal, open_plan, write_plan

USERS = [f"user{i}@example.com" for i in range(6)]


def write(path: Path, entries, archive: Path, bom: bool = False) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        write_plan(fh, entries, PlanHeader((f"eml:{archive}",)))
    if bom:
        path.write_bytes(BOM + path.read_bytes())
    return path


@pytest.mark.parametrize("shuffled", [False, True], ids=["as diff writes it", "scattered"])
def test_a_plan_comes_one_user_at_a_time_whatever_its_order(tmp_path, shuffled):
    entries = write_archive(tmp_path / "archive", USERS, 5)
    if shuffled:
        random.Random(7).shuffle(entries)
    plan = open_plan(str(write(tmp_path / "plan.jsonl", entries, tmp_path / "archive", bom=True)))
    assert plan.grouped is not shuffled
    assert plan.entries == len(entries) and plan.header.archives == (f"eml:{tmp_path}/archive",)
    seen_files: list[set[str]] = []

    def users():
        for user, lines in plan.users(tmp_path):
            seen_files.append({p.name for p in tmp_path.iterdir()})
            yield user, lines

    groups = list(users())
    assert sorted(u for u, _ in groups) == USERS          # each user once
    assert {e.user for u, lines in groups for e in lines if e.user != u} == set()
    assert sorted(e.ref for _, lines in groups for e in lines) == sorted(e.ref for e in entries)
    # a scattered plan is sorted in a private temporary file beside, gone afterwards
    scratch = {name for names in seen_files for name in names if name.startswith(".plan-sort-")}
    assert bool(scratch) is shuffled
    assert not any(p.name.startswith(".plan-sort-") for p in tmp_path.iterdir())


def test_the_on_disk_sort_is_private(tmp_path):
    entries = write_archive(tmp_path / "archive", USERS, 2)
    entries = entries[1::2] + entries[::2]      # each user's lines apart
    plan = open_plan(str(write(tmp_path / "plan.jsonl", entries, tmp_path / "archive")))
    assert not plan.grouped
    old = os.umask(0)       # whatever the umask
    try:
        modes = []
        for _ in plan.users(tmp_path):
            modes += [stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob(".plan-sort-*")]
    finally:
        os.umask(old)
    assert modes and set(modes) == {0o600}


def test_a_scattered_plan_injects_like_a_sorted_one(tmp_path):
    entries = write_archive(tmp_path / "archive", USERS, 8)
    results = []
    for name, order in (("sorted", entries),
                        ("scattered", random.Random(3).sample(entries, len(entries)))):
        root = tmp_path / name
        target = make_mailboxes(root, USERS)
        plan = write(tmp_path / f"{name}.jsonl", order, tmp_path / "archive")
        result = run(tmp_path / name, plan, f"maildir:{target}", readers=0)
        results.append((result.appended, delivered(root)))
    assert results[0] == results[1] and results[0][0] == len(entries)


def run(work: Path, plan_path: Path, target: str, readers: int, dry_run: bool = False):
    plan = open_plan(str(plan_path))
    seal = Seal(plan.header.archives)
    work.mkdir(parents=True, exist_ok=True)
    job = Job(catalog=Catalog(work / "catalog.sqlite"))
    settings = InjectSettings(target, state=str(work / "journal.sqlite"), jobs=3, readers=readers,
                              dry_run=dry_run)
    return inject_plan(PlanFileSource(plan), settings, job, seal=seal,
                       run_info=RunInfo("inject", plan=str(plan_path)))


def test_reader_processes_write_the_same_and_refuse_the_same(tmp_path):
    entries = write_archive(tmp_path / "archive", USERS, 10)
    changed = entries[7]
    tampered = replace(changed, fingerprint="0" * 32)      # the item no longer has it
    plan = write(tmp_path / "plan.jsonl", [tampered if e is changed else e for e in entries],
                 tmp_path / "archive")
    outcomes = []
    for readers in (0, 2):
        root = tmp_path / f"vmail{readers}"
        target = f"maildir:{make_mailboxes(root, USERS)}"
        dry = run(tmp_path / f"dry{readers}", plan, target, readers, dry_run=True)
        result = run(root, plan, target, readers)
        again = run(root, plan, target, readers)
        outcomes.append((dry.appended, result.appended, result.failed,
                         [(p.user, p.where, p.reason) for p in result.problems],
                         again.appended, again.already_present, message_ids(root)))
    assert outcomes[0] == outcomes[1]
    dry, appended, failed, problems, again, present, ids = outcomes[1]
    assert (dry, appended, failed, again, present) == (59, 59, 1, 0, 59)
    assert problems == [(changed.user, changed.ref,
                         "archive item changed since the diff: run diff again")]
    assert len(ids) == 59 and set(ids.values()) == {1}


def test_inject_of_a_scattered_plan_through_the_cli(tmp_path):
    import subprocess
    import sys

    entries = write_archive(tmp_path / "archive", USERS, 4)
    random.Random(11).shuffle(entries)
    plan = write(tmp_path / "plan.jsonl", entries, tmp_path / "archive")
    target = f"maildir:{make_mailboxes(tmp_path / 'vmail', USERS)}"
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "restore", "inject", str(plan), "--to", target,
                           "--json", "--report", str(tmp_path / "r.csv")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["appended"] == len(entries)
    assert {u["user"]: u["appended"] for u in doc["users"]} == dict.fromkeys(USERS, 4)
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + len(USERS)
