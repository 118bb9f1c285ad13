"""Shared test fixtures."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import pytest
from dovecot import Dovecot, dovecot_installed
from factory import MailFactory

# -- no configuration leaks in from the developer's account ------------------


@pytest.fixture(autouse=True)
def no_user_configuration(tmp_path_factory, monkeypatch) -> None:
    """Every test starts without the config file or MAILRESTORE_* variables of whoever runs it."""
    for name in [n for n in os.environ if n.startswith("MAILRESTORE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path, monkeypatch) -> None:
    """Journals a test does not place itself go to its tmp_path, never the user's state dir.

    A diff records the window in the replica's default journal (restore.incident).
    """
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


# -- a private Dovecot (tests/dovecot.py) -----------------------------------

DOVECOT_FIXTURES = {"dovecot_available", "dovecot_server", "dovecot_user", "new_dovecot_user"}
_user_numbers = itertools.count(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a Dovecot fixture carry the ``dovecot`` marker (-m 'not dovecot')."""
    for item in items:
        if DOVECOT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.dovecot)


def require_dovecot() -> None:
    """Skip without Dovecot; in CI (CI=true) its absence is a failure, not a skip."""
    if dovecot_installed():
        return
    message = "dovecot is not installed: apt-get install -y dovecot-imapd"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def dovecot_available() -> None:
    """For tests that start a Dovecot of their own (TLS, start/stop)."""
    require_dovecot()


@pytest.fixture(scope="module")
def dovecot_server(dovecot_available: None) -> Iterator[Dovecot]:
    """One Dovecot per test module; tests get their own users from ``new_dovecot_user``."""
    with Dovecot([]) as server:
        yield server


@pytest.fixture
def new_dovecot_user(dovecot_server: Dovecot) -> Callable[..., str]:
    """Make a fresh user on the module's server: ``new_dovecot_user(quota="10K")``."""

    def make(quota: str | None = None, domain: str = "example.com") -> str:
        return dovecot_server.add_user(f"user{next(_user_numbers)}@{domain}", quota=quota)

    return make


@pytest.fixture
def dovecot_user(new_dovecot_user: Callable[..., str]) -> str:
    """A fresh user with an empty INBOX and password ``Dovecot.user_pass``."""
    return new_dovecot_user()


# -- mail stores built in tmp_path (tests/factory.py) ------------------------


@pytest.fixture
def mail_factory(tmp_path) -> MailFactory:
    """Builds messages, Maildirs, mbox files and eml trees in the test's tmp_path."""
    return MailFactory(tmp_path)
