"""Append a plan's messages to a target: in parallel across users, in order, exactly once.

The plan comes one user at a time (``restore.plan.PlanFile.users``, or the
diff's cursor): a feeder hands each user to the next free worker thread
through a short queue, so memory holds a few users' entries, never the
plan. Each worker takes whole users: one session per user, so one mailbox
is written by one worker, in received-time order. Per user:

1. entries the journal has ``done`` or ``present`` are counted
   ``already_present``;
2. the rest go in batches, each item read from the archive (and checked
   against the plan's seal by ``read_source``);
3. entries left ``pending`` by an interrupted run are in doubt: the target
   is asked (``session.find``) and they are written only if absent;
4. every other entry is looked up in the target first (``TargetCheck``:
   the target as the catalog last read it, with the diff's identity rule):
   one it holds already, in any folder, is journaled ``present`` and never
   written. So a lost journal, another account's journal or another
   spelling of the target writes nothing twice;
5. what remains: ``prepare`` (the target promises a name), journal
   ``pending``, ``append``, journal ``done`` with where it went.

Durability in groups. Where the target can stage (Maildir, see
``restore.targets.base``), step 5 is split: the worker journals its batch
``pending`` without an fsync, stages it (files in ``tmp/``, not synced)
and goes on with its next batch, while one committer thread takes every
batch staged by any worker since its last round and, for all of them at
once: syncs the journal (the ``pending`` rows are durable), commits them to
the target (one syncfs: the files are durable; links into ``new/``;
another syncfs: the links are durable) and journals them ``done`` in one
transaction. So a crash or power cut at any moment leaves no file in
``new/`` that the journal does not name as pending or done, and none
whose contents are not durable; a round costs two syncs and two journal
transactions however many batches it holds.

An archive item that cannot be read fails that message only. A connection
that drops (``TransientError``) is retried with backoff on a fresh session,
the batch in flight being in doubt. A user the target refuses
(``PermanentError``, e.g. no mailbox) fails that user's messages. A
``TargetError`` on the first session opened means the target itself is
unusable (login refused, no mail root) and ends the run, as does a target
that keeps failing after the retries (``TargetUnavailable``). Ctrl-C lets
every worker finish the batch in hand and raises ``Interrupted`` with what
was written.

The journal is never marked ``failed`` for a message whose presence is
unknown (in doubt): it stays ``pending`` so the next run checks first.

A dry run goes through the same steps without a session: it asks the
target whether each user's mailbox can be written (``Target.probe``), reads
and checks every item, runs the target check, and counts what a run would
append, find present or fail; it writes nothing, not even the journal.

Where each part lives: ``run`` (the first session, the worker pool, the
wind-down), ``user`` (one user's batches, checks and retries),
``committer`` (durability in groups), ``context`` (what the workers share)
and ``result`` (the counts and the ``--json`` document).
"""

from __future__ import annotations

from restore.inject.context import TargetCheck
from restore.inject.result import InjectResult, UserCounts
from restore.inject.run import RETRY_DELAYS, inject, inject_users

__all__ = ["RETRY_DELAYS", "InjectResult", "TargetCheck", "UserCounts", "inject", "inject_users"]
