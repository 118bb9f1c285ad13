"""``python -m restore``: the mailrestore command, as the console script runs it."""

from restore.cli import main

if __name__ == "__main__":     # not again in a process multiprocessing starts
    main()
