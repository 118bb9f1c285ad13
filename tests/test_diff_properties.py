"""Invariants of the diff over random mailboxes: what the plan may never contain."""

from __future__ import annotations

import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from restore.catalog import Catalog
from restore.diff import CLASSES, DiffSettings
from restore.pipeline import Job
from restore.stores import open_store

T0 = datetime(2017, 12, 8, tzinfo=UTC)
KEY = re.compile(rb"^X-Test-Key: (\S+)", re.M)

# One archived message: its user, its minute, whether the replica has it and
# where, whether the gateway archived it twice, and whether it has no Message-ID.
message = st.fixed_dictionaries({
    "user": st.sampled_from(["alice@example.com", "bob@example.com", "carol@example.com"]),
    "minute": st.integers(0, 600),
    "replica": st.sampled_from(["INBOX", "Archive", "Ärger", None, None]),
    "archived_twice": st.booleans(),
    "no_message_id": st.integers(0, 9).map(lambda n: n == 0),
    "shares_id_with_previous": st.integers(0, 9).map(lambda n: n == 0),
})


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(message, min_size=1, max_size=30), window=st.booleans())
def test_plan_never_holds_a_present_pair_nor_the_same_pair_twice(mail_factory, messages, window):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive, replica = [], {}
        previous_id = None
        for i, m in enumerate(messages):
            received = T0 + timedelta(minutes=m["minute"])
            mid = None if m["no_message_id"] else (
                previous_id if m["shares_id_with_previous"] and previous_id else f"<{i}@test>")
            data = mail_factory.make_message(
                message_id=mid, date=received - timedelta(seconds=30), received=received,
                envelope_to=m["user"], subject=f"message {i}", body=f"body {i}\n",
                extra_headers={"X-Test-Key": str(i)})
            previous_id = mid
            archive += [data, data] if m["archived_twice"] else [data]
            if m["replica"]:
                folders = replica.setdefault(m["user"], {})
                folders.setdefault(m["replica"], []).append(data)
        for user in ("alice@example.com", "bob@example.com", "carol@example.com"):
            replica.setdefault(user, {}).setdefault("INBOX", [])
        mail_factory.write_eml_tree(root / "gw", archive)
        template = mail_factory.write_maildir_tree(root / "replica", replica)
        settings_ = DiffSettings()
        if window:
            settings_.since, settings_.until = T0.timestamp(), (T0 + timedelta(hours=5)).timestamp()
        job = Job(Catalog(root / "catalog.sqlite"), settings_)
        result = job.diff([f"eml:{root / 'gw'}"], f"maildir:{template}")

        present = {(user, KEY.search(d).group(1).decode())
                   for user, folders in replica.items() for msgs in folders.values() for d in msgs}
        store = open_store(f"eml:{root / 'gw'}")
        planned = [(e.user, KEY.search(store.open_ref(e.ref)).group(1).decode())
                   for e in result.plan()]
        assert not set(planned) & present
        assert len(planned) == len(set(planned))
        assert sum(result.counts[c] for c in CLASSES if c != "unreadable") == result.pairs
        assert result.counts["missing"] == len(planned)
        job.catalog.close()
