"""SIGINT and SIGTERM for the worker runner: counted in a handler, acted on in the loop.

The handler is installed with `signal.signal`, so it runs between two bytecodes
of the main thread even while the event loop is blocked. It only counts the
signal and hands it to the event loop through a thread-safe scheduler
(``loop.call_soon_threadsafe`` on asyncio, ``TrioToken.run_sync_soon`` on
trio), except for the third signal, which exits at once from the handler
itself: that one must work when nothing else does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Final

SHUTDOWN_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
SIGNALS_BEFORE_EXIT: Final = 3

Schedule = Callable[[Callable[[], None]], object]
"""Run a callback soon in the event loop's thread; safe to call from a handler."""

Handler = Callable[[int, FrameType | None], object] | int | None

exit_now: Callable[[int], object] = os._exit
"""How the third signal ends the process: at once, without any cleanup."""


def exit_status(signum: int) -> int:
    """Return the conventional exit status after `signum`: 130, 143, ..."""
    return 128 + signum


class SignalCounter:
    """Count SIGINT and SIGTERM while installed; pass each to the event loop."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._schedule: Schedule | None = None
        self._callback: Callable[[], None] | None = None
        self._previous: dict[int, Handler] = {}

    def install(self) -> bool:
        """Install the handlers, in the main thread only; return whether it did."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in SHUTDOWN_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return True

    def restore(self) -> None:
        """Put back the handlers that were installed before `install()`."""
        for signum, previous in self._previous.items():
            # None: the previous handler was not installed from Python and
            # cannot be reinstalled; the default one is the closest.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def attach(self, schedule: Schedule, callback: Callable[[], None]) -> None:
        """Call `callback` in the loop for each signal, and now for any received."""
        self._schedule = schedule
        self._callback = callback
        if self.received:
            schedule(callback)

    def detach(self) -> None:
        """Stop passing signals to the loop (it is about to end)."""
        self._schedule = self._callback = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if len(self.received) >= SIGNALS_BEFORE_EXIT:
            _exit_at_once(exit_status(self.received[0]))
            return
        schedule, callback = self._schedule, self._callback
        if schedule is not None and callback is not None:
            schedule(callback)


def _exit_at_once(status: int) -> None:
    message = (
        f"lifespan_kit: third signal; exiting now with status {status}, "
        "without waiting for the teardowns still running.\n"
    )
    # Buffered output would be lost by os._exit; a flush interrupted by this
    # handler in the middle of a write can fail, and then there is no more to do.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(OSError):
        os.write(2, message.encode())
    exit_now(status)
