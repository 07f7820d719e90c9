"""Random graphs with injected faults: the orchestrator's guarantees hold on every one.

Each example draws a dependency graph (1 to 40 resources), how each resource is
written (an async or sync generator, an async or sync context manager, a class,
an async function, some run in a thread of their own), a fault for each (a
start or teardown that raises, hangs, swallows its cancellation or blocks the
event loop; a generator that never yields or yields twice; a task crashing in
the resource's task group during its start or while it runs), and
what happens around the lifespan: an outer cancellation at a random moment of
a start, of the body or of a teardown (or after a random number of event loop
turns, or of seconds), a body that raises, the lifespan entered in one task
and left in another. It runs on asyncio and on trio, in the sequential mode,
with a limit of 3 and with no limit, and checks what users rely on: what
started is stopped exactly once, in reverse dependency order (the exact
reverse start order in the sequential mode), no teardown is cut short except
by its own stop_timeout, every failure is a documented error naming its
resource, listener events pair up, no task outlives the lifespan, each
resource is entered and exited in one task (or thread), and nothing hangs.
The same examples run with each step of the lifespan in its own asyncio
`run_until_complete`; graphs with missing names, cycles and unknown bundle
fields fail before anything starts.

Clocks: asyncio runs on the real clock, with short real timeouts. Trio runs on
a mock clock that jumps ahead whenever every task is waiting, so a hang costs
no real time; that clock does not move while code blocks the event loop, so a
start or teardown that blocks the loop overruns its timeout only on a real
clock. An example with a resource run in a thread has trio's clock follow the
real one, as waiting for a thread looks like idleness to the mock clock.

The number of examples per property is ``LIFESPAN_KIT_EXAMPLES`` (default 300);
``LIFESPAN_KIT_EXPLORE=1`` draws fresh examples instead of replaying the fixed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import sys
import threading
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import anyio
import anyio.lowlevel
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from lifespan_kit import Bundle, Lifespan, Registry, ResourceEvent, ResourceMap
from lifespan_kit.errors import (
    DefinitionError,
    LifespanKitError,
    MultipleYieldError,
    NoYieldError,
    ResourceFailedError,
    ShutdownError,
    StartCancelledError,
    StartTimeoutError,
    StartupError,
    StopTimeoutError,
)

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import BaseExceptionGroup

EXAMPLES = int(os.environ.get("LIFESPAN_KIT_EXAMPLES", "300"))
# CI replays the same examples every run; set LIFESPAN_KIT_EXPLORE=1 to draw new ones.
DERANDOMIZE = not os.environ.get("LIFESPAN_KIT_EXPLORE")
DATABASE = (
    None if DERANDOMIZE else DirectoryBasedExampleDatabase(".hypothesis/examples")
)
# pytest-timeout is the net under each property's own bounds; the properties
# run EXAMPLES examples each, so their net grows with the count.
PROPERTY_TIMEOUT = 120 + EXAMPLES
TIMEOUT = 0.02  # the timeout that cuts a hanging start or teardown
# A start or teardown that blocks the event loop (or its thread) for BLOCK
# seconds, past a timeout of BLOCK_TIMEOUT.
BLOCK = 0.01
BLOCK_TIMEOUT = 0.002
# Resources that do not hang get a long timeout: on a real clock, a loaded
# machine can stall the loop past 20 ms with nothing wrong.
HEALTHY_TIMEOUT = 10.0

Fault = Literal[
    "none",
    # In the start:
    "raise_start",
    "hang_start",
    "swallow_start",
    "no_yield",
    "crash_start",
    "block_start",
    # In the teardown, or while running:
    "raise_stop",
    "hang_stop",
    "swallow_stop",
    "yield_twice",
    "crash_running",
    "block_stop",
]
START_FAULTS: frozenset[Fault] = frozenset(
    {
        "raise_start",
        "hang_start",
        "swallow_start",
        "no_yield",
        "crash_start",
        "block_start",
    }
)
STOP_FAULTS: frozenset[Fault] = frozenset(
    {"raise_stop", "hang_stop", "swallow_stop", "yield_twice", "block_stop"}
)
Shape = Literal[
    "agen",  # an async generator function
    "acm",  # a function returning an async context manager (asynccontextmanager)
    "coro",  # an async function: no teardown
    "gen",  # a sync generator function
    "cm",  # a function returning a sync context manager (contextmanager)
    "cm_class",  # a sync context manager class
    "gen_thread",  # a sync generator function, thread=True
    "cm_class_thread",  # a sync context manager class, thread=True
]
THREAD_SHAPES: frozenset[Shape] = frozenset({"gen_thread", "cm_class_thread"})
_SYNC_FAULTS: tuple[Fault, ...] = (
    "raise_start",
    "no_yield",
    "block_start",
    "raise_stop",
    "yield_twice",
    "block_stop",
)
_CLASS_FAULTS: tuple[Fault, ...] = (
    "raise_start",
    "block_start",
    "raise_stop",
    "block_stop",
)
FAULTS_BY_SHAPE: dict[Shape, tuple[Fault, ...]] = {
    "agen": tuple(sorted(START_FAULTS | STOP_FAULTS | {"crash_running"})),
    "acm": tuple(sorted(START_FAULTS | STOP_FAULTS | {"crash_running"})),
    "coro": tuple(sorted(START_FAULTS - {"no_yield"})),
    "gen": _SYNC_FAULTS,
    "cm": _SYNC_FAULTS,
    "cm_class": _CLASS_FAULTS,
    "gen_thread": _SYNC_FAULTS,
    "cm_class_thread": _CLASS_FAULTS,
}
# Generators say they never yielded, or yielded twice, in their own error;
# contextlib's context managers raise a RuntimeError that becomes the cause.
OWN_YIELD_ERRORS: frozenset[Shape] = frozenset({"agen", "gen", "gen_thread"})
# When the outer cancellation comes: at the nth step of resources in a phase
# ("start" also covers the rollback of a failed start), after n turns of the
# event loop ("ticks"), or after n milliseconds ("delay").
Cancel = Literal["none", "start", "body", "teardown", "ticks", "delay"]
# How the lifespan is driven: `async with` in one task; entered in a child
# task and left in its parent; each step in its own `run_until_complete`.
Entry = Literal["same", "split", "steps"]


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """Trio gets a mock clock, so hangs and timeouts cost no real time."""
    if request.param == "trio":
        from trio.testing import MockClock

        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return ("asyncio", {})


@pytest.fixture(autouse=True)
def frozen_heap() -> Iterator[None]:
    """Keep full garbage collections of the test session's heap out of the runs.

    On a real clock the timeouts are short; a collection over everything the
    session allocated can pause the loop for longer than a timeout.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@dataclass(frozen=True)
