"""The hostile corpus (fixtures/hostile/): every command over a hundred nasty items at once.

The corpus is built into the test's directory by fixtures/hostile/build.py,
which also says what each item must become (its manifest). Every command
runs as an administrator runs it (a subprocess) and must: show no
traceback, exit with at most 1 (the audit: one Nagios status line), account
for every item with its reason, leave the archive bit-identical, and put
nothing into a mailbox that is not a message of the archive.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from restore.identity import facts_of
from restore.stores import Item, open_store

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "fixtures" / "hostile" / "build.py"
ARCHIVE_KINDS = {"archive-eml": "eml", "archive-mbox": "mbox", "archive-maildir": "maildir"}


def load_builder():
    spec = importlib.util.spec_from_file_location("hostile_build", BUILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Corpus:
    def __init__(self, root: Path, items: list[dict], build):
        self.root = root
        self.items = items
        self.window = ["--since", build.WINDOW[0], "--until", build.WINDOW[1]]
        self.limit = ["--max-message-size", build.MAX_MESSAGE_SIZE]
        self.stores = {kind: f"{kind}:{root / 'archive' / kind}"
                       for kind in ("eml", "mbox", "maildir")}
        self.archives = [arg for spec in self.stores.values() for arg in ("--archive", spec)]
        self.replica = f"maildir:{root / 'replica'}/%d/%n/Maildir"
        self.env = dict(os.environ)
        for name in ("CACHE", "STATE", "DATA", "CONFIG"):
            self.env[f"XDG_{name}_HOME"] = str(root.parent / "xdg" / name.lower())
        self.env.pop("MAILRESTORE_PASSWORD", None)
        self.catalog = str(root.parent / "catalog.sqlite")

    def run(self, *args: str, catalog: bool = True) -> subprocess.CompletedProcess[str]:
        extra = ["--catalog", self.catalog] if catalog else []
        run = subprocess.run([sys.executable, "-m", "restore", *args, *extra], capture_output=True,
                             text=True, env=self.env, timeout=120, stdin=subprocess.DEVNULL)
        assert "Traceback" not in run.stdout + run.stderr, (args, run.stderr)
        return run

    def of(self, *kinds: str) -> list[dict]:
        return [item for item in self.items if item["kind"] in kinds]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    root = tmp_path_factory.mktemp("hostile") / "corpus"
    build = load_builder()
    items = build.build(root)
    return Corpus(root, items, build)


def snapshot(root: Path) -> dict[str, tuple]:
    """What any change to a file under ``root`` would change: content, mode, mtime, link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                content = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as fh:
                    content = hashlib.sha256(fh.read()).hexdigest()
            else:
                content = None
            out[path] = (content, st.st_mode, st.st_mtime_ns, st.st_size)
    return out


def message_keys(spec: str) -> set[str]:
    """The identity keys of every message a store holds."""
    store = open_store(spec)
    units = [u for u in store.units() if not hasattr(u, "reason")]
    keys = {facts_of(got.data).key for got in store.read(units) if isinstance(got, Item)}
    store.close()
    return keys


def maildir_files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()
            and p.parent.name in ("new", "cur")
            and "Maildir" in p.parts}


def test_the_manifest_in_git_is_the_manifest_of_a_build(corpus):
    committed = json.loads(
        (ROOT / "fixtures" / "hostile" / "manifest.json").read_text(encoding="utf-8"))
    assert committed["items"] == corpus.items, "run: python fixtures/hostile/build.py --manifest"
    assert len(corpus.items) >= 100


