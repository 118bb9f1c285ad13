"""Target writers: where restored messages are appended (Maildir, IMAP)."""