class Scenario:
    """A graph, how each resource is written and fails, and what happens around."""

    dependencies: tuple[tuple[int, ...], ...]
    shapes: tuple[Shape, ...]
    faults: tuple[Fault, ...]
    cancel: Cancel = "none"
    cancel_at: int = 0
    body_raises: bool = False
    entry: Entry = "same"
    concurrency: int | None = None
    listen: bool = False

    @property
    def names(self) -> list[str]:
        return [f"r{index}" for index in range(len(self.faults))]

    @property
    def has_threads(self) -> bool:
        return any(shape in THREAD_SHAPES for shape in self.shapes)


@st.composite
def graphs(draw: st.DrawFn) -> tuple[tuple[int, ...], ...]:
    """Draw a DAG: each resource depends on up to 3 earlier ones."""
    size = draw(st.integers(min_value=1, max_value=40))
    return tuple(
        tuple(
            sorted(
                draw(st.sets(st.integers(min_value=0, max_value=index - 1), max_size=3))
            )
        )
        if index
        else ()
        for index in range(size)
    )


# Each example's resources are written in one style: async only, async and
# sync, or async and sync with some in threads.
ASYNC_SHAPES: list[Shape] = ["agen", "agen", "agen", "acm", "coro"]
SYNC_SHAPES: list[Shape] = [*ASYNC_SHAPES, "gen", "cm", "cm_class"]
STYLES: list[list[Shape]] = [
    ASYNC_SHAPES,
    ASYNC_SHAPES,
    SYNC_SHAPES,
    [*SYNC_SHAPES, "gen_thread", "cm_class_thread"],
]


@st.composite
def scenarios(
    draw: st.DrawFn, *, entries: Sequence[Entry] = ("same", "split")
) -> Scenario:
    """Draw a graph, shapes, faults and what happens around the lifespan."""
    dependencies = draw(graphs())
    size = len(dependencies)
    style = draw(st.sampled_from(STYLES))
    shapes = tuple(draw(st.sampled_from(style)) for _ in range(size))
    # Faults in every phase, or only after the start (so that most bodies run).
    phases = draw(st.sampled_from(["all", "all", "after_start"]))
    faults: list[Fault] = []
    for shape in shapes:
        choices = [
            fault
            for fault in FAULTS_BY_SHAPE[shape]
            if phases == "all" or fault not in START_FAULTS
        ]
        none: list[Fault] = ["none"] * max(4 * len(choices), 1)
        faults.append(draw(st.sampled_from(none + choices)))
    steps_only = entries == ("steps",)
    cancels: list[Cancel] = (
        ["none"]
        if steps_only
        else ["none", "none", "start", "body", "teardown", "ticks", "delay"]
    )
    return Scenario(
        dependencies=dependencies,
        shapes=shapes,
        faults=tuple(faults),
        cancel=draw(st.sampled_from(cancels)),
        cancel_at=draw(st.integers(min_value=0, max_value=2 * size + 2)),
        body_raises=draw(st.booleans()),
        entry=draw(st.sampled_from(entries)),
        concurrency=draw(st.sampled_from([None, 1, 3])),
        listen=draw(st.booleans()),
    )


Place = tuple[str, int]


@dataclass
class Log:
    """Every step of every resource, with the task (or thread) it ran in."""

    loop_thread: int
    on_step: Callable[[], None]
    entries: list[tuple[str, str, Place]] = field(default_factory=list)

    def add(self, step: str, name: str) -> None:
        thread = threading.get_ident()
        if thread == self.loop_thread:
            self.entries.append((step, name, ("task", anyio.get_current_task().id)))
            self.on_step()
        else:
            self.entries.append((step, name, ("thread", thread)))

    def steps(self, step: str) -> list[str]:
        return [name for kind, name, _ in self.entries if kind == step]

    def index(self, step: str, name: str) -> int:
        return next(
            i
            for i, (kind, who, _) in enumerate(self.entries)
            if (kind, who) == (step, name)
        )


class BodyError(Exception):
    """Raised by the body of the lifespan."""


class CrashError(Exception):
    """Raised by a task in a resource's task group."""


async def start_fault(fault: Fault) -> None:
    """Misbehave during an async start as the fault says."""
    if fault == "raise_start":
        raise OSError("start failed")
    if fault == "hang_start":
        await anyio.sleep_forever()
    if fault == "swallow_start":
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass
    if fault == "crash_start":
        async with anyio.create_task_group() as tg:
            tg.start_soon(crash_soon)
            await anyio.sleep_forever()
    if fault == "block_start":
        time.sleep(BLOCK)  # noqa: ASYNC251  # blocks the loop on purpose


async def crash_soon() -> None:
    await anyio.lowlevel.checkpoint()
    raise CrashError("a task crashed during the start")


async def crash_when(crash: anyio.Event) -> None:
    await crash.wait()
    raise CrashError("a task crashed while running")


async def stop_fault(fault: Fault, name: str, log: Log) -> None:
    """Run an async teardown that misbehaves as the fault says; log how it ended."""
    try:
        await anyio.lowlevel.checkpoint()
        log.add("stopping", name)
        if fault == "raise_stop":
            raise OSError("stop failed")
        if fault == "hang_stop":
            await anyio.sleep_forever()
        if fault == "swallow_stop":
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                log.add("swallowed", name)
        if fault == "block_stop":
            time.sleep(BLOCK)  # noqa: ASYNC251  # blocks the loop on purpose
    except anyio.get_cancelled_exc_class():
        log.add("exit_cancelled", name)
        raise
    except OSError:
        log.add("exit_raised", name)
        raise
    log.add("exit_done", name)


