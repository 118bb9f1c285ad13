"""Times: every time the tool prints can be pasted back into --since, --until and --now.

The unit tests read back what ``times`` prints; the end-to-end ones take the
times from the real output of diff, timeline, restore and audit on a sample
incident and paste them back on the command line.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_gaps_e2e import mailrestore

from restore.demo import build_incident
from restore.errors import UsageError
from restore.times import NoOffset, human, iso, parse_iso, parse_time_option

T = datetime(2017, 12, 8, 17, 32, 59, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("ts", [T, T + 0.25, 0.0, 4102444799.0])
def test_what_iso_prints_reads_back_exactly(ts):
    assert parse_iso(iso(ts)) == ts
    assert parse_time_option(iso(ts), "--since") == ts


@pytest.mark.parametrize("ts", [T, 0.0, 4102444799.0])
def test_what_a_report_prints_reads_back_exactly(ts):
    assert human(T) == "2017-12-08 17:32:59 UTC"
    assert parse_iso(human(ts)) == ts
    assert parse_time_option(human(ts), "--until") == ts


@pytest.mark.parametrize("text", [
    "2017-12-08T17:32:59+00:00", "2017-12-08T17:32:59Z", "2017-12-08T17:32:59z",
    "2017-12-08T18:32:59+01:00", "2017-12-08T12:32:59-05:00", "2017-12-08T17:32:59+0000",
    "20171208T173259Z", "2017-12-08 17:32:59 UTC", "2017-12-08 17:32:59UTC",
    "2017-12-08 17:32:59 utc", "  2017-12-08T17:32:59Z  ",
])
def test_iso_8601_and_the_printed_form_are_the_same_time(text):
    assert parse_time_option(text, "--since") == T


@pytest.mark.parametrize("text", ["2017-12-08T17:32:59", "2017-12-08 17:32:59"])
def test_no_offset_on_the_command_line_is_utc_but_a_file_needs_one(text):
    assert parse_time_option(text, "--now") == T
    with pytest.raises(NoOffset):
        parse_iso(text)


def test_the_timeline_rows_read_back_as_their_hour_and_day():
    assert parse_time_option("2017-12-08 17:00", "--since") == T - 32 * 60 - 59
    assert parse_time_option("2017-12-08", "--since") == datetime(2017, 12, 8,
                                                                  tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", ["yesterday", "2017-13-08T00:00:00Z", "17:32:59 UTC", "UTC", ""])
def test_anything_else_is_a_usage_error_naming_the_option_and_both_forms(text):
    with pytest.raises(UsageError) as caught:
        parse_time_option(text, "--until")
    message = str(caught.value)
    assert message.startswith(f"--until {text!r}") and "ISO 8601" in message
    assert "2017-12-08 16:02:00 UTC" in message


# -- pasting the real output back ------------------------------------------------------------

PRINTED = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?: UTC|[+-]\d\d:\d\d|Z)?")


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    return build_incident(tmp_path_factory.mktemp("times") / "incident")


def stores(incident, tmp_path: Path) -> list[str]:
    args = ["--replica", incident.replica, "--catalog", str(tmp_path / "catalog.sqlite"),
            "--alias-map", str(incident.alias_map)]
    for spec in incident.archives:
        args += ["--archive", spec]
    return args


def window_line(out: str) -> tuple[str, str]:
    [(since, until)] = re.findall(r"Window: (.+ UTC) \(exclusive\) to (.+ UTC) \(", out)
    return since, until


def test_the_window_a_diff_prints_pastes_back_as_the_same_window(incident, tmp_path):
    printed = mailrestore(tmp_path, "diff", *stores(incident, tmp_path))
    since, until = window_line(printed.stdout)
    detected = json.loads(
        mailrestore(tmp_path, "diff", *stores(incident, tmp_path), "--json").stdout
    )
    pasted = mailrestore(tmp_path, "diff", *stores(incident, tmp_path), "--since", since,
                         "--until", until, "--json")
    assert pasted.returncode == 1, pasted.stderr
    doc = json.loads(pasted.stdout)
    assert (doc["window"]["since"], doc["window"]["until"]) == (
        detected["window"]["since"], detected["window"]["until"])
    assert doc["counts"] == detected["counts"]
    # The evidence's ISO times paste back too.
    evidence = PRINTED.findall(detected["window"]["evidence"])
    assert evidence and all(parse_time_option(t, "--since") for t in evidence)


def test_every_time_diff_timeline_and_restore_print_parses_as_an_option(incident, tmp_path):
    outputs = [
        mailrestore(tmp_path, "diff", *stores(incident, tmp_path)).stdout,
        mailrestore(tmp_path, "timeline", *stores(incident, tmp_path), "--all").stdout,
        mailrestore(tmp_path, "restore", *stores(incident, tmp_path), "--to", incident.replica,
                    "--state", str(tmp_path / "journal.sqlite"), "--dry-run").stdout,
    ]
    found = {t for out in outputs for t in PRINTED.findall(out)}
    assert any(t.endswith(" UTC") for t in found) and any(t.endswith("+00:00") for t in found)
    assert any(len(t) == len("2017-12-08 17:00") for t in found)       # the chart's rows
    for text in found:
        parse_time_option(text, "--since")
    # A chart row's hour as --since: the window starts there.
    row = sorted(t for t in found if len(t) == len("2017-12-08 17:00"))[-3]
    done = mailrestore(tmp_path, "diff", *stores(incident, tmp_path), "--since", row, "--json")
    assert done.returncode in (0, 1), done.stderr
    assert json.loads(done.stdout)["window"]["since"] == f"{row.replace(' ', 'T')}:00+00:00"


def test_the_times_an_audit_prints_paste_back_into_now_and_a_diff(incident, tmp_path):
    now = incident.gap_until + timedelta(hours=1)
    audit = ["audit", *stores(incident, tmp_path), "--window", "12h", "--grace", "0m"]
    report = mailrestore(tmp_path, *audit, "--now", human(now.timestamp()))
    assert report.returncode == 1, report.stderr
    [(since, until)] = re.findall(r"received between (.+ UTC) and (.+ UTC) are not", report.stdout)
    assert until == human(now.timestamp())
    again = mailrestore(tmp_path, *audit, "--now", until, "--format", "json")
    doc = json.loads(again.stdout)
    assert doc["window"]["since"] == iso(parse_iso(since))
    diffed = mailrestore(tmp_path, "diff", *stores(incident, tmp_path), "--since", since,
                         "--until", until, "--json")
    assert json.loads(diffed.stdout)["counts"]["missing"] == doc["counts"]["missing"]
