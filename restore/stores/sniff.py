"""Tell a mail message from junk before anyone tries to parse it.

A message must open with an RFC 5322 header block: its first line is a
header field (``Name: value``), optionally preceded by an mbox-style
``From `` envelope line. That is deliberately lenient about the rest of the
header (real mail carries broken lines) but rejects empty files, binary
blobs, and text files that have no header at all.
"""

from __future__ import annotations

import re

# RFC 5322 field name: printable ASCII except ':' (and no space); some
# mailers put blanks before the colon, which parsers accept.
HEADER_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
HEADER_END = re.compile(rb"\r?\n\r?\n")
HEADER_SCAN = 64 * 1024


def not_a_message_reason(data: bytes) -> str | None:
    """Why ``data`` is not a mail message, or None if it looks like one."""
    if not data.strip():
        return "empty" if not data else "only white space"
    header = HEADER_END.split(data[:HEADER_SCAN], 1)[0]
    if b"\x00" in header:
        return "binary data, not a message"
    first, _, rest = data.partition(b"\n")
    if first.startswith(b"From "):
        first = rest.partition(b"\n")[0]
    if not HEADER_FIELD.match(first):
        return "not a message (no header block)"
    return None
