"""`mailrestore timeline`: the chart around the gap, the gap marked, the same chart as SVG."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from click.testing import CliRunner

from restore.cli import cli
from restore.demo import build_incident

ROW = re.compile(r"^(.)(\d{4}-\d\d-\d\d \d\d:\d\d) .* archived", re.M)


def timeline(incident, tmp_path, *extra: str) -> str:
    result = CliRunner().invoke(cli, [
        "timeline", "--archive", incident.archives[0], "--replica", incident.replica,
        "--alias-map", str(incident.alias_map), "--catalog", str(tmp_path / "c.sqlite"), *extra],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_chart_shows_the_window_and_a_few_hours_around_it(tmp_path):
    incident = build_incident(tmp_path / "incident")
    out = timeline(incident, tmp_path, "--around", "2")
    rows = ROW.findall(out)
    marked = [hour for mark, hour in rows if mark == "▌"]
    # the gap (17:45 to 23:15) spans 7 hourly buckets; 2 more either side at most
    assert len(marked) == 7 and marked[0] == "2017-12-08 17:00"
    assert len(rows) <= len(marked) + 4
    assert "Window:" in out and "absent from the replica" in out


def test_all_shows_every_hour_and_user_narrows_the_chart(tmp_path):
    incident = build_incident(tmp_path / "incident")
    everything = ROW.findall(timeline(incident, tmp_path, "--all"))
    assert len(everything) >= 3 * 24 - 1     # three days of mail, hour by hour
    one = timeline(incident, tmp_path, "--all", "--user", "alice@example.com")
    assert "Arrivals per hour, user alice@example.com" in one
    alice_archived = sum(int(n) for n in re.findall(r"(\d+) archived", one))
    everyone_archived = sum(int(n) for n in re.findall(r"(\d+) archived",
                                                       timeline(incident, tmp_path, "--all")))
    assert 0 < alice_archived < everyone_archived


def test_svg_is_the_same_chart_and_fetches_nothing_when_opened(tmp_path):
    incident = build_incident(tmp_path / "incident")
    svg = tmp_path / "timeline.svg"
    timeline(incident, tmp_path, "--around", "2", "--svg", str(svg))
    text = svg.read_text(encoding="utf-8")
    root = ET.fromstring(text)                       # well-formed, so a browser shows it
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    shown = "".join(root.itertext()).replace("\xa0", " ")
    assert "Arrivals per hour" in shown and "2017-12-08 17:00" in shown
    # offline: no fonts, stylesheets or images from the network
    assert "@font-face" not in text and "@import" not in text
    assert all(ref.startswith("#") for ref in re.findall(r"url\(\s*['\"]?([^)'\"]*)", text))
    links = [value for element in root.iter() for name, value in element.attrib.items()
             if name.endswith("href")]
    assert all(link.startswith("#") for link in links)