def sync_start_fault(fault: Fault) -> None:
    """Misbehave during a sync start as the fault says."""
    if fault == "raise_start":
        raise OSError("start failed")
    if fault == "block_start":
        time.sleep(BLOCK)


def sync_stop_fault(fault: Fault, name: str, log: Log) -> None:
    """Run a sync teardown that misbehaves as the fault says; log how it ended."""
    log.add("stopping", name)
    if fault == "raise_stop":
        log.add("exit_raised", name)
        raise OSError("stop failed")
    if fault == "block_stop":
        time.sleep(BLOCK)
    log.add("exit_done", name)


def async_generator(
    name: str, fault: Fault, log: Log
) -> Callable[..., AsyncIterator[str]]:
    """An async generator factory that records its life and misbehaves as planned."""

    async def factory(**_: object) -> AsyncIterator[str]:
        log.add("enter", name)
        try:
            await anyio.lowlevel.checkpoint()
            log.add("starting", name)
            await start_fault(fault)
        except BaseException:
            log.add("start_aborted", name)
            raise
        if fault == "no_yield":
            return
        log.add("ready", name)
        try:
            yield name
        except BaseException:  # pragma: no cover  # only if the contract breaks
            log.add("thrown_in", name)
            raise
        log.add("exit_begin", name)
        await stop_fault(fault, name, log)
        if fault == "yield_twice":
            yield name

    return factory


def crashing_generator(
    name: str, log: Log, crash: anyio.Event
) -> Callable[..., AsyncIterator[str]]:
    """An async generator that holds a task group whose task crashes on `crash`."""

    async def factory(**_: object) -> AsyncIterator[str]:
        log.add("enter", name)
        is_ready = False
        try:
            async with anyio.create_task_group() as tg:
                try:
                    await anyio.lowlevel.checkpoint()
                    log.add("starting", name)
                    tg.start_soon(crash_when, crash)
                except BaseException:
                    log.add("start_aborted", name)
                    raise
                log.add("ready", name)
                is_ready = True
                try:
                    yield name
                except BaseException:  # pragma: no cover  # only if the contract breaks
                    log.add("thrown_in", name)
                    raise
                log.add("exit_begin", name)
                tg.cancel_scope.cancel()
        finally:
            if is_ready:
                # The teardown goes on after its task group, crashed or not.
                await anyio.lowlevel.checkpoint()
                log.add("exit_done", name)

    return factory


def coroutine(name: str, fault: Fault, log: Log) -> Callable[..., object]:
    """An async function: a start only, no teardown."""

    async def factory(**_: object) -> str:
        log.add("enter", name)
        try:
            await anyio.lowlevel.checkpoint()
            log.add("starting", name)
            await start_fault(fault)
        except BaseException:
            log.add("start_aborted", name)
            raise
        log.add("ready", name)
        return name

    return factory


def sync_generator(name: str, fault: Fault, log: Log) -> Callable[..., Iterator[str]]:
    """A sync generator factory that records its life and misbehaves as planned."""

    def factory(**_: object) -> Iterator[str]:
        log.add("enter", name)
        try:
            log.add("starting", name)
            sync_start_fault(fault)
        except BaseException:
            log.add("start_aborted", name)
            raise
        if fault == "no_yield":
            return
        log.add("ready", name)
        try:
            yield name
        except BaseException:  # pragma: no cover  # only if the contract breaks
            log.add("thrown_in", name)
            raise
        log.add("exit_begin", name)
        sync_stop_fault(fault, name, log)
        if fault == "yield_twice":
            yield name

    return factory


def sync_class(name: str, fault: Fault, log: Log) -> type[AbstractContextManager[str]]:
    """A sync context manager class that records its life and misbehaves."""

    class Resource(AbstractContextManager[str]):
        def __init__(self, **_: object) -> None:
            pass

        def __enter__(self) -> str:
            log.add("enter", name)
            try:
                log.add("starting", name)
                sync_start_fault(fault)
            except BaseException:
                log.add("start_aborted", name)
                raise
            log.add("ready", name)
            return name

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            if exc is not None:  # pragma: no cover  # only if the contract breaks
                log.add("thrown_in", name)
            log.add("exit_begin", name)
            sync_stop_fault(fault, name, log)

    return Resource


def factory_for(
    name: str, shape: Shape, fault: Fault, log: Log, crash: anyio.Event
) -> Callable[..., object]:
    """Build the resource `name`, written as `shape`, misbehaving as `fault`."""
    if shape in ("agen", "acm"):
        factory = (
            crashing_generator(name, log, crash)
            if fault == "crash_running"
            else async_generator(name, fault, log)
        )
        return factory if shape == "agen" else asynccontextmanager(factory)
    if shape == "coro":
        return coroutine(name, fault, log)
    if shape in ("gen", "gen_thread"):
        return sync_generator(name, fault, log)
    if shape == "cm":
        return contextlib.contextmanager(sync_generator(name, fault, log))
    return sync_class(name, fault, log)


def start_timeout(fault: Fault) -> float:
    if fault in ("hang_start", "swallow_start"):
        return TIMEOUT
    return BLOCK_TIMEOUT if fault == "block_start" else HEALTHY_TIMEOUT


def stop_timeout(fault: Fault) -> float:
    if fault in ("hang_stop", "swallow_stop"):
        return TIMEOUT
    return BLOCK_TIMEOUT if fault == "block_stop" else HEALTHY_TIMEOUT


