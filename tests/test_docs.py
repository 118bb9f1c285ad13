"""What users read stays true to the code: --help, the man pages, the README's test command."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import click
import pytest
from click.testing import CliRunner

from restore.cli import cli
from restore.cli.command import PIPELINE
from restore.cli.options import StagedOption

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["mailrestore"] + [f"mailrestore-{name}" for name in cli.commands]


def load_gen_man() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_man", ROOT / "tools" / "gen_man.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render_with_man(path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("man") is None:
        if os.environ.get("CI"):
            pytest.fail("man is not installed (apt-get install man-db groff-base)")
        pytest.skip("man is not installed")
    # -ww: every groff warning category, so a roff mistake cannot pass unnoticed.
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8", "MANROFFOPT": "-ww"}
    env.pop("MAN_KEEP_FORMATTING", None)
    return subprocess.run(["man", "-l", str(path)], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def test_every_command_and_option_has_help() -> None:
    group_ctx = click.Context(cli, info_name="mailrestore", **cli.context_settings)
    without_help = [f"mailrestore {param.opts[0]}" for param in cli.get_params(group_ctx)
                    if isinstance(param, click.Option) and not param.help]
    for name, command in cli.commands.items():
        if not (command.help or "").strip():
            without_help.append(f"mailrestore {name}")
        ctx = click.Context(command, info_name=name, parent=group_ctx)
        for param in command.get_params(ctx):
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                without_help.append(f"mailrestore {name} {param.opts[0]}")
    assert not without_help, "no help text: " + ", ".join(without_help)


def test_help_lists_options_by_stage_and_commands_in_pipeline_order() -> None:
    group_ctx = click.Context(cli, info_name="mailrestore", **cli.context_settings)
    unstaged = []
    for name, command in cli.commands.items():
        ctx = click.Context(command, parent=group_ctx)
        unstaged += [f"mailrestore {name} {param.opts[0]}" for param in command.get_params(ctx)
                     if isinstance(param, click.Option) and not param.hidden
                     and not isinstance(param, StagedOption)
                     and param is not command.get_help_option(ctx)]
    assert not unstaged, "options without a stage: " + ", ".join(unstaged)

    result = CliRunner().invoke(cli, ["--help"])
    listed = [line.split()[0] for line in result.output.split("Commands:\n", 1)[1].splitlines()
              if line.startswith("  ") and not line.startswith("   ")]
    assert listed == [name for name in PIPELINE if name in cli.commands]
    assert listed.index("diff") < listed.index("inject") < listed.index("audit")

    help_text = CliRunner().invoke(cli, ["restore", "--help"]).output
    titles = [line.rstrip(":") for line in help_text.splitlines() if line.endswith(":")
              and not line.startswith(" ")]
    assert titles == ["Sources", "Matching", "Window", "Selection", "Writing", "Output",
                      "General"]
    assert help_text.index("--since") > help_text.index("Window:") > help_text.index("--match")


def test_man_pages_are_fresh() -> None:
    result = subprocess.run([sys.executable, "tools/gen_man.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, (
        f"man pages differ from restore/cli.py, run python tools/gen_man.py\n"
        f"{result.stdout}{result.stderr}")


def test_freshness_check_notices_an_edited_a_missing_and_an_orphan_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen_man = load_gen_man()
    monkeypatch.setattr(gen_man, "MAN_DIR", tmp_path)
    assert gen_man.main([]) == 0
    assert gen_man.stale_pages(gen_man.render_all()) == []

    (tmp_path / "mailrestore-diff.1").write_text("hand edit\n")
    (tmp_path / "mailrestore-scan.1").unlink()
    (tmp_path / "mailrestore-gone.1").write_text(".TH GONE 1\n")
    assert gen_man.main(["--check"]) == 1
    assert gen_man.stale_pages(gen_man.render_all()) == [
        "mailrestore-diff.1", "mailrestore-gone.1", "mailrestore-scan.1"]

    assert gen_man.main([]) == 0
    assert not (tmp_path / "mailrestore-gone.1").exists()
    assert gen_man.stale_pages(gen_man.render_all()) == []


@pytest.mark.parametrize("page", PAGES)
def test_man_page_renders_without_warnings(page: str) -> None:
    result = render_with_man(ROOT / "man" / f"{page}.1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "\nNAME\n" in result.stdout
    assert f"{page} - " in result.stdout


def test_option_names_render_as_typed() -> None:
    # Options must copy-paste into a shell: ASCII hyphens, the backslash of \Seen kept.
    text = render_with_man(ROOT / "man" / "mailrestore-inject.1").stdout
    assert "--dry-run" in text
    assert "'\\Seen'" in text


def test_help_text_reaches_the_page_literally(tmp_path: Path) -> None:
    gen_man = load_gen_man()

    @click.command(help=".TH looks like a request\n\n'so does this, \\fB and 100% ünïcode\n\n"
                        "\b\nkept line one\nkept line two")
    @click.option("--flags", help=".starts with a dot, '\\Seen'")
    def hostile() -> None:
        """Never run."""

    group_ctx = click.Context(click.Group("mailrestore"), info_name="mailrestore")
    page = tmp_path / "mailrestore-hostile.1"
    page.write_text(gen_man.render_command("hostile", hostile, group_ctx, ["mailrestore"]))

    result = render_with_man(page)
    assert result.stderr == ""
    for literal in (".TH looks like a request", "'so does this, \\fB and 100% ünïcode",
                    ".starts with a dot, '\\Seen'", "--flags TEXT"):
        assert literal in result.stdout
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines[lines.index("kept line one") + 1] == "kept line two"


def test_the_package_installs_every_man_page(tmp_path: Path) -> None:
    # --no-build-isolation: built with the setuptools the test extra installed, offline
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True,
                           timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("mailrestore-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        # a wheel's .data/data/ tree lands in the install prefix: <venv>/share/man/man1
        installed = {Path(name).name for name in zf.namelist()
                     if re.fullmatch(r"mailrestore-[^/]+\.data/data/share/man/man1/[^/]+\.1", name)}
    assert installed == {f"{page}.1" for page in PAGES}


def test_completion_prints_a_script_whose_backend_completes(tmp_path: Path) -> None:
    script = subprocess.run([sys.executable, "-m", "restore", "completion", "bash"],
                            capture_output=True, text=True, check=True).stdout
    assert "_MAILRESTORE_COMPLETE=bash_complete" in script and "complete " in script
    env = {**os.environ, "_MAILRESTORE_COMPLETE": "bash_complete"}

    def complete(words: str) -> list[str]:
        cword = str(len(words.split(" ")) - 1)     # the word being completed, as bash counts
        done = subprocess.run([sys.executable, "-m", "restore"], capture_output=True, text=True,
                              env={**env, "COMP_WORDS": words, "COMP_CWORD": cword}, check=True)
        return [line.split(",", 1)[1] for line in done.stdout.splitlines()]

    assert complete("mailrestore diff --ali") == ["--alias-map"]
    assert complete("mailrestore audit --format ") == ["text", "json", "nagios"]
    assert "diff" in complete("mailrestore di")


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = ROOT / "README.md"
    assert readme.exists(), "README.md is missing: it must show the test command .ci/run runs"
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", readme.read_text(encoding="utf-8"),
                        flags=re.MULTILINE | re.DOTALL)
    readme_commands = [line.strip().removeprefix("$ ") for block in blocks
                       for line in block.splitlines()
                       if any(check in line for check in ("pytest", "ruff check", "mypy restore"))]
    assert any("pytest" in command for command in readme_commands), (
        "README.md has no fenced code block with the pytest command")
    assert any("ruff check" in command for command in readme_commands), (
        "README.md has no fenced code block with the lint command")

    ci_lines = {line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if not line.strip().startswith("#")}
    not_in_ci = [command for command in readme_commands if command not in ci_lines]
    assert not not_in_ci, f"README.md shows {not_in_ci} but .ci/run does not run it"


def test_pre_commit_runs_the_checks_ci_runs() -> None:
    hooks = re.findall(r"^\s*entry:\s*(.+?)\s*$", (ROOT / ".pre-commit-config.yaml").read_text(),
                       flags=re.MULTILINE)
    ci_commands = {command.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                   if not line.strip().startswith("#") for command in line.split("&&")}
    assert {"ruff check restore tests tools benchmarks", "mypy restore"} <= set(hooks)
    assert set(hooks) <= ci_commands, f"pre-commit runs {set(hooks) - ci_commands}, CI does not"
