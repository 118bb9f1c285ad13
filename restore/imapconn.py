"""IMAP connections for targets and stores: URL, TLS, login, error mapping.

``imap://[LOGIN@]HOST[:PORT]`` (default port 143) and ``imaps://…`` (993).

TLS: certificates are verified with the system's trust store
(``ssl.create_default_context()``; ``SSL_CERT_FILE`` points it elsewhere)
unless ``insecure``. ``imaps://`` speaks TLS from the first byte; on
``imap://`` the connection is upgraded with STARTTLS whenever the server
offers it. A server that offers no STARTTLS gets no password in clear text
unless it is on the loopback interface or ``insecure`` is given: ``insecure``
means "I accept an unprotected connection", unverified or unencrypted.

Login: without LOGIN in the URL, or with LOGIN equal to the user, the client
logs in as the user itself. With a different LOGIN it acts for the user as
an admin: SASL PLAIN with an authorization identity when the server offers
AUTH=PLAIN, else (or when that is refused) Dovecot's master-user form
``user*admin``.

Errors: anything that stops a connection from being opened becomes the
caller's ``CannotRunError`` subclass (``TargetError``, ``StoreError``) with
one line naming HOST:PORT and the reason, never the password. A connection
that dies later becomes ``TransientError`` (see ``connection_guard``).
"""

from __future__ import annotations

import functools
import imaplib
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from restore.errors import (
    CannotRunError,
    MailrestoreError,
    PermanentError,
    TransientError,
    UsageError,
)
from restore.mailnames import imap_login_name

DEFAULT_PORTS = {"imap": 143, "imaps": 993}
MASTER_SEPARATOR = "*"  # Dovecot's auth_master_user_separator default


@dataclass(frozen=True, slots=True)
class ImapAddress:
    """Where an IMAP server is and whom to log in as."""

    scheme: str          # "imap" or "imaps"
    host: str
    port: int
    login: str | None    # admin (or the user itself); None: log in as each user

    @property
    def implicit_tls(self) -> bool:
        return self.scheme == "imaps"

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def canonical(self) -> str:
        """One spelling per server and login: scheme, LOGIN, lowercased host, explicit port."""
        login = f"{quote(self.login, safe='@*!$&()+,;=.~-_')}@" if self.login else ""
        return f"{self.scheme}://{login}{self.where.lower()}"


