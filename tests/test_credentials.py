"""Passwords come from a file, the environment or a prompt: never argv, never output."""

from __future__ import annotations

import io

import pytest

from restore.credentials import PASSWORD_ENV, get_password
from restore.errors import UsageError


def test_password_file_first_line_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    secret = tmp_path / "pw"
    secret.write_text("s3cret with spaces \r\nsecond line ignored\n")
    assert get_password(str(secret), "imap://admin@host") == "s3cret with spaces "


def test_environment_when_no_file(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert get_password(None, "imap://admin@host") == "from-env"


def test_no_password_and_no_terminal_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(UsageError) as err:
        get_password(None, "imap://admin@host")
    assert "--password-file" in str(err.value) and PASSWORD_ENV in str(err.value)


@pytest.mark.parametrize("content,reason", [("", "is empty"), ("\nsecret\n", "is empty")])
def test_empty_first_line_is_refused_without_showing_the_rest(tmp_path, content, reason):
    secret = tmp_path / "pw"
    secret.write_text(content)
    with pytest.raises(UsageError) as err:
        get_password(str(secret), "imap://admin@host")
    assert reason in str(err.value) and "secret" not in str(err.value).replace(str(secret), "")


def test_unreadable_password_file_names_the_file(tmp_path):
    with pytest.raises(UsageError) as err:
        get_password(str(tmp_path / "missing"), "imap://admin@host")
    assert "missing" in str(err.value)
