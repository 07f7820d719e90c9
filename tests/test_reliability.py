"""Random graphs with injected faults: the orchestrator's guarantees hold on every one.

Each example draws a dependency graph (1 to 40 resources), a fault for every
resource and one event from outside, runs it on asyncio and on trio, and checks
the invariants that users rely on: nothing leaks, nothing hangs, every error is
reported, and nothing is thrown into a resource that is not its own.

Trio runs on a mock clock that jumps ahead whenever every task is waiting, so a
hang costs no real time; asyncio uses short real timeouts.
The number of examples per property is ``LIFESPAN_KIT_EXAMPLES`` (default 300);
``LIFESPAN_KIT_EXPLORE=1`` draws fresh examples instead of replaying the fixed ones.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
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

from lifespan_kit import Lifespan, Registry, ResourceMap
from lifespan_kit.errors import ShutdownError, StartupError

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

EXAMPLES = int(os.environ.get("LIFESPAN_KIT_EXAMPLES", "300"))
# CI replays the same examples every run; set LIFESPAN_KIT_EXPLORE=1 to draw new ones.
DERANDOMIZE = not os.environ.get("LIFESPAN_KIT_EXPLORE")
DATABASE = (
    None if DERANDOMIZE else DirectoryBasedExampleDatabase(".hypothesis/examples")
)
TIMEOUT = 0.02  # the timeout that cuts a hanging start or teardown
# Resources that do not hang get a long timeout: on asyncio the clock is real,
# and a loaded machine can stall the loop past 20 ms with nothing wrong.
HEALTHY_TIMEOUT = 10.0
HANGS_ON_START: frozenset[Fault] = frozenset({"hang_start", "swallow_start"})
HANGS_ON_STOP: frozenset[Fault] = frozenset({"hang_stop", "swallow_stop"})

Fault = Literal[
    "none",
    "raise_start",
    "hang_start",
    "swallow_start",
    "no_yield",
    "raise_stop",
    "hang_stop",
    "swallow_stop",
    "yield_twice",
]
START_FAULTS: frozenset[Fault] = frozenset(
    {"raise_start", "hang_start", "swallow_start", "no_yield"}
)
STOP_FAULTS: frozenset[Fault] = frozenset(
    {"raise_stop", "hang_stop", "swallow_stop", "yield_twice"}
)
Outside = Literal[
    "none", "body_raises", "cancel_startup", "cancel_body", "cancel_teardown"
]


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

    On asyncio the timeouts are real and short; a collection over everything
    the session allocated can pause the loop for longer than a timeout.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@dataclass(frozen=True)
class Scenario:
    """A graph, one fault per resource, an outside event and a concurrency."""

    dependencies: tuple[tuple[int, ...], ...]
    faults: tuple[Fault, ...]
    outside: Outside
    trigger: int
    concurrency: int | None

    @property
    def names(self) -> list[str]:
        return [f"r{index}" for index in range(len(self.faults))]


@st.composite
def scenarios(draw: st.DrawFn, *, faults: bool = True) -> Scenario:
    """Draw a DAG (each resource depends on up to 3 earlier ones) and its faults."""
    size = draw(st.integers(min_value=1, max_value=40))
    dependencies = tuple(
        tuple(
            sorted(
                draw(st.sets(st.integers(min_value=0, max_value=index - 1), max_size=3))
            )
        )
        if index
        else ()
        for index in range(size)
    )
    none: list[Fault] = ["none"] * 12
    fault_choices = none + sorted(START_FAULTS | STOP_FAULTS)
    drawn: tuple[Fault, ...] = (
        tuple(draw(st.sampled_from(fault_choices)) for _ in range(size))
        if faults
        else tuple(none[:1] * size)
    )
    outside: Outside = (
        draw(
            st.sampled_from(
                [
                    "none",
                    "body_raises",
                    "cancel_startup",
                    "cancel_body",
                    "cancel_teardown",
                ]
            )
        )
        if faults
        else "none"
    )
    return Scenario(
        dependencies=dependencies,
        faults=drawn,
        outside=outside,
        trigger=draw(st.integers(min_value=0, max_value=size - 1)),
        concurrency=draw(st.sampled_from([None, 1, 3])) if faults else 1,
    )


@dataclass
class Log:
    """Every step of every resource, with the task it ran in."""

    entries: list[tuple[str, str, int]] = field(default_factory=list)

    def add(self, step: str, name: str) -> None:
        self.entries.append((step, name, anyio.get_current_task().id))

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


def resource(
    name: str, fault: Fault, log: Log, on_step: Callable[[str, str], None]
) -> Callable[..., AsyncIterator[str]]:
    """Build a resource that records its life and misbehaves as planned."""

    async def factory(**_: object) -> AsyncIterator[str]:
        log.add("enter", name)
        on_step("enter", name)
        try:
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
        on_step("exit", name)
        try:
            await stop_fault(fault)
            if fault == "yield_twice":
                yield name
        finally:
            log.add("exit_end", name)

    factory.__name__ = name
    return factory


async def start_fault(fault: Fault) -> None:
    """Misbehave during the start as the fault says."""
    await anyio.lowlevel.checkpoint()
    if fault == "raise_start":
        raise OSError("start failed")
    if fault == "hang_start":
        await anyio.sleep_forever()
    if fault == "swallow_start":
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass


async def stop_fault(fault: Fault) -> None:
    """Misbehave during the teardown as the fault says."""
    await anyio.lowlevel.checkpoint()
    if fault == "raise_stop":
        raise OSError("stop failed")
    if fault == "hang_stop":
        await anyio.sleep_forever()
    if fault == "swallow_stop":
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass


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
    error: BaseException | None = None
    cancelled: bool = False
    teardown_time: float = 0.0


async def run(scenario: Scenario, log: Log) -> Outcome:
    """Run the scenario's lifespan under its outside event."""
    outcome = Outcome()
    names = scenario.names
    with anyio.CancelScope() as outer:

        def on_step(step: str, name: str) -> None:
            target = names[scenario.trigger]
            if name != target:
                return
            if (step, scenario.outside) in {
                ("enter", "cancel_startup"),
                ("exit", "cancel_teardown"),
            }:
                outer.cancel()

        registry = Registry()
        for index, name in enumerate(names):
            fault = scenario.faults[index]
            registry.add(
                name,
                resource(name, fault, log, on_step),
                depends={f"d{d}": names[d] for d in scenario.dependencies[index]},
                start_timeout=TIMEOUT if fault in HANGS_ON_START else HEALTHY_TIMEOUT,
                stop_timeout=TIMEOUT if fault in HANGS_ON_STOP else HEALTHY_TIMEOUT,
            )
        body_error = BodyError("from the body")
        began = 0.0
        try:
            async with registry.lifespan(concurrency=scenario.concurrency):
                outcome.body_ran = True
                if scenario.outside == "cancel_body":
                    outer.cancel()
                    await anyio.sleep_forever()
                began = anyio.current_time()  # the teardown begins when the body ends
                if scenario.outside == "body_raises":
                    raise body_error
                began = anyio.current_time()
        except Exception as exc:
            outcome.error = exc
        if outcome.body_ran:
            outcome.teardown_time = anyio.current_time() - began
    outcome.cancelled = outer.cancelled_caught
    if scenario.outside == "body_raises" and outcome.body_ran:
        assert outcome.error is body_error, "the body's exception must pass unchanged"
    return outcome


