"""A worker that writes to its terminal in every way while resources start and stop.

Run under a pseudo-terminal by tests/test_console.py, as ``python -m
lifespan_kit run tests.noisy_worker:main --concurrency 1``. Every line it
writes is unique, so that a test can check that each is on the final screen
exactly once, in order. ``NOISY_RESOURCES`` (comma-separated) names the
resources; each writes, while it starts and while it stops: a print, a line
half-written then finished after the display had time to redraw, a log line
through the handler that `logging.basicConfig` installed at import, a
warning, and (the first one) a coroutine that is never awaited.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import AsyncIterator, Callable

import anyio

from lifespan_kit import Registry

# At import, before the display starts: this handler holds the real stderr.
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
log = logging.getLogger("noisy")

NAMES = os.environ.get("NOISY_RESOURCES", "settings,database,cache").split(",")
PAUSE = 0.15
"""Longer than the display's redraw interval: it redraws in the middle of a line."""


def expected_lines(names: list[str]) -> list[str]:
    """The lines the worker writes, in order (a warning's first line only)."""
    lines: list[str] = []
    for phase, order in (("start", names), ("stop", names[::-1])):
        for name in order:
            lines.extend(
                [
                    f"print: {phase} {name}",
                    f"half: {phase} {name}, finished: {phase} {name}",
                    f"INFO noisy: log: {phase} {name}",
                    f"UserWarning: warn: {phase} {name}",
                ]
            )
        if phase == "start":
            lines.extend(["print: running", "INFO noisy: log: running"])
    return lines


async def _never_awaited() -> None:
    """Called without `await`: Python warns that it was never awaited."""


async def _write_everything(phase: str, name: str) -> None:
    print(f"print: {phase} {name}")
    sys.stdout.write(f"half: {phase} {name}, ")
    sys.stdout.flush()
    await anyio.sleep(PAUSE)
    print(f"finished: {phase} {name}")
    log.info("log: %s %s", phase, name)
    warnings.warn(f"warn: {phase} {name}", UserWarning, stacklevel=1)


def _resource(name: str) -> Callable[[], AsyncIterator[str]]:
    async def factory() -> AsyncIterator[str]:
        await _write_everything("start", name)
        yield name
        await _write_everything("stop", name)
        if name == NAMES[0]:
            _never_awaited()  # type: ignore[unused-coroutine]  # the point of it

    return factory


registry = Registry()
for _name in NAMES:
    registry.add(_name, _resource(_name))


async def main() -> None:
    """Say it runs, then return."""
    print("print: running")
    log.info("log: running")
