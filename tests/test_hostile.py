"""Issue #12: hostile input, one case at a time, as an administrator meets it (a subprocess).

Each test is one case of the issue: the run goes on, says which item and
why in one line, never shows a traceback, and never reads or writes beyond
what it was given. The corpus of many such items at once is
tests/test_hostile_corpus.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from restore.plan import load_plan

RECEIVED = datetime(2017, 12, 8, 12, 0, tzinfo=UTC)
ALICE = "alice@example.com"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment: its catalog, journal and locks live in tmp_path."""
    env = dict(os.environ)
    for name in ("CACHE", "STATE", "DATA", "CONFIG"):
        env[f"XDG_{name}_HOME"] = str(tmp_path / "xdg" / name.lower())
    env["HOME"] = str(tmp_path / "home")
    env.pop("MAILRESTORE_PASSWORD", None)
    return {**env, **extra}


def mailrestore(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "restore", *args], capture_output=True, text=True,
                          env=env_for(tmp_path, **env), timeout=120, stdin=subprocess.DEVNULL)


def no_traceback(run: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in run.stderr + run.stdout, run.stderr


def message(mail_factory, **kwargs) -> bytes:
    return mail_factory.make_message(received=RECEIVED, envelope_to=ALICE, **kwargs)


def alice_maildir(tmp_path: Path, mail_factory, messages=()) -> tuple[str, Path]:
    """A per-user replica holding alice's Maildir; its spec and her Maildir."""
    root = tmp_path / "vmail"
    spec = "maildir:" + mail_factory.write_maildir_tree(root, {ALICE: {"INBOX": list(messages)}})
    return spec, root / "example.com" / "alice" / "Maildir"


# -- names that are not UTF-8 -------------------------------------------------------


def test_names_that_are_not_utf8_are_carried_shown_escaped_and_restored(tmp_path, mail_factory):
    archive = tmp_path / "gw"
    day = archive / "2017" / "12" / "08"
    day.mkdir(parents=True)
    lost = message(mail_factory, subject="lost")
    (day / os.fsdecode(b"bad\xffname.eml")).write_bytes(lost)
    kept = message(mail_factory, subject="kept")
    (day / "good.eml").write_bytes(kept)
    replica, maildir = alice_maildir(tmp_path, mail_factory)
    # The replica holds "kept" under a name that is not UTF-8 either.
    (maildir / "cur" / os.fsdecode(b"1512734400.M1P1.h\xfe:2,S")).write_bytes(kept)
    pair = ["--archive", f"eml:{archive}", "--replica", replica,
            "--since", "2017-12-08T00:00:00Z", "--until", "2017-12-09T00:00:00Z"]

    scan = mailrestore(tmp_path, "scan", f"eml:{archive}", "--json")
    no_traceback(scan)
    assert scan.returncode == 0, scan.stderr
    assert json.loads(scan.stdout)["messages"] == 2

    diff = mailrestore(tmp_path, "diff", *pair, "--plan", str(tmp_path / "plan.jsonl"))
    no_traceback(diff)
    assert diff.returncode == 1, diff.stderr      # one missing
    loaded = load_plan(str(tmp_path / "plan.jsonl"))
    assert not loaded.bad
    [entry] = loaded.entries
    assert entry.ref == "2017/12/08/bad\\xffname.eml"    # shown escaped, and it round-trips:

    inject = mailrestore(tmp_path, "inject", str(tmp_path / "plan.jsonl"), "--to", replica,
                         "--json")
    no_traceback(inject)
    assert inject.returncode == 0, inject.stderr
    assert json.loads(inject.stdout)["appended"] == 1
    [written] = (maildir / "new").iterdir()
    assert written.read_bytes() == lost

    audit = mailrestore(tmp_path, "audit", "--archive", f"eml:{archive}", "--replica", replica,
                        "--now", "2017-12-08T18:00:00Z", "--format", "nagios")
    no_traceback(audit)
    assert audit.stdout.startswith("MAILRESTORE OK - "), audit.stdout
    assert audit.returncode == 0


def test_an_unreadable_item_with_a_name_that_is_not_utf8_is_named_escaped(tmp_path, mail_factory):
    archive = tmp_path / "gw"
    archive.mkdir()
    (archive / os.fsdecode(b"junk\xe9.eml")).write_bytes(b"\x00\x01 not a message")
    scan = mailrestore(tmp_path, "scan", f"eml:{archive}")
    no_traceback(scan)
    assert scan.returncode == 1
    assert "junk\\xe9.eml: binary data, not a message" in scan.stdout


# -- symlinks out of the store ---------------------------------------------------------


def test_an_mbox_directory_reports_a_symlink_out_of_its_root_once(tmp_path, mail_factory):
    archive = tmp_path / "mbox"
    mail_factory.write_mbox(archive / "inbox", [message(mail_factory)])
    (archive / "evil").symlink_to("/etc/passwd")
    for _ in range(2):      # a first scan and a re-scan say the same
        scan = mailrestore(tmp_path, "scan", f"mbox:{archive}", "--json")
        no_traceback(scan)
        doc = json.loads(scan.stdout)
        assert doc["messages"] == 1
        assert [(p["where"].rsplit("/", 1)[1], p["reason"]) for p in doc["problems"]] == [
            ("evil", "symlink pointing outside the store root")]
        assert scan.returncode == 1


def test_an_eml_tree_reports_a_symlink_out_of_its_root_once(tmp_path, mail_factory):
    archive = tmp_path / "gw"
    [path] = mail_factory.write_eml_tree(archive, [message(mail_factory)])
    (path.parent / "evil.eml").symlink_to("/etc/passwd")
    scan = mailrestore(tmp_path, "scan", f"eml:{archive}", "--json")
    no_traceback(scan)
    doc = json.loads(scan.stdout)
    assert (doc["messages"], doc["unreadable"]) == (1, 1)
    assert [p["reason"] for p in doc["problems"]] == ["symlink pointing outside the store root"]


# -- recipients with a domain that is not ASCII, over IMAP ------------------------------


def test_an_idn_recipient_is_read_and_restored_over_imap_by_its_punycode_name(
        tmp_path, mail_factory, dovecot_server):
    # Dovecot 2.3 offers no UTF8=ACCEPT: the mailbox is known by its IDNA name.
    dovecot_server.add_user("ida@xn--exmple-cua.com")
    dovecot_server.add_user("carol@example.com")
    archive = tmp_path / "gw"
    lost = mail_factory.make_message(received=RECEIVED, envelope_to="ida@exämple.com")
    other = mail_factory.make_message(received=RECEIVED, envelope_to="carol@example.com")
    stranger = mail_factory.make_message(received=RECEIVED, envelope_to="jörg@exämple.com")
    mail_factory.write_eml_tree(archive, [lost, other, stranger])
    imap = f"imap://{dovecot_server.master_user}@{dovecot_server.host}:{dovecot_server.port}"
    password = {"MAILRESTORE_PASSWORD": dovecot_server.master_pass}
    window = ["--since", "2017-12-08T00:00:00Z", "--until", "2017-12-09T00:00:00Z"]

    diff = mailrestore(tmp_path, "diff", "--archive", f"eml:{archive}", "--replica", imap,
                       *window, "--json", **password)
    no_traceback(diff)
    assert diff.returncode == 1, diff.stderr     # findings, never "could not run"
    doc = json.loads(diff.stdout)
    assert {u["user"]: u["missing"] for u in doc["users"]} == {"ida@exämple.com": 1,
                                                                "carol@example.com": 1}
    [unroutable] = [p for p in doc["problems"] if p["class"] == "unroutable"]
    assert unroutable["user"] == "jörg@exämple.com"
    [why] = [p for p in doc["problems"] if p["class"] == "replica-unreadable"]
    assert "jörg@exämple.com" in why["where"] and "UTF8=ACCEPT" in why["reason"]

    restore = mailrestore(tmp_path, "restore", "--archive", f"eml:{archive}", "--replica", imap,
                          "--to", imap, *window, "--json", **password)
    no_traceback(restore)
    assert json.loads(restore.stdout)["appended"] == 2, restore.stderr
    again = mailrestore(tmp_path, "diff", "--archive", f"eml:{archive}", "--replica", imap,
                        *window, "--json", **password)
    assert json.loads(again.stdout)["counts"]["missing"] == 0, again.stdout


# -- an item that expands past --max-message-size --------------------------------------


def test_an_item_past_the_size_limit_is_unreadable_and_a_larger_limit_reads_it(tmp_path,
                                                                               mail_factory):
    archive = tmp_path / "gw"
    big = message(mail_factory, body="x" * 3_000_000 + "\n")
    small = message(mail_factory)
    mail_factory.write_eml_tree(archive, [big, small], compress="gz")
    replica, maildir = alice_maildir(tmp_path, mail_factory)
    window = ["--since", "2017-12-08T00:00:00Z", "--until", "2017-12-09T00:00:00Z"]
    diff = mailrestore(tmp_path, "diff", "--archive", f"eml:{archive}", "--replica", replica,
                       *window, "--max-message-size", "1M", "--json", "--plan", str(tmp_path / "p"))
    no_traceback(diff)
    doc = json.loads(diff.stdout)
    assert (doc["counts"]["missing"], doc["counts"]["unreadable"]) == (1, 1)
    [problem] = doc["problems"]
    assert problem["where"].endswith("0001.eml.gz") or problem["where"].endswith(".eml.gz")
    assert problem["reason"] == "too large: more than 1 MiB (--max-message-size)"
    # The catalog remembers what the limit was: a larger one reads the item.
    again = mailrestore(tmp_path, "diff", "--archive", f"eml:{archive}", "--replica", replica,
                        *window, "--max-message-size", "4M", "--json")
    assert json.loads(again.stdout)["counts"]["missing"] == 2, again.stderr
    # inject re-reads the archive under the same limit
    mailrestore(tmp_path, "diff", "--archive", f"eml:{archive}", "--replica", replica,
                *window, "--max-message-size", "4M", "--plan", str(tmp_path / "p"))
    inject = mailrestore(tmp_path, "inject", str(tmp_path / "p"), "--to", replica,
                         "--max-message-size", "1M", "--json")
    no_traceback(inject)
    doc = json.loads(inject.stdout)
    assert (doc["appended"], doc["failed"]) == (1, 1), inject.stderr
    assert "too large" in doc["problems"][0]["reason"]


# -- line endings: LF in Maildir, CRLF over IMAP, a bare CR too -------------------------


def cr_only_plan(tmp_path: Path, mail_factory) -> tuple[Path, bytes]:
    """A plan of one archived message written with bare CRs (an old Mac mailer)."""
    archive = tmp_path / "gw"
    data = message(mail_factory, subject="old Mac", body="line one\nline two\n").replace(
        b"\n", b"\r"
    )
    mail_factory.write_eml_tree(archive, [data])
    replica, _ = alice_maildir(tmp_path / "empty", mail_factory)
    mailrestore(tmp_path, "diff", "--archive", f"eml:{archive}", "--replica", replica,
                "--since", "2017-12-08T00:00:00Z", "--until", "2017-12-09T00:00:00Z",
                "--plan", str(tmp_path / "plan.jsonl"))
    return tmp_path / "plan.jsonl", data


def test_a_message_with_bare_crs_is_written_with_lf_into_maildir(tmp_path, mail_factory):
    from restore.identity import facts_of

    plan, data = cr_only_plan(tmp_path, mail_factory)
    replica, maildir = alice_maildir(tmp_path, mail_factory)
    inject = mailrestore(tmp_path, "inject", str(plan), "--to", replica, "--json")
    assert json.loads(inject.stdout)["appended"] == 1, inject.stderr
    [written] = (maildir / "new").iterdir()
    assert written.read_bytes() == data.replace(b"\r", b"\n")
    assert facts_of(written.read_bytes()).key == facts_of(data).key     # the same message


def test_a_message_with_bare_crs_is_appended_with_crlf_over_imap(tmp_path, mail_factory,
                                                                  dovecot_server):
    from imapclient import IMAPClient

    dovecot_server.add_user(ALICE)
    plan, data = cr_only_plan(tmp_path, mail_factory)
    imap = f"imap://{dovecot_server.master_user}@{dovecot_server.host}:{dovecot_server.port}"
    inject = mailrestore(tmp_path, "inject", str(plan), "--to", imap, "--json",
                         MAILRESTORE_PASSWORD=dovecot_server.master_pass)
    assert json.loads(inject.stdout)["appended"] == 1, inject.stderr
    client = IMAPClient(dovecot_server.host, port=dovecot_server.port, ssl=False, timeout=10)
    client.login(f"{ALICE}*{dovecot_server.master_user}", dovecot_server.master_pass)
    client.select_folder("INBOX", readonly=True)
    [(_, got)] = client.fetch(client.search("ALL"), ["BODY.PEEK[]", "ENVELOPE"]).items()
    client.logout()
    assert got[b"BODY[]"] == data.replace(b"\r", b"\r\n")
    assert got[b"ENVELOPE"].message_id     # Dovecot sees every header line, not one


# -- one line, no traceback ----------------------------------------------------------------


def archive_and_replica(tmp_path: Path, mail_factory) -> list[str]:
    """An archive of one message alice's replica lacks: the --archive/--replica arguments."""
    archive = tmp_path / "gw"
    mail_factory.write_eml_tree(archive, [message(mail_factory)])
    replica, _ = alice_maildir(tmp_path, mail_factory)
    return ["--archive", f"eml:{archive}", "--replica", replica]


def test_timeline_svg_to_a_path_that_cannot_be_written_is_one_line(tmp_path, mail_factory):
    pair = archive_and_replica(tmp_path, mail_factory)
    run = mailrestore(tmp_path, "timeline", *pair, "--svg", str(tmp_path / "no" / "such" / "x.svg"))
    no_traceback(run)
    assert run.returncode == 2
    [line] = run.stderr.splitlines()
    assert line.startswith("mailrestore: --svg ") and "No such file or directory" in line


def test_an_invariant_failure_is_one_line_and_exit_70(tmp_path, mail_factory):
    # The class counts never fail to add up unless there is a bug: make one.
    pair = archive_and_replica(tmp_path, mail_factory)
    code = ("import sys, restore.diff as d; from restore.cli import main\n"
            "from restore.errors import InvariantError\n"
            "def bug(*args): raise InvariantError('class counts {} do not add up to 1 pairs')\n"
            "d._tally = bug\n"
            "sys.argv = ['mailrestore', *sys.argv[1:]]; main()")
    run = subprocess.run([sys.executable, "-c", code, "diff", *pair], capture_output=True,
                         text=True,
                         env=env_for(tmp_path), timeout=60)
    no_traceback(run)
    assert run.returncode == 70, run.stderr
    [line] = run.stderr.splitlines()
    assert line.startswith("mailrestore: ") and "do not add up" in line


def test_an_empty_delivered_to_is_named_as_the_reason(tmp_path, mail_factory):
    archive = tmp_path / "gw"
    data = mail_factory.make_message(received=RECEIVED, extra_headers={"Delivered-To": "<>"})
    mail_factory.write_eml_tree(archive, [data])
    replica, _ = alice_maildir(tmp_path, mail_factory)
    run = mailrestore(tmp_path, "diff", "--archive", f"eml:{archive}", "--replica", replica,
                      "--json")
    [problem] = json.loads(run.stdout)["problems"]
    assert problem["class"] == "unroutable"
    assert problem["reason"] == "recipient '<>' rejected: Delivered-To names no address"


def test_a_password_in_the_url_is_never_printed(tmp_path, mail_factory):
    pair = archive_and_replica(tmp_path, mail_factory)
    url = "imap://admin:s3cret@127.0.0.1:1"
    for args in (["diff", pair[0], pair[1], "--replica", url],
                 ["inject", str(tmp_path / "p.jsonl"), "--to", url, "--archive", pair[1]]):
        (tmp_path / "p.jsonl").write_text("")
        run = mailrestore(tmp_path, *args)
        no_traceback(run)
        assert run.returncode == 2, run.stderr
        assert "s3cret" not in run.stderr + run.stdout
        assert "no password in the URL" in run.stderr


def test_a_plan_saved_with_a_byte_order_mark_keeps_its_first_line(tmp_path, mail_factory):
    pair = archive_and_replica(tmp_path, mail_factory)
    plan = tmp_path / "plan.jsonl"
    mailrestore(tmp_path, "diff", *pair, "--since", "2017-12-08T00:00:00Z",
                "--until", "2017-12-09T00:00:00Z", "--plan", str(plan))
    plan.write_bytes(b"\xef\xbb\xbf" + plan.read_bytes())      # as Notepad saves it
    run = mailrestore(tmp_path, "inject", str(plan), "--to", pair[3], "--dry-run", "--json")
    no_traceback(run)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["appended"] == 1


def test_catalog_in_a_directory_that_does_not_exist_is_an_error_and_creates_nothing(tmp_path,
                                                                                 mail_factory):
    pair = archive_and_replica(tmp_path, mail_factory)
    run = mailrestore(tmp_path, "diff", *pair, "--catalog",
                      str(tmp_path / "nonexistent" / "dir" / "x"))
    no_traceback(run)
    assert run.returncode == 2
    assert not (tmp_path / "nonexistent").exists()
    [line] = run.stderr.splitlines()
    assert "--catalog" in line and "does not exist" in line


def test_a_damaged_catalog_is_rebuilt_with_a_notice(tmp_path, mail_factory):
    pair = archive_and_replica(tmp_path, mail_factory)
    catalog = tmp_path / "catalog.sqlite"
    first = mailrestore(tmp_path, "diff", *pair, "--catalog", str(catalog), "--json")
    for damage in (b"garbage" * 100, catalog.read_bytes()[:3000], b""):
        catalog.write_bytes(damage)
        run = mailrestore(tmp_path, "diff", *pair, "--catalog", str(catalog), "--json")
        no_traceback(run)
        assert run.returncode == first.returncode
        assert json.loads(run.stdout)["counts"] == json.loads(first.stdout)["counts"]
        if damage:
            [notice] = run.stderr.splitlines()
            assert "rebuilt" in notice and str(catalog) in notice


# -- what the tool writes about mail is private ------------------------------------------


def test_what_the_tool_writes_about_mail_is_private_whatever_the_umask(tmp_path, mail_factory):
    pair = archive_and_replica(tmp_path, mail_factory)
    out = tmp_path / "out"
    out.mkdir()
    window = ["--since", "2017-12-08T00:00:00Z", "--until", "2017-12-09T00:00:00Z"]
    umask = ("import os, sys; os.umask(0); from restore.cli import main;"
             " sys.argv[0] = 'mailrestore'; main()")
    for args in (["diff", *pair, *window, "--plan", str(out / "plan.jsonl"),
                  "--report", str(out / "users.csv")],
                 ["inject", str(out / "plan.jsonl"), "--to", pair[3]],
                 ["timeline", *pair, *window, "--svg", str(out / "chart.svg")],
                 ["audit", *pair, "--now", "2017-12-08T18:00:00Z"]):
        run = subprocess.run([sys.executable, "-c", umask, *args], capture_output=True, text=True,
                             env=env_for(tmp_path), timeout=60)
        no_traceback(run)
    written = [p for p in (tmp_path / "xdg").rglob("*")] + list(out.iterdir())
    assert {p.name for p in written} >= {"catalog.sqlite", "plan.jsonl", "chart.svg", "users.csv"}
    assert any(p.name.startswith("journal-") for p in written)
    assert any(p.name.startswith("audit-") for p in written)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in written}
    assert modes == {name: (oct(0o700) if (tmp_path / name).is_dir() else oct(0o600))
                     for name in modes}
    # restored mail keeps the Maildir's own mode
    [restored] = (tmp_path / "vmail" / "example.com" / "alice" / "Maildir" / "new").iterdir()
    maildir_mode = (restored.parent.parent.stat().st_mode & 0o666)
    assert restored.stat().st_mode & 0o777 == maildir_mode


