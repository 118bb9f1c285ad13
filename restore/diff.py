"""The diff: every (user, archive message) pair gets exactly one class.

The pairs live in temporary SQLite tables beside the catalog, so memory stays
flat however large the archive is. Classes (SPEC.md), decided in this order:

duplicate       a further copy of a message already classed for that user
unroutable      the recipient is not a valid mailbox name, or has no mailbox
present         the replica has it, in any folder
missing         absent, received inside a window (a gap): to restore
outside-window  absent, received outside every window (most likely deleted)
unreadable      counted once per archive item, since it has no user

and, split off ``missing`` where the replica's history tells (see ``deleted``):

deleted         absent, inside the window, but an earlier run saw the replica hold
                it since the incident: its user deleted it. Since the incident means
                since a remembered window was first used (``DiffSettings.remembered``);
                for the audit, at any time, unless a gap in its timeline says the
                replica lost it (``DiffSettings.known_deletions``)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from restore.catalog import Catalog
from restore.errors import InvariantError, Problem, UsageError
from restore.identity import headers_only_strict_key
from restore.plan import PlanEntry, PlanHeader
from restore.recipients import DEFAULT_RECIPIENT_HEADERS, AliasMap, resolve_users
from restore.selection import EVERYONE, UserSelection
from restore.stores import absolute_spec, item_location
from restore.window import Detection, Window, combine, detect


class Class(StrEnum):
    PRESENT = "present"
    MISSING = "missing"
    OUTSIDE = "outside-window"
    DUPLICATE = "duplicate"
    UNROUTABLE = "unroutable"
    UNREADABLE = "unreadable"
    DELETED = "deleted"


CLASSES = [c.value for c in Class]
# What --fail-on may name: ``deleted`` is the users' own doing, never a finding.
FAILING = [c for c in CLASSES if c != Class.DELETED]
# What makes a diff exit 1 unless --fail-on says otherwise: something to restore or to look at.
FAIL_ON = (Class.MISSING.value, Class.UNROUTABLE.value, Class.UNREADABLE.value)
# The classes counted per user (the others are the archive's or the recipient's problem).
USER_CLASSES = [Class.PRESENT.value, Class.MISSING.value, Class.OUTSIDE.value,
                Class.DUPLICATE.value, Class.DELETED.value]
BATCH = 2000
PLAN_FETCH = 2000
RESOLVED_CACHE = 100_000


@dataclass
class DiffSettings:
    match: str = "auto"
    recipient_headers: Sequence[str] = DEFAULT_RECIPIENT_HEADERS
    aliases: AliasMap = field(default_factory=AliasMap)
    since: float | None = None          # None: detect
    until: float | None = None
    gap: int | None = None              # restore only the Nth gap detected (1-based)
    create_missing: bool = False
    # Only the selected users' pairs are made: the others' mail is not part of the run.
    users: UserSelection = EVERYONE
    # Only archive mail received after this is paired at all (the audit's
    # look-back): an hourly check need not re-classify years of archive.
    consider_from: float | None = None
    # The audit: absent mail an earlier run saw on the replica is ``deleted``,
    # unless a gap found in this run's timeline says the replica lost it.
    known_deletions: bool = False
    # The windows the target's journal remembers (restore.incident): used instead
    # of detection when no bound is given; their absent mail that the replica
    # was seen to hold since they were remembered is ``deleted``.
    remembered: list[Window] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ScannedStore:
    """A store as the diff sees it: its catalog id and spec."""

    store_id: int
    spec: str


@dataclass
class DiffResult:
    window: Window                      # the first (or only) of ``windows``, or why there is none
    counts: dict[str, int]
    users: dict[str, dict[str, int]]
    problems: list[Problem]
    pairs: int
    catalog: Catalog
    archives: list[ScannedStore]
    replica: ScannedStore
    windows: list[Window] = field(default_factory=list)     # every window mail is restored from
    selection: UserSelection = EVERYONE                       # whose mail was compared
    match: str = "auto"                                     # the identity rule it compared by
    gaps: list[Window] = field(default_factory=list)        # the audit: gaps its timeline shows
    unfinished: int = 0                 # missing inside a remembered window: restore not finished
    remembered: list[Window] = field(default_factory=list)  # the journal's, as DiffSettings
    started: int = 0                    # when the diff began (what it saw was seen then)

    def to_json(self) -> dict:
        doc: dict[str, object] = {
            "window": self.window.to_json(),
            "windows": [w.to_json() for w in self.windows],
            "counts": self.counts,
            "users": [{"user": u, **c} for u, c in sorted(self.users.items())],
            "problems": [p.as_dict() for p in self.problems],
        }
        if self.selection.shard:
            doc["shard"] = self.selection.shard_label   # for report merge
        return doc

    def fails(self, classes: Iterable[str] = FAIL_ON) -> bool:
        """Whether any pair (or item) has one of ``classes``: exit 1 (``--fail-on``)."""
        return any(self.counts[c] for c in classes)

    def plan_header(self) -> PlanHeader:
        """The plan's first line: it seals the plan to these archives (``restore.plan.Seal``)."""
        return PlanHeader(tuple(absolute_spec(s.spec) for s in self.archives), self.match)

    def plan(self, folder: str = "INBOX") -> Iterator[PlanEntry]:
        """The missing messages, per user in received-time order.

        Read in pieces, each under the catalog's lock: inject's workers ask
        the catalog too while this is read.
        """
        specs = {s.store_id: absolute_spec(s.spec) for s in self.archives}
        with self.catalog.lock, self.catalog.guard():
            cursor = self.catalog.paired(Class.MISSING)
        while True:
            with self.catalog.lock, self.catalog.guard():
                rows = cursor.fetchmany(PLAN_FETCH)
            if not rows:
                return
            for (user, received, store, ref, size, mid, key, strict, _) in rows:
                yield PlanEntry(
                    user=user,
                    folder=folder,
                    source=specs[store],
                    ref=ref,
                    received=received,
                    size=size,
                    message_id=mid,
                    fingerprint=key.hex(),
                    # What seals the body too; an archive read by headers alone has none.
                    digest="" if strict.hex() == headers_only_strict_key(key.hex())
                    else strict.hex(),
                )

    def record_restored(self, users: Sequence[str]) -> None:
        """All the missing mail of these users is in the replica now: it was delivered.

        So a user who deletes restored mail before the next run sees it has
        deleted it, not left the restore unfinished.
        """
        with self.catalog.guard():
            self.catalog.record_delivered(self.replica.store_id, self.match, int(time.time()),
                                          cls=Class.MISSING, users=users)

    def missing_by_user(self, show_ids: int = 3) -> list[dict]:
        """Per user with missing mail: how many, the oldest and newest, a few Message-IDs."""
        with self.catalog.guard():
            return self._missing_by_user(show_ids)

    def _missing_by_user(self, show_ids: int) -> list[dict]:
        found = []
        for user, n, oldest, newest in self.catalog.db.execute(
            "SELECT user, COUNT(*), MIN(received), MAX(received) FROM pairs"
            " WHERE class = ? GROUP BY user ORDER BY user", (Class.MISSING,)
        ):
            ids = self.catalog.first_message_ids(Class.MISSING, user, show_ids)
            found.append({"user": user, "missing": n, "oldest": oldest, "newest": newest,
                          "message_ids": ids})
        return found

    def series(self, bucket: int, user: str | None = None) -> list[tuple[float, int, int, int]]:
        """Per time bucket: (start, archive messages, of which absent, replica messages)."""
        with self.catalog.guard():
            return self._series(bucket, user)

    def _series(self, bucket: int, user: str | None) -> list[tuple[float, int, int, int]]:
        db = self.catalog.db
        where, args = ("AND user = ?", (user,)) if user else ("", ())
        arch = {
            b: (n, a) for b, n, a in db.execute(
                f"SELECT CAST(received / ? AS INTEGER), COUNT(*), SUM(NOT present) FROM pairs"
                f" WHERE copy = 1 AND routable AND received IS NOT NULL {where} GROUP BY 1",
                (bucket, *args),
            )
        }
        narrowed = not self.selection.everyone and self.catalog.is_per_user(self.replica.store_id)
        rep = self.catalog.arrivals(self.replica.store_id, bucket, user, selected_only=narrowed)
        buckets = sorted(set(arch) | set(rep))
        if not buckets:
            return []
        first, last = buckets[0], buckets[-1]
        return [(b * bucket, *arch.get(b, (0, 0)), rep.get(b, 0)) for b in range(first, last + 1)]