def test_every_command_over_the_corpus(corpus, tmp_path):
    archive = corpus.root / "archive"
    before = snapshot(archive)
    archive_keys = set().union(*(message_keys(spec) for spec in corpus.stores.values()))
    replica_root = corpus.root / "replica"
    mail_before = maildir_files(replica_root)

    # scan: every format
    for kind, spec in corpus.stores.items():
        scan = corpus.run("scan", spec, *corpus.limit, "--json")
        assert scan.returncode == 1, scan.stderr         # each format has unreadable items
        expected = [e for item in corpus.of(f"archive-{kind}") for e in item["expect"]
                    if e["class"] == "unreadable"]
        assert json.loads(scan.stdout)["unreadable"] == len(expected), kind

    # diff: every item accounted for, with its reason
    plan = tmp_path / "plan.jsonl"
    diff = corpus.run("diff", *corpus.archives, "--replica", corpus.replica, *corpus.window,
                      *corpus.limit, "--json", "--plan", str(plan))
    assert diff.returncode == 1, diff.stderr
    doc = json.loads(diff.stdout)
    check_diff(corpus, doc, plan)

    # timeline
    timeline = corpus.run("timeline", *corpus.archives, "--replica", corpus.replica, *corpus.window,
                          *corpus.limit)
    assert timeline.returncode == 0, timeline.stderr

    # audit, in every format
    audit = ["audit", *corpus.archives, "--replica", corpus.replica, *corpus.limit,
             "--now", corpus.window[3], "--window", "24h", "--grace", "1s"]
    text = corpus.run(*audit)
    assert text.returncode == 1 and "not in their mailbox" in text.stdout, text.stderr
    as_json = corpus.run(*audit, "--format", "json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["counts"]["missing"] == doc["counts"]["missing"]
    nagios = corpus.run(*audit, "--format", "nagios")
    [line] = nagios.stdout.splitlines()
    assert line.startswith("MAILRESTORE CRITICAL - ") and nagios.returncode == 2, line

    # restore: only archive messages reach the mailboxes, exactly the missing ones
    restore = corpus.run("restore", *corpus.archives, "--replica", corpus.replica, "--to",
                         corpus.replica, *corpus.window, *corpus.limit, "--json")
    assert restore.returncode == 1, restore.stderr      # unreadable and unroutable items remain
    result = json.loads(restore.stdout)
    assert (result["appended"], result["failed"]) == (doc["counts"]["missing"], 0)
    written = {path: data for path, data in maildir_files(replica_root).items()
               if path not in mail_before}
    assert len(written) == doc["counts"]["missing"]
    assert {facts_of(data).key for data in written.values()} <= archive_keys
    assert all(b"\r" not in data for data in written.values())      # LF in Maildir, bare CRs too
    again = corpus.run("diff", *corpus.archives, "--replica", corpus.replica, *corpus.window,
                       *corpus.limit, "--json")
    assert json.loads(again.stdout)["counts"]["missing"] == 0

    # inject: every hostile plan
    for item in corpus.of("plan"):
        check_plan(corpus, item, tmp_path)

    # journals and catalogs that are not what they should be
    for item in corpus.of("journal"):
        check_journal(corpus, item, tmp_path)
    for item in corpus.of("catalog"):
        check_catalog(corpus, item, tmp_path, doc["counts"])

    assert snapshot(archive) == before      # bit-identical, mtimes and modes too


def check_diff(corpus: Corpus, doc: dict, plan: Path) -> None:
    expected = [(ARCHIVE_KINDS[item["kind"]], e) for item in corpus.of(*ARCHIVE_KINDS)
                for e in item["expect"]]
    counts = Counter(e["class"] for _, e in expected if e["class"] != "skipped")
    assert {c: n for c, n in doc["counts"].items() if n} == dict(counts)

    def located(kind: str, where: str) -> str:
        return os.path.join(corpus.root / "archive" / kind, where)

    problems = doc["problems"]
    want_unreadable = sorted((located(k, e["where"]), e.get("reason", e.get("reason_starts")))
                             for k, e in expected if e["class"] == "unreadable")
    got_unreadable = sorted((p["where"], p["reason"]) for p in problems
                            if p["class"] == "unreadable")
    assert [w for w, _ in got_unreadable] == [w for w, _ in want_unreadable]
    for (_, got), (_, want) in zip(got_unreadable, want_unreadable, strict=True):
        assert got.startswith(want)
    want_unroutable = sorted((located(k, e["where"]), e["user"], e["reason"])
                             for k, e in expected if e["class"] == "unroutable")
    assert sorted((p["where"], p.get("user"), p["reason"]) for p in problems
                  if p["class"] == "unroutable") == want_unroutable
    want_replica = sorted((f"{e['where']} (in {corpus.replica})", e["reason"])
                          for item in corpus.of("replica") for e in item["expect"])
    assert sorted((p["where"], p["reason"]) for p in problems
                  if p["class"] == "replica-unreadable") == want_replica
    entries = [entry for entry in map(json.loads, plan.read_text(encoding="utf-8").splitlines())
               if "mailrestore_plan" not in entry]     # the header line
    assert sorted((e["source"], e["ref"], e["user"]) for e in entries) == sorted(
        (corpus.stores[k], e["where"], e["user"]) for k, e in expected if e["class"] == "missing")


def check_plan(corpus: Corpus, item: dict, tmp_path: Path) -> None:
    [want] = item["expect"]
    target_root = tmp_path / f"target-{item['id']}"
    (target_root / "example.com" / "alice" / "Maildir" / "new").mkdir(parents=True)
    run = corpus.run("inject", str(corpus.root / "plans" / item["path"]), "--to",
                     f"maildir:{target_root}/%d/%n/Maildir", "--state",
                     str(tmp_path / f"journal-{item['id']}.sqlite"), *corpus.limit, "--json",
                     catalog=False)
    assert run.returncode <= 1, (item["path"], run.stderr)
    doc = json.loads(run.stdout)
    assert doc["appended"] == want["appended"], (item["path"], doc)
    reasons = [p["reason"] for p in doc["problems"]]
    assert len(reasons) == len(want["problems"]), (item["path"], reasons)
    for reason, part in zip(reasons, want["problems"], strict=True):
        assert part in reason, (item["path"], reason)
    written = maildir_files(target_root)
    assert len(written) == want["appended"]


def check_journal(corpus: Corpus, item: dict, tmp_path: Path) -> None:
    [want] = item["expect"]
    journal = tmp_path / f"copy-{item['path']}"
    shutil.copyfile(corpus.root / "journals" / item["path"], journal)
    target_root = tmp_path / f"journal-target-{item['id']}"
    maildir = target_root / "example.com" / "alice" / "Maildir"
    (maildir / "new").mkdir(parents=True)
    run = corpus.run("inject", str(corpus.root / "plans" / "bom.jsonl"), "--to",
                     f"maildir:{target_root}/%d/%n/Maildir", "--state", str(journal), catalog=False)
    assert run.returncode == want["exit"], run.stderr
    [line] = run.stderr.splitlines()     # one line, and nothing written without a journal
    assert line.startswith("mailrestore: ") and want["stderr"] in line
    assert not maildir_files(target_root)


def check_catalog(corpus: Corpus, item: dict, tmp_path: Path, counts: dict) -> None:
    [want] = item["expect"]
    catalog = tmp_path / f"copy-{item['path']}"
    shutil.copyfile(corpus.root / "catalogs" / item["path"], catalog)
    run = corpus.run("diff", *corpus.archives, "--replica", corpus.replica, *corpus.window,
                     *corpus.limit, "--json", "--catalog", str(catalog), catalog=False)
    if "exit" in want:      # not a catalog at all: refused, left as it was
        assert run.returncode == want["exit"]
        [line] = run.stderr.splitlines()
        assert want["stderr"] in line
        assert catalog.read_bytes() == (corpus.root / "catalogs" / item["path"]).read_bytes()
        return
    assert run.returncode <= 1, run.stderr
    doc = json.loads(run.stdout)
    restored = counts["missing"]    # the first run restored them meanwhile
    assert doc["counts"] == {**counts, "missing": 0, "present": counts["present"] + restored}
    if want["notice"]:
        [line] = run.stderr.splitlines()
        assert want["notice"] in line and str(catalog) in line
    else:
        assert run.stderr == ""
