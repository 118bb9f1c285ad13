"""dovecot-keywords as Dovecot reads and writes it: letters, its lock, an mtime that moves on."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from restore.targets import dovecot_keywords
from restore.targets.dovecot_keywords import KEYWORDS_FILE, LOCK_FILE, keyword_letters, parse


@pytest.fixture
def folder(tmp_path: Path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def letters(fd: int, *names: str) -> dict[str, str]:
    return keyword_letters(fd, names, 0o640, lambda _fd: None)


def test_lines_dovecot_would_skip_are_skipped():
    text = b"header without space\n0 $Junk\n1 \nx $Bad\n26 $TooFar\n0 $Again\n3 $Junk\n4 Ok\n"
    assert parse(text) == {"$Junk": 0, "Ok": 4}


def test_letters_are_reused_and_new_ones_take_the_lowest_free_index(folder):
    path, fd = folder
    (path / KEYWORDS_FILE).write_bytes(b"1 $Label1\n")
    assert letters(fd, "$Label1", "$Restored", "Other") == {"$Label1": "b", "$Restored": "a",
                                                             "Other": "c"}
    assert (path / KEYWORDS_FILE).read_bytes() == b"1 $Label1\n0 $Restored\n2 Other\n"
    assert (path / KEYWORDS_FILE).stat().st_mode & 0o777 == 0o640


def test_the_file_mtime_moves_on_even_within_the_same_second(folder):
    path, fd = folder
    (path / KEYWORDS_FILE).write_bytes(b"0 $Junk\n")
    later = time.time() + 100     # Dovecot read it at this mtime: a change must differ from it
    os.utime(path / KEYWORDS_FILE, (later, later))
    letters(fd, "$Restored")
    assert (path / KEYWORDS_FILE).stat().st_mtime >= later + 1


def test_a_held_lock_is_waited_for_and_what_its_holder_wrote_is_kept(folder):
    path, fd = folder
    (path / LOCK_FILE).write_bytes(b"0 $TheirNew\n")     # Dovecot adding a keyword right now

    def dovecot_finishes() -> None:
        time.sleep(0.3)
        (path / LOCK_FILE).rename(path / KEYWORDS_FILE)

    holder = threading.Thread(target=dovecot_finishes)
    holder.start()
    try:
        assert letters(fd, "$Restored") == {"$Restored": "b"}
    finally:
        holder.join()
    assert (path / KEYWORDS_FILE).read_bytes() == b"0 $TheirNew\n1 $Restored\n"
    assert not (path / LOCK_FILE).exists()


def test_a_stale_lock_is_broken(folder):
    path, fd = folder
    (path / LOCK_FILE).write_bytes(b"")
    old = time.time() - dovecot_keywords.STALE_LOCK - 10
    os.utime(path / LOCK_FILE, (old, old))
    assert letters(fd, "$Restored") == {"$Restored": "a"}
    assert not (path / LOCK_FILE).exists()


def test_a_symlinked_keywords_file_is_not_followed(folder, tmp_path_factory):
    path, fd = folder
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "file"
    elsewhere.write_bytes(b"0 $Junk\n")
    (path / KEYWORDS_FILE).symlink_to(elsewhere)
    with pytest.raises(OSError):
        letters(fd, "$Restored")
    assert elsewhere.read_bytes() == b"0 $Junk\n"