def compare(
    catalog: Catalog,
    archives: Sequence[ScannedStore],
    replica: ScannedStore,
    replica_users: set[str] | None,
    settings: DiffSettings,
) -> DiffResult:
    """Class every (user, archive message) pair against the replica; see the module docstring."""
    with catalog.guard():
        return _compare(catalog, archives, replica, replica_users, settings)


def _compare(catalog: Catalog, archives: Sequence[ScannedStore], replica: ScannedStore,
             replica_users: set[str] | None, settings: DiffSettings) -> DiffResult:
    db = catalog.db
    started = int(time.time())
    db.executescript(
        """
        DROP TABLE IF EXISTS temp.repusers;
        DROP TABLE IF EXISTS temp.pairs;
        CREATE TEMP TABLE repusers (user TEXT PRIMARY KEY) WITHOUT ROWID;
        CREATE TEMP TABLE pairs (
            id INTEGER PRIMARY KEY, user TEXT NOT NULL, msg INTEGER NOT NULL,
            received REAL, key TEXT NOT NULL, reason TEXT,
            routable INTEGER NOT NULL DEFAULT 0, present INTEGER NOT NULL DEFAULT 0,
            copy INTEGER NOT NULL DEFAULT 1, class TEXT);
        """
    )
    # A replica that is not laid out per user is one mailbox for every recipient.
    single = replica_users is None and not catalog.is_per_user(replica.store_id)
    # The replica is looked up by identity key; an audit reads only its recent archive mail.
    catalog.index_for_diff(settings.match, by_received=settings.consider_from is not None)
    db.execute("BEGIN")
    users = replica_users if replica_users is not None else catalog.users(replica.store_id)
    # One row at a time: the replica has a mailbox for each of 20,000 users and more.
    db.executemany("INSERT OR IGNORE INTO repusers VALUES (?)",
                   ((u,) for u in users if settings.users(u)))
    del users
    for side in archives:
        _insert_pairs(catalog, side, settings)
    db.execute("CREATE INDEX temp.pairs_user_key ON pairs (user, key, received, msg)")
    routable = "reason IS NULL" + (
        "" if settings.create_missing or single else " AND user IN (SELECT user FROM repusers)")
    catalog.mark_present(replica.store_id, settings.match, routable, same_user=not single)
    # Numbered only where a user has a key twice: most pairs are alone, and
    # the index finds the others without sorting every pair.
    db.execute(
        "UPDATE pairs SET copy = c.n FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY user, key"
        " ORDER BY received IS NULL, received, msg) AS n FROM pairs WHERE (user, key) IN"
        " (SELECT user, key FROM pairs GROUP BY user, key HAVING COUNT(*) > 1)) AS c"
        " WHERE pairs.id = c.id AND c.n > 1")
    db.execute("COMMIT")

    window, windows = _windows(catalog, settings)
    inside = " OR ".join(["(received > ? AND received <= ?)"] * len(windows)) or "0"
    db.execute("BEGIN")
    db.execute(
        "UPDATE pairs SET class = CASE"
        " WHEN copy > 1 THEN ?"
        " WHEN NOT routable THEN ?"
        " WHEN present THEN ?"
        f" WHEN {inside} THEN ?"
        " ELSE ? END",
        [Class.DUPLICATE, Class.UNROUTABLE, Class.PRESENT,
         *[bound for w in windows for bound in (w.since, w.until)], Class.MISSING, Class.OUTSIDE],
    )
    gaps, unfinished = _deletions(catalog, replica, settings, windows)
    # What tells a deletion later: the mail of the window(s). Only a remembered window
    # asks, inside it, and an audit's window; the audits before it saw the mail before.
    catalog.record_delivered(replica.store_id, settings.match, started, inside,
                             [bound for w in windows for bound in (w.since, w.until)])
    db.execute("COMMIT")
    result = _tally(catalog, archives, replica, window)
    result.windows, result.gaps, result.unfinished, result.started = (
        windows, gaps, unfinished, started)
    result.match, result.remembered = settings.match, settings.remembered
    result.selection = settings.users
    result.match = settings.match
    return result