def leaves(error: BaseException) -> Iterator[BaseException]:
    """Flatten exception groups."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


@dataclass
class Outcome:
    """What the caller saw."""

    body_ran: bool = False
    body_done: bool = False
    error: BaseException | None = None
    cancelled: bool = False
    cancel_requested: bool = False
    failure: ResourceFailedError | None = None
    events_when_failed: list[tuple[str, str]] = field(default_factory=list)
    teardown_began: float = 0.0
    teardown_time: float = 0.0


class Harness:
    """One example: its registry, its log, and what happens around the lifespan."""

    def __init__(self, scenario: Scenario, *, real_clock: bool) -> None:
        self.scenario = scenario
        self.real_clock = real_clock
        self.log = Log(threading.get_ident(), self.on_step)
        self.events: list[tuple[str, str, BaseException | None]] = []
        self.outcome = Outcome()
        self.phase: Literal["start", "body", "teardown", "done"] = "start"
        self.steps_in_phase = 0
        self.outer: anyio.CancelScope | None = None
        self.crash = anyio.Event()
        self.body_error = BodyError("from the body")
        self.registry = Registry()
        names = scenario.names
        for index, name in enumerate(names):
            shape = scenario.shapes[index]
            fault = scenario.faults[index]
            self.registry.add(
                name,
                factory_for(name, shape, fault, self.log, self.crash),
                depends={f"d{d}": names[d] for d in scenario.dependencies[index]},
                start_timeout=start_timeout(fault),
                stop_timeout=stop_timeout(fault),
                thread=shape in THREAD_SHAPES,
            )
        if scenario.listen:
            self.registry.add_listener(self.listen)

    def listen(self, event: ResourceEvent) -> None:
        self.events.append((event.kind, event.resource_name, event.error))

    def lifespan(self) -> Lifespan[ResourceMap]:
        return self.registry.lifespan(concurrency=self.scenario.concurrency)

    def on_step(self) -> None:
        """Count a step; cancel from outside when the drawn one comes."""
        if self.phase != self.scenario.cancel:
            return
        cancel_at = self.scenario.cancel_at
        if self.steps_in_phase == (
            cancel_at % 3 if self.phase == "body" else cancel_at
        ):
            self.cancel()
        self.steps_in_phase += 1

    def cancel(self) -> None:
        assert self.outer is not None
        self.outer.cancel()
        self.outcome.cancel_requested = True

    async def watch(self) -> None:
        """Cancel from outside after some event loop turns, or some time."""
        if self.scenario.cancel == "ticks":
            for _ in range(self.scenario.cancel_at):
                await anyio.lowlevel.checkpoint()
        else:
            await anyio.sleep(self.scenario.cancel_at / 1000)
        self.cancel()

    async def body(self, lifespan: Lifespan[ResourceMap]) -> None:
        """The code that runs while the resources run."""
        outcome = self.outcome
        outcome.body_ran = True
        self.phase = "body"
        self.steps_in_phase = 0
        try:
            self.on_step()
            self.crash.set()
            if "crash_running" in self.scenario.faults:
                # Reported while the body runs, which it does not cancel.
                outcome.failure = await lifespan.wait_failed()
                outcome.events_when_failed = [e[:2] for e in self.events]
            self.on_step()
            await anyio.lowlevel.checkpoint()
            self.on_step()
            await anyio.lowlevel.checkpoint()
            outcome.body_done = True
            if self.scenario.body_raises:
                raise self.body_error
        finally:
            self.phase = "teardown"
            self.steps_in_phase = 0
            outcome.teardown_began = anyio.current_time()

    def budget(self) -> float:
        """Seconds the whole example may take: every timeout that fires, and slack."""
        faults = self.scenario.faults
        waits = TIMEOUT * sum(
            fault in ("hang_start", "swallow_start", "hang_stop", "swallow_stop")
            for fault in faults
        )
        blocks = BLOCK * sum(fault in ("block_start", "block_stop") for fault in faults)
        return 2 * (waits + blocks) + self.scenario.cancel_at / 1000 + 5.0


@asynccontextmanager
async def entered_in_child_task(
    lifespan: Lifespan[ResourceMap],
) -> AsyncIterator[ResourceMap]:
    """Enter `lifespan` in a child task; leave it in this one, as `async with` does."""
    values: list[ResourceMap] = []
    errors: list[Exception] = []

    async def enter() -> None:
        try:
            values.append(await lifespan.__aenter__())
        except Exception as exc:
            errors.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(enter)
        if errors:
            raise errors[0]
        yield values[0]
    except BaseException as exc:
        # Cancelled, or the body raised: leave what was entered all the same.
        if values:
            await lifespan.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    await lifespan.__aexit__(None, None, None)


async def run(harness: Harness) -> None:
    """Run the example's lifespan under its outside events."""
    scenario = harness.scenario
    outcome = harness.outcome
    lifespan = harness.lifespan()
    with anyio.CancelScope() as outer:
        harness.outer = outer
        async with anyio.create_task_group() as tg:
            if scenario.cancel in ("ticks", "delay"):
                tg.start_soon(harness.watch)
            try:
                async with (
                    lifespan
                    if scenario.entry == "same"
                    else entered_in_child_task(lifespan)
                ):
                    await harness.body(lifespan)
            except Exception as exc:
                outcome.error = exc
            harness.phase = "done"
            if outcome.body_ran:
                outcome.teardown_time = anyio.current_time() - outcome.teardown_began
            tg.cancel_scope.cancel()  # the watcher, if it did not cancel yet
    outcome.cancelled = outer.cancelled_caught


def run_in_steps(harness: Harness, loop: asyncio.AbstractEventLoop) -> None:
    """Run the lifespan with each step in its own `run_until_complete`."""
    outcome = harness.outcome
    lifespan = harness.lifespan()
    try:
        loop.run_until_complete(lifespan.__aenter__())
    except Exception as exc:
        outcome.error = exc
        return
    try:
        loop.run_until_complete(harness.body(lifespan))
    except Exception as exc:
        loop.run_until_complete(lifespan.__aexit__(type(exc), exc, exc.__traceback__))
        outcome.error = exc
    else:
        try:
            loop.run_until_complete(lifespan.__aexit__(None, None, None))
        except Exception as exc:
            outcome.error = exc
    outcome.teardown_time = loop.time() - outcome.teardown_began


