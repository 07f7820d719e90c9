"""What `lifespan-kit run` shows: each resource's state, live on a terminal.

A `Tracker` turns resource events into one row per resource. A `Display`
draws the rows as a block at the bottom of a terminal, redrawn on every event
and ticking while a resource is starting or stopping; log lines are written
above the block. Off a terminal nothing is drawn live (the log lines say it
all), and both end with the same final table.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TextIO

from lifespan_kit._report import EventKind, ResourceEvent
from lifespan_kit.errors import LifespanKitError

_IN_PROGRESS: Final = ("starting", "stopping")
_STATES: Final[dict[EventKind, str]] = {
    "starting": "starting",
    "started": "running",
    "start_failed": "failed to start",
    "failed": "failed",
    "stopping": "stopping",
    "stopped": "stopped",
    "stop_failed": "failed to stop",
}
_RED: Final = "\x1b[31m"
_YELLOW: Final = "\x1b[33m"
_DIM: Final = "\x1b[2m"
_RESET: Final = "\x1b[0m"
_DEFAULT_SIZE: Final = (80, 24)
_COLORS: Final[dict[EventKind, str]] = {
    "starting": _YELLOW,
    "started": "\x1b[32m",
    "start_failed": _RED,
    "failed": _RED,
    "stopping": _YELLOW,
    "stop_failed": _RED,
}


@dataclass
class Row:
    """What is known of one resource."""

    resource_name: str
    kind: EventKind
    began: float
    start_duration: float | None = None
    stop_duration: float | None = None
    exception: BaseException | None = None
    has_failed: bool = False
    changed: int = 0
    detail: str | None = None

    @property
    def error(self) -> str | None:
        """The failure in one line (read late: a cause is set after the event)."""
        return None if self.exception is None else describe_error(self.exception)


class Tracker:
    """One row per resource, in the order they started."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.has_start_failed = False
        self._events = 0

    def record(self, event: ResourceEvent, now: float) -> None:
        """Update the resource's row with `event`, which happened at `now`."""
        kind = event.kind
        row = self.rows.get(event.resource_name)
        if kind == "status":
            # A running resource's news: the row keeps its state.
            if row is not None:
                row.detail = event.detail
                self._events += 1
                row.changed = self._events
            return
        if row is None:
            row = self.rows[event.resource_name] = Row(event.resource_name, kind, now)
        row.kind = kind
        self._events += 1
        row.changed = self._events
        if kind in _IN_PROGRESS:
            row.began = now
        elif kind in ("started", "start_failed"):
            row.start_duration = event.duration
        elif kind in ("stopped", "stop_failed"):
            row.stop_duration = event.duration
        if kind in ("start_failed", "failed"):
            row.has_failed = True
        if kind == "start_failed":
            self.has_start_failed = True
        if event.error is not None:
            row.exception = event.error

    def outcome(self, row: Row) -> str:
        """Say how the resource ended: "stopped", "rolled back", "failed"..."""
        if row.has_failed and row.kind == "stopped":
            return "failed"
        if row.kind == "stopped" and self.has_start_failed:
            return "rolled back"
        return _STATES[row.kind]

    def table(self) -> list[str]:
        """The final table: each resource's start and stop times and outcome."""
        width = max([len("resource"), *(len(name) for name in self.rows)])
        lines = [f"{'resource':<{width}}  {'start':>9}  {'stop':>9}  outcome"]
        for row in self.rows.values():
            outcome = self.outcome(row)
            if row.error is not None:
                outcome += f": {row.error}"
            lines.append(
                f"{row.resource_name:<{width}}  {format_duration(row.start_duration)}"
                f"  {format_duration(row.stop_duration)}  {outcome}"
            )
        return lines


def describe_error(error: BaseException) -> str:
    """One line about `error`: its summary, and its cause if it has one."""
    if isinstance(error, LifespanKitError):
        text = error.summary()
        cause = error.__cause__
        if cause is not None:
            text += f" ({type(cause).__name__}: {cause})"
        return text
    return f"{type(error).__name__}: {error}"


def format_duration(seconds: float | None) -> str:
    """Right-aligned milliseconds (or seconds past one); "-" for unknown."""
    if seconds is None:
        return f"{'-':>9}"
    if seconds >= 1:
        return f"{seconds:>7.2f} s"
    return f"{seconds * 1000:>6.1f} ms"


