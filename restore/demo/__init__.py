"""A synthetic mail-storage incident, and the truth a correct diff must find.

``build_incident(root)`` writes, deterministically from a seed:

    replica/<domain>/<local>/Maildir    the promoted replica: the delivered copy
                                        of every message, except those
                                        received in the gap (since, until]
    gateway/YYYY/MM/DD/<hex>.eml.zst    the gateway archive: every inbound
    gateway-mbox/YYYY-MM-DD.mbox.zst    message as the gateway saw it, with
    gateway-maildir/                    X-Envelope-To, in one or more formats
    aliases                             the alias map (with twists)
    truth/copies.jsonl                  the expected class of every archive copy

and returns an ``Incident`` whose ``truth`` says what a correct diff finds.
Every message carries an ``X-Incident-Key`` header (equal in duplicates), so
tests match archive items to the truth without relying on refs.

The package is the independent oracle the tests compare the diff with, so it
imports nothing else from ``restore``: ``model`` (dates, timeline, a
message's fate), ``author`` (the messages and their copies), ``writers``
(archive formats and the replica), ``truth`` (the classes SPEC.md gives
every copy) and ``scenario`` (the story, with its twists).

The demo, the end-to-end tests and the benchmarks all use it, so it streams:
a message is written as soon as it is made and then dropped, which keeps
memory flat at 100k messages.
"""

from restore.demo.scenario import build_incident
from restore.demo.truth import CLASSES, ArchiveCopy, Incident, Truth

__all__ = ["CLASSES", "ArchiveCopy", "Incident", "Truth", "build_incident"]