INSIDE = "received > ? AND received <= ?"


def _deletions(catalog: Catalog, replica: ScannedStore, settings: DiffSettings,
               windows: list[Window]) -> tuple[list[Window], int]:
    """Class ``deleted`` the missing pairs the replica was seen to hold since the incident.

    Inside a remembered window, since it was remembered: what the replica
    held before may be what the failover lost. The audit, outside them:
    seen at any time, unless a gap in its timeline covers it, since a
    failover takes mail the replica held with it, as deletions do; but it is
    a gap, which ordinary deletions are not. Returns the gaps the audit
    found and the pairs still missing inside remembered windows.
    """
    db, store, match = catalog.db, replica.store_id, settings.match
    if not db.execute("SELECT 1 FROM pairs WHERE class = ? LIMIT 1", (Class.MISSING,)).fetchone():
        return [], 0
    split = (Class.MISSING, Class.DELETED)
    remembered = [w for w in settings.remembered if not w.empty]
    for w in remembered:
        catalog.mark_deleted(store, match, INSIDE, (w.since, w.until), int(w.remembered_at or 0),
                             split)
    inside = " OR ".join([f"({INSIDE})"] * len(remembered)) or "0"
    bounds = [b for w in remembered for b in (w.since, w.until)]
    unfinished = int(db.execute(f"SELECT COUNT(*) FROM pairs WHERE class = ? AND ({inside})",
                                (Class.MISSING, *bounds)).fetchone()[0])
    outside = " AND ".join([f"NOT ({INSIDE})"] * len(remembered)) or "1"
    if not settings.known_deletions or not catalog.mark_deleted(
            store, match, outside, bounds, 0, split, dry_run=True):
        return [], unfinished
    # Some missing mail was seen delivered: deletions, unless a failover took it.
    gaps = _detect(catalog, until=max(w.until for w in windows if w.until is not None)).windows()
    outside = " AND ".join([f"NOT ({INSIDE})"] * (len(gaps) + len(remembered))) or "1"
    catalog.mark_deleted(store, match, outside,
                         [b for g in gaps for b in (g.since, g.until)] + bounds, 0, split)
    return gaps, unfinished


