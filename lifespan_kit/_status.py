"""What a running resource tells about itself: its status, and what its start waits for.

Code running as a resource (a background task) can report a status line,
which becomes a "status" event for the listeners, the live display and the
log. Code in a start can say what it waits for, so that a start that times
out there says it in its `StartTimeoutError`.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final, cast

import anyio

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10
    from exceptiongroup import BaseExceptionGroup

from lifespan_kit._report import Monitor

# Set in a background task's own task, before its function runs.
_REPORTER: Final[ContextVar[tuple[Monitor, str] | None]] = ContextVar(
    "lifespan_kit_reporter", default=None
)

# The attribute a cancellation carries out of `waiting_for`.
WAITING_FOR: Final = "lifespan_kit_waiting_for"


def set_reporter(monitor: Monitor, resource_name: str) -> None:
    """Make the current task report its status as `resource_name`."""
    _REPORTER.set((monitor, resource_name))


def report_status(text: str) -> None:
    """Tell the lifespan's listeners the current resource's status, if any runs here."""
    reporter = _REPORTER.get()
    if reporter is None:
        return
    monitor, resource_name = reporter
    if monitor.is_active:
        monitor.emit(resource_name, "status", detail=text)


@contextmanager
def waiting_for(what: str) -> Generator[None, None, None]:
    """Mark a cancellation that ends the block as having waited for `what`."""
    try:
        yield
    except anyio.get_cancelled_exc_class() as exc:
        setattr(exc, WAITING_FOR, what)
        raise


def waited_for(exc: BaseException, depth: int = 3) -> str | None:
    """Return what the start was waiting for when `exc` cancelled it, if known.

    A cancellation that left a task group on its way may come in a group, or
    (on trio) as a new cancellation raised while handling the group.
    """
    what: object = getattr(exc, WAITING_FOR, None)
    if isinstance(what, str):
        return what
    inner: list[BaseException] = []
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        inner.extend(group.exceptions)
    if exc.__context__ is not None:
        inner.append(exc.__context__)
    found = (waited_for(e, depth - 1) for e in inner if depth)
    return next((what for what in found if what is not None), None)
