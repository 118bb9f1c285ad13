"""``mailrestore completion``: the shell completion script, from click."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from restore.cli.command import command

SHELLS = ("bash", "zsh", "fish")


@command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> int:
    """Print the completion script for SHELL (bash, zsh or fish).

    It completes commands, options, and option values with fixed choices
    or file names. To enable it:

    \b
      bash: mailrestore completion bash > ~/.local/share/bash-completion/completions/mailrestore
      zsh:  mailrestore completion zsh > ~/.zfunc/_mailrestore   (with ~/.zfunc in fpath)
      fish: mailrestore completion fish > ~/.config/fish/completions/mailrestore.fish

    or for the current shell only: eval "$(mailrestore completion bash)".
    """
    root = click.get_current_context().find_root().command   # the group above: no import cycle
    complete = get_completion_class(shell)
    assert complete is not None     # SHELLS are click's own
    click.echo(complete(root, {}, "mailrestore", "_MAILRESTORE_COMPLETE").source())
    return 0
