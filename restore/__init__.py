"""mailrestore: put back the mail a failed-over mail store lost, exactly once."""

__version__ = "0.1.0"