def check_invariants(scenario: Scenario, log: Log, outcome: Outcome) -> None:
    """Assert every guarantee on one run's log and outcome."""
    names = scenario.names
    ready = set(log.steps("ready"))
    assert log.steps("thrown_in") == [], "an exception was thrown into a resource"
    for name in names:
        assert log.steps("enter").count(name) <= 1, f"{name} entered twice"
    for name in ready:
        assert log.steps("exit_begin").count(name) == 1, f"{name} not stopped once"
        assert log.steps("exit_end").count(name) == 1, f"{name} teardown not finished"
        tasks = {task for step, who, task in log.entries if who == name}
        assert len(tasks) == 1, f"{name} entered and exited in different tasks"
    for index, name in enumerate(names):
        deps = [names[d] for d in scenario.dependencies[index]]
        if name in log.steps("enter"):
            entered = log.index("enter", name)
            for dep in deps:
                assert log.index("ready", dep) < entered, f"{name} began before {dep}"
        if name in ready:
            for dep in deps:
                assert log.index("exit_end", name) < log.index("exit_begin", dep), (
                    f"{dep} stopped before its dependent {name}"
                )
    start_failed = {
        n for n in log.steps("enter") if scenario.faults[names.index(n)] in START_FAULTS
    }
    if outcome.cancelled:
        assert outcome.error is None or scenario.outside == "body_raises"
        return
    if start_failed:
        assert not outcome.body_ran, "the body ran although a start failed"
        assert outcome.error is not None, "a failed startup was not reported"
        errors = list(leaves(outcome.error))
        failed = {e.resource_name for e in errors if isinstance(e, StartupError)}
        assert failed, "no StartupError in the failure"
        assert failed <= start_failed, f"{failed} did not fail ({start_failed})"
        return
    assert outcome.body_ran
    expected = {n for n in ready if scenario.faults[names.index(n)] in STOP_FAULTS}
    if scenario.outside == "body_raises":
        assert isinstance(outcome.error, BodyError)
        notes = "\n".join(getattr(outcome.error, "__notes__", []))
        for name in expected:
            assert f"Resource '{name}' " in notes, f"{name}'s failure was lost"
        return
    if not expected:
        assert outcome.error is None, f"unexpected error {outcome.error!r}"
        return
    assert isinstance(outcome.error, ExceptionGroup)
    reported = {
        e.resource_name for e in leaves(outcome.error) if isinstance(e, ShutdownError)
    }
    assert reported == expected, f"teardown failures {reported} != {expected}"