def resource_threads() -> set[threading.Thread]:
    return {
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("lifespan_kit resource")
    }


def join_resource_threads(before: set[threading.Thread]) -> None:
    """Wait for the threads of resources given up on to finish, as they do."""
    for thread in resource_threads() - before:
        thread.join(timeout=5)
        assert not thread.is_alive(), f"{thread.name} never ended"


def live_tasks(backend: str) -> set[object]:
    """Every task of the event loop."""
    if backend == "asyncio":
        return set(asyncio.all_tasks())
    import trio

    found: set[object] = set()
    waiting = [trio.lowlevel.current_root_task()]
    while waiting:
        task = waiting.pop()
        assert task is not None
        found.add(task)
        for nursery in task.child_nurseries:
            waiting.extend(nursery.child_tasks)
    return found


def has_teardown(shape: Shape) -> bool:
    return shape != "coro"


def overruns(harness: Harness, name: str) -> bool:
    """Whether the start of `name`, once ready, overran and is undone."""
    index = harness.scenario.names.index(name)
    fault = harness.scenario.faults[index]
    return fault == "swallow_start" or (fault == "block_start" and harness.real_clock)


def is_given_up(harness: Harness, name: str) -> bool:
    """Whether the event loop stops waiting for a step of `name` in its thread."""
    index = harness.scenario.names.index(name)
    return (
        harness.real_clock
        and harness.scenario.shapes[index] in THREAD_SHAPES
        and harness.scenario.faults[index] in ("block_start", "block_stop")
    )


def fails_to_start(harness: Harness, name: str) -> bool:
    index = harness.scenario.names.index(name)
    fault = harness.scenario.faults[index]
    return fault in START_FAULTS and (fault != "block_start" or harness.real_clock)


def fails_to_stop(harness: Harness, name: str) -> bool:
    index = harness.scenario.names.index(name)
    fault = harness.scenario.faults[index]
    return fault in STOP_FAULTS and (fault != "block_stop" or harness.real_clock)


def check_log(harness: Harness) -> None:
    """Started => stopped once, whole teardowns, one place, order both ways."""
    scenario = harness.scenario
    log = harness.log
    names = scenario.names
    ready = log.steps("ready")
    assert log.steps("thrown_in") == [], "an exception was thrown into a resource"
    entered = log.steps("enter")
    assert len(entered) == len(set(entered)), "a resource was entered twice"
    for index, name in enumerate(names):
        shape = scenario.shapes[index]
        fault = scenario.faults[index]
        places = {place for _, who, place in log.entries if who == name}
        assert len(places) <= 1, f"{name} entered and exited in different places"
        for kind, _ in places:
            expected_kind = "thread" if shape in THREAD_SHAPES else "task"
            assert kind == expected_kind, f"{name} ran in a {kind}"
        stops = log.steps("exit_begin").count(name)
        if name not in ready or not has_teardown(shape):
            assert stops == 0, f"{name} stopped but never started"
            continue
        assert stops == 1, f"{name} stopped {stops} times"
        ends = [
            step
            for step, who, _ in log.entries
            if who == name and step in ("exit_done", "exit_raised", "exit_cancelled")
        ]
        assert len(ends) == 1, f"{name}'s teardown ended {ends}"
        if ends == ["exit_cancelled"]:
            # Only its own stop_timeout may cut a teardown: one that hangs, or
            # one whose tiny timeout passed before it began to block.
            assert fault in ("hang_stop", "block_stop"), f"{name}'s teardown was cut"
        if ends == ["exit_raised"]:
            assert fault == "raise_stop"
    for index, name in enumerate(names):
        deps = [names[d] for d in scenario.dependencies[index]]
        if name in entered:
            for dep in deps:
                assert log.index("ready", dep) < log.index("enter", name), (
                    f"{name} began before {dep} was ready"
                )
        if name not in ready or is_given_up(harness, name):
            continue
        end = max(
            (i for i, (_, who, _) in enumerate(log.entries) if who == name),
        )
        for dep in deps:
            if has_teardown(scenario.shapes[names.index(dep)]):
                assert end < log.index("exit_begin", dep), (
                    f"{dep} stopped before its dependent {name}"
                )
    if scenario.concurrency == 1:
        started = [
            name
            for name in ready
            if has_teardown(scenario.shapes[names.index(name)])
            and not overruns(harness, name)
            and not is_given_up(harness, name)
        ]
        stopped = [name for name in log.steps("exit_begin") if name in started]
        assert stopped == started[::-1], "not the exact reverse of the start order"


def check_documented(harness: Harness, error: BaseException) -> None:
    """Each leaf is the body's error or a documented error naming its resource."""
    names = harness.scenario.names
    for leaf in leaves(error):
        if leaf is harness.body_error:
            continue
        assert isinstance(leaf, LifespanKitError), f"undocumented {leaf!r}"
        assert leaf.code, f"{leaf!r} has no code"
        assert leaf.resource_name in names, f"{leaf!r} names no resource"


def check_start_error(harness: Harness, error: StartupError) -> None:
    """A start failure is the one its resource's fault calls for."""
    name = error.resource_name
    assert name is not None
    assert name in harness.log.steps("enter"), f"{name} failed but never started"
    assert fails_to_start(harness, name), f"{name} failed to start: {error!r}"
    index = harness.scenario.names.index(name)
    fault = harness.scenario.faults[index]
    shape = harness.scenario.shapes[index]
    if fault in ("hang_start", "swallow_start", "block_start"):
        assert isinstance(error, StartTimeoutError), repr(error)
    elif fault == "no_yield" and shape in OWN_YIELD_ERRORS:
        assert isinstance(error, NoYieldError), repr(error)
    else:
        assert type(error) is StartupError, repr(error)
        causes = list(leaves(error.__cause__)) if error.__cause__ else []
        expected = {
            "raise_start": OSError,
            "no_yield": RuntimeError,
            "crash_start": CrashError,
        }[fault]
        assert [type(c) for c in causes] == [expected], repr(causes)
    if isinstance(error, StartTimeoutError) and error.blocked:
        assert fault == "block_start", f"{name} blamed for blocking the loop"
        assert shape not in THREAD_SHAPES, f"{name} blocked in its thread"


