"""The command line: a thin click shell over the library.

This is the only place where errors become exit codes (SPEC.md):
0 done, 1 findings or partial failure, 2 usage error, 3 could not run.
"""

from __future__ import annotations

import sys

import click

from restore import __version__
from restore.errors import MailrestoreError, UsageError
from restore.options import (
    imap_options,
    inject_options,
    json_option,
    pair_options,
    reading_options,
    window_options,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="mailrestore")
def cli() -> None:
    """Put back the mail a failed-over mail store lost, exactly once.

    After a failover the promoted replica lacks the mail that arrived between
    its last replication and the return of inbound mail. mailrestore compares
    each mailbox's timeline on the replica with a gateway archive, finds what
    is missing inside the gap, and appends it back (IMAP or Maildir) with its
    original received time, exactly once.

    \b
    Typical night:
      mailrestore timeline --archive eml:/srv/gateway --replica maildir:/var/vmail/%d/%n/Maildir
      mailrestore diff     --archive eml:/srv/gateway --replica maildir:/var/vmail/%d/%n/Maildir --plan gap.jsonl
      mailrestore inject   gap.jsonl --to maildir:/var/vmail/%d/%n/Maildir --dry-run
      mailrestore inject   gap.jsonl --to maildir:/var/vmail/%d/%n/Maildir

    Exit codes: 0 done, 1 findings or partial failure, 2 usage error,
    3 could not run (store missing, connection or login failed).
    """


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except MailrestoreError as exc:
        click.echo(f"mailrestore: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; the journal keeps what was done, re-run to finish.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(0)


def _not_ready(name: str) -> None:
    raise UsageError(f"'{name}' is not built yet")


@cli.command()
@click.argument("store")
@reading_options
@imap_options
@json_option
def scan(store: str, **opts: object) -> None:
    """Fingerprint STORE into the catalog and count its messages.

    Prints messages per user and folder, the time span, and every unreadable
    item with its reason. A second scan of an unchanged store re-reads nothing.
    """
    _not_ready("scan")


@cli.command()
@pair_options
@reading_options
@imap_options
@click.option("--user", "only_user", metavar="U", help="Only this user's timeline.")
@click.option("--bucket", type=click.Choice(["hour", "day"]), default="hour", show_default=True)
@click.option("--svg", type=click.Path(dir_okay=False), help="Also save the chart as an SVG file.")
@window_options
def timeline(**opts: object) -> None:
    """Chart archive and replica arrivals per hour or day, with the gap highlighted."""
    _not_ready("timeline")


@cli.command()
@pair_options
@reading_options
@imap_options
@window_options
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False),
              help="Write the messages to restore to FILE (JSON Lines).")
@json_option
def diff(**opts: object) -> None:
    """Class every archive message per user: present, missing, outside-window, ...

    Prints the window and how it was found, a table per user, the totals and
    the problems. Exit 1 when something is missing, unroutable or unreadable.
    """
    _not_ready("diff")


@cli.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--to", "target", required=True, metavar="TARGET",
              help="maildir: template or imap(s):// URL to append to.")
@inject_options
@imap_options
@json_option
def inject(**opts: object) -> None:
    """Append the messages of PLAN to TARGET, exactly once.

    Append only: nothing in the target is deleted, overwritten or reordered.
    Every message is journaled, so a re-run (after success or a crash)
    writes each message once. Exit 1 when some messages could not be written.
    """
    _not_ready("inject")


@cli.command()
@pair_options
@reading_options
@click.option("--to", "target", required=True, metavar="TARGET",
              help="Where to append; usually the replica itself.")
@window_options
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False),
              help="Also keep the plan in FILE.")
@inject_options
@imap_options
@json_option
def restore(**opts: object) -> None:
    """Diff and inject in one go: put the gap back into TARGET."""
    _not_ready("restore")


@cli.command()
@pair_options
@reading_options
@imap_options
@click.option("--window", default="24h", show_default=True, help="How far back to check (s/m/h/d).")
@click.option("--grace", default="15m", show_default=True,
              help="Skip mail this recent: it may still be in flight.")
@click.option("--now", default=None, metavar="TIME", help="Audit as if it were TIME (ISO 8601).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "nagios"]), default="text",
              show_default=True)
@click.option("--warning", type=int, default=1, show_default=True, help="Nagios: WARNING at N missing.")
@click.option("--critical", type=int, default=10, show_default=True, help="Nagios: CRITICAL at N missing.")
def audit(**opts: object) -> None:
    """Cron check: is every archived message of the last window in its mailbox?

    Silent with exit 0 when nothing is missing, so cron mails only on trouble.
    """
    _not_ready("audit")


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Where to create the sample incident (default: a new temporary directory).")
def demo(**opts: object) -> None:
    """Build a sample incident, diff it, chart it, and print the next commands."""
    _not_ready("demo")
