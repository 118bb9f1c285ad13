"""The synthetic incident: deterministic, where its specs say, and its truth adds up.

Items are read back with the standard library (``mailbox`` among it) and
zstandard only, never with mailrestore's own readers, so the truth stays
independent of the code it checks. One test at the end then has both read
the demo's stores and agree.
"""

from __future__ import annotations

import ast
import gzip
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

import pytest
import zstandard
from crosscheck import assert_maildir_agrees, assert_mbox_agrees, maildir_view, maildirs, mbox_view

import restore.demo
from restore.demo import CLASSES, ArchiveCopy, Incident, build_incident


def decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    return data


def read_item(copy: ArchiveCopy) -> bytes:
    """The message bytes a correct reader gets for an archive copy."""
    kind, _, root = copy.store.partition(":")
    if kind != "mbox":
        return decompress(Path(root) / copy.ref)
    name, _, offset = copy.ref.rpartition(":")
    stream = decompress(Path(root) / name)
    start = int(offset)
    assert stream[start:].startswith(b"From "), copy.ref
    end = stream.find(b"\n\nFrom ", start)
    entry = stream[start:] if end < 0 else stream[start:end + 1]
    message = entry.split(b"\n", 1)[1]
    return re.sub(rb"(?m)^>(>*From )", rb"\1", message)


def parse(data: bytes) -> Message:
    return message_from_bytes(data.replace(b"\r\n", b"\n"))


def topmost_received(msg: Message):
    return parsedate_to_datetime(msg.get_all("Received")[0].rsplit(";", 1)[1].strip())


