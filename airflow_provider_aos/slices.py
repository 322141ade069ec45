"""
Export a time window as concurrent time slices whose output is appended in time order.

A ``nextLink`` chain is sequential: each page names the next. Time slices are not: the window is
cut into fixed slices (:func:`plan_slices`; the cut depends only on the window, never on how many
run at once), several slices are walked at once, and their records reach the output strictly in
slice order: the slice whose turn it is writes straight to the output, the others into local spool
files that are appended when their turn comes. So the output is the same bytes
at any concurrency, and a rerun writes the same bytes again.

Memory stays flat: a slice holds the page in hand and the one being fetched; the output grows on
disk. The HTTP requests in flight are bounded by the hook's :class:`~airflow_provider_aos.throttle.
AdaptiveLimit`, which shrinks on throttling. Spools live in one folder per attempt in the worker's
temporary directory, removed on success, failure and kill; a killed attempt's folder (SIGKILL
skips every cleanup) is removed by the next attempt for the same destination.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

import msgspec

from airflow_provider_aos.storage import encode_record
from airflow_provider_aos.windows import MAX_WINDOW, iso_z

SPOOL_PREFIX = "aos-audit-spool-"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Slice:
    """One slice of the window, ``[start, end)``; ``index`` is its place in the output."""

    index: int
    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"{iso_z(self.start)} to {iso_z(self.end)}"


SLICE_LADDER: tuple[timedelta, ...] = tuple(
    [timedelta(hours=h) for h in (1, 2, 3, 4, 6, 8, 12)] + [timedelta(days=d) for d in (1, 2, 4, 7)]
)
"""The slice widths :func:`slice_width` chooses from: hours that divide a day, then days up to 7."""
TARGET_SLICES = 48
"""Enough slices to keep dozens of requests busy, few enough that a small tenant's empty slices
(each still one request) cost little: a day is 24 slices of an hour, 20 days 40 of 12 hours."""


def slice_width(start: datetime, end: datetime) -> timedelta:
    """The narrowest width of :data:`SLICE_LADDER` that cuts ``[start, end)`` into at most 48 slices."""
    for width in SLICE_LADDER:
        if len(_cuts(start, end, width)) <= TARGET_SLICES:
            return width
    return SLICE_LADDER[-1]


def plan_slices(start: datetime, end: datetime, every: timedelta | None = None) -> list[Slice]:
    """
    ``[start, end)`` cut at multiples of ``every`` since the Unix epoch (UTC): hour boundaries for an
    hour. ``every`` defaults to :func:`slice_width`. Deterministic: the same window always gives the
    same slices, whatever the concurrency.
    """
    every = every if every is not None else slice_width(start, end)
    if not timedelta(0) < every <= MAX_WINDOW:
        raise ValueError("a slice must be longer than 0 and at most 7 days (the API's window)")
    return [Slice(i, lo, hi) for i, (lo, hi) in enumerate(_cuts(start, end, every))]


def _cuts(start: datetime, end: datetime, every: timedelta) -> list[tuple[datetime, datetime]]:
    cuts = []
    cursor = start
    while cursor < end:
        grid = _EPOCH + ((cursor - _EPOCH) // every + 1) * every  # the next boundary after cursor
        upper = min(grid, end)
        cuts.append((cursor, upper))
        cursor = upper
    return cuts


# -- records -------------------------------------------------------------------------------------


class _Stamped(msgspec.Struct):
    """The one field of a record the export reads; msgspec skips the rest without building it."""

    actionTime: Any = None


_STAMP = msgspec.json.Decoder(_Stamped)
_ANY = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder()


def in_window(stamp: Any, start: datetime, end: datetime) -> bool:
    """
    Whether a record stamped ``stamp`` (its ``actionTime``) belongs to ``[start, end)``.

    The docs do not say whether ``endTime`` is inclusive; treating the API's answer as half-open here
    keeps neighbouring slices (and runs) from repeating a record stamped exactly on a boundary. A
    record without a readable ``actionTime`` is kept: dropping data we cannot place would lose it
    silently.
    """
    if not isinstance(stamp, str):
        return True
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return True
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the API documents UTC ("...Z") stamps
    return start <= moment < end


@dataclass
class Counts:
    """What a slice (or the whole export) read and wrote."""

    records: int = 0
    pages: int = 0
    outside: int = 0
    """Records the API returned that belong to a neighbouring slice or window."""
    escaped: int = 0
    """Records written with ``\\uXXXX`` escapes: they hold text UTF-8 cannot encode."""

    def add(self, other: Counts) -> None:
        self.records += other.records
        self.pages += other.pages
        self.outside += other.outside
        self.escaped += other.escaped


def encode_page(items: Iterable[Any], start: datetime, end: datetime, counts: Counts) -> bytes:
    """
    JSON Lines of a page's records that belong to ``[start, end)``, counted into ``counts``.

    A record kept as raw JSON (:func:`~airflow_provider_aos.pagination.decode_records_raw`) is
    written as the API sent it, compact or not, unless it spans lines (a pretty-printing server):
    then it is re-encoded compactly. Only its ``actionTime`` is decoded. A record that came as a
    Python object (a page msgspec could not read) is encoded by :func:`encode_record`.
    """
    lines: list[bytes] = []
    for item in items:
        if isinstance(item, msgspec.Raw):
            try:
                stamp = _STAMP.decode(item).actionTime
            except msgspec.ValidationError:  # not a JSON object: kept, like a record without a stamp
                stamp = None
            if not in_window(stamp, start, end):
                counts.outside += 1
                continue
            line = bytes(item)
            if b"\n" in line or b"\r" in line:
                line = _ENCODE.encode(_ANY.decode(line))
        else:
            if not in_window(item.get("actionTime") if isinstance(item, dict) else None, start, end):
                counts.outside += 1
                continue
            line, was_escaped = encode_record(item)
            counts.escaped += was_escaped
        lines.append(line)
    counts.records += len(lines)
    return b"\n".join(lines) + b"\n" if lines else b""


# -- spools --------------------------------------------------------------------------------------


def spool_folder(destination: str) -> Path:
    """
    A new spool folder for an export to ``destination``, in the worker's temporary directory, after
    removing the folders that killed earlier attempts for the same destination left there.
    """
    tag = hashlib.sha256(destination.encode()).hexdigest()[:16]
    base = Path(tempfile.gettempdir())
    for stale in base.glob(f"{SPOOL_PREFIX}{tag}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{tag}-", dir=base))


def remove_folder(folder: Path | None) -> None:
    """Remove a spool folder; safe from a signal handler (no lock) and when already gone."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