# -- a target that cannot be written ----------------------------------------------------------


def test_a_read_only_target_is_one_error_and_exit_3(tmp_path, mail_factory):
    # As root nothing is read-only by its mode: the run is made as nobody then.
    import shutil
    import stat
    import tempfile

    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="ro"))
    try:
        base.chmod(0o755)
        archive = base / "gw"
        mail_factory.write_eml_tree(archive,
                                    [message(mail_factory, subject=f"m{i}") for i in range(49)])
        replica, maildir = alice_maildir(base, mail_factory)
        for path in [base, *base.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        state = base / "state"
        state.mkdir(mode=0o777)
        state.chmod(0o777)
        as_user = [] if os.geteuid() else ["setpriv", "--reuid=65534", "--regid=65534",
                                           "--clear-groups"]
        if os.geteuid():
            for sub in ("cur", "new", "tmp"):
                (maildir / sub).chmod(0o555)
        env = {**env_for(tmp_path),
               **{f"XDG_{n}_HOME": str(state / n) for n in ("CACHE", "STATE", "CONFIG", "DATA")}}
        run = subprocess.run([*as_user, sys.executable, "-m", "restore", "restore", "--archive",
                              f"eml:{archive}", "--replica", replica, "--to", replica,
                              "--since", "2017-12-08T00:00:00Z", "--until", "2017-12-09T00:00:00Z"],
                             capture_output=True, text=True, env=env, timeout=120, cwd=base)
        no_traceback(run)
        assert run.returncode == 3, run.stdout + run.stderr
        [line] = run.stderr.splitlines()
        assert line.startswith("mailrestore: ") and f"cannot write to {maildir}" in line, line
        assert not any((maildir / "new").iterdir())
        assert stat.S_IMODE((maildir / "new").stat().st_mode) in (0o755, 0o555)
    finally:
        shutil.rmtree(base)


# -- Ctrl-C -----------------------------------------------------------------------------------


def test_ctrl_c_during_inject_says_what_was_written_and_how_to_go_on(tmp_path, mail_factory):
    import shlex
    import signal
    import time

    archive = tmp_path / "gw"
    mail_factory.write_eml_tree(archive,
                                [message(mail_factory, subject=f"m{i}") for i in range(2000)])
    replica, maildir = alice_maildir(tmp_path, mail_factory)
    plan = tmp_path / "plan.jsonl"
    mailrestore(tmp_path, "diff", "--archive", f"eml:{archive}", "--replica", replica, "--since",
                "2017-12-08T00:00:00Z", "--until", "2017-12-09T00:00:00Z", "--plan", str(plan))
    args = ["inject", str(plan), "--to", replica, "--jobs", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "restore", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(tmp_path))
    deadline = time.monotonic() + 60
    while len(os.listdir(maildir / "new")) < 100 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    written = len(os.listdir(maildir / "new"))
    assert proc.returncode == 130 and 0 < written < 2000, (proc.returncode, written, err)
    summary, resume = err.strip().splitlines()[-2:]
    assert f"{written:,} appended" in summary
    assert resume.endswith(shlex.join(["mailrestore", *args]))
    again = mailrestore(tmp_path, *args, "--json")
    doc = json.loads(again.stdout)
    assert (doc["appended"], doc["already_present"]) == (2000 - written, written)
    assert len(os.listdir(maildir / "new")) == 2000


def test_a_configuration_directory_that_cannot_be_searched_is_one_line(tmp_path, mail_factory):
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="cf"))
    try:
        locked = base / "locked"
        locked.mkdir(mode=0o700)
        locked.chmod(0o700 if os.geteuid() == 0 else 0o000)    # root: nobody may not search it
        as_user = [] if os.geteuid() else ["setpriv", "--reuid=65534", "--regid=65534",
                                           "--clear-groups"]
        base.chmod(0o755)
        run = subprocess.run([*as_user, sys.executable, "-m", "restore", "scan",
                              "eml:/nonexistent"],
                             capture_output=True, text=True, cwd=base, timeout=60,
                             env={**env_for(tmp_path), "XDG_CONFIG_HOME": str(locked / "config")})
        no_traceback(run)
        assert run.returncode == 2
        [line] = run.stderr.splitlines()
        assert "config.toml" in line and "Permission denied" in line
    finally:
        (base / "locked").chmod(0o700)
        shutil.rmtree(base)


# -- a plan that names a source outside the archives --------------------------------------------


def test_a_plan_line_naming_a_source_outside_the_archive_writes_nothing(tmp_path, mail_factory):
    pair = archive_and_replica(tmp_path, mail_factory)
    plan = tmp_path / "plan.jsonl"
    mailrestore(tmp_path, "diff", *pair, "--since", "2017-12-08T00:00:00Z",
                "--until", "2017-12-09T00:00:00Z", "--plan", str(plan))
    header, line = plan.read_text().splitlines()
    entry = json.loads(line)
    plan.write_text(
        header + "\n" + json.dumps({**entry, "source": "eml:/etc", "ref": "passwd"}) + "\n"
    )
    run = mailrestore(tmp_path, "inject", str(plan), "--to", pair[3], "--json")
    no_traceback(run)
    assert json.loads(run.stdout)["appended"] == 0