class Display:
    """Show a `Tracker`'s rows, live on a terminal, then as a final table.

    While live, the rows are a block at the bottom of the terminal, erased and
    drawn again on every change. Whatever else is written to the terminal goes
    through `write_line` or `write_above`, which write it above the block, so
    that the next redraw never erases it.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        is_live: bool,
        has_color: bool,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.1,
        size: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.tracker = Tracker()
        self.stream = stream
        self.is_live = is_live
        self._has_color = has_color
        self._clock = clock
        self._interval = interval
        self._size = size or self._terminal_size
        # Reentrant: a signal handler that writes may interrupt a draw.
        self._lock = threading.RLock()
        self._drawn = 0
        self._pending: dict[int, tuple[TextIO, str]] = {}
        self._is_busy = threading.Event()  # a resource is starting or stopping
        self._closed = threading.Event()
        self._ticker = threading.Thread(
            target=self._tick, name="lifespan-kit display", daemon=True
        )

    def __enter__(self) -> Display:
        if self.is_live:
            self._ticker.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closed.set()
        self._is_busy.set()  # wake the ticker, so that it sees it is closed
        if self.is_live:
            self._ticker.join()
        with self._lock:
            self._erase()
            self._write_pending()
            if self.tracker.rows:
                self.stream.write("\n".join(self.tracker.table()) + "\n")
                self.stream.flush()

    def listen(self, event: ResourceEvent) -> None:
        """The event listener: record the event and redraw."""
        with self._lock:
            self.tracker.record(event, self._clock())
            if any(row.kind in _IN_PROGRESS for row in self.tracker.rows.values()):
                self._is_busy.set()
            else:
                self._is_busy.clear()
            if self.is_live and not self._closed.is_set():
                self._draw()

    def write_line(self, line: str) -> None:
        """Write a log line above the live block."""
        self.write_above(line + "\n", self.stream)

    def write_above(self, text: str, target: TextIO) -> None:
        """Write `text` to `target`, a stream on the same terminal, above the block.

        While live, only whole lines are written; the rest of a line waits for
        its end (or for the display to close).
        """
        with self._lock:
            if self._closed.is_set() or not self.is_live:
                target.write(text)
                target.flush()
                return
            _, pending = self._pending.pop(id(target), (target, ""))
            lines, newline, rest = (pending + text).rpartition("\n")
            if rest:
                self._pending[id(target)] = (target, rest)
            if newline:
                self._erase()
                self.stream.flush()  # the erasing reaches the terminal first
                target.write(lines + newline)
                target.flush()
                self._draw()

    def _write_pending(self) -> None:
        """Write the unfinished lines of outside writes, each ended."""
        for target, rest in self._pending.values():
            target.write(rest + "\n")
            target.flush()
        self._pending.clear()

    def _tick(self) -> None:
        """Redraw while a resource is starting or stopping, to show its time."""
        while self._is_busy.wait() and not self._closed.wait(self._interval):
            with self._lock:
                self._draw()

    def _erase(self) -> None:
        if self._drawn:
            # Back to the block's first line, then clear to the end of the screen.
            self.stream.write(f"\r\x1b[{self._drawn}A\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        self._erase()
        rows = list(self.tracker.rows.values())
        if not rows:
            self.stream.flush()
            return
        columns, lines = self._size()
        # Every line of the block must fit on the screen, unwrapped: the next
        # redraw goes back up by as many lines as it drew.
        shown = _shown(rows, max(lines - 1, 2))
        width = max(len(row.resource_name) for row in shown)
        now = self._clock()
        out = [self._line(row, width, now, columns - 1) for row in shown]
        if len(shown) < len(rows):
            out.append(f"  ({len(rows) - len(shown)} more not shown)"[: columns - 1])
        self.stream.write("".join(line + "\n" for line in out))
        self._drawn = len(out)
        self.stream.flush()

    def _line(self, row: Row, width: int, now: float, columns: int) -> str:
        name = f"  {row.resource_name:<{width}}  "
        state = f"{_STATES[row.kind]:<15}"
        duration = f"  {format_duration(_elapsed(row, now))}"
        if row.detail is not None and row.kind == "started":
            duration += f"  {row.detail}"
        if len(name) + len(state) + len(duration) > columns:
            return (name + state + duration)[:columns].rstrip()
        if self._has_color:
            state = f"{_COLORS.get(row.kind, _DIM)}{state}{_RESET}"
        return name + state + duration

    def _terminal_size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (OSError, ValueError):
            return _DEFAULT_SIZE
        return size.columns or _DEFAULT_SIZE[0], size.lines or _DEFAULT_SIZE[1]


class DisplayHandler(logging.Handler):
    """A logging handler that writes through the `Display`, above its block."""

    def __init__(self, display: Display) -> None:
        super().__init__()
        self._display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._display.write_line(self.format(record))
        except Exception:  # logging's own convention: report, never raise
            self.handleError(record)


def _elapsed(row: Row, now: float) -> float | None:
    """Seconds in the current phase, or the duration of the last one."""
    if row.kind in _IN_PROGRESS:
        return now - row.began
    if row.kind in ("started", "start_failed"):
        return row.start_duration
    return row.stop_duration


def _shown(rows: list[Row], limit: int) -> list[Row]:
    """The rows that fit in `limit` lines, in their order; one line says the rest.

    Those in progress come first, then the ones that changed last.
    """
    if len(rows) <= limit:
        return rows
    ranked = sorted(
        rows, key=lambda row: (row.kind in _IN_PROGRESS, row.changed), reverse=True
    )
    kept = {row.resource_name for row in ranked[: limit - 1]}
    return [row for row in rows if row.resource_name in kept]
