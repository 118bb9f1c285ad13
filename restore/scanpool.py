"""Run the reading of units in worker processes, batch by batch, in order.

What reading a batch means is the caller's (``restore.catalog`` reads and
fingerprints messages); this module only runs it. Reading message files and
fingerprinting them is nearly all of a cold scan's work, and each unit's is
independent of the others'. When the caller allows it (a ``parallel_safe``
store: a file store, holding no connection between calls), batches of units
are read by ``workers`` readers: the main process and ``workers - 1`` forked
worker processes, one reader per CPU by default. A batch goes to a worker
process while one has room; when every worker is busy the main process reads
the batch itself rather than wait, so that N CPUs run N busy processes (not
N workers beside a main process that needs a CPU too), and what the main
process reads is never pickled. The main process also lists the store and
writes what comes back, batch by batch in the order the batches were handed
in, so the catalog's rows come out in the same order as when read in one
process. A store with fewer than two batches to read is read in-process:
forking would cost more than it saves.

At most ``3 * workers`` batches are in flight, so memory stays bounded
by the batch size however large the store is.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import signal
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from restore.errors import WorkerDied
from restore.stores.base import Unit

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

Result = TypeVar("Result")
# Reads one batch of units (in this process or a worker): what reading found.
Read = Callable[[list[Unit]], Result]
# Called with each batch, in order, and what reading it found.
Apply = Callable[[list[Unit], Result], None]


def worker_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Worker:
    """One forked reader: batches go in through a pipe, their changes come back in order.

    No threads stand between this process and the worker (as they do in a
    ProcessPoolExecutor): a batch handed in is in the pipe at once, so the
    worker never waits for this process's interpreter lock to get its next batch.
    """

    def __init__(self, read: Read):
        import multiprocessing

        context = multiprocessing.get_context("fork")
        commands, self._commands = context.Pipe(duplex=False)
        self._results, results = context.Pipe(duplex=False)
        widened = all([_widen(connection.fileno()) for connection in (commands, results)])
        # Batches it may have waiting. In pipes of the default size (64 KiB) one
        # batch's changes do not fit: the worker then waits for them to be
        # taken back before it reads its next batch, and with a second batch
        # queued the two sides would wait for each other.
        self.capacity = QUEUED if widened else 1
        self.process = context.Process(
            target=_serve, args=(commands, results, (self._commands, self._results), read),
            name="mailrestore-scan", daemon=True)
        self.process.start()
        commands.close()
        results.close()
        self.waiting = 0    # batches handed in and not yet taken back

    def send(self, batch: list[Unit]) -> None:
        packed = [tuple(unit) for unit in batch]    # a NamedTuple would pickle its class with each
        self._commands.send_bytes(pickle.dumps(packed, pickle.HIGHEST_PROTOCOL))
        self.waiting += 1

    def ready(self) -> bool:
        return self._results.poll()

    def receive(self) -> object:
        try:
            failed, payload = pickle.loads(self._results.recv_bytes())
        except (EOFError, OSError):
            self.process.join(1)
            raise WorkerDied(
                f"a scan worker process ended without answering (exit code "
                f"{self.process.exitcode}); the catalog is unchanged, run the scan again"
            ) from None
        self.waiting -= 1
        if failed:
            raise payload
        return payload

    def close_input(self) -> None:
        """The worker reads the end of its input and exits (once every later worker,
        which inherited this pipe's end when it was forked, has exited too)."""
        self._commands.close()

    def join(self) -> None:
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self._results.close()


def _widen(fd: int) -> bool:
    """Room in the pipe for every batch a worker may have waiting, and their changes (Linux)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (AttributeError, OSError):
        return False
    return True


PIPE_SIZE = 1 << 20


def _serve(commands: Connection, results: Connection, parent_ends: tuple[Connection, ...],
           read: Read) -> None:
    """A worker's life: read each batch handed in, answer with its changes, until the input ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the main process's to handle
    for end in parent_ends:     # inherited by the fork: held open here, the input would never end
        end.close()
    while True:
        try:
            packed = pickle.loads(commands.recv_bytes())
        except EOFError:
            return
        try:
            answer = (False, read([Unit._make(fields) for fields in packed]))
            data = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - handed to the main process, which raises it
            try:
                data = pickle.dumps((True, exc), pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - an exception that cannot be pickled
                data = pickle.dumps((True, RuntimeError(f"scan worker: {exc!r}")),
                                    pickle.HIGHEST_PROTOCOL)
        results.send_bytes(data)


# Batches a worker may have waiting: one it reads, two queued behind, so that
# it does not run dry while this process reads a batch of its own.
QUEUED = 3


class BatchReader(Generic[Result]):
    """Reads units in batches, in order, in-process and in worker processes.

    ``add`` hands in a unit; ``apply`` is called with each batch and what
    ``read`` found in it, in the order the units were added; ``finish``
    reads the rest. ``workers`` counts the readers: this process and
    ``workers - 1`` worker processes, started only once two full batches
    wait, and only when ``parallel``. Use as a context manager so that
    workers are stopped on any error.
    """

    def __init__(self, read: Read[Result], apply: Apply[Result], batch_size: int,
                 workers: int | None = None, *, parallel: bool = True):
        self.read, self.apply = read, apply
        self.batch_size = batch_size
        self.workers = worker_count() if workers is None else workers
        self.parallel = parallel
        self._batch: list[Unit] = []
        self._held: list[Unit] | None = None
        self._pool: list[_Worker] = []
        # Batches in the order they were added, each with what reading it
        # found (read here) or the worker reading it.
        self._in_flight: deque[tuple[list[Unit], _Read[Result] | _Worker]] = deque()

    def __enter__(self) -> BatchReader[Result]:
        return self

    def __exit__(self, *exc: object) -> None:
        pool, self._pool = self._pool, []
        for worker in pool:
            worker.close_input()
        for worker in pool:
            worker.join()

    def add(self, unit: Unit) -> None:
        self._batch.append(unit)
        if len(self._batch) >= self.batch_size:
            batch, self._batch = self._batch, []
            self._dispatch(batch)

    def finish(self) -> None:
        held, batch = self._held, self._batch
        self._held, self._batch = None, []
        if held:            # never forked: read in order here
            self._read_here(held)
        if batch:
            if self._pool:
                self._submit(batch)
            else:
                self._read_here(batch)
        while self._in_flight:
            self._apply_oldest()

    def _dispatch(self, batch: list[Unit]) -> None:
        if self._pool:
            self._submit(batch)
        elif not self._may_fork():
            self._read_here(batch)
        elif self._held is None:
            self._held = batch    # a second full batch decides whether to fork
        else:
            self._pool = [_Worker(self.read) for _ in range(self.workers - 1)]
            held, self._held = self._held, None
            self._submit(held)
            self._submit(batch)

    def _may_fork(self) -> bool:
        return self.parallel and self.workers > 1 and hasattr(os, "fork")

    def _read_here(self, batch: list[Unit]) -> None:
        self.apply(batch, self.read(batch))

    def _submit(self, batch: list[Unit]) -> None:
        while self._in_flight and self._ready(self._in_flight[0][1]):
            self._apply_oldest()
        if len(self._in_flight) >= QUEUED * len(self._pool) + 2:
            self._apply_oldest()    # bounded memory: wait for the oldest
        worker = min(self._pool, key=lambda w: w.waiting - w.capacity)
        if worker.waiting < worker.capacity:    # a worker has room
            worker.send(batch)
            self._in_flight.append((batch, worker))
        else:                           # every worker is busy: read it here rather than wait
            self._in_flight.append((batch, _Read(self.read(batch))))

    def _ready(self, reading: _Read[Result] | _Worker) -> bool:
        # A worker answers in the order it was handed batches: the oldest
        # batch in flight is the oldest its worker has.
        return isinstance(reading, _Read) or reading.ready()

    def _apply_oldest(self) -> None:
        batch, reading = self._in_flight.popleft()
        found = reading.found if isinstance(reading, _Read) else reading.receive()
        self.apply(batch, found)  # type: ignore[arg-type]


class _Read(Generic[Result]):
    """What reading a batch here found, waiting for the batches before it."""

    __slots__ = ("found",)

    def __init__(self, found: Result):
        self.found = found
