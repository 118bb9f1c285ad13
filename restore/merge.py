"""``mailrestore report merge``: the --json reports of several shards as one.

Each shard (``--shard K/N``) reports its own users; the merged report has
the same fields, and its totals add up:

* numbers (``counts``, ``appended``, ``already_present``, ``failed``,
  ``not_selected``, ``deleted``) are summed; ``users``, ``problems``,
  ``missing`` and ``warnings`` are put together;
* findings with no user (an unreadable archive item, a bad plan line) are
  the archive's or the plan's, not a shard's: every shard reports them, and
  the merge keeps each once (by class, location and reason), taking the
  copies off the count they were in (``counts[class]``, or ``failed``);
* each shard detected its own window from its own users (or was given
  --since/--until): ``merge.shards`` lists every shard's, and a warning
  says when they differ. The top-level ``window``/``windows`` are the first
  shard's.

A shard given twice is refused (its totals would count twice); a missing
shard, or reports without --shard, only warn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from restore.errors import UsageError

SUMMED = ("appended", "already_present", "failed", "not_selected", "deleted")
LISTS = ("missing", "warnings")


def kind_of(doc: dict[str, Any]) -> str:
    """What a report is: ``restore`` (diff and inject), ``inject``, or ``diff`` (diff or audit)."""
    if "appended" in doc:
        return "restore" if "counts" in doc else "inject"
    if "counts" in doc:
        return "diff"
    raise UsageError("not a mailrestore --json report of diff, inject, restore or audit")


def merge(docs: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """One report from the shards' ``docs`` (read from the files ``names``)."""
    if not docs:
        raise UsageError("report merge: no reports given")
    kinds = {}
    for doc, name in zip(docs, names, strict=True):
        try:
            kinds[name] = kind_of(doc)
        except UsageError as exc:
            raise UsageError(f"{name}: {exc}") from None
    if len(set(kinds.values())) > 1:
        raise UsageError("report merge: these are different reports ("
                         + ", ".join(f"{n}: {k}" for n, k in kinds.items()) + ")")
    warnings = _check_shards(docs, names)
    merged: dict[str, Any] = {}
    first = docs[0]
    for key in ("window", "windows", "dry_run"):
        if key in first:
            merged[key] = first[key]
    if "dry_run" in merged:
        merged["dry_run"] = any(doc.get("dry_run") for doc in docs)
    if "counts" in first:
        merged["counts"] = _summed([doc.get("counts", {}) for doc in docs])
    for key in SUMMED:
        if any(key in doc for doc in docs):
            merged[key] = sum(int(doc.get(key) or 0) for doc in docs)
    merged["users"], twice = _users(docs)
    warnings += [f"user {user} is in more than one report: its numbers are added up"
                 for user in twice]
    merged["problems"] = _problems(docs, merged)
    for key in LISTS:
        if any(key in doc for doc in docs):
            merged[key] = [item for doc in docs for item in doc.get(key) or []]
    windows = [_window_text(doc) for doc in docs]
    if len(set(windows)) > 1:
        warnings.append("the shards restored from different windows: "
                        + "; ".join(f"{_label(doc, n)}: {w}" for doc, n, w in
                                    zip(docs, names, windows, strict=True))
                        + " (give every shard the same --since/--until)")
    merged["merge"] = {
        "reports": len(docs),
        "shards": [{"file": name, "shard": doc.get("shard"),
                    **{k: doc[k] for k in ("window", "windows", "journal", "run") if k in doc}}
                   for doc, name in zip(docs, names, strict=True)],
        "warnings": warnings,
    }
    return merged


def _check_shards(docs: Sequence[dict[str, Any]], names: Sequence[str]) -> list[str]:
    labels = [doc.get("shard") for doc in docs]
    if all(label is None for label in labels):
        return ["no report says which shard it is (--shard K/N): merged as given"]
    seen: dict[tuple[int, int], str] = {}
    counts: set[int] = set()
    warnings = []
    for label, name in zip(labels, names, strict=True):
        if label is None:
            warnings.append(f"{name} is not a shard's report (no --shard)")
            continue
        k, _, n = str(label).partition("/")
        if not (k.isdigit() and n.isdigit()):
            raise UsageError(f"{name}: shard {label!r} is not K/N")
        key = (int(k), int(n))
        if key in seen:
            raise UsageError(f"report merge: shard {label} is in both {seen[key]} and {name}: "
                             "its totals would count twice")
        seen[key] = name
        counts.add(int(n))
    if len(counts) > 1:
        raise UsageError("report merge: the reports split the users differently (--shard "
                         + ", ".join(f"K/{n}" for n in sorted(counts)) + ")")
    if counts:
        total = counts.pop()
        absent = [f"{k}/{total}" for k in range(total) if (k, total) not in seen]
        if absent:
            warnings.append(f"shard{'s' if len(absent) > 1 else ''} {', '.join(absent)} "
                            f"missing: the totals cover {len(seen)} of {total} shards")
    return warnings


def _summed(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, value in one.items():
            total[key] = total.get(key, 0) + int(value or 0)
    return total


def _users(docs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every shard's users, by user; a user in two reports gets its numbers added."""
    by_user: dict[str, dict[str, Any]] = {}
    twice: list[str] = []
    for doc in docs:
        for row in doc.get("users") or []:
            user = row.get("user", "")
            have = by_user.get(user)
            if have is None:
                by_user[user] = dict(row)
                continue
            twice.append(user)
            for key, value in row.items():
                if isinstance(value, int) and isinstance(have.get(key), int):
                    have[key] += value
    return [by_user[u] for u in sorted(by_user)], twice


def _problems(docs: Sequence[dict[str, Any]], merged: dict[str, Any]) -> list[dict[str, Any]]:
    """Every problem once: one with no user is reported by every shard, and counted once."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for doc in docs:
        for problem in doc.get("problems") or []:
            if not problem.get("user"):
                key = (str(problem.get("class", "")),
                       str(problem.get("where", problem.get("ref", ""))),
                       str(problem.get("reason", "")))
                if key in seen:
                    _uncount(problem, merged)
                    continue
                seen.add(key)
            out.append(problem)
    return out


def _uncount(problem: dict[str, Any], merged: dict[str, Any]) -> None:
    """Take a repeated user-less problem off the total that counted it."""
    cls = problem.get("class")
    counts = merged.get("counts")
    if cls and counts is not None and cls in counts:
        counts[cls] -= 1
    elif "failed" in merged and "ref" in problem:
        merged["failed"] -= 1


def _window_text(doc: dict[str, Any]) -> str:
    windows = doc.get("windows") or ([doc["window"]] if doc.get("window") else [])
    spans = [f"{w.get('since')} to {w.get('until')}" for w in windows if w]
    return ", ".join(spans) or "none"


def _label(doc: dict[str, Any], name: str) -> str:
    return f"shard {doc['shard']}" if doc.get("shard") else name