def _insert_pairs(catalog: Catalog, side: ScannedStore, settings: DiffSettings) -> None:
    db = catalog.db
    cursor = catalog.to_pair(side.store_id, settings.match, settings.consider_from)
    # Many messages share an envelope (one user's mail): resolve each envelope
    # once, into the (user, reason) pairs its messages make. Kept for every
    # user's envelope (20,000 and more), so the usual one, a single mailbox,
    # is held as its name alone.
    resolved: dict[tuple[str | None, int], str | tuple[tuple[str, str | None], ...]] = {}
    nobody = "no recipient: none of " + ", ".join(settings.recipient_headers) + " is present"
    while rows := cursor.fetchmany(BATCH):
        out: list[tuple[str, int, float | None, str, str | None]] = []
        for msg, path_user, received, key, envelope in rows:
            targets = resolved.get((path_user, envelope))
            if targets is None:
                if len(resolved) > RESOLVED_CACHE:
                    resolved.clear()
                targets = _targets(catalog, path_user, envelope, settings, nobody)
                resolved[(path_user, envelope)] = targets
            if isinstance(targets, str):
                out.append((targets, msg, received, key, None))
            else:
                out.extend([(user, msg, received, key, reason) for user, reason in targets])
        db.executemany(
            "INSERT INTO pairs (user, msg, received, key, reason) VALUES (?,?,?,?,?)", out
        )


def _targets(catalog: Catalog, path_user: str | None, envelope: int, settings: DiffSettings,
             nobody: str) -> str | tuple[tuple[str, str | None], ...]:
    """The (user, reason) pairs an envelope's messages make; one valid user as their name."""
    users, rejected = resolve_users(path_user, catalog.envelope(envelope),
                                    settings.recipient_headers, settings.aliases)
    targets = [(u, None) for u in users] + [(r.address, r.reason) for r in rejected]
    if not targets:
        # Mail for nobody: with a user filter not part of the run; of one shard only.
        targets = [("", nobody)] if settings.users.keeps_unaddressed else []
    elif not settings.users.everyone:
        # Another user's pair is not made at all.
        targets = [t for t in targets if settings.users(t[0])]
    if len(targets) == 1 and targets[0][1] is None:
        return targets[0][0]
    return tuple(targets)


