"""The README's first command: `mailrestore demo` does the whole job offline, and says so."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

from test_restore_e2e import incident_keys


def mailrestore(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "restore", *args], capture_output=True,
                          text=True, cwd=cwd)


def truth_missing(root) -> Counter[tuple[str, str]]:
    """(user, X-Incident-Key) of every message the sample's truth says is to be restored."""
    found: Counter[tuple[str, str]] = Counter()
    for line in (root / "truth" / "copies.jsonl").read_text().splitlines():
        copy = json.loads(line)
        found.update((user, copy["key"]) for user, klass in copy.get("classes", ())
                     if klass == "missing")
    return found


def printed_command(out: str, start: str) -> list[str]:
    [line] = [line.strip() for line in out.splitlines() if line.strip().startswith(start)]
    return [a.strip("'") for a in line.split("#")[0].split()[1:]]


def test_demo_restores_the_sample_and_checks_it(tmp_path):
    root = tmp_path / "demo"
    replica = root / "replica"

    done = mailrestore("demo", "--dir", str(root))

    assert done.returncode == 0, done.stderr
    out = done.stdout
    steps = [out.index(f"{n}/3 ") for n in (1, 2, 3)]
    assert steps == sorted(steps)
    missing = truth_missing(root)
    assert f"Appended {sum(missing.values())} messages" in out and ", 0 failed." in out
    assert re.search(r"^0 missing; present went from \d+ to \d+", out, re.M)
    last = out.rstrip().splitlines()[-1]
    assert re.fullmatch(r"The whole job took \d+\.\d s; by hand, such a night took 5 h 30 min\.",
                        last)
    # every missing message is back in its mailbox, once
    kept = Counter(k for k in incident_keys(replica) if k not in missing)
    assert incident_keys(replica) - kept == missing
    # the printed inject runs as printed, and writes nothing more: exactly once
    again = mailrestore(*printed_command(out, "mailrestore inject"), "--json")
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["appended"], json.loads(again.stdout)["already_present"]) \
        == (0, sum(missing.values()))


def test_plan_only_stops_after_the_plan_and_prints_the_rest(tmp_path):
    root = tmp_path / "demo"
    done = mailrestore("demo", "--dir", str(root), "--plan-only")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Window:" in out and "Totals:" in out and "Next, try:" in out
    assert "2/3" not in out
    plan = root / "gap.jsonl"
    planned = len(plan.read_text().splitlines()) - 1   # the header line names the archives
    assert f"Plan: {planned} messages written to {plan}" in out
    assert planned == sum(truth_missing(root).values()) > 0
    assert not (root / "journal.sqlite").exists()      # nothing was written
    assert not incident_keys(root / "replica") & truth_missing(root)
    # the printed commands run as printed: the timeline one, with its SVG
    again = mailrestore(*printed_command(out, "mailrestore timeline"))
    assert again.returncode == 0, again.stderr
    assert (root / "timeline.svg").read_text().lstrip().startswith("<svg")
    assert "Arrivals per hour" in again.stdout


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    done = mailrestore("demo", "--dir", str(tmp_path))
    assert done.returncode == 2
    assert "not empty" in done.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
