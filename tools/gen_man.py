"""Generate the man pages in man/ from the click definitions in restore/cli/.

    python tools/gen_man.py           write man/mailrestore.1 and man/mailrestore-COMMAND.1
    python tools/gen_man.py --check   exit 1, listing the pages that differ from what it would write

Options, their help, defaults and choices come from click, so a change in
restore/cli/ (options.py included) only needs a re-run. Hand-written prose
goes in man/extra/PAGE.roff (e.g. man/extra/mailrestore-audit.roff): raw roff,
inserted before SEE ALSO of that page. The output carries no date, so the same
sources always give the same bytes.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import click

from restore import __version__
from restore.cli import cli
from restore.cli.command import option_sections

ROOT = Path(__file__).resolve().parent.parent
MAN_DIR = ROOT / "man"
EXTRA_DIR = MAN_DIR / "extra"
PROG = "mailrestore"

NO_REWRAP = "\b"  # click's marker: the paragraph it opens keeps its line breaks

# Exit codes from SPEC.md; a command may say what "findings" means for it.
EXIT_STATUS = [
    ("0", "Done; nothing to report."),
    ("1", "Done with findings or partial failure: some messages could not be injected, "
          "some archive items were unreadable or unroutable."),
    ("2", "Usage error: bad option, bad STORE syntax, malformed plan."),
    ("3", "Could not run: store not found, connection or login failed."),
    ("70", "Internal error: a bug (the class counts did not add up); please report it."),
    ("130", "Interrupted. What was already written is in the journal and said; the same "
            "command, run again, finishes the job."),
]
FINDINGS = {
    "scan": "Done, but some items were unreadable.",
    "diff": "Done, and something is missing, unroutable or unreadable (the --fail-on classes).",
    "inject": "Done, but some messages could not be written.",
    "restore": "Done, but something was unreadable or unroutable, or could not be written.",
    "audit": "Mail of the window is missing from its mailbox (or another of the "
             "--fail-on classes was found).",
    "undo": "Done, but some messages were left alone: moved, deleted or changed since the run.",
}
AUDIT_NAGIOS = ("With \\fB\\-\\-format nagios\\fR the Nagios plugin convention applies instead: "
                "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, with one status line.")

# FILES entries, shown on the pages of commands that take the option.
FILES = {
    "catalog": "The fingerprint cache (SQLite), by default in the user cache directory, "
               "private to the user (0600). Only a cache: deleting it costs a full re-read of "
               "the stores and the record of what audits saw delivered (mail users deleted "
               "before counts as missing until it leaves the audit's window), nothing else; a "
               "damaged one is rebuilt with a notice. Its directory must exist. It takes "
               "~500 bytes a message; when its disk or the temporary directory (TMPDIR) is "
               "full, the command exits 3 saying so: free space or give a file on a larger "
               "file system, and run it again.",
    "state": "The journal (SQLite) of the messages already written and of the incident's "
             "remembered window(s), by default per target in the user state directory. Keep it "
             "until the job is finished: it is what makes a re-run write every message exactly "
             "once, and keep to the same window.",
}
SETTING_ENV = ("The default of option --NAME (MAILRESTORE_ALIAS_MAP for --alias-map): it "
               "wins over the configuration file and loses to the command line. A repeatable "
               "option takes several values separated by spaces, shell-quoted; a flag takes "
               "1 or 0.")
CONFIG_FILE = ("Defaults for every option, in TOML (~/.config/mailrestore/config.toml when "
               "XDG_CONFIG_HOME is not set): keys are option names (alias-map = \"FILE\"); "
               "a [COMMAND] table holds one command's defaults, [profile.NAME] tables named "
               "sets chosen with --profile NAME. Precedence: command line, MAILRESTORE_NAME, "
               "the profile, the file. Passwords never go in it: give password-file = PATH. "
               "mailrestore config shows every effective default and where it comes from.")
PASSWORD_ENV = ("The IMAP password, when \\fB\\-\\-password\\-file\\fR is not given. "
                "The password is never taken from the command line.")


# --- roff escaping -----------------------------------------------------------

def escape(text: str) -> str:
    """Text as roff prints it literally: backslashes, minus signs, non-ASCII."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\e")
        elif char == "-":
            # A plain '-' renders as a typographic hyphen; options must copy-paste.
            out.append("\\-")
        elif ord(char) > 127:
            out.append(f"\\[u{ord(char):04X}]")
        else:
            out.append(char)
    return "".join(out)


def text_line(roff: str) -> str:
    """A line of already escaped text that roff must not read as a request."""
    if roff.startswith((".", "'")):
        return "\\&" + roff
    return roff


def bold(text: str) -> str:
    return f"\\fB{escape(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{escape(text)}\\fR"


# --- help text ---------------------------------------------------------------

