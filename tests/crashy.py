"""Inject a plan of eml files into a Maildir target, as a process a test can kill -9.

    python tests/crashy.py PLAN TARGET JOURNAL [JOBS [BATCH]]

Also the small archive builder the inject tests share: ``write_archive``
writes one-message eml files and returns their plan entries; ``read_eml``
re-opens one; ``message_ids`` counts the Message-IDs found in Maildirs.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from crosscheck import assert_maildir_agrees, maildirs

from restore.errors import UnreadableItem
from restore.identity import facts_of, fingerprint_of
from restore.inject import inject
from restore.journal import Journal
from restore.plan import PlanEntry, read_plan
from restore.targets.maildir import MaildirTarget

BASE_TIME = datetime(2017, 12, 8, 16, 0, tzinfo=UTC).timestamp()
MESSAGE_ID = re.compile(rb"^Message-ID: (<[^>]+>)", re.MULTILINE | re.IGNORECASE)


def write_archive(root: Path, users: list[str], per_user: int, folder: str = "INBOX",
                  crlf: bool = True) -> list[PlanEntry]:
    """One eml file per (user, n), received a minute apart in reverse order of n."""
    entries = []
    for u, user in enumerate(users):
        for n in range(per_user):
            received = BASE_TIME + 60 * (per_user - n) + u
            stamp = datetime.fromtimestamp(received, UTC)
            text = (
                f"Received: from gw by mx; {stamp:%a, %d %b %Y %H:%M:%S +0000}\n"
                f"Message-ID: <{n}.{user}@test>\n"
                f"From: sender{n}@example.org\n"
                f"To: {user}\n"
                f"Date: {stamp:%a, %d %b %Y %H:%M:%S +0000}\n"
                f"Subject: message {n}\n\nbody {n} of {user}\n"
            )
            data = text.replace("\n", "\r\n").encode() if crlf else text.encode()
            ref = f"{user}/{n}.eml"
            (root / user).mkdir(parents=True, exist_ok=True)
            (root / ref).write_bytes(data)
            entries.append(PlanEntry(
                user=user, folder=folder, source=f"eml:{root}", ref=ref,
                received=stamp.timestamp(), size=len(data),
                message_id=f"<{n}.{user}@test>", fingerprint=fingerprint_of(data),
                digest=facts_of(data).strict_key,
            ))
    return entries


def read_eml(entry: PlanEntry) -> bytes:
    path = Path(entry.source.removeprefix("eml:")) / entry.ref
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UnreadableItem(entry.ref, exc.strerror or str(exc)) from None


def message_ids(root: Path) -> Counter[str]:
    """Message-IDs of every message in the Maildirs at or under ``root`` (all folders),
    read with ``mailbox.Maildir`` and checked against mailrestore's reader."""
    found: Counter[str] = Counter()
    for maildir in maildirs(root):
        for stored in assert_maildir_agrees(maildir):
            match = MESSAGE_ID.search(stored.data)
            found[match.group(1).decode() if match else f"?{stored.key}"] += 1
    return found


def main(argv: list[str]) -> int:
    plan, target, journal_path = argv[:3]
    jobs = int(argv[3]) if len(argv) > 3 else 2
    batch = int(argv[4]) if len(argv) > 4 else 10
    with open(plan, encoding="utf-8") as fh:
        entries = [e for e in read_plan(fh) if isinstance(e, PlanEntry)]
    with Journal(journal_path, f"maildir:{target}") as journal:
        result = inject(entries, MaildirTarget(target), journal, jobs=jobs,
                        read_source=read_eml, batch_size=batch)
    print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
