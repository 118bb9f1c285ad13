"""The command line: a thin click shell over the library.

One module per command family (``scan``, ``compare``: timeline and diff,
``write``: inject and restore, ``runs``: runs and undo, ``audit``, ``merge``:
report merge, ``config``,
``completion``, ``demo``), their shared helpers in ``common``, their shared
options in ``restore.cli.options``; ``command`` gives every command --config and
--profile and its stage-by-stage --help. Commands return an
exit status or raise; ``main()`` here is the only place where errors become
exit codes (SPEC.md and ``restore.errors``).
"""

from __future__ import annotations

import sys

import click

from restore import __version__
from restore import audit as auditing
from restore.cli import audit, compare, completion, demo, merge, runs, scan, write
from restore.cli import config as configuration
from restore.cli.command import PipelineGroup
from restore.cli.common import resume_command
from restore.errors import Interrupted, MailrestoreError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=PipelineGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="mailrestore")
def cli() -> None:
    """Put back the mail a failed-over mail store lost, exactly once.

    After a failover the promoted replica lacks the mail that arrived between
    its last replication and the return of inbound mail. mailrestore compares
    each mailbox's timeline on the replica with a gateway archive, finds what
    is missing inside the gap, and appends it back (IMAP or Maildir) with its
    original received time, exactly once.

    \b
    Typical night (R=maildir:/var/vmail/%d/%n/Maildir, A=eml:/srv/gateway):
      mailrestore timeline --archive A --replica R
      mailrestore diff --archive A --replica R --plan gap.jsonl
      mailrestore inject gap.jsonl --to R --dry-run
      mailrestore inject gap.jsonl --to R

    Exit codes: 0 done, 1 findings or partial failure, 2 usage error,
    3 could not run (store missing, connection or login failed),
    70 internal error (a bug: please report it).
    """


# PipelineGroup keeps them in pipeline order for --help and the man pages.
for command in (scan.scan, compare.timeline, compare.diff, write.inject, write.restore,
                runs.runs, runs.undo, audit.audit, merge.report_command, configuration.config,
                completion.completion, demo.demo):
    cli.add_command(command)


@cli.result_callback()
def _status(status: int | None, **_: object) -> None:
    """A command's return value is its exit status (click's Exit carries it to main)."""
    click.get_current_context().exit(status or 0)


def main() -> None:
    """The console script: the one place where outcomes and errors become exit codes."""
    nagios = _nagios_requested(sys.argv[1:])
    try:
        # The completion scripts call back through this variable, also under ``python -m restore``.
        status = cli.main(standalone_mode=False, complete_var="_MAILRESTORE_COMPLETE")
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        status = 130
    except Interrupted as exc:
        click.echo(f"mailrestore: {exc}", err=True)
        # The journal makes the same command finish the job, writing nothing twice.
        click.echo(f"To go on, run the same command again: {resume_command()}", err=True)
        status = exc.exit_code
    except click.ClickException as exc:
        if nagios:
            # Nagios reads exit 2 as CRITICAL: a typo in a check must say UNKNOWN.
            status, line = auditing.nagios_unknown(exc.format_message())
            click.echo(line)
        else:
            exc.show()
            status = 2
    except MailrestoreError as exc:
        if nagios:  # the check could not run: UNKNOWN, whatever the reason
            status, line = auditing.nagios_unknown(str(exc))
            click.echo(line)
        else:
            click.echo(f"mailrestore: {exc}", err=True)
            status = exc.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted; the journal keeps what was done, re-run to finish.", err=True)
        status = 130
    except BrokenPipeError:
        status = 1
    sys.exit(status)


def _nagios_requested(args: list[str]) -> bool:
    """Whether the command line asks for ``audit --format nagios``."""
    if "audit" not in args:
        return False
    return "--format=nagios" in args or any(
        a == "--format" and b == "nagios" for a, b in zip(args, args[1:], strict=False))

