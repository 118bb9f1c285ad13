"""What every command shares: its settings' defaults, options by stage, pipeline order.

``command`` makes a click command that takes ``--config FILE`` and
``--profile NAME`` and fills every other option's default from them and
from ``MAILRESTORE_*`` variables (``restore.config``), through click's
``default_map``: the command line still wins, and this is the only place
that does it. Its ``--help`` lists options in sections, one per stage of
``restore.cli.options.STAGES``; ``PipelineGroup`` lists commands in the order
mail flows through them. ``option_sections`` is the one grouping both
``--help`` and the man pages (tools/gen_man.py) use.
"""

from __future__ import annotations

import functools

import click

from restore import config
from restore.cli.options import STAGES, option

# The order of a night's work; commands not named here follow, alphabetically.
PIPELINE = ("scan", "timeline", "diff", "inject", "restore", "audit", "runs", "undo", "report",
            "config", "completion", "demo")


def option_sections(command: click.Command,
                    ctx: click.Context) -> list[tuple[str, list[click.Option]]]:
    """The command's visible options, grouped by stage in pipeline order: (title, options)."""
    sections: dict[str, list[click.Option]] = {stage: [] for stage in STAGES}
    for param in command.get_params(ctx):
        if isinstance(param, click.Option) and not param.hidden:
            sections[getattr(param, "stage", "general")].append(param)
    return [(STAGES[stage], options) for stage, options in sections.items() if options]


def format_staged(cmd: click.Command, ctx: click.Context, formatter: click.HelpFormatter) -> None:
    for title, options in option_sections(cmd, ctx):
        records = [r for r in (o.get_help_record(ctx) for o in options) if r is not None]
        with formatter.section(title):
            formatter.write_dl(records)


def settings_of(cmd: click.Command) -> dict[str, click.Option]:
    """The options a configuration can give defaults for, by setting name (``alias-map``)."""
    found = {}
    for param in cmd.params:
        if isinstance(param, click.Option) and param.name not in CONFIG_PARAMS:
            long = next((o for o in param.opts if o.startswith("--")), None)
            if long:
                found[long[2:]] = param
    return found


def known_settings(root: click.Command) -> dict[str, dict[str, config.Kind]]:
    commands = root.commands if isinstance(root, click.Group) else {root.name or "": root}
    return {name: {setting: config.Kind(multiple=param.multiple, flag=param.is_flag,
                                        path=isinstance(param.type, click.Path))
                   for setting, param in settings_of(cmd).items()}
            for name, cmd in commands.items()}


def load_config(ctx: click.Context) -> config.Config:
    """The configuration the command line's --config and --profile name."""
    return config.load(known_settings(ctx.find_root().command),
                       ctx.meta.get("mailrestore.config"), ctx.meta.get("mailrestore.profile"))


def _settings_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Record --config or --profile; once both are known, set the command's defaults."""
    ctx.meta[f"mailrestore.{param.name}"] = value
    if not all(f"mailrestore.{name}" in ctx.meta for name in CONFIG_PARAMS):
        return
    loaded = load_config(ctx)
    options = settings_of(ctx.command)
    defaults = {}
    for name, setting in loaded.for_command(ctx.command.name or "").items():
        option = options[name]
        try:    # a bad value is the configuration's fault: say where it came from
            option.type_cast_value(ctx, setting.value)
        except click.BadParameter as exc:
            where = (setting.source if setting.source.startswith(config.ENV_PREFIX)
                     else f"{loaded.path} ({setting.source})")
            raise config.ConfigError(
                f"{where}: {name} = {setting.value!r}: {exc.message}") from None
        defaults[option.name] = setting.value
    ctx.default_map = defaults


CONFIG_PARAMS = ("config", "profile")
config_options = [
    option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
           envvar=config.CONFIG_ENV, callback=_settings_callback, stage="general",
           help="Read option defaults from FILE (TOML). Default: "
           "$XDG_CONFIG_HOME/mailrestore/config.toml, if it exists."),
    option("--profile", metavar="NAME", is_eager=True, expose_value=False,
           envvar=config.PROFILE_ENV, callback=_settings_callback, stage="general",
           help="Use the defaults of [profile.NAME] in the configuration file."),
]


class StagedCommand(click.Command):
    """A command with --config and --profile whose --help lists options stage by stage."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for decorate in config_options:
            decorate(self)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        format_staged(self, ctx, formatter)


command = functools.partial(click.command, cls=StagedCommand)


class PipelineGroup(click.Group):
    """A group that lists its commands in pipeline order, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(self.commands)
        ordered = [name for name in PIPELINE if name in names]
        return ordered + sorted(names - set(ordered))

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(cmd, name)
        # Keep ``commands`` (what the man pages iterate) in pipeline order too.
        order = {n: i for i, n in enumerate(self.list_commands(click.Context(self)))}
        self.commands = dict(sorted(self.commands.items(), key=lambda kv: order[kv[0]]))

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        format_staged(self, ctx, formatter)
        self.format_commands(ctx, formatter)