def check_stop_error(harness: Harness, error: ShutdownError) -> None:
    """A teardown failure is the one its resource's fault calls for."""
    name = error.resource_name
    assert name is not None
    assert fails_to_stop(harness, name), f"{name} failed to stop: {error!r}"
    index = harness.scenario.names.index(name)
    fault = harness.scenario.faults[index]
    shape = harness.scenario.shapes[index]
    if fault in ("hang_stop", "swallow_stop", "block_stop"):
        assert isinstance(error, StopTimeoutError), repr(error)
    elif fault == "yield_twice" and shape in OWN_YIELD_ERRORS:
        assert isinstance(error, MultipleYieldError), repr(error)
    else:
        assert type(error) is ShutdownError, repr(error)
        expected = OSError if fault == "raise_stop" else RuntimeError
        assert type(error.__cause__) is expected, repr(error.__cause__)
    if isinstance(error, StopTimeoutError) and error.blocked:
        assert fault == "block_stop", f"{name} blamed for blocking the loop"
        assert shape not in THREAD_SHAPES, f"{name} blocked in its thread"


def check_errors(harness: Harness) -> None:
    """Every failure reported, as the documented error its fault calls for."""
    scenario = harness.scenario
    outcome = harness.outcome
    error = outcome.error
    if error is not None:
        check_documented(harness, error)
    found = list(leaves(error)) if error is not None else []
    for leaf in found:
        if isinstance(leaf, StartupError):
            check_start_error(harness, leaf)
        if isinstance(leaf, ShutdownError):
            check_stop_error(harness, leaf)
    if outcome.body_ran:
        # Nothing but the outer cancellation cancels the body (not a crash).
        assert outcome.body_done or outcome.cancel_requested, "the body was cut"
        entered = harness.log.steps("enter")
        overran = [n for n in entered if fails_to_start(harness, n)]
        assert not overran, f"the body ran although {overran} failed to start"
    if outcome.body_done:
        stopped_badly = {
            n
            for n in harness.log.steps("ready")
            if fails_to_stop(harness, n) and not overruns(harness, n)
        }
        crashed = {
            n
            for n, fault in zip(scenario.names, scenario.faults, strict=True)
            if fault == "crash_running"
        }
        if crashed:
            assert outcome.failure is not None
            assert outcome.failure.resource_name in crashed
            if scenario.listen:
                assert ("failed", outcome.failure.resource_name) in (
                    outcome.events_when_failed
                ), "the failure was not told to listeners when it happened"
        if scenario.body_raises:
            assert error is harness.body_error, "the body's exception was replaced"
            notes = "\n".join(getattr(error, "__notes__", []))
            for name in stopped_badly | crashed:
                assert f"Resource '{name}' " in notes, f"{name}'s failure was lost"
            return
        if not stopped_badly and not crashed:
            assert error is None, f"unexpected error {error!r}"
            return
        assert error is not None, "failures were lost"
        failed = {e.resource_name for e in found if isinstance(e, ResourceFailedError)}
        assert failed == crashed, f"runtime failures {failed} != {crashed}"
        for leaf in found:
            if isinstance(leaf, ResourceFailedError):
                assert type(leaf.__cause__) is CrashError, repr(leaf.__cause__)
        reported = {e.resource_name for e in found if isinstance(e, ShutdownError)}
        assert reported == stopped_badly, f"{reported} != {stopped_badly}"
        assert len(found) == len(failed) + len(reported), found
        return
    if outcome.body_ran or error is None:
        # Cancelled from outside before the body ended: the cancellation
        # propagates, and failures are logged.
        assert error is None, f"{error!r} instead of the cancellation"
        assert outcome.cancelled, "the body never ran and nothing was reported"
        return
    # The startup failed: every start failure, then every rollback failure.
    assert any(isinstance(e, StartupError) for e in found), "no StartupError"
    assert all(isinstance(e, StartupError | ShutdownError) for e in found), found
    if scenario.listen:
        told = {
            name
            for kind, name, event_error in harness.events
            if kind == "start_failed"
            and not isinstance(event_error, StartCancelledError)
        }
        raised = {e.resource_name for e in found if isinstance(e, StartupError)}
        assert raised == told, f"start failures {told} raised as {raised}"


def check_events(harness: Harness) -> None:
    """Each resource's events pair up, whatever happened."""
    moves = {
        ("idle", "starting"): "starting",
        ("starting", "started"): "running",
        ("starting", "start_failed"): "start_failed",
        ("running", "failed"): "failed",
        ("running", "stopping"): "stopping",
        ("failed", "stopping"): "stopping",
        ("start_failed", "stopping"): "stopping",
        ("stopping", "stopped"): "stopped",
        ("stopping", "stop_failed"): "stopped",
    }
    for name in harness.scenario.names:
        state = "idle"
        kinds = [kind for kind, who, _ in harness.events if who == name]
        for kind in kinds:
            moved = moves.get((state, kind))
            assert moved is not None, f"{name}: {kind} after {state} in {kinds}"
            state = moved
        assert state in ("idle", "start_failed", "stopped"), f"{name}: {kinds}"
        is_started = "started" in kinds
        is_ready = name in harness.log.steps("ready")
        assert not is_started or is_ready, f"{name}: {kinds} but never ready"
        assert not is_started or not overruns(harness, name), f"{name} overran"
        if harness.outcome.body_ran:
            assert is_started, f"the body ran, and {name}: {kinds}"


def stop_cost(harness: Harness, index: int) -> float:
    fault = harness.scenario.faults[index]
    if fault in ("hang_stop", "swallow_stop"):
        return TIMEOUT
    return BLOCK if fault == "block_stop" and harness.real_clock else 0.0


