"""Maildir delivery: where files land, how they are named, owned and dated, and where never."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from crosscheck import Stored, assert_maildir_agrees
from hypothesis import assume, given
from hypothesis import strategies as st

from restore.errors import PermanentError, UsageError
from restore.mailnames import encode_mutf7, invalid_folder_reason, maildir_dirname, maildir_folder
from restore.targets import TargetOptions, open_target
from restore.targets.base import Message
from restore.targets.maildir import MaildirTarget

RECEIVED = 1512748385.0  # 2017-12-08T15:53:05Z
DATA = b"Message-ID: <a@test>\r\nSubject: hi\r\n\r\nbody\r\n"


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def message(data: bytes = DATA, received: float = RECEIVED, **kw: object) -> Message:
    return Message(data=data, received=received, message_id="<a@test>", fingerprint="", **kw)


def deliver(target: MaildirTarget, user: str, folder: str = "INBOX", msg: Message | None = None):
    msg = msg or message()
    with target.session(user) as session:
        planned = session.prepare(folder, msg)
        [outcome] = session.append(folder, [Message(**{**_fields(msg), "planned_id": planned})])
    return planned, outcome


def _fields(msg: Message) -> dict[str, object]:
    return {name: getattr(msg, name) for name in Message.__slots__}


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.fixture
def vmail(tmp_path: Path) -> Path:
    root = tmp_path / "vmail"
    make_maildir(root / "example.com" / "alice" / "Maildir")
    return root


@pytest.fixture
def target(vmail: Path) -> MaildirTarget:
    return MaildirTarget(f"{vmail}/%d/%n/Maildir")


def test_message_lands_in_new_with_received_mtime_lf_endings_and_size(target, vmail):
    planned, outcome = deliver(target, "alice@example.com")
    maildir = vmail / "example.com/alice/Maildir"
    assert outcome.ok and outcome.target_id == planned
    path = maildir / "new" / planned
    assert path.read_bytes() == DATA.replace(b"\r\n", b"\n")
    assert path.stat().st_mtime == RECEIVED
    assert planned.endswith(f",S={path.stat().st_size}")
    assert list((maildir / "tmp").iterdir()) == []
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert assert_maildir_agrees(maildir) == [
        Stored("", "new", planned, "", RECEIVED, DATA.replace(b"\r\n", b"\n"))]


def test_names_are_unique_and_follow_maildir_rules(target):
    with target.session("alice@example.com") as session:
        names = [session.prepare("INBOX", message()) for _ in range(500)]
    assert len(set(names)) == 500
    assert all("/" not in n and ":" not in n for n in names)
    assert all(n.split(".")[1].startswith("M") and f"P{os.getpid()}Q" in n for n in names)


def test_a_name_already_in_new_is_refused_and_the_existing_file_kept(target, vmail):
    new = vmail / "example.com/alice/Maildir/new"
    with target.session("alice@example.com") as session:
        name = session.prepare("INBOX", message())
        (new / name).write_bytes(b"someone else's mail")
        [outcome] = session.append("INBOX", [message(planned_id=name)])
    assert not outcome.ok and "exists" in outcome.reason
    assert (new / name).read_bytes() == b"someone else's mail"


def test_flags_deliver_into_cur_with_info_keywords_as_dovecot_letters(target, vmail):
    _, outcome = deliver(target, "alice@example.com",
                         msg=message(flags=("\\Seen", "\\Flagged", "$Junk", "\\Recent")))
    maildir = vmail / "example.com/alice/Maildir"
    assert outcome.ok and outcome.target_id.endswith(":2,FSa")
    assert (maildir / "cur" / outcome.target_id).exists()
    assert (maildir / "dovecot-keywords").read_bytes() == b"0 $Junk\n"
    # \\Recent is the server's to set: not a keyword, so it cannot be stored.
    assert outcome.warning == "flags not stored in Maildir: \\Recent"
    [stored] = assert_maildir_agrees(maildir)
    assert (stored.subdir, stored.flags, stored.delivered) == ("cur", "FSa", RECEIVED)


def test_a_keyword_reuses_its_letter_or_takes_the_lowest_free_one(target, vmail):
    maildir = vmail / "example.com/alice/Maildir"
    (maildir / "dovecot-keywords").write_bytes(b"0 $Junk\n2 $Restored\n3 NonJunk")
    _, restored = deliver(target, "alice@example.com", msg=message(flags=("$Restored",)))
    _, label = deliver(target, "alice@example.com", msg=message(flags=("$Label1",)))
    assert restored.target_id.endswith(":2,c") and label.target_id.endswith(":2,b")
    # What was there is kept byte for byte; the new keyword is added as Dovecot would.
    assert (maildir / "dovecot-keywords").read_bytes() == \
        b"0 $Junk\n2 $Restored\n3 NonJunk\n1 $Label1\n"
    assert oct((maildir / "dovecot-keywords").stat().st_mode & 0o777) == oct(0o600)
    assert not (maildir / "dovecot-keywords.lock").exists()


def test_a_keyword_in_a_subfolder_goes_to_that_folders_file(target, vmail):
    _, outcome = deliver(target, "alice@example.com", folder="Archive",
                         msg=message(flags=("$Restored",)))
    folder = vmail / "example.com/alice/Maildir/.Archive"
    assert (folder / "cur" / outcome.target_id).exists()
    assert (folder / "dovecot-keywords").read_bytes() == b"0 $Restored\n"
    assert not (vmail / "example.com/alice/Maildir/dovecot-keywords").exists()


def test_when_all_26_letters_are_taken_the_message_is_refused_and_nothing_written(target, vmail):
    maildir = vmail / "example.com/alice/Maildir"
    full = "".join(f"{n} label{n}\n" for n in range(26)).encode()
    (maildir / "dovecot-keywords").write_bytes(full)
    _, outcome = deliver(target, "alice@example.com", msg=message(flags=("$Restored",)))
    assert not outcome.ok and "all 26 keyword letters are taken" in outcome.reason
    assert "$Restored" in outcome.reason
    assert (maildir / "dovecot-keywords").read_bytes() == full
    assert tree(maildir) == {"cur", "new", "tmp", "dovecot-keywords"}
    # A keyword already there still has its letter.
    _, known = deliver(target, "alice@example.com", msg=message(flags=("label25",)))
    assert known.ok and known.target_id.endswith(":2,z")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files away")
def test_new_files_and_folders_get_the_owner_of_the_maildir(target, vmail):
    maildir = vmail / "example.com/alice/Maildir"
    for path in [maildir, *maildir.iterdir()]:
        os.chown(path, 5000, 5001)
    _, outcome = deliver(target, "alice@example.com", folder="Sent")
    for path in (maildir / ".Sent", maildir / ".Sent/new", maildir / ".Sent/maildirfolder",
                 maildir / ".Sent/new" / outcome.target_id):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (5000, 5001), path


def test_missing_folder_is_created_as_a_maildirplusplus_folder(target, vmail):
    maildir = vmail / "example.com/alice/Maildir"
    maildir.chmod(0o750)
    _, outcome = deliver(target, "alice@example.com", folder="Archive/2017")
    folder = maildir / ".Archive.2017"
    assert {"cur", "new", "tmp", "maildirfolder"} <= {p.name for p in folder.iterdir()}
    assert (folder / "new" / outcome.target_id).exists()
    assert folder.stat().st_mode & 0o777 == 0o750
    assert (folder / "new" / outcome.target_id).stat().st_mode & 0o777 == 0o640
    assert [m.folder for m in assert_maildir_agrees(maildir)] == ["Archive.2017"]


def test_folder_names_encode_to_modified_utf7():
    assert encode_mutf7("~peter/mail/日本語/台北") == "~peter/mail/&ZeVnLIqe-/&U,BTFw-"
    assert encode_mutf7("Tom & Jerry") == "Tom &- Jerry"
    assert maildir_dirname("Entwürfe") == ".Entw&APw-rfe"
    assert maildir_dirname("inbox") is None
    assert maildir_dirname("Sent") == ".Sent"


def test_single_maildir_path_takes_every_users_mail(tmp_path):
    box = make_maildir(tmp_path / "restored")
    target = open_target(f"maildir:{box}")
    deliver(target, "alice@example.com")
    deliver(target, "bob@example.org")
    assert len(list((box / "new").iterdir())) == 2
    assert len(assert_maildir_agrees(box)) == 2


def test_user_without_maildir_is_refused_unless_create_missing(vmail):
    target = MaildirTarget(f"{vmail}/%d/%n/Maildir")
    with pytest.raises(PermanentError, match="no mailbox"):
        target.session("bob@example.org")
    assert not (vmail / "example.org").exists()
    creating = open_target(f"maildir:{vmail}/%d/%n/Maildir", TargetOptions(create_missing=True))
    _, outcome = deliver(creating, "bob@example.org")
    assert outcome.ok and (vmail / "example.org/bob/Maildir/new" / outcome.target_id).exists()
    assert [m.key for m in assert_maildir_agrees(vmail / "example.org/bob/Maildir")] == [
        outcome.target_id]


# -- nothing outside the mail root, whatever the plan says ---------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.mark.parametrize("user", ["../x", "..@example.com", "a/../../x@example.com", "x@..",
                                  ".hidden@example.com", "a\x00b@example.com", ""])
def test_hostile_user_names_are_refused_and_create_nothing(vmail, tmp_path, user):
    before = tree(tmp_path)
    target = MaildirTarget(f"{vmail}/%d/%n/Maildir", create_missing=True)
    with pytest.raises(PermanentError):
        target.session(user)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("folder", ["../../etc", "..", "a/../../b", ".hidden", "a\nb", "/abs", ""])
def test_hostile_folder_names_fail_the_message_and_create_nothing(target, tmp_path, folder):
    before = tree(tmp_path)
    with target.session("alice@example.com") as session:
        [outcome] = session.append(folder, [message()])
    assert not outcome.ok
    assert tree(tmp_path) == before


@pytest.mark.parametrize("template", ["%s/%%d/../../etc/%%n", "%s/../%%n", "%s/%%d/./%%n"])
def test_templates_with_dot_components_are_refused(vmail, template):
    with pytest.raises(UsageError):
        MaildirTarget(template % vmail)


def test_symlinked_user_dir_pointing_outside_is_refused(vmail, outside):
    (vmail / "example.com" / "mallory").symlink_to(outside)
    make_maildir(outside / "Maildir")
    before = tree(outside)
    target = MaildirTarget(f"{vmail}/%d/%n/Maildir", create_missing=True)
    with pytest.raises(PermanentError, match="leaves the mail root"):
        target.session("mallory@example.com")
    assert tree(outside) == before


def test_symlinked_folder_or_subdir_pointing_outside_is_refused(target, vmail, outside):
    maildir = vmail / "example.com/alice/Maildir"
    (maildir / ".Sent").symlink_to(outside)
    make_maildir(outside)
    before = tree(outside)
    with target.session("alice@example.com") as session:
        assert not session.append("Sent", [message()])[0].ok
    (maildir / "new").rmdir()
    (maildir / "new").symlink_to(outside / "new")
    with target.session("alice@example.com") as session:
        assert not session.append("INBOX", [message()])[0].ok
    assert tree(outside) == before


# -- find: was it written before the crash? ------------------------------------


def test_find_by_planned_name_in_new_or_after_the_client_moved_it_to_cur(target, vmail):
    planned, _ = deliver(target, "alice@example.com")
    maildir = vmail / "example.com/alice/Maildir"
    with target.session("alice@example.com") as session:
        assert session.find("INBOX", message(planned_id=planned)) == planned
        (maildir / "new" / planned).rename(maildir / "cur" / f"{planned}:2,S")
        assert session.find("INBOX", message(planned_id=planned)) == f"{planned}:2,S"


def test_find_by_content_when_the_name_is_unknown(target, vmail):
    _, outcome = deliver(target, "alice@example.com")
    with target.session("alice@example.com") as session:
        assert session.find("INBOX", message(planned_id="1.M1P1Q1R0.gone,S=1")) == outcome.target_id
        assert session.find("INBOX", message(data=DATA + b"other\r\n")) is None
        assert session.find("INBOX", message(received=RECEIVED + 3600)) is None
        assert session.find("NoSuchFolder", message()) is None


def test_find_removes_our_own_half_written_tmp_file(target, vmail):
    tmp = vmail / "example.com/alice/Maildir/tmp"
    with target.session("alice@example.com") as session:
        name = session.prepare("INBOX", message())
        (tmp / name).write_bytes(b"half")
        assert session.find("INBOX", message(planned_id=name)) is None
    assert not (tmp / name).exists()


@given(st.lists(st.text(st.characters(blacklist_characters="/.",
                                      blacklist_categories=("Cc", "Cs", "Zs")),
                        min_size=1, max_size=8),
                min_size=1, max_size=3).map("/".join))
def test_the_maildir_store_reads_back_the_folder_names_written(folder):
    assume(invalid_folder_reason(folder) is None and folder.upper() != "INBOX")
    assert maildir_folder(maildir_dirname(folder)) == folder
