"""Timing and peak memory of one command, and the tables the benchmarks print.

Peak RSS is read with wait4 on the command's own process, but not from the
harness directly: Linux carries a process's pre-exec memory high-water mark
into ru_maxrss across fork + exec, so every command started by a harness
holding 60 MB would "peak" at 60 MB at least. A tiny launcher (python -S,
a few MB) forks the command instead and reports its wait4 rusage, which covers
the command and everything it waited for. That is the largest process of its
tree, not a sum; fine for the single-process contenders measured here. For
commands with worker processes, `sample_tree=True` also samples the memory
of the whole tree: the sum of every process's PSS (proportional set size, so
pages a forked worker shares with its parent count once), every 0.2 s, so a
short spike can be missed.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Measurement:
    name: str
    messages: int
    seconds: float | None = None    # None: the contender is not available
    peak_rss_kb: int | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.seconds is not None

    @property
    def rate(self) -> float | None:
        if not self.ok or not self.seconds:
            return None
        return self.messages / self.seconds

    def as_dict(self) -> dict:
        return {"name": self.name, "messages": self.messages, "seconds": self.seconds,
                "msgs_per_s": self.rate, "peak_rss_kb": self.peak_rss_kb, "note": self.note,
                **self.extra}


@dataclass
class Run:
    returncode: int
    seconds: float
    peak_rss_kb: int
    stdout: str
    stderr: str
    user_s: float = 0.0         # CPU of the command's whole tree (rusage of waited-for children)
    sys_s: float = 0.0
    tree_pss_kb: int = 0        # sampled peak of the tree's summed PSS (sample_tree=True)


# Runs argv[2:], then writes "<exit code> <wall s> <peak RSS KB> <user s> <sys s>" to argv[1].
LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as exc:
        sys.stderr.write(f"cannot run {sys.argv[2]}: {exc}\\n")
        sys.stderr.flush()
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{code} {seconds} {usage.ru_maxrss} {usage.ru_utime} {usage.ru_stime}")
"""


def _children() -> dict[int, list[int]]:
    """ppid -> pids of every process on the machine, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants alive right now."""
    tree, found, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, ()))
    return found


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process, its live descendants and the children it reaped."""
    if not pid:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / tick


def pss_kb(pid: int) -> int:
    """The process's proportional set size (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples the summed PSS of a process tree until stopped; keeps the peak."""

    def __init__(self, root: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.interval, self.peak_kb = root, interval, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            # the launcher itself (a few MB) is left out: it is not the command
            total = sum(pss_kb(pid) for pid in tree_pids(self.root) if pid != self.root)
            self.peak_kb = max(self.peak_kb, total)
            self._done.wait(self.interval)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak_kb


def run_measured(cmd: Sequence[str], *, env: dict | None = None, cwd: str | Path | None = None,
                 log_dir: Path | None = None, timeout: float = 3600,
                 sample_tree: bool = False) -> Run:
    """Run `cmd`, returning exit code, wall seconds, peak RSS and its output.

    Output goes to files rather than pipes so a chatty command is not slowed
    down by (or deadlocked on) the harness reading it.
    """
    log_dir = Path(log_dir or "/tmp")
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path, usage_path = (log_dir / name for name in ("stdout", "stderr", "usage"))
    usage_path.unlink(missing_ok=True)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-S", "-c", LAUNCHER, str(usage_path), *cmd],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)
        sampler = TreeSampler(proc.pid) if sample_tree else None
        if sampler:
            sampler.start()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the command too, not only the launcher
            proc.wait()
        tree_pss = sampler.stop() if sampler else 0
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    try:
        code, seconds, peak, user, system = usage_path.read_text().split()
    except (OSError, ValueError):
        return Run(proc.returncode or 127, 0.0, 0, stdout, stderr + "\n(killed or not started)")
    return Run(int(code), float(seconds), int(peak), stdout, stderr, float(user), float(system),
               tree_pss)


def mailrestore_cmd() -> list[str]:
    """The mailrestore of the running interpreter's environment (the venv under test).

    Its bytecode is compiled first, as `pip install` does for an installed
    package: an editable checkout run with PYTHONDONTWRITEBYTECODE would
    otherwise compile every module on every run (~0.06 s of each start).
    """
    _compile_package("restore")
    beside = Path(sys.executable).parent / "mailrestore"
    if beside.exists():
        return [str(beside)]
    exe = shutil.which("mailrestore")
    return [exe] if exe else [sys.executable, "-m", "restore"]


def _compile_package(name: str) -> None:
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)


def failure_note(run: Run, what: str = "") -> str:
    """A one-line reason for a failed run: the last meaningful stderr line."""
    lines = [ln.strip() for ln in (run.stderr + "\n" + run.stdout).splitlines() if ln.strip()]
    tail = lines[-1][:160] if lines else "no output"
    return f"not available ({what + ': ' if what else ''}exit {run.returncode}: {tail})"


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A markdown table; `align` holds one of l/r per column (default: first l, rest r)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def measurement_rows(results: Sequence[Measurement]) -> list[list[str]]:
    return [[m.name, f"{m.messages:,}", fmt(m.seconds, 2), fmt(m.rate),
             fmt(m.peak_rss_kb / 1024 if m.peak_rss_kb else None, 1), m.note or "ok"]
            for m in results]


MEASUREMENT_HEADERS = ("contender", "messages", "wall s", "msgs/s", "peak RSS MB", "status")


def target_line(label: str, value: float | None, goal: float, unit: str = "x",
                higher_is_better: bool = True) -> str:
    if value is None:
        return f"- {label}: not measured (goal {goal:g}{unit})"
    met = value >= goal if higher_is_better else value <= goal
    relation = ">=" if higher_is_better else "<="
    return (f"- {label}: {value:.2f}{unit} (goal {relation} {goal:g}{unit}) "
            f"{'MET' if met else 'NOT MET'}")


def machine_line() -> str:
    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    return f"{os.cpu_count()} CPUs, load average {load}"
