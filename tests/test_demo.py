"""The README's first command: `mailrestore demo` works offline and tells what to do next."""

from __future__ import annotations

import subprocess
import sys


def mailrestore(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "restore", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_demo_builds_diffs_and_prints_next_commands(tmp_path):
    done = mailrestore("demo", "--dir", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Window:" in out and "Totals:" in out and "Next, try:" in out
    plan = tmp_path / "demo" / "gap.jsonl"
    planned = len(plan.read_text().splitlines())
    assert f"Plan: {planned} messages written to {plan}" in out
    assert planned > 0
    # the printed commands run as printed: the timeline one, with its SVG
    [timeline] = [line.strip() for line in out.splitlines()
                  if line.strip().startswith("mailrestore timeline")]
    svg = tmp_path / "demo" / "timeline.svg"
    args = [a.strip("'") for a in timeline.split()[1:]]
    again = mailrestore(*args)
    assert again.returncode == 0, again.stderr
    assert svg.read_text().lstrip().startswith("<svg")
    assert "Arrivals per hour" in again.stdout


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    done = mailrestore("demo", "--dir", str(tmp_path))
    assert done.returncode == 2
    assert "not empty" in done.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
