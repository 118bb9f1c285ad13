"""The timeline chart: archive and replica arrivals per hour or day, the gap highlighted.

Drawn with rich in the terminal; ``--svg`` records the very same chart with
rich's SVG export, so it can be opened in a browser or pasted into a postmortem.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime

from rich.console import CONSOLE_SVG_FORMAT, Console
from rich.text import Text

from restore import private
from restore.errors import UsageError
from restore.report import print_windows
from restore.window import Window

BAR_WIDTH = 40
BUCKETS = {"hour": 3600, "day": 86400}
# rich's template loads Fira Code from a CDN; a postmortem may be read offline,
# so the SVG names the font and falls back to the viewer's monospace font.
OFFLINE_SVG_FORMAT = re.sub(r"\s*@font-face \{\{.*?\}\}", "", CONSOLE_SVG_FORMAT, flags=re.S)


def render(series: list[tuple[float, int, int, int]], windows: list[Window], bucket: str,
           title: str) -> list[Text]:
    """Lines of the chart: one row per bucket, archive bar above replica bar."""
    size = BUCKETS[bucket]
    fmt = "%Y-%m-%d %H:%M" if bucket == "hour" else "%Y-%m-%d"
    peak = max((max(a, r) for _, a, _, r in series), default=0) or 1
    lines = [Text(title, style="bold"),
             Text.assemble("archive mail: ", ("█", "green"), " on the replica  ",
                           ("█", "red"), " absent from it   ", ("█", "blue"),
                           " replica arrivals   ",
                           ("▌", "yellow"), " in the window"),
             Text("")]
    for start, archived, absent, replica in series:
        in_gap = any(not w.empty and start + size > (w.since or 0) and start <= (w.until or 0)
                     for w in windows)
        label = datetime.fromtimestamp(start, UTC).strftime(fmt)
        present_w = _width(archived - absent, peak)
        absent_w = _width(absent, peak) if absent else 0
        line = Text.assemble(
            ("▌" if in_gap else " ", "yellow"), f"{label} ",
            ("█" * present_w, "green"), ("█" * absent_w, "red"),
            " " * (BAR_WIDTH - present_w - absent_w),
            f" {archived:>6,} archived",
            (f" {absent:>6,} absent" if absent else " " * 14, "red" if absent else ""),
        )
        lines.append(line)
        lines.append(Text.assemble(
            "  " + " " * len(label), ("█" * _width(replica, peak), "blue"),
            " " * (BAR_WIDTH - _width(replica, peak)), f" {replica:>6,} on replica"))
    return lines


def _width(n: int, peak: int) -> int:
    if n <= 0:
        return 0
    return max(1, round(n * BAR_WIDTH / peak))


def show(lines: list[Text], svg: str | None = None) -> None:
    out = Console(file=sys.stdout, highlight=False, record=bool(svg), width=100)
    for line in lines:
        out.print(line, no_wrap=True, overflow="crop")
    if svg:
        text = out.export_svg(title="mailrestore timeline", code_format=OFFLINE_SVG_FORMAT)
        try:
            with private.open_text(svg) as fh:
                fh.write(text)
        except OSError as exc:
            raise UsageError(f"--svg {svg}: {exc.strerror or exc}") from None


def show_timeline(result, bucket: str, svg: str | None,
                  around: int | None = None, with_window: bool = True) -> None:
    """Chart a diff's timeline.

    ``around``: show only that many buckets either side of the window (or,
    with no window, the last ``2 * around + 1`` buckets); None shows them all.
    """
    out = Console(file=sys.stdout, highlight=False, markup=False, emoji=False, soft_wrap=True)
    selection = result.selection
    one = selection.listed()
    user = one[0] if one is not None and len(one) == 1 else None
    if user:
        who = f"user {user}"
    elif selection.everyone:
        who = f"all {len(result.users):,} users"
    else:
        who = f"{len(result.users):,} users ({selection.describe()})"
    size = BUCKETS[bucket]
    series = result.series(size, user)
    w = result.window
    windows = [v for v in (result.windows or [w]) if not v.empty]
    if around is not None and series:
        if not windows:
            series = series[-(2 * around + 1):]
        else:
            low = min(v.since for v in windows) - around * size
            high = max(v.until for v in windows) + around * size
            series = [row for row in series if low <= row[0] <= high]
    if not series:
        out.print(f"No archive or replica mail to chart for {who}.")
        return
    show(render(series, windows, bucket, f"Arrivals per {bucket}, {who}"), svg)
    if with_window:
        print_windows(out, w, result.windows)
    if svg:
        out.print(f"Chart saved to {svg}")
