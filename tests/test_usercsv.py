"""--report FILE.csv: the per-user list a helpdesk opens in a spreadsheet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from test_restore_e2e import cli_env, mailrestore

from restore.demo import build_incident
from restore.usercsv import HEADER, UserRow, write


def read_report(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")   # RFC 4180 lines
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == HEADER
    return [dict(zip(HEADER, row, strict=True)) for row in rows[1:]]


def test_quoting_round_trips_and_no_cell_is_a_formula(tmp_path):
    path = tmp_path / "r.csv"
    hostile = ['=HYPERLINK("http://x")@example.com', "+1@example.com", '"a,b"@example.com',
               "plain@example.com"]
    write(str(path), {u: UserRow(u, missing=1, first=1512767585.0) for u in hostile})
    rows = read_report(path)
    users = [row["user"] for row in rows]
    assert sorted(u.lstrip("'") for u in users) == sorted(hostile)
    assert not any(u.startswith(("=", "+", "-", "@")) for u in users)
    assert {row["first received (UTC)"] for row in rows} == {"2017-12-08 21:13:05"}


def test_diff_and_restore_reports_match_their_json(tmp_path):
    incident = build_incident(tmp_path / "incident")
    env = cli_env(tmp_path)
    common = ["--archive", incident.archives[0], "--replica", incident.replica,
              "--alias-map", str(incident.alias_map)]

    diffed = json.loads(mailrestore(env, "diff", *common, "--json",
                                    "--report", str(tmp_path / "diff.csv")).stdout)
    rows = {row["user"]: row for row in read_report(tmp_path / "diff.csv")}
    for user in diffed["users"]:
        row = rows[user["user"]]
        assert (int(row["missing"]), int(row["already present"])) == (user["missing"],
                                                                      user["present"])
        assert row["restored"] == row["failed"] == ""          # a diff writes nothing
        assert bool(row["first received (UTC)"]) == bool(user["missing"])
    unroutable = [p["user"] for p in diffed["problems"] if p["class"] == "unroutable"]
    assert sum(int(r["unroutable"]) for r in rows.values()) == len(unroutable) > 0

    restored = json.loads(mailrestore(env, "restore", *common, "--to", incident.replica, "--json",
                                      "--report", str(tmp_path / "restore.csv")).stdout)
    rows = {row["user"]: row for row in read_report(tmp_path / "restore.csv")}
    for user in restored["users"]:
        row = rows[user["user"]]
        assert (int(row["restored"]), int(row["failed"])) == (user["appended"], user["failed"])
        assert int(row["restored"]) == int(row["missing"])
    assert sum(int(r["restored"]) for r in rows.values()) == len(incident.truth.missing)


def test_inject_report_counts_the_plan_and_a_dry_run_restores_nothing(tmp_path):
    incident = build_incident(tmp_path / "incident")
    env = cli_env(tmp_path)
    plan = tmp_path / "gap.jsonl"
    mailrestore(env, "diff", "--archive", incident.archives[0], "--replica", incident.replica,
                "--alias-map", str(incident.alias_map), "--plan", str(plan))
    # the plan's lines after its header (which names the archives)
    lines = [json.loads(line) for line in plan.read_text().splitlines()[1:]]
    inject = ["inject", str(plan), "--to", incident.replica, "--report", str(tmp_path / "i.csv")]

    assert mailrestore(env, *inject, "--dry-run").returncode == 0
    rows = read_report(tmp_path / "i.csv")
    assert {r["restored"] for r in rows} == {""}
    assert sum(int(r["missing"]) for r in rows) == len(lines)

    assert mailrestore(env, *inject).returncode == 0
    rows = {r["user"]: r for r in read_report(tmp_path / "i.csv")}
    for user, row in rows.items():
        mine = sorted(line["received"] for line in lines if line["user"] == user)
        assert int(row["restored"]) == int(row["missing"]) == len(mine)
        assert row["unroutable"] == ""                        # a plan holds only routable mail
        assert row["first received (UTC)"] == mine[0][:19].replace("T", " ")
        assert row["last received (UTC)"] == mine[-1][:19].replace("T", " ")
