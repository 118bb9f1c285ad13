"""The catalog re-reads only what changed, and forgets what vanished."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from typing import NamedTuple

import pytest
from crosscheck import assert_mbox_agrees
from hypothesis import given, settings
from hypothesis import strategies as st

from restore import catalog as catalog_module
from restore import cli, pipeline, rescan, scanpool
from restore.catalog import Catalog
from restore.catalogtables import envelope_json
from restore.errors import CatalogBusy, CatalogError, StoreError, WorkerDied
from restore.recipients import DEFAULT_RECIPIENT_HEADERS
from restore.rescan import READ_BATCH
from restore.stores import files, open_store
from restore.stores.maildir import MaildirStore
from tests.factory import AUTO


class Record(NamedTuple):
    """One message as the catalog holds it."""

    ref: str
    folder: str
    user: str | None
    received: float | None
    received_from: str
    size: int
    message_id: str | None
    key: str
    mid_key: str
    strict_key: str
    envelope: str


def rows_of(catalog: Catalog, sid: int) -> list[Record]:
    """The rows a scan wrote for one store, in the order it wrote them."""
    return [Record(*row) for row in catalog.db.execute(
        "SELECT m.ref, m.folder, m.user, m.received, m.received_from, m.size, m.message_id, m.key,"
        " m.mid_key, m.strict_key, e.json FROM messages m JOIN envelopes e ON e.id = m.envelope"
        " WHERE m.store=? ORDER BY m.id", (sid,))]


def scan(catalog: Catalog, spec: str):
    store = open_store(spec)
    try:
        return catalog.refresh(store)
    finally:
        store.close()


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog(tmp_path / "catalog.sqlite")
    yield cat
    cat.close()


def test_second_scan_of_unchanged_maildir_reads_nothing(catalog, mail_factory, tmp_path):
    msgs = [mail_factory.make_message(subject=f"m{i}") for i in range(20)]
    mail_factory.write_maildir(tmp_path / "md", {"INBOX": msgs[:15], "Sent": msgs[15:]})
    _, first = scan(catalog, f"maildir:{tmp_path / 'md'}")
    _, second = scan(catalog, f"maildir:{tmp_path / 'md'}")
    assert (first.read, first.messages) == (20, 20)
    assert (second.read, second.reused, second.messages) == (0, 20, 20)


def test_flag_change_rereads_nothing_and_new_file_is_read_alone(catalog, mail_factory, tmp_path):
    md = tmp_path / "md"
    paths = mail_factory.write_maildir(md,
                                       {"INBOX": [mail_factory.make_message() for _ in range(5)]},
                                       flags="")
    scan(catalog, f"maildir:{md}")
    os.rename(paths[0], str(paths[0]).replace(":2,", ":2,S"))      # a client marked it seen
    mail_factory.write_maildir(md, {"INBOX": [mail_factory.make_message()]})
    _, stats = scan(catalog, f"maildir:{md}")
    assert (stats.read, stats.reused, stats.messages) == (1, 5, 6)


def test_vanished_files_are_dropped(catalog, mail_factory, tmp_path):
    paths = mail_factory.write_eml_tree(tmp_path / "gw",
                                        [mail_factory.make_message() for _ in range(4)])
    scan(catalog, f"eml:{tmp_path / 'gw'}")
    paths[0].unlink()
    _, stats = scan(catalog, f"eml:{tmp_path / 'gw'}")
    assert (stats.dropped, stats.messages) == (1, 3)


def test_envelopes_are_kept_once_and_forgotten_with_their_messages(catalog, mail_factory, tmp_path):
    gw = tmp_path / "gw"
    paths = mail_factory.write_eml_tree(gw, [mail_factory.make_message(envelope_to=to)
                                             for to in ["a@x.test"] * 3 + ["b@x.test"] * 2])
    sid, _ = scan(catalog, f"eml:{gw}")
    assert [json.loads(r.envelope)["x-envelope-to"] for r in rows_of(catalog, sid)] == [
        ["a@x.test"]] * 3 + [["b@x.test"]] * 2
    assert catalog.db.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0] == 2
    for path in paths[3:]:
        path.unlink()
    scan(catalog, f"eml:{gw}")
    assert [json.loads(e) for (e,) in catalog.db.execute("SELECT json FROM envelopes")] == [
        {"delivered-to": ["a@x.test"], "x-envelope-to": ["a@x.test"]}]


def test_changed_file_is_reread_and_its_old_record_replaced(catalog, mail_factory, tmp_path):
    [path] = mail_factory.write_eml_tree(tmp_path / "gw",
                                         [mail_factory.make_message(subject="old")])
    sid, _ = scan(catalog, f"eml:{tmp_path / 'gw'}")
    [before] = rows_of(catalog, sid)
    # archivers replace a file by renaming a finished one over it
    (path.parent / ".tmp").write_bytes(mail_factory.make_message(message_id="<other@x>"))
    os.replace(path.parent / ".tmp", path)
    _, stats = scan(catalog, f"eml:{tmp_path / 'gw'}")
    [after] = rows_of(catalog, sid)
    assert stats.read == 1
    assert after.message_id == "<other@x>" and after.key != before.key


def test_appended_mbox_is_read_from_its_old_end(catalog, mail_factory, tmp_path):
    box = tmp_path / "archive.mbox"
    first = [mail_factory.make_message(subject=f"a{i}") for i in range(3)]
    mail_factory.write_mbox(box, first)
    sid, _ = scan(catalog, f"mbox:{box}")
    before = {r.ref for r in rows_of(catalog, sid)}
    later = [mail_factory.make_message(subject=f"b{i}") for i in range(2)]
    mail_factory.write_mbox(tmp_path / "more.mbox", later)
    with open(box, "ab") as fh:
        fh.write((tmp_path / "more.mbox").read_bytes())
    assert assert_mbox_agrees(box) == first + later
    store = open_store(f"mbox:{box}")
    reads = []
    original = store.read
    store.read = lambda units: (reads.append([u.resume for u in units]) or original(units))
    _, stats = catalog.refresh(store)
    records = rows_of(catalog, sid)
    assert stats.messages == 5 and len({r.key for r in records}) == 5
    assert before <= {r.ref for r in records}
    assert reads[0][0] > 0, "the grown mbox must be resumed, not re-read from 0"


def test_rewritten_mbox_replaces_its_records(catalog, mail_factory, tmp_path):
    box = tmp_path / "archive.mbox"
    mail_factory.write_mbox(box, [mail_factory.make_message(subject=f"a{i}") for i in range(3)])
    sid, _ = scan(catalog, f"mbox:{box}")
    # expunged one message and appended two: the file is longer but not an append
    mail_factory.write_mbox(box, [mail_factory.make_message(subject=f"c{i}", body="x" * 400)
                                  for i in range(4)])
    _, stats = scan(catalog, f"mbox:{box}")
    subjects = {r.key for r in rows_of(catalog, sid)}
    assert stats.messages == 4 and len(subjects) == 4


def test_received_time_prefers_received_header_then_store_time(catalog, mail_factory, tmp_path):
    t_recv = datetime(2017, 12, 8, 21, 13, 5, tzinfo=UTC)
    t_file = datetime(2017, 12, 9, 8, 0, tzinfo=UTC)
    with_recv = mail_factory.make_message(received=t_recv)
    without = mail_factory.make_message()
    mail_factory.write_eml_tree(tmp_path / "gw", [with_recv, without], mtime=t_file)
    sid, _ = scan(catalog, f"eml:{tmp_path / 'gw'}")
    got = sorted((r.received, r.received_from) for r in rows_of(catalog, sid))
    assert got == [(t_recv.timestamp(), "received"), (t_file.timestamp(), "delivered")]


def test_unreadable_items_are_recorded_with_reasons(catalog, mail_factory, tmp_path):
    gw = tmp_path / "gw"
    mail_factory.write_eml_tree(gw, [mail_factory.make_message()])
    (gw / "empty.eml").write_bytes(b"")
    sid, stats = scan(catalog, f"eml:{gw}")
    assert stats.messages == 1 and stats.unreadable == 1
    [problem] = catalog.problems(sid)
    assert problem.where == "empty.eml" and problem.reason


# -- Maildir directories whose stamp is unchanged are not listed ------------------


def test_unchanged_maildir_directories_are_not_listed_and_changes_still_show(
        catalog, mail_factory, tmp_path):
    md = tmp_path / "md"
    paths = mail_factory.write_maildir(
        md, {"INBOX": [mail_factory.make_message() for _ in range(4)],
             "Sent": [mail_factory.make_message() for _ in range(2)]}, flags="")
    (md / "cur" / "escape:2,").symlink_to(tmp_path / "elsewhere.eml")
    (tmp_path / "elsewhere.eml").write_bytes(mail_factory.make_message())
    # A directory changed within RACY_SECONDS has no stamp yet: let them age.
    time.sleep(files.RACY_SECONDS + 0.1)
    scan(catalog, f"maildir:{md}")
    sid, quiet = scan(catalog, f"maildir:{md}")
    assert (quiet.listed, quiet.reused, quiet.read, quiet.messages) == (0, 6, 0, 6)
    [problem] = catalog.problems(sid)
    assert problem.where == "cur/escape:2," and "outside" in problem.reason

    os.rename(paths[0], str(paths[0]) + "S")             # a client marked it seen
    mail_factory.write_maildir(md, {"INBOX": [mail_factory.make_message()]})   # into new/
    _, changed = scan(catalog, f"maildir:{md}")
    assert (changed.read, changed.reused, changed.messages) == (1, 6, 7)
    assert changed.listed == 4 + 1    # INBOX cur/ and new/ were listed, not Sent
    assert len(catalog.problems(sid)) == 1


def catalog_contents(cat: Catalog, sid: int) -> tuple:
    """Everything a scan records of a store (rows in ref order: scans in steps add in steps)."""
    db = cat.db
    return (sorted(rows_of(cat, sid), key=lambda record: record.ref),
            db.execute("SELECT unit, location, reason FROM problems WHERE store=?"
                       " ORDER BY location", (sid,)).fetchall(),
            db.execute(
                "SELECT ref, stamp FROM units WHERE store=? ORDER BY ref", (sid,)).fetchall(),
            db.execute(
                "SELECT key, units FROM groups WHERE store=? ORDER BY key", (sid,)).fetchall())


def test_new_maildir_directory_records_odd_entries_as_a_listed_one_does(mail_factory, tmp_path):
    # A directory new to the catalog is listed by name alone and its entries
    # are examined as they are read: what it records must not differ.
    md = tmp_path / "md"
    [first] = mail_factory.write_maildir(md, {"INBOX": [mail_factory.make_message()]})
    scans = {}
    for how in ("listed", "new"):
        cat = Catalog(tmp_path / f"catalog-{how}.sqlite")
        if how == "listed":   # cur/ is known: the next scan lists it, a stat per entry
            scan(cat, f"maildir:{md}")
        if not (md / "cur" / "outside:2,").is_symlink():
            mail_factory.write_maildir(md,
                                       {"INBOX": [mail_factory.make_message() for _ in range(3)]})
            (tmp_path / "elsewhere.eml").write_bytes(mail_factory.make_message())
            (md / "cur" / "outside:2,").symlink_to(tmp_path / "elsewhere.eml")
            (md / "cur" / "broken:2,").symlink_to(md / "cur" / "gone")
            (md / "cur" / "inside:2,").symlink_to(first)
            (md / "cur" / "a-directory").mkdir()
            os.mkfifo(md / "cur" / "a-fifo")
            (md / "cur" / "junk:2,").write_bytes(b"\x00\x01 binary")
        sid, stats = scan(cat, f"maildir:{md}")
        scans[how] = catalog_contents(cat, sid), (stats.units, stats.messages, stats.unreadable)
        cat.close()
    assert scans["new"] == scans["listed"]
    (records, problems, _, groups), counts = scans["new"]
    assert counts == (5 + 1, 5, 5)    # the five files that are messages, the symlinks' among them
    assert ("cur/", "cur/outside:2,", files.OUTSIDE_ROOT) in problems
    assert ("cur/", "cur/broken:2,", "broken symlink") in problems
    assert ("cur/", "cur/a-fifo", "not a regular file") in problems
    assert ("cur/junk", "cur/junk", "binary data, not a message") in problems


def test_new_eml_day_directory_records_odd_entries_as_a_listed_one_does(mail_factory, tmp_path):
    # The same for a gateway archive's day directory, listed by name alone when new.
    gw, day = tmp_path / "gw", tmp_path / "gw" / "2017" / "12" / "08"
    [first] = mail_factory.write_eml_tree(gw, [mail_factory.make_message()], compress="zst")
    scans = {}
    for how in ("listed", "new"):
        cat = Catalog(tmp_path / f"catalog-{how}.sqlite")
        if how == "listed":
            scan(cat, f"eml:{gw}")
        if not (day / "outside.eml").is_symlink():
            mail_factory.write_eml_tree(gw, [mail_factory.make_message() for _ in range(3)],
                                        compress="gz")
            (tmp_path / "elsewhere.eml").write_bytes(mail_factory.make_message())
            (day / "outside.eml").symlink_to(tmp_path / "elsewhere.eml")
            (day / "broken.eml").symlink_to(day / "gone")
            (day / "inside.eml").symlink_to(first)
            os.mkfifo(day / "a-fifo")
            (day / "junk.eml").write_bytes(b"\x00\x01 binary")
            (day / "cut.eml.zst").write_bytes(first.read_bytes()[:-5])
        sid, stats = scan(cat, f"eml:{gw}")
        scans[how] = catalog_contents(cat, sid), (stats.units, stats.messages, stats.unreadable)
        cat.close()
    assert scans["new"] == scans["listed"]
    (records, problems, units, _), counts = scans["new"]
    assert counts[:2] == (5 + 2, 5)     # the five messages (one through a symlink), cut and junk
    assert len(records) == 5 and all(stamp for _, stamp in units)
    assert ("2017/12/08/", "2017/12/08/outside.eml", files.OUTSIDE_ROOT) in problems
    assert ("2017/12/08/", "2017/12/08/broken.eml", "broken symlink") in problems
    assert ("2017/12/08/", "2017/12/08/a-fifo", "not a regular file") in problems
    assert ("2017/12/08/junk.eml", "2017/12/08/junk.eml", "binary data, not a message") in problems
    assert ("2017/12/08/cut.eml.zst", "2017/12/08/cut.eml.zst", "truncated zstd frame") in problems


def test_removed_folder_is_dropped(catalog, mail_factory, tmp_path):
    md = tmp_path / "md"
    mail_factory.write_maildir(md, {"INBOX": [mail_factory.make_message() for _ in range(3)],
                                    "Sent": [mail_factory.make_message() for _ in range(2)]})
    scan(catalog, f"maildir:{md}")
    shutil.rmtree(md / ".Sent")
    sid, stats = scan(catalog, f"maildir:{md}")
    assert (stats.dropped, stats.messages) == (2, 3)
    assert {r.folder for r in rows_of(catalog, sid)} == {"INBOX"}


# -- reading in worker processes -----------------------------------------------


@pytest.mark.parametrize("kind", ["maildir", "eml"])
def test_worker_processes_record_what_one_process_records(mail_factory, tmp_path, kind):
    messages = [mail_factory.make_message(subject=f"m{i}", message_id=None if i % 7 else AUTO)
                for i in range(3 * READ_BATCH + 17)]
    if kind == "maildir":
        mail_factory.write_maildir(tmp_path / "store",
                                   {"INBOX": messages[:-40], "Sent": messages[-40:]})
    else:
        mail_factory.write_eml_tree(tmp_path / "store", messages)
    (tmp_path / "store" / "new" if kind == "maildir" else tmp_path / "store").joinpath(
        "junk").write_bytes(b"\x00\x01 binary")
    results = []
    for workers in (1, 2, 3):
        cat = Catalog(tmp_path / f"catalog-{workers}.sqlite")
        store = open_store(f"{kind}:{tmp_path / 'store'}")
        sid, stats = cat.refresh(store, workers=workers)
        results.append((rows_of(cat, sid), cat.problems(sid), stats))
        cat.close()
    (one, one_problems, one_stats), *parallel = results
    assert len(one) == len(messages) and one_stats.unreadable == 1
    for records, problems, stats in parallel:
        assert records == one and problems == one_problems and stats == one_stats


class SlowWorkerMaildir(MaildirStore):
    """A Maildir whose forked workers read slowly, so that every worker is always busy."""

    def __init__(self, spec: str, path: str):
        super().__init__(spec, path)
        self.parent = os.getpid()
        self.read_here = 0

    def read(self, units):
        units = list(units)
        if os.getpid() == self.parent:
            self.read_here += len(units)
        else:
            time.sleep(0.05)
        return super().read(units)


@pytest.mark.parametrize("pipes", ["widened", "default size"])
def test_this_process_reads_when_every_worker_is_busy_and_order_is_kept(mail_factory, tmp_path,
                                                                          monkeypatch, pipes):
    if pipes == "default size":     # as where F_SETPIPE_SZ is missing: one batch's changes overflow
        monkeypatch.setattr(scanpool, "_widen", lambda fd: False)
    # Batches whose units, and whose changes, overflow a 64 KiB pipe: long
    # folder names and Message-IDs.
    n = 6 * READ_BATCH
    messages = [
        mail_factory.make_message(message_id=f"<{'x' * 400}.{i}@example.org>") for i in range(n)
    ]
    mail_factory.write_maildir(tmp_path / "store", {f"Projects/{'p' * 100}": messages})
    results = []
    for workers in (1, 2):
        cat = Catalog(tmp_path / f"catalog-{workers}.sqlite")
        store = SlowWorkerMaildir(f"maildir:{tmp_path / 'store'}", str(tmp_path / "store"))
        found: list = []
        scan = threading.Thread(target=lambda c=cat, s=store, w=workers, f=found: f.append(
            c.refresh(s, workers=w)), daemon=True)
        scan.start()
        scan.join(60)
        assert not scan.is_alive(), (
            "the scan hangs: the worker and this process wait for each other"
        )
        [(sid, _)] = found
        results.append((rows_of(cat, sid), store.read_here))
        cat.close()
    (one, read_alone), (two, read_here) = results
    assert read_alone == n and len(one) == n
    assert two == one                   # the same rows, in the same order
    assert 0 < read_here < n            # shared between this process and the worker


class FailingWorkerMaildir(SlowWorkerMaildir):
    """A Maildir whose forked workers die (``exit``) or fail (``raise``) on their first batch."""

    how = "exit"

    def read(self, units):
        if os.getpid() != self.parent:
            if self.how == "exit":
                os._exit(9)
            raise StoreError("disk on fire")
        return super().read(units)


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_a_worker_that_dies_or_fails_stops_the_scan_with_a_clear_error(mail_factory, tmp_path,
                                                                       monkeypatch, how):
    monkeypatch.setattr(rescan, "READ_BATCH", 10)
    mail_factory.write_maildir(tmp_path / "store", {"INBOX": [mail_factory.make_message()
                                                              for _ in range(100)]})
    cat = Catalog(tmp_path / "catalog.sqlite")
    store = FailingWorkerMaildir(f"maildir:{tmp_path / 'store'}", str(tmp_path / "store"))
    store.how = how
    started = time.monotonic()
    with pytest.raises(WorkerDied if how == "exit" else StoreError,
                       match="exit code 9|disk on fire"):
        cat.refresh(store, workers=2)
    assert time.monotonic() - started < 10          # no hang
    store_id = cat.register(store.spec, DEFAULT_RECIPIENT_HEADERS)
    assert rows_of(cat, store_id) == []   # nothing half-written
    assert not [p for p in multiprocessing.active_children() if p.name == "mailrestore-scan"]


def test_unchanged_eml_day_directories_are_not_even_looked_into(catalog, mail_factory, tmp_path,
                                                                monkeypatch):
    # A gateway archive's day directories hold thousands of files: telling
    # that an unchanged one is still a leaf must not mean listing it again.
    monkeypatch.setattr(files, "RACY_SECONDS", 0)
    gw = tmp_path / "gw"
    for day in ("2017/12/07", "2017/12/08"):
        mail_factory.write_eml_tree(gw, [mail_factory.make_message() for _ in range(3)], subdir=day)
    scan(catalog, f"eml:{gw}")
    listed: list[str] = []
    real_scandir = os.scandir

    def spying_scandir(path="."):
        listed.append(os.path.relpath(os.fspath(path), gw))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", spying_scandir)
    _, unchanged = scan(catalog, f"eml:{gw}")
    assert unchanged.messages == 6
    assert sorted(listed) == [".", "2017", "2017/12"]       # the day directories stay closed
    mail_factory.write_eml_tree(gw, [mail_factory.make_message()], subdir="2017/12/08")
    listed.clear()
    _, grown = scan(catalog, f"eml:{gw}")
    assert (grown.read, grown.messages) == (1, 7)
    assert "2017/12/08" in listed and "2017/12/07" not in listed


def test_unchanged_eml_day_directories_are_not_listed(catalog, mail_factory, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "RACY_SECONDS", 0)
    gw = tmp_path / "gw"
    for day in ("2017/12/07", "2017/12/08"):
        mail_factory.write_eml_tree(gw, [mail_factory.make_message() for _ in range(3)], subdir=day)
    scan(catalog, f"eml:{gw}")
    _, unchanged = scan(catalog, f"eml:{gw}")
    assert (unchanged.listed, unchanged.read, unchanged.messages) == (0, 0, 6)
    mail_factory.write_eml_tree(gw, [mail_factory.make_message()], subdir="2017/12/08")
    _, grown = scan(catalog, f"eml:{gw}")
    assert (grown.listed, grown.read, grown.messages) == (4, 1, 7)


def test_eml_files_beside_subdirectories_are_still_all_seen(catalog, mail_factory, tmp_path):
    gw = tmp_path / "gw"
    mail_factory.write_eml_tree(gw, [mail_factory.make_message()], subdir="2017/12/08")
    mail_factory.write_eml_tree(gw, [mail_factory.make_message()], subdir="2017")
    _, first = scan(catalog, f"eml:{gw}")
    mail_factory.write_eml_tree(gw, [mail_factory.make_message()], subdir="2017/12/08")
    _, second = scan(catalog, f"eml:{gw}")
    assert (first.messages, second.messages, second.read) == (2, 3, 1)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.lists(st.text(max_size=30), min_size=1, max_size=3),
                       min_size=1, max_size=3))
def test_envelope_headers_are_stored_as_the_json_module_writes_them(envelope):
    # Recipients are looked up in these values later: quotes, backslashes,
    # control characters and 8-bit text must come back exactly.
    assert envelope_json(envelope) == json.dumps(envelope, ensure_ascii=False)
    assert json.loads(envelope_json(envelope)) == envelope


# -- two commands, one catalog ----------------------------------------------------------


def hold_catalog(path, seconds: float) -> threading.Thread:
    """Another command in the middle of writing ``path``, for ``seconds``."""
    locked = threading.Event()

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(seconds)
        other.execute("COMMIT")
        other.close()

    thread = threading.Thread(target=hold)
    thread.start()
    locked.wait()
    return thread


def test_a_command_waits_for_another_using_the_catalog(tmp_path, monkeypatch):
    path = tmp_path / "catalog.sqlite"
    Catalog(path).close()
    monkeypatch.setattr(catalog_module, "BUSY_SECONDS", 5.0)
    holder = hold_catalog(path, 0.5)
    Catalog(path).close()      # waited, then opened
    holder.join()


def test_a_catalog_held_too_long_says_who_holds_it_and_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "catalog.sqlite"
    Catalog(path).close()
    monkeypatch.setattr(catalog_module, "BUSY_SECONDS", 0.2)
    holder = hold_catalog(path, 1.0)
    with pytest.raises(CatalogBusy) as raised:
        Catalog(path)
    holder.join()
    assert raised.value.exit_code == 3
    assert "in use by another mailrestore command" in str(raised.value)
    assert "--catalog" in str(raised.value)


def test_a_database_locked_later_in_a_run_exits_3_with_advice(tmp_path, mail_factory, monkeypatch,
                                                               capsys):
    mail_factory.write_maildir(tmp_path / "store", {"INBOX": [mail_factory.make_message()]})
    monkeypatch.setattr(catalog_module, "BUSY_SECONDS", 0.2)
    scan = pipeline.Job.scan

    def locked(job, store):
        # Another command takes the catalog after this one opened it.
        holder = hold_catalog(tmp_path / "catalog.sqlite", 1.0)
        try:
            return scan(job, store)
        finally:
            holder.join()

    monkeypatch.setattr(pipeline.Job, "scan", locked)
    monkeypatch.setattr(sys, "argv", ["mailrestore", "scan", f"maildir:{tmp_path / 'store'}",
                                      "--catalog", str(tmp_path / "catalog.sqlite")])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 3
    err = capsys.readouterr().err
    assert "in use by another mailrestore command" in err and "Traceback" not in err


def test_a_full_disk_is_reported_as_such_and_the_next_scan_recovers(catalog, mail_factory,
                                                                    tmp_path):
    # SQLite ends the transaction itself on a full disk; the scan must say the
    # disk is full, not that its own ROLLBACK failed.
    maildir = tmp_path / "md"
    body = "x" * 3000 + "\n"
    mail_factory.write_maildir(maildir, {"INBOX": [mail_factory.make_message(body=body)
                                                   for _ in range(300)]})
    pages = catalog.db.execute("PRAGMA page_count").fetchone()[0]
    catalog.db.execute(f"PRAGMA max_page_count={pages + 4}")   # the file cannot grow
    with pytest.raises(CatalogError) as failed:
        scan(catalog, f"maildir:{maildir}")
    message = str(failed.value)
    assert "the disk is full" in message and "--catalog" in message
    assert "rollback" not in message.lower()
    catalog.db.execute("PRAGMA max_page_count=1073741823")     # space freed
    stats = scan(catalog, f"maildir:{maildir}")[1]
    assert (stats.read, stats.messages) == (300, 300)
