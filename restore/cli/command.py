"""How commands present themselves: options by pipeline stage, commands in pipeline order.

``command`` makes a click command whose ``--help`` lists its options in
sections, one per stage of ``restore.options.STAGES``; ``PipelineGroup``
lists its commands in the order mail flows through them. ``option_sections``
is the one grouping both ``--help`` and the man pages (tools/gen_man.py) use.
"""

from __future__ import annotations

import functools

import click

from restore.options import STAGES

# The order of a night's work; commands not named here follow, alphabetically.
PIPELINE = ("scan", "timeline", "diff", "inject", "restore", "audit", "runs", "undo", "report",
            "config", "completion", "demo")


def option_sections(command: click.Command, ctx: click.Context) -> list[tuple[str, list[click.Option]]]:
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


class StagedCommand(click.Command):
    """A command whose --help lists options stage by stage."""

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