def slowest_stop_path(harness: Harness, costs: list[float]) -> float:
    """The costliest sequence of teardowns that must run one after the other.

    A resource stops after its dependents; and resources that shared a host
    task (their starts never suspended) stop one after the other, in reverse
    start order.
    """
    names = harness.scenario.names
    log = harness.log
    # The body ran: every resource started. One with no teardown stops at
    # once, but still after its dependents.
    started = log.steps("ready")
    task_of = {who: place for step, who, place in log.entries if step == "ready"}
    finish: dict[str, float] = {}
    for position in reversed(range(len(started))):
        name = started[position]
        index = names.index(name)
        before = [
            other
            for other in started[position + 1 :]
            if index in harness.scenario.dependencies[names.index(other)]
            or task_of[other] == task_of[name]
        ]
        finish[name] = costs[index] + max((finish[o] for o in before), default=0.0)
    return max(finish.values(), default=0.0)


def teardown_bound(harness: Harness) -> float:
    """The longest the teardown may take: its slowest chain of teardowns, and slack."""
    scenario = harness.scenario
    costs = [stop_cost(harness, i) for i in range(len(scenario.faults))]
    # Threaded resources do not show which host task awaited them.
    if scenario.concurrency == 1 or scenario.has_threads:
        slowest = sum(costs)
    else:
        slowest = slowest_stop_path(harness, costs)
    if not harness.real_clock:
        return slowest + 1e-6  # virtual time: nothing else takes any
    # Any teardown that blocks the loop holds every other one meanwhile; a
    # loaded machine adds scheduling delays, but nothing near a hang.
    blocking = BLOCK * sum(fault == "block_stop" for fault in scenario.faults)
    return slowest * 1.5 + blocking + 2.0


def check_invariants(harness: Harness) -> None:
    check_log(harness)
    check_errors(harness)
    if harness.scenario.listen:
        check_events(harness)
    if harness.outcome.body_ran:
        bound = teardown_bound(harness)
        assert harness.outcome.teardown_time <= bound, (
            harness.outcome.teardown_time,
            bound,
        )


@contextlib.contextmanager
def real_time_if(is_real: bool) -> Iterator[None]:
    """Have trio's mock clock follow the real clock meanwhile, if `is_real`."""
    if not is_real:
        yield
        return
    import trio
    from trio.testing import MockClock

    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, MockClock)
    clock.autojump_threshold = math.inf
    clock.rate = 1.0
    try:
        yield
    finally:
        clock.rate = 0.0
        clock.autojump_threshold = 0.0


_property_settings = settings(
    max_examples=EXAMPLES,
    derandomize=DERANDOMIZE,
    database=DATABASE,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.mark.timeout(PROPERTY_TIMEOUT)
@_property_settings
@given(scenario=scenarios())
async def test_guarantees_hold_on_random_faulty_graphs(
    scenario: Scenario, anyio_backend_name: str
) -> None:
    """Ordering, teardown, error reporting and cancellation hold under any faults."""
    is_trio = anyio_backend_name == "trio"
    threads = resource_threads()
    tasks = live_tasks(anyio_backend_name)
    with real_time_if(is_trio and scenario.has_threads):
        harness = Harness(scenario, real_clock=not is_trio or scenario.has_threads)
        with anyio.fail_after(harness.budget()):
            await run(harness)
    join_resource_threads(threads)
    await anyio.lowlevel.checkpoint()
    left = live_tasks(anyio_backend_name) - tasks
    assert not left, f"tasks left running: {left}"
    check_invariants(harness)


@pytest.mark.timeout(PROPERTY_TIMEOUT)
@_property_settings
@given(scenario=scenarios(entries=("steps",)))
def test_guarantees_hold_with_each_step_in_its_own_asyncio_task(
    scenario: Scenario,
) -> None:
    """Entered, run and left in separate `run_until_complete` calls, all holds."""
    threads = resource_threads()
    loop = asyncio.new_event_loop()
    try:

        async def prepare() -> Harness:
            return Harness(scenario, real_clock=True)

        harness = loop.run_until_complete(prepare())
        run_in_steps(harness, loop)
        join_resource_threads(threads)
        loop.run_until_complete(asyncio.sleep(0))
        assert not asyncio.all_tasks(loop), "tasks left running"
    finally:
        loop.close()
    check_invariants(harness)


@dataclass(frozen=True)
class BrokenGraph:
    """Resources whose dependencies miss, loop, and a bundle that asks for ghosts."""

    dependencies: tuple[tuple[str, ...], ...]
    missing: frozenset[str]
    ghosts: tuple[str, ...]
    has_bundle: bool
    concurrency: int | None


@st.composite
def broken_graphs(draw: st.DrawFn) -> BrokenGraph:
    """Draw a graph with one or more problems: missing names, cycles, ghost fields."""
    size = draw(st.integers(min_value=1, max_value=12))
    names = [f"r{index}" for index in range(size)]
    dependencies = [
        set(draw(st.sets(st.sampled_from(names), max_size=2))) for _ in names
    ]
    cycles = draw(st.integers(min_value=0, max_value=3))
    for _ in range(cycles):
        cycle = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4))
        for before, after in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
            dependencies[names.index(before)].add(after)
    missing: set[str] = set()
    for number in range(draw(st.integers(min_value=0, max_value=3))):
        name = f"missing{number}"
        missing.add(name)
        dependencies[draw(st.integers(0, size - 1))].add(name)
    has_bundle = draw(st.booleans())
    ghosts = (
        tuple(f"ghost{n}" for n in range(draw(st.integers(0, 2)))) if has_bundle else ()
    )
    if not missing and not ghosts and not cycles:
        # At least one problem: a name nobody registered.
        missing.add("missing")
        dependencies[0].add("missing")
    return BrokenGraph(
        dependencies=tuple(tuple(sorted(deps)) for deps in dependencies),
        missing=frozenset(missing),
        ghosts=ghosts,
        has_bundle=has_bundle,
        concurrency=draw(st.sampled_from([None, 1, 3])),
    )