def parse_imap_url(url: str) -> ImapAddress:
    """``imap://admin@mail.example.com:1143`` -> ImapAddress; UsageError when malformed."""
    # A password someone put into the URL must not come back in the message.
    shown = re.sub(r"^([^/]*//[^/:]*):[^/]*@", r"\1:***@", url)
    usage = f"bad IMAP URL {shown!r}: expected imap://[LOGIN@]HOST[:PORT] or imaps://[LOGIN@]HOST[:PORT]"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UsageError(usage) from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise UsageError(usage)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(usage)
    if parts.password is not None:
        raise UsageError(
            f"bad IMAP URL {shown!r}: no password in the URL; "
            "use --password-file or MAILRESTORE_PASSWORD"
        )
    login = unquote(parts.username) if parts.username else None
    return ImapAddress(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], login)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(insecure: bool) -> ssl.SSLContext:
    """The TLS context connections share: the trust store is loaded once, not per connection."""
    # The variables the trust store is read from are part of the cache key.
    return _tls_context(insecure, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _tls_context(insecure: bool, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connect(
    address: ImapAddress,
    *,
    insecure: bool = False,
    timeout: float = 60.0,
    error: type[CannotRunError] = CannotRunError,
    unreachable: type[MailrestoreError] | None = None,
) -> IMAPClient:
    """An unauthenticated connection, TLS already in place where possible.

    A server that cannot be reached (refused, timed out, closed at once)
    raises ``unreachable`` when given, else ``error``: a caller that had the
    server a moment ago passes TransientError, as it may be restarting.
    """
    context = tls_context(insecure)
    try:
        client = IMAPClient(
            address.host,
            port=address.port,
            ssl=address.implicit_tls,
            ssl_context=context,
            timeout=timeout,
        )
    except Exception as exc:
        message = f"cannot connect to IMAP server {address.where}: {describe(exc, timeout)}"
        raise (unreachable if unreachable and _away(exc) else error)(message) from None
    try:
        _secure(client, address, context, insecure, error)
    except BaseException:
        close_quietly(client)
        raise
    # INTERNALDATE as timezone-aware datetimes, not converted to local naive time
    client.normalise_times = False
    return client


def _secure(
    client: IMAPClient,
    address: ImapAddress,
    context: ssl.SSLContext,
    insecure: bool,
    error: type[CannotRunError],
) -> None:
    if address.implicit_tls:
        return
    try:
        if b"STARTTLS" in client.capabilities():
            client.starttls(context)
            return
    except Exception as exc:
        raise error(f"STARTTLS with IMAP server {address.where} failed: {describe(exc)}") from None
    if not insecure and not is_loopback(address.host):
        raise error(
            f"IMAP server {address.where} offers no STARTTLS: refusing to send a password "
            "in clear text (use imaps://, or --insecure to accept it)"
        )


def try_login(
    client: IMAPClient,
    address: ImapAddress,
    user: str | None,
    password: str,
    *,
    error: type[CannotRunError] = CannotRunError,
    unreachable: type[MailrestoreError] | None = None,
) -> str | None:
    """Log in as ``user``, through the URL's LOGIN as admin when it names someone else.

    A refused login returns the server's reason (``refused`` words it). A
    user whose name the server cannot take (``mailnames.imap_login_name``)
    raises PermanentError with the reason: that user alone has no mailbox here.
    Raises ``error`` only when the attempt itself failed, or ``unreachable``
    (when given) when the server went away or is briefly unavailable: a
    server restarting closes connections in the middle of LOGIN.
    """
    admin = address.login
    user = user or admin
    if not user:
        raise UsageError(f"no user to log in as on {address.where}: give imap://LOGIN@HOST")
    try:
        capabilities = client.capabilities()
        # A name that is not ASCII needs both: imaplib sends LOGIN arguments in ASCII.
        plain = b"AUTH=PLAIN" in capabilities
        try:
            name = imap_login_name(user, utf8=plain and b"UTF8=ACCEPT" in capabilities)
        except ValueError as exc:
            raise PermanentError(user,
                                 f"cannot log in as {user} on {address.where}: {exc}") from None
        _login(client, admin if admin != user else None, name, password, plain)
        return None
    except PermanentError:
        raise
    except LoginError as exc:
        reason = _redact(server_text(exc), password)
        # imapclient reports a connection dropped during LOGIN as a refusal too;
        # [UNAVAILABLE] (RFC 5530) is the server's own "try again later".
        away = _away(exc.__context__) or reason.startswith("[UNAVAILABLE]")
        if not away:
            return reason
    except Exception as exc:
        reason, away = _redact(describe(exc), password), _away(exc)
    raise (unreachable if unreachable and away else error)(
        f"IMAP login to {address.where} failed for {_who(address, user)}: {reason}"
    ) from None


def _login(client: IMAPClient, admin: str | None, name: str, password: str, plain: bool) -> None:
    """Log in as ``name`` (as the server takes it), through ``admin`` when given."""
    if admin is None:
        if name.isascii():
            client.login(name, password)
        else:
            client.plain_login(name, password)
        return
    if plain:
        try:
            client.plain_login(admin, password, authorization_identity=name)
            return
        except LoginError:
            if not name.isascii():
                raise
            # some servers allow only the master-user form; try it next
    client.login(f"{name}{MASTER_SEPARATOR}{admin}", password)


def _away(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the server went away (it may be restarting), not that it refused."""
    return isinstance(exc, (OSError, imaplib.IMAP4.abort)) and not isinstance(exc, ssl.SSLError)


def refused(address: ImapAddress, user: str | None, reason: str) -> str:
    """What to say when the server refused to log ``user`` in."""
    return f"IMAP login to {address.where} refused for {_who(address, user)}: {reason}"


def _who(address: ImapAddress, user: str | None) -> str:
    admin = address.login
    user = user or admin
    return f"{user}" if admin in (None, user) else f"{user} (as {admin})"


def close_quietly(client: IMAPClient) -> None:
    """Log out, or just drop the socket when the connection is already gone."""
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            pass  # nothing left to close


@contextmanager
def connection_guard(where: str) -> Iterator[None]:
    """Turn a dead connection (socket error, timeout, BYE) into TransientError."""
    try:
        yield
    except (imaplib.IMAP4.abort, OSError) as exc:
        raise TransientError(f"connection to IMAP server {where} lost: {describe(exc)}") from exc


def describe(exc: BaseException, timeout: float | None = None) -> str:
    """A short reason a mail administrator understands."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = (exc.verify_message or exc.reason or "not trusted").rstrip(".")
        return f"TLS certificate not accepted: {detail} (--insecure skips verification)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s" if timeout else "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, imaplib.IMAP4.error):
        return server_text(exc)
    return str(exc) or type(exc).__name__


def server_text(exc: BaseException) -> str:
    """The server's words from an imaplib/imapclient error, without the client's wrapping.

    imaplib says "append failed: [OVERQUOTA] ..." and at times "b'...'".
    """
    text = re.sub(r"^[\w ]+ failed: ", "", str(exc))
    if text.startswith(("b'", 'b"')) and text.endswith(text[1]):
        text = text[2:-1]
    # Dovecot appends its timings, "(0.001 + 0.000 secs).": noise that keeps
    # equal reasons from grouping in a report
    text = re.sub(r"\s*\([\d.]+(?: \+ [\d.]+)* secs\)\.?$", "", text)
    return text.strip() or "refused by the server"


def _redact(text: str, password: str) -> str:
    return text.replace(password, "***") if password else text