def replica_messages(incident: Incident) -> list[tuple[str, Path, Message]]:
    """(user, path, message) for every file in every user's replica Maildir."""
    out = []
    for user in incident.users:
        local, _, domain = user.partition("@")
        maildir = Path(
            incident.replica.partition(":")[2].replace("%d", domain).replace("%n", local)
        )
        for path in sorted(maildir.rglob("*")):
            if path.is_file() and path.parent.name in ("cur", "new"):
                out.append((user, path, parse(path.read_bytes())))
    return out


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime, with the root path made neutral.

    The mtimes of the stores' files are delivery times; the truth and the
    alias map are bookkeeping, written when the incident is built.
    """
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root)
            data = path.read_bytes().replace(str(root).encode(), b"ROOT")
            built = rel.parts[0] in ("truth", "aliases")
            out[str(rel)] = (data, 0 if built else int(path.stat().st_mtime))
    return out


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Incident:
    return build_incident(tmp_path_factory.mktemp("incident") / "root")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Incident:
    """Every archive format at once, gzip-compressed, mbox first (it gets the corrupt item)."""
    return build_incident(tmp_path_factory.mktemp("mixed") / "root", users=5, per_user_per_day=8,
                          days=2, archive_formats=("mbox", "eml", "maildir"), compress="gz", seed=7)


@pytest.fixture(scope="module")
def copies(incident: Incident) -> list[ArchiveCopy]:
    return list(incident.truth.copies())


def by_key(copies: list[ArchiveCopy]) -> dict[str, list[ArchiveCopy]]:
    out: dict[str, list[ArchiveCopy]] = {}
    for copy in copies:
        out.setdefault(copy.key, []).append(copy)
    return out


# ------------------------------------------------------------ independence


def test_the_demo_imports_nothing_else_from_restore() -> None:
    """The truth must not share code with what it checks: a shared bug would agree with itself."""
    package = Path(restore.demo.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.partition(".")[0] != "restore" or name.startswith("restore.demo"), (
                    f"{path.name} imports {name}")


# ------------------------------------------------------------ determinism


def test_same_seed_gives_the_same_bytes_even_in_another_process(tmp_path: Path) -> None:
    args = dict(users=4, per_user_per_day=6, days=1, seed=3, archive_formats=("eml", "mbox"))
    here = build_incident(tmp_path / "here", **args)
    # another process with another hash seed: no set or hash order may leak into the output
    code = ("from pathlib import Path; from restore.demo import build_incident;"
            f" build_incident(Path({str(tmp_path / 'there')!r}), **{args!r})")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert snapshot(tmp_path / "here") == snapshot(tmp_path / "there")
    other = build_incident(tmp_path / "other", **{**args, "seed": 4})
    assert here.truth.missing != other.truth.missing


def test_root_must_be_new_or_empty_and_arguments_sane(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        build_incident(tmp_path / "busy")
    with pytest.raises(ValueError, match="archive_formats"):
        build_incident(tmp_path / "a", archive_formats=("pst",))
    with pytest.raises(ValueError, match="twists need"):
        build_incident(tmp_path / "b", users=3)
    with pytest.raises(ValueError, match="compress"):
        build_incident(tmp_path / "c", compress="xz")


# ------------------------------------------------------------------ truth


def test_every_copy_has_exactly_one_class_per_recipient_and_counts_add_up(
        incident: Incident, copies: list[ArchiveCopy]) -> None:
    truth = incident.truth
    counts: Counter[str] = Counter()
    users: dict[str, Counter[str]] = {}
    for copy in copies:
        if copy.unreadable:
            assert not copy.classes and not copy.key
            counts["unreadable"] += 1
            continue
        recipients = [user for user, _ in copy.classes]
        assert recipients and len(set(recipients)) == len(recipients), copy
        for user, klass in copy.classes:
            assert klass in CLASSES and klass != "unreadable"
            counts[klass] += 1
            users.setdefault(user, Counter())[klass] += 1
    assert truth.counts == {klass: counts[klass] for klass in CLASSES}
    assert truth.users == {user: dict(c) for user, c in users.items()}
    assert truth.counts["unreadable"] == len(truth.unreadable) == 2
    assert truth.missing == {(u, c.key) for c in copies for u, k in c.classes if k == "missing"}
    assert all(truth.counts[klass] > 0 for klass in CLASSES)
    assert 300 < len(copies) < 500, "the demo incident stays small"


def test_missing_lies_inside_the_window_and_outside_window_well_before_it(
        incident: Incident, copies: list[ArchiveCopy]) -> None:
    since, until = incident.gap_since, incident.gap_until
    for copy in copies:
        for _user, klass in copy.classes:
            assert copy.received is not None
            if klass == "missing":
                assert since < copy.received <= until, copy
            if klass == "outside-window":
                # deletions lie well before the gap, so they cannot widen it
                assert copy.received < since - timedelta(hours=6), copy


def test_duplicates_come_after_the_copy_that_gets_the_class(incident: Incident) -> None:
    multiset = incident.truth.classes_by_user_key()
    carol, bob, alice = (f"{n}@example.com" for n in ("carol", "bob", "alice"))
    assert multiset[carol, "twist-dup-same-bytes-gap-missing"] == ["duplicate", "missing"]
    assert multiset[bob, "twist-dup-rereceived-gap-missing"] == ["duplicate", "missing"]
    assert multiset[alice, "twist-dup-rereceived-before-present"] == ["duplicate", "present"]
    assert sum(len(v) > 1 for v in multiset.values()) == 3


# ---------------------------------------------------------------- replica


def test_replica_holds_exactly_the_present_mail(incident: Incident,
                                                copies: list[ArchiveCopy]) -> None:
    on_replica = Counter()
    for user, path, msg in replica_messages(incident):
        key = msg["X-Incident-Key"]
        if key.startswith("sent-"):
            assert ".Sent" in path.parts
            continue
        on_replica[user, key] += 1
        assert msg["Delivered-To"] == user and msg["Return-Path"]
        assert "X-Envelope-To" not in msg
        # the file's mtime is its delivery time, the top Received: of the delivered copy
        assert int(path.stat().st_mtime) == int(topmost_received(msg).timestamp())
    present = {(u, c.key) for c in copies for u, k in c.classes if k == "present"}
    assert set(on_replica) == present
    assert max(on_replica.values()) == 1


def test_replica_lacks_the_gap_except_late_arrivals(incident: Incident,
                                                    copies: list[ArchiveCopy]) -> None:
    on_replica = {(user, msg["X-Incident-Key"]) for user, _, msg in replica_messages(incident)}
    in_gap = {(u, c.key) for c in copies for u, k in c.classes
              if k != "unroutable" and incident.gap_since < c.received <= incident.gap_until}
    assert {key for _, key in in_gap & on_replica} == {
        "twist-late-arrival-1-present", "twist-late-arrival-2-present"}
    assert len(in_gap) > 20


def test_replica_folders_and_maildir_names(incident: Incident) -> None:
    folders = Counter()
    for _user, path, _msg in replica_messages(incident):
        maildir_part = path.parent.parent.name
        folders[maildir_part if maildir_part.startswith(".") else "INBOX"] += 1
        size = int(re.search(r",S=(\d+)", path.name).group(1))
        assert size == path.stat().st_size
        if path.parent.name == "cur":
            assert re.fullmatch(r"\d+\.M\d+P1\.replica,S=\d+:2,S?", path.name), path.name
        else:
            assert re.fullmatch(r"\d+\.M\d+P1\.replica,S=\d+", path.name), path.name
    assert set(folders) == {"INBOX", ".Archive.2017", ".&AMQ-rger", ".Sent"}
    assert (Path(incident.replica[8:].replace("%d/%n", "example.com/bob")) / ".Archive.2017"
            / "maildirfolder").exists()


# ---------------------------------------------------------------- archive


def test_archive_items_are_where_the_refs_say(incident: Incident,
                                              copies: list[ArchiveCopy]) -> None:
    assert incident.archives == [f"eml:{incident.root}/gateway"]
    names = set()
    for copy in copies:
        if copy.unreadable:
            continue
        assert re.fullmatch(r"2017/12/0[678]/[0-9a-f]{16}\.eml\.zst", copy.ref), copy.ref
        names.add(copy.ref)
        raw = (incident.root / "gateway" / copy.ref).read_bytes()
        data = zstandard.ZstdDecompressor().decompress(raw)
        assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
        msg = parse(data)
        assert msg["X-Incident-Key"] == copy.key
        assert msg.get_all("X-Envelope-To")
        assert topmost_received(msg) == copy.received
        assert parsedate_to_datetime(msg["Date"]) < copy.received
        assert msg["Message-ID"] == copy.message_id
    on_disk = {str(p.relative_to(incident.root / "gateway"))
               for p in (incident.root / "gateway").rglob("*.eml*")}
    assert on_disk == names | {ref for _, ref, _ in incident.truth.unreadable}


def test_corrupt_items_are_really_truncated_and_empty(incident: Incident) -> None:
    reasons = {reason: Path(store[4:]) / ref for store, ref, reason in incident.truth.unreadable}
    truncated = reasons["truncated zstd frame"].read_bytes()
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompress(truncated)
    stream = zstandard.ZstdDecompressor().decompressobj()
    stream.decompress(truncated)
    assert not stream.eof
    assert reasons["empty file"].stat().st_size == 0


def test_several_formats_split_the_messages(mixed: Incident) -> None:
    assert [spec.partition(":")[0] for spec in mixed.archives] == ["mbox", "eml", "maildir"]
    copies = list(mixed.truth.copies())
    readable = [c for c in copies if not c.unreadable]
    assert len({(c.store, c.ref) for c in copies}) == len(copies)
    per_store = Counter(c.store for c in readable)
    assert len(per_store) == 3
    root = mixed.root
    on_disk = Counter({
        f"eml:{root}/gateway": len(list((root / "gateway").rglob("*.eml.gz"))),
        f"maildir:{root}/gateway-maildir": len(maildir_view(root / "gateway-maildir")),
        f"mbox:{root}/gateway-mbox": sum(
            len(mbox_view(p)) for p in (root / "gateway-mbox").glob("2017-12-0?.mbox.gz")),
    })
    assert on_disk == per_store
    for copy in readable:
        assert parse(read_item(copy))["X-Incident-Key"] == copy.key
    # the same bytes archived twice land in two different formats
    same = [c for c in readable if c.key == "twist-dup-same-bytes-gap-missing"]
    assert len({c.store for c in same}) == 2
    assert read_item(same[0]).replace(b"\r\n", b"\n") == read_item(same[1]).replace(b"\r\n", b"\n")
    (store, ref, reason), = mixed.truth.unreadable
    assert store.startswith("mbox:") and reason == "truncated gzip stream"
    with pytest.raises(EOFError):
        gzip.decompress((Path(store[5:]) / ref).read_bytes())


def test_mbox_quotes_from_lines_mboxrd(mixed: Incident) -> None:
    mbox_copies = [c for c in mixed.truth.copies() if c.store.startswith("mbox:")
                   and not c.unreadable]
    offsets = {c.ref for c in mbox_copies}
    for path in (mixed.root / "gateway-mbox").glob("2017-12-0?.mbox.gz"):
        stream = gzip.decompress(path.read_bytes())
        starts = {f"{path.name}:{m.start()}" for m in re.finditer(rb"(?m)^From ", stream)}
        assert starts <= offsets, "an unquoted body line would split a message"
    quoted = [c for c in mbox_copies if b"\nFrom the minutes" in read_item(c)]
    assert quoted, "the fixture must put a body line starting with 'From ' into the mbox"
    body = read_item(quoted[0])
    assert b"\n>From an earlier reply" in body and b"\n>>From deeper still." in body


# ------------------------------------------------------------------ twists


def test_twists_are_classed_per_user(incident: Incident, copies: list[ArchiveCopy]) -> None:
    alice, bob, carol = (f"{n}@example.com" for n in ("alice", "bob", "carol"))
    keyed = by_key(copies)
    classes = {key: dict(group[0].classes) for key, group in keyed.items()}
    assert classes["twist-multi-gap-missing"] == {alice: "missing", bob: "missing",
                                                  carol: "missing"}
    assert classes["twist-multi-early-present-and-outside-window"] == {alice: "present",
                                                                       bob: "outside-window"}
    assert classes["twist-alias-gap-missing"] == {bob: "missing"}
    assert classes["twist-alias-before-present"] == {bob: "present"}
    assert classes["twist-former-colleague-unroutable"] == {
        "former.colleague@example.com": "unroutable"
    }
    assert classes["twist-path-traversal-unroutable"] == {"../../etc@example.com": "unroutable"}
    assert classes["twist-slash-unroutable-and-present"] == {alice: "present",
                                                             "a/b@example.com": "unroutable"}
    assert classes["twist-spam-tagged-present"] == {carol: "present"}
    assert classes["twist-late-arrival-1-present"] == {alice: "present"}
    assert classes["twist-deleted-early-outside-window"] == {"dave@example.com": "outside-window"}
    # every twist names in its key the class its first copy gets
    for key, group in keyed.items():
        if key.startswith("twist-"):
            (outcome,) = [k for k in CLASSES if key.endswith(f"-{k}")]
            assert outcome in dict(group[0].classes).values(), key


def test_bcc_recipient_is_only_in_the_envelope(copies: list[ArchiveCopy]) -> None:
    (copy,) = by_key(copies)["twist-multi-gap-missing"]
    msg = parse(read_item(copy))
    visible = {addr for _, addr in getaddresses(msg.get_all("To", []) + msg.get_all("Cc", []))}
    envelope = {addr for _, addr in getaddresses(msg.get_all("X-Envelope-To"))}
    assert envelope - visible == {"carol@example.com"}


def test_alias_map_names_the_alias(incident: Incident, copies: list[ArchiveCopy]) -> None:
    assert incident.alias_map is not None
    lines = [line.split() for line in incident.alias_map.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines == [["info@example.com", "bob@example.com"]]
    (copy,) = by_key(copies)["twist-alias-gap-missing"]
    assert parse(read_item(copy))["X-Envelope-To"] == "<info@example.com>"


def test_shared_message_id_and_missing_message_id(copies: list[ArchiveCopy]) -> None:
    keyed = by_key(copies)
    present, = keyed["twist-shared-message-id-before-present"]
    missing, = keyed["twist-shared-message-id-gap-missing"]
    assert present.message_id == missing.message_id
    a, b = parse(read_item(present)), parse(read_item(missing))
    assert a["Date"] != b["Date"] and a.get_payload() != b.get_payload()
    for key in ("twist-no-message-id-gap-missing", "twist-no-message-id-before-present"):
        (copy,) = keyed[key]
        assert copy.message_id is None and "Message-ID" not in parse(read_item(copy))


def test_spam_tag_and_late_delivery_on_the_replica(incident: Incident) -> None:
    found = {msg["X-Incident-Key"]: (path, msg) for _, path, msg in replica_messages(incident)}
    _, spam = found["twist-spam-tagged-present"]
    assert spam["Subject"].startswith("[SPAM] ") and spam["X-Spam-Flag"] == "YES"
    path, late = found["twist-late-arrival-1-present"]
    assert topmost_received(late) > incident.gap_until
    assert incident.gap_since < parsedate_to_datetime(
        late.get_all("Received")[-1].rsplit(";", 1)[1].strip()) <= incident.gap_until
    assert path.parent.name == "new"


def test_quiet_user_and_tidy_user(incident: Incident, copies: list[ArchiveCopy]) -> None:
    quiet, tidy = incident.users[-1], incident.users[-2]
    in_gap = [c for c in copies if not c.unreadable
              and incident.gap_since < c.received <= incident.gap_until]
    assert not [c for c in in_gap if quiet in dict(c.classes)]
    assert incident.truth.users[quiet]["present"] > 0
    deleted = incident.truth.users[tidy]["outside-window"]
    assert deleted > 3 * max(incident.truth.users[u].get("outside-window", 0)
                             for u in incident.users if u != tidy)


def test_without_twists_only_present_and_missing(tmp_path: Path) -> None:
    plain = build_incident(tmp_path / "plain", users=3, per_user_per_day=10, days=2, twists=False,
                           compress=None)
    assert plain.alias_map is None
    counts = plain.truth.counts
    assert set(k for k, v in counts.items() if v) == {"present", "missing"}
    assert counts["present"] + counts["missing"] == 3 * 10 * 2
    assert all(p.suffix == ".eml" for p in (tmp_path / "plain" / "gateway").rglob("*.*"))


# ----------------------------------------------------- stdlib and mailrestore


def test_the_stdlib_and_mailrestore_read_the_demo_stores_alike(incident: Incident,
                                                               mixed: Incident) -> None:
    replicas = maildirs(incident.root / "replica")
    assert len(replicas) == len(incident.users)
    for maildir in [*replicas, mixed.root / "gateway-maildir"]:
        assert assert_maildir_agrees(maildir)
    refs = {c.ref for c in mixed.truth.copies() if c.store.startswith("mbox:") and not c.unreadable}
    read = [
        assert_mbox_agrees(p) for p in sorted((mixed.root / "gateway-mbox").glob("*-0?.mbox.gz"))
    ]
    assert sum(map(len, read)) == len(refs)
