"""A private Dovecot 2.3 on 127.0.0.1 for the tests: no system config, no systemd.

Follows the recipe in the project's Dovecot notes: a self-contained config in
a short temporary directory, works as root and as an ordinary user.

    server = Dovecot(["alice@example.com", "bob"], quota={"bob": "10K"})
    server.start()
    ...  # IMAP on server.host:server.port, master login admin / masterpass
    server.stop()

Gotchas the config handles (each costs an afternoon when forgotten):
- Dovecot refuses mail access as uid 0, so as root mail belongs to 5000:5000
  and the Maildirs are chowned to it.
- anvil's auth penalty would delay every login from 127.0.0.1 by up to 15 s
  after one failed login; negative-login tests would then time out.
- Unix socket paths must fit in ~108 bytes, hence a short base directory.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT_MAIL_ID = 5000
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def dovecot_installed() -> bool:
    return shutil.which("dovecot") is not None and shutil.which("doveadm") is not None


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _greets(host: str, port: int) -> bool:
    """Whether the IMAP port answers with its greeting (auth is ready by then)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            return sock.recv(64).startswith(b"* OK")
    except OSError:
        return False


def _refuses(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return False
    except OSError:
        return True


class Dovecot:
    """One private Dovecot instance; everything it owns lives under ``self.base``."""

    host = "127.0.0.1"
    master_user = "admin"
    master_pass = "masterpass"
    user_pass = "pass"

    def __init__(
        self,
        users: Mapping[str, str] | Iterable[str] = (),
        quota: Mapping[str, str] | None = None,
        ssl: bool = False,
        cert_hostname: str = "127.0.0.1",
    ):
        """``users``: names (password ``user_pass``) or name -> password.

        ``quota``: user -> storage limit in Dovecot's syntax ("10K", "2M").
        ``ssl``: offer STARTTLS on ``port`` and implicit TLS on ``ssl_port``
        with a self-signed certificate for ``cert_hostname`` (``cert_path``).
        """
        if isinstance(users, Mapping):
            self._passwords = dict(users)
        else:
            self._passwords = {name: self.user_pass for name in users}
        self._quota = dict(quota or {})
        self.ssl = ssl
        self.cert_hostname = cert_hostname
        self.base = Path(tempfile.mkdtemp(prefix="dv", dir="/tmp"))
        self.port = free_port()
        self.ssl_port = free_port() if ssl else 0
        self.conf = self.base / "dovecot.conf"
        self.log = self.base / "log" / "dovecot.log"
        self.cert_path = self.base / "etc" / "cert.pem"
        self._key_path = self.base / "etc" / "key.pem"
        self._users_dir = self.base / "etc" / "users"
        self._process: subprocess.Popen[bytes] | None = None
        if os.getuid() == 0:
            self._mail_uid = self._mail_gid = ROOT_MAIL_ID
        else:
            self._mail_uid, self._mail_gid = os.getuid(), os.getgid()

    # -- lifecycle -------------------------------------------------------

    def start(self) -> Dovecot:
        if self._process is not None:
            return self
        if not dovecot_installed():
            raise RuntimeError("dovecot is not installed (apt-get install -y dovecot-imapd)")
        for sub in ("etc", "log", "state", "mail", "run"):
            (self.base / sub).mkdir(exist_ok=True)
        # As root the auth process runs as user dovecot and must read etc/.
        for path in (self.base, self.base / "etc", self.base / "log"):
            path.chmod(0o755)
        if self.ssl and not self.cert_path.exists():
            self._make_certificate()
        self._write_passwd_files()
        self.conf.write_text(self._config())
        self.log.write_text("")
        self.log.chmod(0o666)
        with open(self.base / "log" / "startup.err", "wb") as errors:
            # -F keeps the master in the foreground as our child: we can reap it,
            # so stop() never waits on a zombie the way `doveadm stop` does.
            self._process = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=errors,
                stderr=errors,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not _greets(self.host, self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                detail = self._log_tail()
                self.stop()
                raise RuntimeError(f"dovecot did not start on {self.host}:{self.port}:\n{detail}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM the master we started, reap it, wait until the port refuses."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # imap-login children may hold the listening socket a moment longer.
        deadline = time.monotonic() + STOP_TIMEOUT
        while not _refuses(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and remove the whole instance directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def master_pid(self) -> int | None:
        return self._process.pid if self._process else None

    # -- users -----------------------------------------------------------

    @property
    def users(self) -> list[str]:
        return list(self._passwords)

    def password_of(self, user: str) -> str:
        return self._passwords[user]

    def maildir(self, user: str) -> Path:
        return self._home(user) / "Maildir"

    def add_user(self, name: str, password: str | None = None, quota: str | None = None) -> str:
        """Add a user to the running server; it can log in at once."""
        if name in self._passwords:
            raise ValueError(f"user {name!r} exists")
        self._passwords[name] = password if password is not None else self.user_pass
        if quota is not None:
            self._quota[name] = quota
        if self._users_dir.exists():
            self._write_user(name)
        return name

    def set_quota(self, user: str, limit: str) -> None:
        """Set ``user``'s storage limit ("10K", "2M"; "0" lifts it); later logins see it.

        A limit is never simply removed: Dovecot's maildir quota would then
        fall back to the last limit it wrote into the Maildir's maildirsize.
        """
        if user not in self._passwords:
            raise KeyError(user)
        self._quota[user] = limit
        if not self.running:
            return
        self._write_user(user)
        # auth stats a passwd-file at most once a second: wait until it has.
        wanted = f"*:storage={limit}"
        deadline = time.monotonic() + 5
        while self.doveadm("user", "-f", "quota_rule", user, check=False).stdout.strip() != wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not pick up the new quota of {user}")
            time.sleep(0.1)

    def doveadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["doveadm", "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    # -- internals -------------------------------------------------------

    def _home(self, user: str) -> Path:
        return self.base / "mail" / user

    def _user_file(self, user: str) -> Path:
        return self._users_dir / user

    def _write_user(self, user: str) -> None:
        """One passwd-file per user, so a new user needs no reload of a shared file."""
        self._create_maildir(user)
        extra = f"userdb_quota_rule=*:storage={self._quota[user]}" if user in self._quota else ""
        line = (
            f"{user}:{{PLAIN}}{self._passwords[user]}:{self._mail_uid}:{self._mail_gid}"
            f"::{self._home(user)}::{extra}\n"
        )
        path = self._user_file(user)
        previous_mtime = int(path.stat().st_mtime) if path.exists() else 0
        staging = path.with_name(f".{user}.new")
        staging.write_text(line)
        staging.chmod(0o644)
        # Dovecot re-reads the file only when its mtime or size changed; a
        # quota edit within the same second may keep both, so step the mtime.
        stamp = max(previous_mtime + 1, int(time.time()))
        os.utime(staging, (stamp, stamp))
        staging.replace(path)

    def _write_passwd_files(self) -> None:
        master = self.base / "etc" / "master.passwd"
        master.write_text(f"{self.master_user}:{{PLAIN}}{self.master_pass}\n")
        master.chmod(0o644)
        self._users_dir.mkdir(exist_ok=True)
        self._users_dir.chmod(0o755)
        for user in self._passwords:
            self._write_user(user)

    def _create_maildir(self, user: str) -> None:
        home = self._home(user)
        if (home / "Maildir").exists():
            return
        for sub in ("cur", "new", "tmp"):
            (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            for path in (self.base / "mail", home, home / "Maildir", *(home / "Maildir").iterdir()):
                os.chown(path, self._mail_uid, self._mail_gid)

    def _make_certificate(self) -> None:
        if shutil.which("openssl") is None:
            raise RuntimeError("openssl is needed for a TLS test server")
        try:
            ipaddress.ip_address(self.cert_hostname)
            alt_name = f"IP:{self.cert_hostname}"
        except ValueError:
            alt_name = f"DNS:{self.cert_hostname}"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", f"/CN={self.cert_hostname}", "-addext", f"subjectAltName={alt_name}",
                "-keyout", str(self._key_path), "-out", str(self.cert_path),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.cert_path.chmod(0o644)
        self._key_path.chmod(0o644)

    def _log_tail(self, lines: int = 20) -> str:
        texts = []
        for path in (self.base / "log" / "startup.err", self.log):
            if path.exists():
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(texts)

    def _config(self) -> str:
        base = self.base
        as_root = os.getuid() == 0
        if as_root:
            internal_user, login_user, internal_group = "dovecot", "dovenull", "dovecot"
        else:
            internal_user = login_user = pwd.getpwuid(os.getuid()).pw_name
            internal_group = grp.getgrgid(os.getgid()).gr_name
        # An ordinary user cannot chroot, so every chrooting service is told not to.
        no_chroot = "" if as_root else "  chroot =\n"
        unchrooted = "" if as_root else "".join(
            f"service {name} {{\n{no_chroot}}}\n"
            for name in ("ipc", "old-stats", "aggregator", "imap-urlauth-login")
        )
        if self.ssl:
            tls = (
                f"ssl = yes\nssl_cert = <{self.cert_path}\nssl_key = <{self._key_path}\n"
            )
            imaps_port = self.ssl_port
        else:
            tls = "ssl = no\n"
            imaps_port = 0
        return f"""\
# generated by tests/dovecot.py; self-contained, does not read /etc/dovecot
protocols = imap
listen = {self.host}
base_dir = {base}/run
state_dir = {base}/state
instance_name = dovecot-test-{self.port}
log_path = {self.log}
info_log_path = {self.log}
debug_log_path = {self.log}
log_timestamp = "%Y-%m-%d %H:%M:%S "

default_internal_user = {internal_user}
default_login_user = {login_user}
default_internal_group = {internal_group}
first_valid_uid = 1
first_valid_gid = 1

{tls}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
auth_failure_delay = 0
auth_cache_size = 0

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/etc/master.passwd
  master = yes
  # after a master login the target user must exist too
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self._users_dir}/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self._users_dir}/%u
}}

mail_location = maildir:~/Maildir
mail_uid = {self._mail_uid}
mail_gid = {self._mail_gid}
mail_fsync = optimized
mail_max_userip_connections = 1000
mail_plugins = $mail_plugins quota
plugin {{
  # the limit itself comes per user from userdb_quota_rule in the passwd-file
  quota = maildir:User quota
}}
namespace inbox {{
  inbox = yes
  separator = /
}}

{unchrooted}service imap-login {{
{no_chroot}  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {imaps_port}
  }}
}}
# Without this, each failed login from 127.0.0.1 delays all later ones.
service anvil {{
{no_chroot}  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap {{
  process_limit = 1024
}}
default_client_limit = 2000
"""