def help_paragraphs(help_text: str | None) -> list[list[str]]:
    """Split click help into paragraphs of roff lines, keeping \\b paragraphs as written."""
    text = inspect.cleandoc(help_text or "").split("\f", 1)[0]
    paragraphs: list[list[str]] = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if not lines:
            continue
        if lines[0].strip() == NO_REWRAP:
            verbatim = [text_line(escape(line.rstrip())) for line in lines[1:]]
            paragraphs.append([".nf", *verbatim, ".fi"])
        else:
            paragraphs.append([text_line(escape(" ".join(line.strip() for line in lines)))])
    return paragraphs


def flat_help(help_text: str | None) -> str:
    return " ".join(inspect.cleandoc(help_text or "").split())


def name_line(command: click.Command, page: str) -> str:
    summary = command.get_short_help_str(limit=200)
    if summary.endswith(".") and not summary.endswith(".."):
        summary = summary[:-1]
    return f"{escape(page)} \\- {escape(summary)}"


# --- options -----------------------------------------------------------------

def metavar(param: click.Parameter, ctx: click.Context) -> str:
    if isinstance(param.type, click.Choice):
        return "{" + "|".join(bold(str(choice)) for choice in param.type.choices) + "}"
    if isinstance(param.type,
                  click.types.IntParamType | click.types.FloatParamType) and param.metavar is None:
        return italic("N")
    return italic(param.make_metavar(ctx))


def option_tag(option: click.Option, ctx: click.Context) -> str:
    flags = sorted(option.opts + option.secondary_opts, key=lambda flag: flag.startswith("--"))
    tag = ", ".join(bold(flag) for flag in flags)
    if not option.is_flag:
        tag += " " + metavar(option, ctx)
    return tag


def option_notes(option: click.Option) -> list[str]:
    """What click adds to --help (default, range) plus what a man page reader needs."""
    notes = []
    if option.required:
        notes.append("Required.")
    if option.multiple and "repeatable" not in (option.help or "").lower():
        notes.append("Repeatable.")
    if isinstance(option.type, click.IntRange):
        low, high = option.type.min, option.type.max
        if low is not None and high is not None:
            notes.append(f"From {low} to {high}.")
    if isinstance(option.show_default, str):
        notes.append(f"Default: {option.show_default}.")
    elif option.show_default and _printable_default(option.default):
        notes.append(f"Default: {option.default}.")
    return notes


def _printable_default(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool) and value != ""


def options_section(command: click.Command, ctx: click.Context) -> list[str]:
    """OPTIONS, in one subsection per pipeline stage as --help shows them."""
    lines = [".SH OPTIONS"]
    for title, options in option_sections(command, ctx):
        lines.append(f".SS {escape(title)}")
        for param in options:
            help_text = " ".join([flat_help(param.help), *option_notes(param)]).strip()
            lines += [".TP", option_tag(param, ctx), text_line(escape(help_text))]
    return lines


def synopsis(command: click.Command, ctx: click.Context, words: str) -> list[str]:
    parts = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Option) and param.required:
            parts.append(option_tag(param, ctx))
    parts.append(f"[{italic('OPTIONS')}]")
    for param in command.get_params(ctx):
        if isinstance(param, click.Argument):
            arg = italic(param.make_metavar(ctx).rstrip("."))
            if param.nargs == -1:
                arg += "..."
            parts.append(arg if param.required else f"[{arg}]")
    return [".SH SYNOPSIS", f".B {escape(words)}", " ".join(parts)]


# --- pages -------------------------------------------------------------------

def header(page: str) -> list[str]:
    return [
        '.\\" Generated by tools/gen_man.py from restore/cli/: do not edit.',
        f'.\\" Hand-written additions go in man/extra/{page}.roff.',
        f'.TH {escape(page.upper())} 1 "" "{PROG} {escape(__version__)}" "{PROG} manual"',
        # No hyphenation, ragged right: option names and paths must stay whole to copy-paste.
        ".nh",
        ".ad l",
    ]


def description(command: click.Command) -> list[str]:
    lines = [".SH DESCRIPTION"]
    for index, paragraph in enumerate(help_paragraphs(command.help)):
        if index:
            lines.append(".PP")
        lines += paragraph
    return lines