def longest_chain(scenario: Scenario) -> int:
    """Resources on the longest dependency chain."""
    depth: list[int] = []
    for deps in scenario.dependencies:
        depth.append(1 + max((depth[d] for d in deps), default=0))
    return max(depth)


@settings(
    max_examples=EXAMPLES,
    derandomize=DERANDOMIZE,
    database=DATABASE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
async def test_guarantees_hold_on_random_faulty_graphs(scenario: Scenario) -> None:
    """Ordering, teardown, error reporting and cancellation hold under any faults."""
    log = Log()
    with anyio.fail_after(60):
        outcome = await run(scenario, log)
    check_invariants(scenario, log, outcome)
    if outcome.body_ran and not outcome.cancelled:
        # Each teardown along the longest chain takes at most its stop_timeout,
        # plus scheduling slack for real clocks.
        bound = longest_chain(scenario) * TIMEOUT * 1.5 + 0.5
        assert outcome.teardown_time <= bound, (outcome.teardown_time, bound)


@settings(
    max_examples=EXAMPLES,
    derandomize=DERANDOMIZE,
    database=DATABASE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scenario=scenarios(faults=False))
async def test_sequential_mode_equals_nested_async_with(scenario: Scenario) -> None:
    """With concurrency=1 the log equals plain nested `async with` in check() order."""
    names = scenario.names
    registry = Registry()
    log = Log()
    for index, name in enumerate(names):
        registry.add(
            name,
            resource(name, "none", log, lambda step, name: None),
            depends={f"d{d}": names[d] for d in scenario.dependencies[index]},
        )
    async with registry.lifespan(concurrency=1):
        pass
    expected = Log()
    order = registry.check()
    from contextlib import AsyncExitStack, asynccontextmanager

    async with AsyncExitStack() as stack:
        for name in order:
            factory = resource(name, "none", expected, lambda step, name: None)
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
TestLifespanMachineOnAsyncio = LifespanMachine.TestCase
TestLifespanMachineOnAsyncio.settings = _machine_settings
TestLifespanMachineOnTrio = TrioLifespanMachine.TestCase
TestLifespanMachineOnTrio.settings = _machine_settings