def _windows(catalog: Catalog, settings: DiffSettings) -> tuple[Window, list[Window]]:
    """The window to report and every window to restore from (none when no gap is found)."""
    since, until, gap = settings.since, settings.until, settings.gap
    if since is None and until is None and settings.remembered:
        return _pick(settings.remembered, gap, "remembered", "")
    if since is not None and until is not None:
        if gap is not None:
            raise UsageError("--gap picks one of the detected gaps: not with --since and --until")
        window = combine(None, since, until)
        return window, [window]

    detection = _detect(catalog)
    first, found = _pick(detection.windows(), gap, "found", detection.no_gap())
    if since is None and until is None:
        return first, found
    if len(found) > 1:
        raise UsageError(f"{len(found)} gaps found: say with --gap N which one "
                         f"{'--since' if since is not None else '--until'} adjusts")
    window = combine(first, since, until)
    return window, [window]


def _pick(windows: list[Window], gap: int | None, how: str,
          none: str) -> tuple[Window, list[Window]]:
    """All ``windows`` or, with --gap N, the Nth; and the one to report (``none``: why none)."""
    if gap is not None:
        if not 1 <= gap <= len(windows):
            raise UsageError(f"--gap {gap}: {len(windows)} gap(s) {how}"
                             + (f" ({none})" if none and not windows else ""))
        windows = [replace(w, evidence=f"gap {gap} of {len(windows)} (--gap {gap}); {w.evidence}")
                   for w in windows[gap - 1:gap]]
    return (windows[0] if windows else Window(None, None, "auto", none)), windows


def _detect(catalog: Catalog, until: float | None = None) -> Detection:
    """The gaps in the timeline of the pairs (received up to ``until``)."""
    # Detection reads the pairs in time order a few times: sorted once, in an index.
    catalog.db.execute(
        "CREATE INDEX IF NOT EXISTS temp.pairs_timeline ON pairs (received, present DESC, user)"
        " WHERE copy = 1 AND routable AND received IS NOT NULL")
    bound, args = ("", ()) if until is None else (" AND received <= ?", (until,))

    def timeline():
        rows = catalog.db.execute(
            "SELECT received, user, present FROM pairs WHERE copy = 1 AND routable"
            f" AND received IS NOT NULL{bound} ORDER BY received, present DESC", args)
        return ((ts, user, bool(present)) for ts, user, present in rows)

    return detect(timeline)


def _tally(catalog: Catalog, archives: Sequence[ScannedStore], replica: ScannedStore,
           window: Window) -> DiffResult:
    db = catalog.db
    counts = dict.fromkeys(CLASSES, 0)
    for cls, n in db.execute("SELECT class, COUNT(*) FROM pairs GROUP BY class"):
        counts[cls] = n
    pairs = int(db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0])
    users: dict[str, dict[str, int]] = {}
    for user, cls, n in db.execute(
        "SELECT user, class, COUNT(*) FROM pairs WHERE routable GROUP BY user, class"
    ):
        users.setdefault(user, dict.fromkeys(USER_CLASSES, 0))[cls] = n
    problems: list[Problem] = []
    for side in archives:
        for p in catalog.problems(side.store_id):
            counts["unreadable"] += 1
            problems.append(Problem(item_location(side.spec, p.where), p.reason, Class.UNREADABLE))
    for user, _, store, ref, _, _, _, _, reason in catalog.paired(Class.UNROUTABLE,
                                                                  by_received=False):
        spec = next(s.spec for s in archives if s.store_id == store)
        problems.append(Problem(
            item_location(spec, ref),
            f"recipient {user!r} rejected: {reason}" if reason
            else f"recipient {user!r} has no mailbox on the replica",
            Class.UNROUTABLE, user))
    for p in catalog.problems(replica.store_id):
        problems.append(Problem(item_location(replica.spec, p.where), p.reason,
                                "replica-unreadable"))
    if sum(counts[c] for c in CLASSES if c != "unreadable") != pairs:
        raise InvariantError(f"class counts {counts} do not add up to {pairs} pairs")
    return DiffResult(window, counts, users, problems, pairs, catalog, list(archives), replica)


def recipients_of(catalog: Catalog, archives: Sequence[ScannedStore],
                  settings: DiffSettings) -> list[str]:
    """Every valid user the archives' messages belong to (for an IMAP replica's user list)."""
    users: set[str] = set()
    with catalog.guard():
        for side in archives:
            for path_user, envelope in catalog.envelopes(side.store_id):
                found, _ = resolve_users(path_user, envelope, settings.recipient_headers,
                                         settings.aliases)
                users.update(settings.users.select(found))
    return sorted(users)
