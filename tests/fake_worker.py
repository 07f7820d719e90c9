"""A worker whose resources say what happens to them, for the runner and CLI tests.

The same module runs in-process (tests call `lifespan_kit.run` or the CLI's
`main`) and in a subprocess (``python -m lifespan_kit run
tests.fake_worker:main``). Every event is written to stdout as one line and
flushed at once, so a test driving a subprocess can wait for a line before it
sends a signal; in-process tests react to the same lines through `HOOKS`.

The resources form a chain, ``first <- second <- third <- pulse``, so the
start and stop orders are the same in the sequential and concurrent modes;
``pulse`` is a background task. ``FAKE_WORKER_MODE`` (comma-separated) picks
the behaviour:

- ``hang-start:<name>`` / ``hang-stop:<name>``: the start or the teardown
  waits until it is cancelled, then says ``cancelled start <name>`` or
  ``cancelled stop <name>``;
- ``gate-stop:<name>``: the teardown waits for a line on stdin, in a worker
  thread that no cancellation reaches;
- ``fail-start:<name>`` / ``fail-stop:<name>``: the start or teardown raises;
- ``crash``: main raises once running; ``return``: main returns once running;
- ``exit``: main raises ``SystemExit(7)`` once running;
- ``background-crash``: the background task raises once main runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.to_thread

from lifespan_kit import Bundle, Registry

HOOKS: list[Callable[[str], None]] = []
"""Called with each event line, in-process only (tests append and remove)."""

EXIT_CODE = 7

STARTED = ["start first", "start second", "start third", "running"]
"""The event lines of a normal start, in order."""
STOPPED = [
    "pulse done",
    "stop third",
    "stopped third",
    "stop second",
    "stopped second",
    "stop first",
    "stopped first",
]
"""The event lines of a full teardown in reverse, in order."""

registry = Registry(stop_timeout=5)


def record(event: str) -> None:
    """Write one event line to stdout, flushed, and call the hooks."""
    sys.stdout.write(f"{event}\n")
    sys.stdout.flush()
    for hook in HOOKS:
        hook(event)


def modes() -> set[str]:
    """The behaviours asked for in FAKE_WORKER_MODE."""
    return set(os.environ.get("FAKE_WORKER_MODE", "").split(","))


async def wait_until_cancelled(what: str) -> None:
    """Wait forever; say so when the wait is cancelled."""
    try:
        await anyio.sleep_forever()
    finally:
        record(f"cancelled {what}")


def chain_link(name: str) -> Callable[..., AsyncIterator[str]]:
    """Return the factory of one resource of the chain."""

    async def factory(**_: str) -> AsyncIterator[str]:
        mode = modes()
        record(f"start {name}")
        if f"hang-start:{name}" in mode:
            await wait_until_cancelled(f"start {name}")
        if f"fail-start:{name}" in mode:
            raise RuntimeError(f"{name} cannot start")
        yield name
        record(f"stop {name}")
        if f"hang-stop:{name}" in mode:
            await wait_until_cancelled(f"stop {name}")
        if f"gate-stop:{name}" in mode:
            await anyio.to_thread.run_sync(sys.stdin.readline)
        if f"fail-stop:{name}" in mode:
            raise RuntimeError(f"{name} cannot stop")
        record(f"stopped {name}")

    factory.__name__ = name
    return factory


registry.add("first", chain_link("first"))
registry.add("second", chain_link("second"), depends={"first": "first"})
registry.add("third", chain_link("third"), depends={"second": "second"})


@registry.resource
def main_is_running() -> anyio.Event:
    """Set by main once it runs; the background task waits for it."""
    return anyio.Event()


@registry.background
async def pulse(third: str, main_is_running: anyio.Event) -> None:
    """A background task that runs until it is cancelled (or crashes)."""
    try:
        await main_is_running.wait()
        if "background-crash" in modes():
            record("pulse crashed")
            raise RuntimeError("the pulse stopped")
        await anyio.sleep_forever()
    finally:
        record("pulse done")


class Resources(Bundle):
    """What main uses: the end of the chain, and the background task."""

    third: str
    main_is_running: anyio.Event
    pulse: None


async def main(resources: Resources) -> None:
    """Say "running", then wait, return, crash or exit as FAKE_WORKER_MODE says."""
    record("running")
    resources.main_is_running.set()
    mode = modes()
    if "crash" in mode:
        raise RuntimeError("main crashed")
    if "exit" in mode:
        raise SystemExit(EXIT_CODE)
    if "return" not in mode:
        await anyio.sleep_forever()