def exit_status(command_name: str | None) -> list[str]:
    lines = [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS:
        if code == "1" and command_name in FINDINGS:
            meaning = FINDINGS[command_name]
        lines += [".TP", f"\\fB{code}\\fR", text_line(escape(meaning))]
    if command_name == "audit":
        lines += [".PP", AUDIT_NAGIOS]
    return lines


def environment_and_files(param_names: set[str]) -> list[str]:
    lines = [".SH ENVIRONMENT"]
    if "password_file" in param_names:
        lines += [".TP", bold("MAILRESTORE_PASSWORD"), PASSWORD_ENV]
    lines += [".TP", bold("MAILRESTORE_CONFIG") + ", " + bold("MAILRESTORE_PROFILE"),
              "The configuration file and profile, when " + bold("--config") + " and "
              + bold("--profile") + " are not given.",
              ".TP", bold("MAILRESTORE_") + italic("NAME"), text_line(escape(SETTING_ENV))]
    files = [name for name in FILES if name in param_names]
    lines += [".SH FILES", ".TP", bold("$XDG_CONFIG_HOME/mailrestore/config.toml"),
              text_line(escape(CONFIG_FILE))]
    for name in files:
        lines += [".TP", bold("--" + name.replace("_", "-")) + " " + italic("FILE"),
                  text_line(escape(FILES[name]))]
    return lines


def see_also(pages: list[str], own: str) -> list[str]:
    others = [page for page in pages if page != own]
    refs = [f".BR {escape(page)} (1){',' if i < len(others) - 1 else ''}"
            for i, page in enumerate(others)]
    return [".SH SEE ALSO", *refs]


def extra(page: str) -> list[str]:
    path = EXTRA_DIR / f"{page}.roff"
    if not path.exists():
        return []
    return path.read_text(encoding="utf-8").rstrip("\n").splitlines()


def page_name(command_name: str | None) -> str:
    return PROG if command_name is None else f"{PROG}-{command_name}"


def render_command(name: str, command: click.Command, group_ctx: click.Context,
                   pages: list[str]) -> str:
    ctx = click.Context(command, info_name=name, parent=group_ctx, **command.context_settings)
    page = page_name(name)
    param_names = {param.name for param in command.params if param.name}
    lines = [
        *header(page),
        ".SH NAME", name_line(command, page),
        *synopsis(command, ctx, f"{PROG} {name}"),
        *description(command),
        *options_section(command, ctx),
        *exit_status(name),
        *environment_and_files(param_names),
        *extra(page),
        *see_also(pages, page),
    ]
    return "\n".join(lines) + "\n"


def render_main(group: click.Group, ctx: click.Context, pages: list[str]) -> str:
    commands = [".SH COMMANDS"]
    for name, command in group.commands.items():
        commands += [".TP", f"\\fB{escape(name)}\\fR", text_line(escape(
            command.get_short_help_str(limit=200))) + f" See \\fB{escape(page_name(name))}\\fR(1)."]
    all_params = {param.name for command in group.commands.values()
                  for param in command.params if param.name}
    lines = [
        *header(PROG),
        ".SH NAME", name_line(group, PROG),
        ".SH SYNOPSIS", f".B {PROG}", f"[{italic('OPTIONS')}] {italic('COMMAND')} "
                                      f"[{italic('ARGS')}]...",
        *description(group),
        *commands,
        *options_section(group, ctx),
        *exit_status(None),
        *environment_and_files(all_params),
        *extra(PROG),
        *see_also(pages, PROG),
    ]
    return "\n".join(lines) + "\n"


def render_all() -> dict[str, str]:
    """Every man page, by file name, exactly as it should be in man/."""
    group_ctx = click.Context(cli, info_name=PROG, **cli.context_settings)
    pages = [PROG] + [page_name(name) for name in cli.commands]
    unknown_extras = {path.stem for path in EXTRA_DIR.glob("*.roff")} - set(pages)
    if unknown_extras:
        raise SystemExit(f"man/extra/ has text for pages that do not exist: "
                         f"{', '.join(sorted(unknown_extras))}")
    rendered = {f"{PROG}.1": render_main(cli, group_ctx, pages)}
    for name, command in cli.commands.items():
        rendered[f"{page_name(name)}.1"] = render_command(name, command, group_ctx, pages)
    return rendered


def stale_pages(rendered: dict[str, str]) -> list[str]:
    """Pages that differ from, are missing from, or are no longer part of man/."""
    existing = {path.name for path in MAN_DIR.glob(f"{PROG}*.1")}
    stale = [name for name, text in rendered.items()
             if name not in existing or (MAN_DIR / name).read_text(encoding="utf-8") != text]
    return sorted(stale + sorted(existing - rendered.keys()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate man/*.1 from restore/cli/.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a page is stale")
    args = parser.parse_args(argv)
    rendered = render_all()
    stale = stale_pages(rendered)
    if args.check:
        for name in stale:
            print(f"stale: man/{name}")
        if stale:
            print("run python tools/gen_man.py", file=sys.stderr)
        return 1 if stale else 0
    MAN_DIR.mkdir(exist_ok=True)
    for name in stale:
        if name in rendered:
            (MAN_DIR / name).write_text(rendered[name], encoding="utf-8")
            print(f"wrote man/{name}")
        else:
            (MAN_DIR / name).unlink()
            print(f"removed man/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
