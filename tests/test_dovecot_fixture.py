"""The private Dovecot the IMAP tests run against: logins, users, quota, start/stop."""

from __future__ import annotations

import socket

import pytest
from dovecot import Dovecot
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

MESSAGE = b"From: a@example.org\r\nSubject: hello\r\n\r\n" + b"x" * 2000 + b"\r\n"


def client_for(server: Dovecot) -> IMAPClient:
    return IMAPClient(server.host, port=server.port, ssl=False, timeout=10)


def refuses_connections(server: Dovecot) -> bool:
    try:
        socket.create_connection((server.host, server.port), timeout=1).close()
    except OSError:
        return True
    return False


def test_a_user_logs_in_with_its_password(dovecot_server, dovecot_user):
    with client_for(dovecot_server) as client:
        client.login(dovecot_user, dovecot_server.user_pass)
        assert {b"MULTIAPPEND", b"UIDPLUS", b"LITERAL+"} <= set(client.capabilities())


def test_the_master_user_acts_for_a_user_as_user_star_admin(dovecot_server, dovecot_user):
    with client_for(dovecot_server) as client:
        client.login(f"{dovecot_user}*{dovecot_server.master_user}", dovecot_server.master_pass)
        client.append("INBOX", MESSAGE)
    assert len(list((dovecot_server.maildir(dovecot_user) / "new").iterdir())) == 1


def test_the_master_user_acts_for_a_user_by_plain_authzid(dovecot_server, dovecot_user):
    with client_for(dovecot_server) as client:
        client.plain_login(
            dovecot_server.master_user,
            dovecot_server.master_pass,
            authorization_identity=dovecot_user,
        )
        client.append("INBOX", MESSAGE)
    assert len(list((dovecot_server.maildir(dovecot_user) / "new").iterdir())) == 1


def test_wrong_password_and_unknown_user_are_refused(dovecot_server, dovecot_user):
    with client_for(dovecot_server) as client:
        with pytest.raises(LoginError):
            client.login(dovecot_user, "wrong")
        with pytest.raises(LoginError):
            client.login(f"nobody@example.com*{dovecot_server.master_user}",
                         dovecot_server.master_pass)


def test_a_quota_refuses_what_goes_over_it_and_can_be_lifted(dovecot_server, new_dovecot_user):
    user = new_dovecot_user(quota="3K")
    with client_for(dovecot_server) as client:
        client.login(user, dovecot_server.user_pass)
        client.append("INBOX", MESSAGE)
        with pytest.raises(client.Error, match="OVERQUOTA"):
            client.append("INBOX", MESSAGE)
    dovecot_server.set_quota(user, "0")
    with client_for(dovecot_server) as client:
        client.login(user, dovecot_server.user_pass)
        client.append("INBOX", MESSAGE)


def test_doveadm_reaches_the_instance(dovecot_server, dovecot_user):
    result = dovecot_server.doveadm("mailbox", "status", "-u", dovecot_user, "messages", "INBOX")
    assert result.stdout.split() == ["INBOX", "messages=0"]


def test_start_stop_restart_cleanly(dovecot_available):
    server = Dovecot({"carol@example.com": "secret"})
    try:
        server.start()
        pid = server.master_pid
        assert (server.base / "run" / "master.pid").read_text().strip() == str(pid)
        server.restart()
        with client_for(server) as client:
            client.login("carol@example.com", "secret")
        server.stop()
        assert not server.running
        assert refuses_connections(server)
    finally:
        server.cleanup()
    assert not server.base.exists()
