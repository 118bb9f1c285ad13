"""``mailrestore config``: every option's effective default and where it comes from."""

from __future__ import annotations

from typing import Any

import click

from restore import report
from restore.cli.command import command, load_config, settings_of
from restore.cli.options import STAGES, json_option

BUILT_IN = "built-in"


@command()
@json_option
def config(**opts: Any) -> int:
    """Show each option's effective default and where it comes from.

    Reads the configuration file (--config, else
    $XDG_CONFIG_HOME/mailrestore/config.toml), the profile (--profile) and
    the MAILRESTORE_* environment variables, in that order of precedence
    from last to first; an option given on a command line wins over all of
    them. Settings that differ between commands get a row per command.
    """
    ctx = click.get_current_context()
    loaded = load_config(ctx)
    rows = effective_settings(ctx, loaded)
    if opts["as_json"]:
        report.print_json({"config": {"file": str(loaded.path), "found": loaded.found},
                           "profile": loaded.profile, "settings": rows})
    else:
        report.print_config(str(loaded.path), loaded.found, loaded.profile, rows)
    return 0


def effective_settings(ctx: click.Context, loaded) -> list[dict]:
    """One row per setting and (value, source), naming the commands it applies to."""
    root = ctx.find_root().command
    commands = root.commands if isinstance(root, click.Group) else {}
    folded: dict[tuple[str, str, str], dict] = {}
    stage_of: dict[str, int] = {}
    stages = list(STAGES)
    for name, cmd in commands.items():
        given = loaded.for_command(name)
        for setting, param in settings_of(cmd).items():
            stage_of.setdefault(setting, stages.index(getattr(param, "stage", "general")))
            if setting in given:
                value, source = given[setting].value, given[setting].source
            else:
                value, source = _built_in(param, click.Context(cmd, parent=ctx)), BUILT_IN
            row = folded.setdefault((setting, repr(value), source),
                                    {"setting": setting, "commands": [], "value": value,
                                     "source": source})
            row["commands"].append(name)
    return sorted(folded.values(), key=lambda r: (r["source"] == BUILT_IN,
                                                  stage_of[r["setting"]], r["setting"]))


def _built_in(param: click.Parameter, ctx: click.Context) -> object:
    value = param.get_default(ctx)
    if isinstance(value, tuple):
        return list(value)
    return value if isinstance(value, str | int | float | bool | list) else None