# -- the run -------------------------------------------------------------------------------------


class Stopped(Exception):
    """Another slice failed, so this one stopped; the other slice's error is the one raised."""


class _Sink:
    """
    Where one slice's output goes: its spool file until its turn comes to be appended, then straight
    into the output. The slice whose turn it is never pays for the spool's write and copy (with one
    slice at a time, nothing is spooled at all).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._spool: IO[bytes] | None = None
        self._out: IO[bytes] | None = None  # set once this slice's turn has come

    def write(self, data: bytes) -> int:
        with self._lock:
            if self._out is not None:
                return self._out.write(data)
            if self._spool is None:
                self._spool = open(self.path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed by close()
            return self._spool.write(data)

    def close(self) -> None:
        with self._lock:
            if self._spool is not None:
                self._spool.close()

    def take_turn(self, out: IO[bytes]) -> None:
        """Append what was spooled so far to ``out`` and write there from now on (main thread)."""
        with self._lock:
            if self._spool is not None:
                self._spool.close()
                with open(self.path, "rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
                self.path.unlink()
                self._spool = None
            self._out = out


class Writable(Protocol):
    """What a slice writes its JSON Lines to."""

    def write(self, data: bytes, /) -> int: ...


WalkSlice = Callable[[Slice, Writable, Executor], Counts]
"""Walks one slice's pages into its output (a spool or the file), fetching each next page on the executor."""


@dataclass
class SliceRun:
    """
    Walk ``slices`` with up to ``workers`` at once; their records reach ``out`` in slice order.

    :param walk: walks one slice into its spool (see :data:`WalkSlice`); it should call
        :meth:`check` between pages.
    :param folder: where the spools go (from :func:`spool_folder`).
    :param progress: called as each slice completes: (slice, its counts, totals so far, slices done).
    """

    slices: list[Slice]
    workers: int
    walk: WalkSlice
    folder: Path
    progress: Callable[[Slice, Counts, Counts, int], None]
    totals: Counts = field(default_factory=Counts)
    _failed: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        """Raise :class:`Stopped` once any slice has failed: the others stop at their next page."""
        if self._failed.is_set():
            raise Stopped

    def stop(self) -> None:
        self._failed.set()

    def _walk_one(self, piece: Slice, sink: _Sink, fetcher: Executor) -> Counts:
        self.check()
        try:
            return self.walk(piece, sink, fetcher)
        except BaseException:
            self.stop()  # at once, not when the main thread gets to it: no slice starts after a failure
            raise
        finally:
            sink.close()

    def run(self, out: IO[bytes]) -> Counts:
        """Run every slice; raises the first failure (in time order of noticing), after stopping all."""
        workers = max(1, min(self.workers, len(self.slices)))
        walkers = ThreadPoolExecutor(workers, thread_name_prefix="aos-slice")
        fetchers = ThreadPoolExecutor(workers, thread_name_prefix="aos-page")
        try:
            sinks = [_Sink(self.folder / f"{piece.index:07d}.jsonl") for piece in self.slices]
            sinks[0].take_turn(out)
            futures = [
                walkers.submit(self._walk_one, piece, sink, fetchers)
                for piece, sink in zip(self.slices, sinks, strict=True)
            ]
            index = {future: i for i, future in enumerate(futures)}
            pending: set[Future[Counts]] = set(futures)
            appended = 0
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=index.__getitem__):
                    counts = future.result()  # a slice's error ends the run here
                    self.totals.add(counts)
                    done = len(futures) - len(pending)
                    self.progress(self.slices[index[future]], counts, self.totals, done)
                # Only slices counted above: the next slice's turn comes once the one writing to the
                # output is known complete; what it spooled meanwhile is appended, then it writes on.
                while appended < len(futures) and futures[appended] not in pending:
                    appended += 1
                    if appended < len(futures):
                        sinks[appended].take_turn(out)
            return self.totals
        except BaseException:
            self.stop()
            raise
        finally:
            walkers.shutdown(wait=True, cancel_futures=True)
            fetchers.shutdown(wait=True, cancel_futures=True)


class Progress:
    """Progress lines as slices complete: records so far, slices done of total, rate."""

    EVERY = 10.0
    """With many slices, at most one line per this many seconds (and the last one always)."""

    def __init__(self, log: Any, total: int) -> None:
        self.log = log
        self.total = total
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, piece: Slice, counts: Counts, totals: Counts, done: int) -> None:
        now = time.monotonic()
        if self.total > 48 and done < self.total and now - self.last < self.EVERY:
            return
        self.last = now
        rate = totals.records / max(now - self.started, 1e-6)
        self.log.info(
            "Slice %s done (%d records, %d page(s)); %d records so far, %d of %d slices, %.0f records/s",
            piece, counts.records, counts.pages, totals.records, done, self.total, rate,
        )  # fmt: skip
