"""File store readers: maildir, mbox, eml (restore/stores/)."""

from __future__ import annotations

import base64
import gzip
import os
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from crosscheck import assert_maildir_agrees, assert_mbox_agrees, mbox_view
from factory import compressed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from restore.errors import StoreError, UnreadableItem
from restore.mailnames import decode_mutf7, name_text
from restore.stores import Item, StoreOptions, Unit, Unreadable, files, open_store
from restore.stores.mbox import MboxStore

WHEN = datetime(2017, 12, 8, 21, 13, 5, tzinfo=UTC)
AS_ROOT = os.geteuid() == 0


def scan(store):
    """(items, problems) of a whole store, problems as {where: reason}."""
    units, problems = [], {}
    for unit in store.units():
        if isinstance(unit, Unreadable):
            problems[unit.where] = unit.reason
        else:
            units.append(unit)
    items = []
    for got in store.read(units):
        if isinstance(got, Unreadable):
            problems[got.where] = got.reason
        else:
            items.append(got)
    return items, problems


def snapshot(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """What any write, rename or chmod under ``root`` would change."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                                st.st_mode)
    return out


# -- all kinds -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["maildir", "mbox", "eml"])
def test_missing_store_path_cannot_run(tmp_path, kind):
    with pytest.raises(StoreError) as excinfo:
        open_store(f"{kind}:{tmp_path}/nowhere")
    assert excinfo.value.exit_code == 3


def test_missing_template_root_cannot_run(tmp_path):
    with pytest.raises(StoreError):
        open_store(f"maildir:{tmp_path}/vmail/%d/%n/Maildir")


def test_directory_that_is_not_a_maildir_cannot_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not a Maildir"):
        open_store(f"maildir:{tmp_path}/empty")


@pytest.mark.parametrize("kind", ["maildir", "mbox", "eml"])
def test_stores_are_read_without_writing(tmp_path, mail_factory, monkeypatch, request, kind):
    msgs = [mail_factory.make_message() for _ in range(3)]
    root = tmp_path / "store"
    if kind == "maildir":
        mail_factory.write_maildir(root, {"INBOX": msgs[:2], "Sent": msgs[2:]}, flags="S")
    elif kind == "mbox":
        mail_factory.write_mbox(root / "inbox.zst", msgs, compress="zst")
    else:
        mail_factory.write_eml_tree(root, msgs, compress="gz")
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        os.chmod(dirpath, 0o555)
    request.addfinalizer(lambda: [os.chmod(d, 0o755) for d, _, _ in os.walk(root)])
    before = snapshot(root)
    opened_flags = []
    real_open = os.open

    def recording_open(path, flags, *args, **kwargs):
        opened_flags.append(flags)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    store = open_store(f"{kind}:{root}")
    items, problems = scan(store)
    for item in items:
        store.open_ref(item.ref)
    monkeypatch.undo()

    assert not problems
    assert sorted(i.data for i in items) == sorted(msgs)
    assert opened_flags and all(f & os.O_ACCMODE == os.O_RDONLY for f in opened_flags)
    assert not any(f & (os.O_CREAT | os.O_TRUNC | os.O_APPEND) for f in opened_flags)
    assert snapshot(root) == before


def _evict(root: Path) -> bool:
    """Drop the files under ``root`` from the page cache; whether the file system does."""
    paths = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())

    def drop() -> None:
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)        # only clean pages can be dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)

    drop()
    fd = os.open(paths[0], os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
        dropped = False
    except BlockingIOError:
        dropped = True
    finally:
        os.close(fd)
    drop()      # the probe started reading the file in
    return dropped


@pytest.mark.parametrize("kind", ["maildir", "eml"])
def test_files_read_from_the_disk_give_what_cached_files_give(tmp_path, mail_factory, kind):
    """Files not in the page cache are asked for ahead of reading; nothing read changes."""
    msgs = [mail_factory.make_message(subject=f"m{i}") for i in range(120)]
    root = tmp_path / "store"
    if kind == "maildir":
        mail_factory.write_maildir(root, {"INBOX": msgs[:100], "Sent": msgs[100:]}, flags="S")
        box = root / "cur"
    else:
        mail_factory.write_eml_tree(root, msgs[:60], compress="zst", subdir="2017/12/08")
        mail_factory.write_eml_tree(root, msgs[60:], subdir="2017/12/09")
        box = root / "2017/12/08"
    (box / "empty").write_bytes(b"")
    (box / "fifo").unlink(missing_ok=True)
    os.mkfifo(box / "fifo")
    (tmp_path / "outside").write_bytes(msgs[0])
    (box / "link").symlink_to(tmp_path / "outside")
    store = open_store(f"{kind}:{root}")
    if not _evict(root):
        pytest.skip("this file system keeps files in memory whatever fadvise says")

    cold, cold_problems = scan(store)
    warm, warm_problems = scan(store)

    assert [(i.ref, i.data, i.delivered) for i in cold] == [
        (i.ref, i.data, i.delivered) for i in warm
    ]
    assert sorted(i.data for i in cold) == sorted(msgs)
    assert cold_problems == warm_problems and len(cold_problems) == 3


# -- eml -------------------------------------------------------------------------


def test_eml_tree_round_trips_plain_and_compressed(tmp_path, mail_factory):
    root = tmp_path / "gateway"
    plain = mail_factory.make_message(subject="plain")
    gz = mail_factory.make_message(subject="gz")
    zst = mail_factory.make_message(subject="zst")
    paths = [
        *mail_factory.write_eml_tree(root, [plain], subdir="2017/12/08", mtime=WHEN),
        *mail_factory.write_eml_tree(root, [gz], compress="gz", subdir="2017/12/09", mtime=WHEN),
        *mail_factory.write_eml_tree(root, [zst], compress="zst", subdir="2017/12/10", mtime=WHEN),
    ]
    # a name that says nothing: the content decides
    disguised = root / "misc" / "blob"
    disguised.parent.mkdir()
    disguised.write_bytes(compressed(plain, "zst"))

    store = open_store(f"eml:{root}")
    items, problems = scan(store)

    assert not problems
    assert [i.ref for i in items] == [str(p.relative_to(root)) for p in paths] + ["misc/blob"]
    assert items[1].ref.endswith(".eml.gz")
    assert [i.data for i in items] == [plain, gz, zst, plain]
    assert all(i.delivered == WHEN.timestamp() for i in items[:3])
    assert all(i.unit.user is None and i.unit.folder == "INBOX" for i in items)
    for item in items:
        assert store.open_ref(item.ref) == item.data
    assert store.users() is None


def test_eml_bad_items_are_reported_and_the_run_goes_on(tmp_path, mail_factory):
    root = tmp_path / "gateway"
    good = mail_factory.make_message()
    [good_path] = mail_factory.write_eml_tree(root, [good], subdir="")
    (root / "empty.eml").write_bytes(b"")
    (root / "garbage.eml").write_bytes(os.urandom(64) + b"\x00" * 16)
    (root / "notes.txt").write_bytes(b"just some text\nwithout a header\n")
    (root / "cut.eml.zst").write_bytes(compressed(good, "zst")[:-10])
    damaged = bytearray(gzip.compress(good * 20))
    damaged[len(damaged) // 2] ^= 0xFF
    (root / "damaged.eml.gz").write_bytes(bytes(damaged))
    secret = tmp_path / "secret.eml"
    secret.write_bytes(good)
    (root / "escape.eml").symlink_to(secret)
    (root / "inside.eml").symlink_to(good_path)
    (root / ".tmp-being-written").write_bytes(b"")
    locked = root / "locked.eml"
    locked.write_bytes(good)
    locked.chmod(0)

    items, problems = scan(open_store(f"eml:{root}"))

    readable = [good_path.name, "inside.eml"] + (["locked.eml"] if AS_ROOT else [])
    assert sorted(i.ref for i in items) == sorted(readable)
    assert problems["empty.eml"] == "empty"
    assert "binary" in problems["garbage.eml"]
    assert "no header block" in problems["notes.txt"]
    assert problems["cut.eml.zst"] == "truncated zstd frame"
    assert "corrupt gzip" in problems["damaged.eml.gz"]
    assert problems["escape.eml"] == "symlink pointing outside the store root"
    if not AS_ROOT:  # root reads whatever the permissions say
        assert problems["locked.eml"] == "Permission denied"
    assert ".tmp-being-written" not in problems


def test_eml_refs_cannot_leave_the_store(tmp_path, mail_factory):
    root = tmp_path / "gateway"
    mail_factory.write_eml_tree(root, [mail_factory.make_message()], subdir="")
    (tmp_path / "outside.eml").write_bytes(mail_factory.make_message())
    store = open_store(f"eml:{root}")
    for ref in ["../outside.eml", "/etc/passwd", "a/../../outside.eml", "", "nothing.eml"]:
        with pytest.raises(UnreadableItem):
            store.open_ref(ref)


def test_eml_single_file_may_be_a_symlink_named_explicitly(tmp_path, mail_factory):
    [path] = mail_factory.write_eml_tree(tmp_path / "real", [mail_factory.make_message()],
                                         subdir="")
    (tmp_path / "named.eml").symlink_to(path)
    for named in (path, tmp_path / "named.eml"):
        items, problems = scan(open_store(f"eml:{named}"))
        assert not problems and [i.ref for i in items] == [path.name]


# -- maildir -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [("&AMQ-rger", "Ärger"), ("Tom &- Jerry", "Tom & Jerry"), ("&ZeVnLIqe-", "日本語"),
     ("&broken", "&broken")],
)
def test_decode_mutf7(encoded, decoded):
    assert decode_mutf7(encoded) == decoded


def test_maildir_round_trips_folders_and_skips_tmp_and_index_files(tmp_path, mail_factory):
    root = tmp_path / "Maildir"
    inbox, sent, archived, umlaut = (mail_factory.make_message(subject=s) for s in "ISAU")
    mail_factory.write_maildir(
        root, {"INBOX": [inbox], "Sent": [sent], "Archive/2017": [archived], "Ärger": [umlaut]},
        mtime=WHEN,
    )
    (root / "tmp" / "half-delivered").write_bytes(b"Subject: partial")
    for name in ("dovecot.index", "dovecot.index.log", "dovecot-uidlist", "subscriptions"):
        (root / name).write_bytes(b"\x00\x01index")
    (root / ".Sent" / "maildirfolder").write_bytes(b"")
    (root / ".Sent" / "dovecot-keywords").write_bytes(b"0 $Junk\n")

    store = open_store(f"maildir:{root}")
    items, problems = scan(store)

    assert not problems
    by_folder = {i.unit.folder: i for i in items}
    assert {f: i.data for f, i in by_folder.items()} == {
        "INBOX": inbox, "Sent": sent, "Archive/2017": archived, "Ärger": umlaut,
    }
    assert by_folder["Archive/2017"].ref.startswith(".Archive.2017/new/")
    assert by_folder["INBOX"].ref.startswith("new/")
    assert all(i.delivered == WHEN.timestamp() and i.unit.user is None for i in items)
    assert {m.folder for m in assert_maildir_agrees(root)} == {
        "", "Sent", "Archive.2017", "&AMQ-rger"}
    assert store.users() is None
    for item in items:
        assert store.open_ref(item.ref) == item.data


def test_maildir_flag_changes_keep_ref_and_stamp(tmp_path, mail_factory):
    root = tmp_path / "Maildir"
    [path] = mail_factory.write_maildir(root, {"INBOX": [mail_factory.make_message()]}, flags="")
    store = open_store(f"maildir:{root}")
    [before] = store.units()
    assert ":2," not in before.ref

    path.rename(path.with_name(path.name.replace(":2,", ":2,RS")))
    [after] = store.units()
    assert (after.ref, after.stamp) == (before.ref, before.stamp)
    [item] = store.read([before])
    assert isinstance(item, Item)


def test_maildir_open_ref_follows_a_message_from_new_to_cur(tmp_path, mail_factory):
    root = tmp_path / "Maildir"
    msg = mail_factory.make_message()
    [path] = mail_factory.write_maildir(root, {"INBOX": [msg]})
    store = open_store(f"maildir:{root}")
    [unit] = store.units()
    assert store.open_ref(unit.ref) == msg  # indexes the folder
    path.rename(root / "cur" / f"{path.name}:2,S")  # a client saw it
    assert store.open_ref(unit.ref) == msg
    (root / "cur" / f"{path.name}:2,S").unlink()
    with pytest.raises(UnreadableItem, match="no such message"):
        store.open_ref(unit.ref)


def test_maildir_compressed_messages_are_told_by_magic(tmp_path, mail_factory):
    root = tmp_path / "Maildir"
    msgs = [mail_factory.make_message(), mail_factory.make_message()]
    paths = mail_factory.write_maildir(root, {"INBOX": msgs})
    paths[0].write_bytes(compressed(msgs[0], "zst"))
    paths[1].write_bytes(compressed(msgs[1], "gz")[:-4])
    items, problems = scan(open_store(f"maildir:{root}"))
    assert [i.data for i in items] == [msgs[0]]
    assert list(problems.values()) == ["truncated gzip stream"]


def test_maildir_template_derives_users_from_path_variables(tmp_path, mail_factory):
    vmail = tmp_path / "vmail"
    alice_msg, alice_sent, bob_msg = (mail_factory.make_message() for _ in range(3))
    template = mail_factory.write_maildir_tree(vmail, {
        "alice@example.com": {"INBOX": [alice_msg], "Sent": [alice_sent]},
        "bob@example.org": {"INBOX": [bob_msg]},
    })
    (vmail / "example.com" / "lost+found").mkdir()  # no Maildir below: not a user

    store = open_store(f"maildir:{template}")
    items, problems = scan(store)

    assert not problems
    assert store.users() == {"alice@example.com", "bob@example.org"}
    assert [(i.unit.user, i.unit.folder, i.data) for i in items] == [
        ("alice@example.com", "INBOX", alice_msg),
        ("alice@example.com", "Sent", alice_sent),
        ("bob@example.org", "INBOX", bob_msg),
    ]
    assert items[1].ref.startswith("example.com/alice/Maildir/.Sent/new/")
    for item in items:
        assert store.open_ref(item.ref) == item.data


@pytest.mark.parametrize(
    ("layout", "user", "expected"),
    [("%u", "carol@example.net", "carol@example.net"), ("%n/Maildir", "dave", "dave"),
     ("%d/%n", "Erin@Example.COM", "Erin@example.com")],
)
def test_maildir_template_layouts(tmp_path, mail_factory, layout, user, expected):
    template = mail_factory.write_maildir_tree(
        tmp_path / "mail", {user: {"INBOX": [mail_factory.make_message()]}}, layout=layout
    )
    store = open_store(f"maildir:{template}")
    [unit] = store.units()
    assert unit.user == expected and store.users() == {expected}


def test_maildir_template_rejects_names_that_could_escape(tmp_path, mail_factory):
    vmail = tmp_path / "vmail"
    outside = tmp_path / "elsewhere"
    mail_factory.write_maildir(outside / "Maildir", {"INBOX": [mail_factory.make_message()]})
    template = mail_factory.write_maildir_tree(vmail, {
        "alice@example.com": {"INBOX": [mail_factory.make_message()]},
        ".hidden@example.com": {"INBOX": [mail_factory.make_message()]},
        "two words@example.com": {"INBOX": [mail_factory.make_message()]},
        "bell\x07@example.com": {"INBOX": [mail_factory.make_message()]},
    })
    (vmail / "example.com" / "mallory").symlink_to(outside)

    store = open_store(f"maildir:{template}")
    items, problems = scan(store)

    assert [i.unit.user for i in items] == ["alice@example.com"]
    assert store.users() == {"alice@example.com"}
    assert problems == {
        "example.com/.hidden/Maildir": "not a valid mailbox name: a part starts with '.'",
        "example.com/two words/Maildir": "not a valid mailbox name: contains white space",
        "example.com/bell\x07/Maildir": "not a valid mailbox name: contains a control character",
        "example.com/mallory": "symlink pointing outside the store root",
    }
    with pytest.raises(UnreadableItem):
        store.open_ref("example.com/mallory/Maildir/new/x")


def test_maildir_message_symlink_outside_root_is_unreadable(tmp_path, mail_factory):
    root = tmp_path / "Maildir"
    mail_factory.write_maildir(root, {"INBOX": []})
    (tmp_path / "secret").write_bytes(mail_factory.make_message())
    (root / "cur" / "1.M1P1.host:2,S").symlink_to(tmp_path / "secret")
    items, problems = scan(open_store(f"maildir:{root}"))
    assert not items
    assert problems == {"cur/1.M1P1.host:2,S": "symlink pointing outside the store root"}


# -- mbox --------------------------------------------------------------------------


def tricky_messages(mail_factory):
    """Bodies that need mboxrd quoting: a From_ line after a blank line, and ">From "."""
    return [
        mail_factory.make_message(body="Hi.\n\nFrom the desk of the CEO\n>From quoted\n"),
        mail_factory.make_message(body="no newline at the end"),
        mail_factory.make_message(body="Third.\n\n"),
    ]


@pytest.mark.parametrize("compress", [None, "gz", "zst"])
def test_mbox_round_trips_with_offsets_into_the_decompressed_stream(
    tmp_path, mail_factory, compress
):
    msgs = tricky_messages(mail_factory)
    dates = [datetime(2017, 12, 8, h, 5, 9, tzinfo=UTC) for h in (9, 10, 11)]
    name = f"archive.mbox{'.' + compress if compress else ''}"
    offsets = mail_factory.write_mbox(tmp_path / name, msgs, compress=compress, from_dates=dates)

    store = open_store(f"mbox:{tmp_path / name}")
    items, problems = scan(store)

    assert not problems
    assert [i.ref for i in items] == [f"{name}:{o}" for o in offsets]
    expected = [m if m.endswith(b"\n") else m + b"\n" for m in msgs]
    assert [i.data for i in items] == expected
    assert [i.delivered for i in items] == [d.timestamp() for d in dates]
    for item in reversed(items):
        assert store.open_ref(item.ref) == item.data
    assert assert_mbox_agrees(tmp_path / name) == expected


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(
    st.lists(st.sampled_from(["From me", ">From you", ">>From", "", "text", "From"]), max_size=6),
    min_size=1, max_size=4,
))
def test_mbox_any_bodies_round_trip_through_quoting(tmp_path_factory, mail_factory, bodies):
    path = tmp_path_factory.mktemp("mbox") / "box"
    msgs = [
        mail_factory.make_message(body="".join(line + "\n" for line in body)) for body in bodies
    ]
    offsets = mail_factory.write_mbox(path, msgs)
    store = open_store(f"mbox:{path}")
    items, problems = scan(store)
    assert not problems
    assert [(i.ref, i.data) for i in items] == [
        (f"box:{o}", m) for o, m in zip(offsets, msgs, strict=True)
    ]
    assert all(store.open_ref(i.ref) == i.data for i in items)
    assert assert_mbox_agrees(path) == msgs


def test_mbox_from_lines_split_only_after_a_blank_line(tmp_path):
    path = tmp_path / "hand.mbox"
    first = b"From a@x Fri Dec  8 21:13:05 2017\nSubject: one\n\nbody\nFrom here on, body text\n\n"
    second = b"From b@x Fri Dec  8 22:13:05 2017\r\nSubject: two\r\n\r\n>>From twice\r\n\r\n"
    path.write_bytes(first + second)
    items, problems = scan(open_store(f"mbox:{path}"))
    assert not problems
    assert [i.data for i in items] == [
        b"Subject: one\n\nbody\nFrom here on, body text\n",
        b"Subject: two\r\n\r\n>From twice\r\n",
    ]
    assert [i.ref for i in items] == ["hand.mbox:0", f"hand.mbox:{len(first)}"]
    # the stdlib reads mboxo: it splits at every From line, blank line before it or not
    assert len(mbox_view(path)) == 3


def test_mbox_a_from_line_needs_the_form_mbox_writers_emit(tmp_path):
    """``From SENDER DATE`` with an asctime date splits; a line merely starting "From " does not."""
    path = tmp_path / "mboxo"
    first = (b"From alice@example.com Fri Dec  8 21:13:05 2017\nSubject: meetings\n\nHello,\n\n"
             b"From now on we meet on Mondays.\n\nFrom: the board\n\n")
    second = b"From MAILER-DAEMON Sat Dec  9 08:00:00 2017\nSubject: two\n\nbody\n\n"
    third = b"From bob@example.com Sat Dec 09 08:00 +0100 2017\nSubject: three\n\nbody\n"
    path.write_bytes(first + second + third)
    store = open_store(f"mbox:{path}")
    items, problems = scan(store)
    assert not problems
    assert [i.data for i in items] == [
        b"Subject: meetings\n\nHello,\n\nFrom now on we meet on Mondays.\n\nFrom: the board\n",
        b"Subject: two\n\nbody\n",
        b"Subject: three\n\nbody\n",
    ]
    assert [i.ref for i in items] == ["mboxo:0", f"mboxo:{len(first)}",
                                      f"mboxo:{len(first) + len(second)}"]
    assert [store.open_ref(i.ref) for i in items] == [i.data for i in items]
    inside = first.index(b"From now on")
    with pytest.raises(UnreadableItem, match="no message starts at offset"):
        store.open_ref(f"mboxo:{inside}")


@pytest.mark.parametrize("compress", [None, "gz", "zst"])
def test_an_item_over_the_size_limit_is_unreadable_too_large(tmp_path, mail_factory, compress):
    small = mail_factory.make_message()
    big = mail_factory.make_message(body="x" * 100 + "\n" + "\0" * 300_000)
    mail_factory.write_eml_tree(tmp_path / "eml", [small, big], compress=compress)
    mail_factory.write_mbox(tmp_path / "box", [small, big, small], compress=compress)
    for spec in (f"eml:{tmp_path / 'eml'}", f"mbox:{tmp_path / 'box'}"):
        store = open_store(spec, StoreOptions(max_message_size=200_000))
        items, problems = scan(store)
        assert [i.data for i in items] == [small] * (len(items))
        assert len(items) == (1 if spec.startswith("eml") else 2)
        [(where, reason)] = problems.items()
        assert reason == "too large: more than 200,000 bytes (--max-message-size)"
        with pytest.raises(UnreadableItem, match="too large"):
            store.open_ref(where)
        assert [store.open_ref(i.ref) for i in items] == [i.data for i in items]
        store.close()


def test_mbox_a_long_line_is_read_in_pieces_and_kept_as_it_is(tmp_path):
    path = tmp_path / "long"
    line = b"a" * 65536 + b">From the middle of a line\n"     # a piece boundary just before ">From"
    first = b"From a@x Fri Dec  8 21:13:05 2017\nSubject: long\n\n" + line + b"\n"
    second = b"From b@x Fri Dec  8 22:13:05 2017\nSubject: next\n\nbody\n"
    path.write_bytes(first + second)
    store = open_store(f"mbox:{path}")
    items, problems = scan(store)
    assert not problems
    assert [(i.ref, i.data) for i in items] == [
        ("long:0", b"Subject: long\n\n" + line), (f"long:{len(first)}", b"Subject: next\n\nbody\n")]
    # under a limit of a few pieces, a line of many more is skipped unheld, the next message kept
    store = open_store(f"mbox:{path}", StoreOptions(max_message_size=65536 * 3))
    path.write_bytes(first.replace(line, line * 8) + second)
    items, problems = scan(store)
    assert [i.data for i in items] == [b"Subject: next\n\nbody\n"]
    assert list(problems.values()) == ["too large: more than 196,608 bytes (--max-message-size)"]
    assert items[0].ref == f"long:{len(first) + 7 * len(line)}"


def test_mbox_directory_glob_and_junk(tmp_path, mail_factory):
    root = tmp_path / "mboxes"
    mail_factory.write_mbox(root / "inbox", [mail_factory.make_message()])
    mail_factory.write_mbox(root / "2017" / "Sent.mbox.gz", [mail_factory.make_message()],
                            compress="gz")
    (root / "README").write_bytes(b"These are the mailboxes.\n")
    (root / "empty.mbox").write_bytes(b"")
    (root / ".imap").mkdir()
    (root / ".imap" / "dovecot.index").write_bytes(b"\x00")

    items, problems = scan(open_store(f"mbox:{root}"))
    assert [(i.ref, i.unit.folder) for i in items] == [("2017/Sent.mbox.gz:0", "2017/Sent"),
                                                       ("inbox:0", "INBOX")]
    assert problems == {"README": "not an mbox (does not start with a 'From ' line)"}

    globbed, problems = scan(open_store(f"mbox:{root}/**/*.gz"))
    assert [i.ref for i in globbed] == ["2017/Sent.mbox.gz:0"] and not problems
    with pytest.raises(StoreError):
        open_store(f"mbox:{root}/*.nothing")


@pytest.mark.parametrize("compress", [None, "gz"])
def test_mbox_resume_reads_only_what_was_appended(tmp_path, mail_factory, compress):
    path = tmp_path / "box"
    first = [mail_factory.make_message(), mail_factory.make_message()]
    mail_factory.write_mbox(path, first, compress=compress)
    store = MboxStore(f"mbox:{path}", str(path))
    [unit] = store.units()
    assert len(list(store.read([unit]))) == 2
    end = store.end_offset(unit)

    later = mail_factory.make_message()
    appended = tmp_path / "appended"
    [offset] = mail_factory.write_mbox(appended, [later], compress=compress)
    with open(path, "ab") as fh:  # a gz file grows by a further gzip member
        fh.write(appended.read_bytes())

    [grown] = store.units()
    assert grown.stamp != unit.stamp
    assert assert_mbox_agrees(path) == [*first, later]
    items = list(store.read([Unit(grown.ref, grown.stamp, grown.folder, resume=end)]))
    assert [(i.ref, i.data) for i in items] == [(f"box:{end + offset}", later)]
    assert store.open_ref(items[0].ref) == later


def test_mbox_resume_inside_a_rewritten_file_rereads_it_all(tmp_path, mail_factory):
    path = tmp_path / "box"
    msgs = [mail_factory.make_message(), mail_factory.make_message()]
    mail_factory.write_mbox(path, msgs)
    store = open_store(f"mbox:{path}")
    [unit] = store.units()
    items = list(store.read([Unit(unit.ref, unit.stamp, resume=7)]))
    assert [i.ref for i in items][0] == "box:0" and [i.data for i in items] == msgs


def test_mbox_truncated_zstd_keeps_the_whole_messages_before_the_damage(tmp_path, mail_factory):
    # incompressible bodies span several zstd blocks, so the cut hits only the last message
    msgs = [
        mail_factory.make_message(body=base64.encodebytes(os.urandom(100_000)).decode())
        for _ in range(3)
    ]
    path = tmp_path / "box.zst"
    offsets = mail_factory.write_mbox(path, msgs, compress="zst")
    path.write_bytes(path.read_bytes()[:-20])

    store = open_store(f"mbox:{path}")
    [unit] = store.units()
    got = list(store.read([unit]))

    assert [g.data for g in got if isinstance(g, Item)] == msgs[:2]
    [bad] = [g for g in got if isinstance(g, Unreadable)]
    assert (bad.where, bad.reason) == (f"box.zst:{offsets[2]}", "truncated zstd frame")
    assert store.end_offset(unit) is None
    with pytest.raises(UnreadableItem, match="truncated zstd frame"):
        store.open_ref(f"box.zst:{offsets[2]}")


def test_mbox_open_ref_rejects_bad_refs(tmp_path, mail_factory):
    path = tmp_path / "box"
    mail_factory.write_mbox(path, [mail_factory.make_message()])
    store = open_store(f"mbox:{path}")
    for ref, reason in [("box:5", "no message starts"), ("box:999999", "no message starts"),
                        ("box", "PATH:OFFSET"), ("../box:0", "not a path"),
                        ("box:-1", "PATH:OFFSET")]:
        with pytest.raises(UnreadableItem, match=reason):
            store.open_ref(ref)


def test_mbox_file_outside_root_via_symlink_is_unreadable(tmp_path, mail_factory):
    root = tmp_path / "mboxes"
    root.mkdir()
    mail_factory.write_mbox(tmp_path / "private", [mail_factory.make_message()])
    (root / "link").symlink_to(tmp_path / "private")
    items, problems = scan(open_store(f"mbox:{root}"))
    assert not items and problems == {"link": "symlink pointing outside the store root"}


@pytest.mark.parametrize("kind", ["eml", "maildir"])
def test_a_directory_larger_than_a_sorting_run_is_listed_in_name_order(
        tmp_path, mail_factory, monkeypatch, kind):
    # Large directories are sorted in runs and merged: the order (refs,
    # catalog rows, reports) must be the one a plain sort gives, hidden
    # entries left out and undecodable names kept.
    root = tmp_path / kind
    messages = [mail_factory.make_message() for _ in range(23)]
    if kind == "eml":
        written = mail_factory.write_eml_tree(root, messages)
    else:
        written = mail_factory.write_maildir(root, {"INBOX": messages})
    folder = written[0].parent
    odd = os.fsencode(folder) + b"/\xff-odd-name"
    shutil.copy(written[0], os.fsdecode(odd))
    shutil.copy(written[1], folder / ".hidden")
    for path in random.Random(7).sample(written, 9):    # names unlike the others' order
        path.rename(path.with_name("zz" + path.name[::-1]))

    def refs(cold: bool) -> list[str]:
        store = open_store(f"{kind}:{root}")
        try:
            return [u.ref for g in store.unit_groups()
                    for u in (g.unstamped if cold and g.unstamped else g.units)()]
        finally:
            store.close()

    whole = refs(cold=False)
    monkeypatch.setattr(files, "SORT_RUN", 4)
    assert refs(cold=False) == refs(cold=True) == whole
    names = sorted(name for name in os.listdir(folder) if not name.startswith("."))
    assert [ref.rsplit("/", 1)[1] for ref in whole] == [name_text(name) for name in names]
    assert len(whole) == 24 and "\\xff-odd-name" in whole[-1]