@pytest.mark.timeout(PROPERTY_TIMEOUT)
@_property_settings
@given(graph=broken_graphs())
async def test_graph_problems_are_reported_before_anything_starts(
    graph: BrokenGraph,
) -> None:
    """Missing names, cycles and unknown bundle fields fail before any start."""
    started: list[str] = []
    registry = Registry()
    names = [f"r{index}" for index in range(len(graph.dependencies))]
    for name, deps in zip(names, graph.dependencies, strict=True):

        async def factory(*, name: str = name, **_: object) -> str:
            started.append(name)  # pragma: no cover  # only if the contract breaks
            return name  # pragma: no cover  # as above

        registry.add(name, factory, depends={f"p_{d}": d for d in deps})
    bundle: type[Bundle] | None = None
    if graph.has_bundle:
        # A field per resource, and one per ghost, all typed `object`.
        fields = dict.fromkeys((*names, *graph.ghosts), object)
        bundle = types.new_class(
            "Resources",
            (Bundle,),
            exec_body=lambda ns: ns.update(__annotations__=fields),
        )
    with pytest.raises(DefinitionError) as info:
        async with registry.lifespan(bundle, concurrency=graph.concurrency):
            pass  # pragma: no cover  # only if the contract breaks
    assert started == []
    message = str(info.value)
    for name in sorted(graph.missing | set(graph.ghosts)):
        assert f"'{name}'" in message, f"{name} is not reported"


@pytest.mark.timeout(PROPERTY_TIMEOUT)
@settings(
    max_examples=EXAMPLES,
    derandomize=DERANDOMIZE,
    database=DATABASE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(dependencies=graphs())
async def test_sequential_mode_equals_nested_async_with(
    dependencies: tuple[tuple[int, ...], ...],
) -> None:
    """With concurrency=1 the log equals plain nested `async with` in check() order."""
    names = [f"r{index}" for index in range(len(dependencies))]
    registry = Registry()
    log = Log(threading.get_ident(), lambda: None)
    for index, name in enumerate(names):
        registry.add(
            name,
            async_generator(name, "none", log),
            depends={f"d{d}": names[d] for d in dependencies[index]},
        )
    async with registry.lifespan(concurrency=1):
        pass
    expected = Log(threading.get_ident(), lambda: None)
    order = registry.check()

    async with contextlib.AsyncExitStack() as stack:
        for name in order:
            factory = async_generator(name, "none", expected)
            await stack.enter_async_context(asynccontextmanager(factory)())
    assert [step[:2] for step in log.entries] == [step[:2] for step in expected.entries]


class LifespanMachine(RuleBasedStateMachine):
    """Start, check, override and stop lifespans in any order; nothing leaks."""

    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = start_blocking_portal(self.backend)
        self.portal = self._portal_cm.__enter__()
        self.open: dict[str, int] = {}
        self.healthy = True
        self.registry = Registry(stop_timeout=1)
        self.registry.add("pool", self.counted("pool"), health=self.check)
        self.registry.add("cache", self.counted("cache"), depends={"pool": "pool"})
        self.running: list[tuple[AbstractContextManager[ResourceMap], set[str]]] = []
        self.lifespans: list[Lifespan[ResourceMap]] = []

    def counted(self, name: str) -> Callable[..., AsyncIterator[str]]:
        async def factory(**_: object) -> AsyncIterator[str]:
            self.open[name] = self.open.get(name, 0) + 1
            await anyio.lowlevel.checkpoint()
            yield name
            await anyio.lowlevel.checkpoint()
            self.open[name] -= 1

        return factory

    def check(self, value: object) -> bool:
        return self.healthy

    @rule(concurrency=st.sampled_from([None, 1]))
    def start(self, concurrency: int | None) -> None:
        lifespan = self.registry.lifespan(concurrency=concurrency)
        context = self.portal.wrap_async_context_manager(lifespan)
        resources = context.__enter__()
        # Only the factories count themselves; an overridden cache is a value.
        counted = {name for name, value in resources.items() if value == name}
        self.running.append((context, counted))
        self.lifespans.append(lifespan)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.running) - 1))
        context, _ = self.running.pop(index)
        self.lifespans.pop(index)
        context.__exit__(None, None, None)

    @rule()
    def toggle_health(self) -> None:
        self.healthy = not self.healthy

    @precondition(lambda self: self.lifespans)
    @rule()
    def check_health(self) -> None:
        report = self.portal.call(self.lifespans[-1].health)
        assert report.is_healthy == self.healthy

    @rule()
    def override_cache(self) -> None:
        self.registry = self.registry.override(cache="in-memory cache")

    @invariant()
    def nothing_leaks(self) -> None:
        for name in ("pool", "cache"):
            live = sum(name in counted for _, counted in self.running)
            assert self.open.get(name, 0) == live, (name, self.open)

    def teardown(self) -> None:
        while self.running:
            context, _ = self.running.pop()
            context.__exit__(None, None, None)
        self._portal_cm.__exit__(None, None, None)
        assert all(count == 0 for count in self.open.values()), self.open


class TrioLifespanMachine(LifespanMachine):
    """The same machine on trio."""

    backend = "trio"


_machine_settings = settings(
    max_examples=max(EXAMPLES // 3, 20),
    stateful_step_count=20,
    derandomize=DERANDOMIZE,
    database=DATABASE,
    deadline=None,
)


@pytest.mark.timeout(PROPERTY_TIMEOUT)
class TestLifespanMachineOnAsyncio(LifespanMachine.TestCase):  # type: ignore[misc,valid-type]  # a class hypothesis builds
    """The machine's rules in any order, on asyncio."""

    settings = _machine_settings


@pytest.mark.timeout(PROPERTY_TIMEOUT)
class TestLifespanMachineOnTrio(TrioLifespanMachine.TestCase):  # type: ignore[misc,valid-type]  # as above
    """The machine's rules in any order, on trio."""

    settings = _machine_settings
