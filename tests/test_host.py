"""Shared cancel scopes: who owns a scope, deadlines armed on suspension, fallbacks."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from lifespan_kit import Lifespan, Registry
from lifespan_kit import _host as host_module
from lifespan_kit._host import Host, armed, scopes_for
from lifespan_kit._lifespan import shorten_teardown
from lifespan_kit.errors import StartTimeoutError, StopTimeoutError
from tests.fakes import Recorder

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import ExceptionGroup


def current_backend() -> type[Any]:
    return anyio.lowlevel.current_token().backend_class


class Meter:
    """Adds up the time the awaited steps run, as an instance does."""

    busy = 0.0
    suspended = False
    interrupted = False


async def test_resource_started_in_the_shared_scope_owns_it_only_if_it_holds_one() -> (
    None
):
    """The probe sees whether a start left a cancel scope open in the shared one."""
    host = Host(current_backend())
    scope = host.open_scope()
    assert not host.keeps(scope, False)
    assert host.open_scope() is scope
    with anyio.CancelScope():  # noqa: ASYNC100  # held open, as a resource would
        assert host.keeps(scope, False)
        assert host.open_scope() is not scope
        host.close()
    scope.__exit__(None, None, None)


async def test_cancelled_shared_scope_is_owned_by_the_start_it_cancelled() -> None:
    """A shared scope whose deadline fired is not reused by the next start."""
    host = Host(current_backend())
    scope = host.open_scope()
    scope.cancel()
    assert host.keeps(scope, scope.cancel_called)
    scope.__exit__(None, None, None)
    fresh = host.open_scope()
    assert fresh is not scope
    assert not fresh.cancel_called
    host.close()


async def test_armed_sets_the_deadline_only_when_the_step_suspends() -> None:
    """A step that returns at once leaves the deadline alone; one that waits sets it."""

    async def at_once() -> str:
        return "done"

    async def waits() -> str:
        await anyio.lowlevel.checkpoint()
        return "waited"

    with anyio.CancelScope() as scope:
        quick, slow = Meter(), Meter()
        assert await armed(at_once(), scope, 1e9, quick) == "done"
        assert scope.deadline == math.inf
        assert not quick.suspended
        assert await armed(waits(), scope, 1e9, slow) == "waited"
        assert scope.deadline == 1e9
        assert slow.suspended


async def test_armed_passes_a_cancellation_into_the_step() -> None:
    """A deadline reached while the step waits cancels the step itself."""
    cancelled: list[str] = []

    async def hangs() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append("step")
            raise

    with anyio.fail_after(5), anyio.CancelScope() as scope:
        await armed(hangs(), scope, anyio.current_time() + 0.01, Meter())
    assert scope.cancelled_caught
    assert cancelled == ["step"]


async def test_armed_returns_what_a_step_that_catches_the_cancellation_returns() -> (
    None
):
    """A step that swallows its cancellation still hands back its value."""

    async def swallows() -> str:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            return "late"
        return "never"  # pragma: no cover

    with anyio.fail_after(5), anyio.CancelScope() as scope:
        result = await armed(swallows(), scope, anyio.current_time() + 0.01, Meter())
    assert result == "late"


def test_closing_an_armed_step_closes_the_step() -> None:
    """Closing the wrapper while the step is suspended closes the step too."""
    closed: list[str] = []

    class Suspend:
        def __await__(self) -> Generator[str, None, None]:
            yield "suspended"

    async def step() -> None:
        try:
            await Suspend()
        finally:
            closed.append("step")

    class Deadline:
        deadline = math.inf

    coro: Coroutine[Any, Any, None] = step()
    # A stand-in scope: only its deadline is read.
    wrapper = armed(coro, Deadline(), 1.0, Meter())  # type: ignore[arg-type]
    assert wrapper.send(None) == "suspended"
    wrapper.close()
    assert closed == ["step"]


@pytest.fixture
def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as when the event loop library's task state cannot be read."""
    original = scopes_for

    def without_probe(backend: Any) -> Any:
        create, _, clock = original(backend)
        return create, lambda: host_module._nothing, clock

    monkeypatch.setattr(host_module, "scopes_for", without_probe)


@pytest.mark.usefixtures("no_probe")
async def test_every_resource_owns_its_scope_when_the_probe_finds_nothing(
    concurrency: int | None,
) -> None:
    """Without a readable innermost scope, each start safely keeps its own scope."""
    recorder = Recorder()
    registry = Registry()
    registry.add("db", recorder.generator("db"))
    registry.add("api", recorder.generator("api"), depends={"db": "db"})
    registry.add(
        "hangs",
        recorder.generator("hangs", stop_delay=math.inf),
        depends={"api": "api"},
        stop_timeout=0.02,
    )
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass
    assert [type(e) for e in info.value.exceptions] == [StopTimeoutError]
    assert recorder.events == [
        "start db",
        "start api",
        "start hangs",
        "stop hangs",
        "stop api",
        "stop db",
    ]


async def test_unknown_backend_falls_back_to_anyio_scopes() -> None:
    """A backend not known here gets anyio's scopes and no probe."""

    class OtherBackend:
        @classmethod
        def create_cancel_scope(cls, *, shield: bool) -> anyio.CancelScope:
            return anyio.CancelScope(shield=shield)

        @classmethod
        def current_time(cls) -> float:
            return 1.0

    stand_in: Any = OtherBackend  # not an AsyncBackend subclass
    create, find_innermost, clock = scopes_for(stand_in)
    assert isinstance(create(True), anyio.CancelScope)
    assert find_innermost()() is None
    assert clock()() == 1.0


async def test_holders_and_plain_resources_mix_in_one_chain(
    concurrency: int | None,
) -> None:
    """Resources holding scopes, and ones between them holding none, stop cleanly."""
    events: list[str] = []
    registry = Registry()

    def plain(name: str) -> Any:
        async def factory(**_: object) -> AsyncIterator[str]:
            events.append(f"start {name}")
            yield name
            events.append(f"stop {name}")

        return factory

    async def holds_scope(**_: object) -> AsyncIterator[str]:
        with anyio.CancelScope() as scope:
            events.append("start scope")
            yield "scope"
            events.append("stop scope")
        assert not scope.cancel_called

    async def holds_group(**_: object) -> AsyncIterator[str]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep_forever)
            events.append("start group")
            yield "group"
            events.append("stop group")
            tg.cancel_scope.cancel()

    registry.add("a", plain("a"))
    registry.add("scope", holds_scope, depends={"a": "a"})
    registry.add("b", plain("b"), depends={"scope": "scope"})
    registry.add("c", plain("c"), depends={"b": "b"})
    registry.add("group", holds_group, depends={"c": "c"})
    registry.add("d", plain("d"), depends={"group": "group"})
    with anyio.fail_after(5):
        async with registry.lifespan(concurrency=concurrency) as resources:
            assert resources["group"] == "group"
    names = ["a", "scope", "b", "c", "group", "d"]
    assert events == [f"start {n}" for n in names] + [
        f"stop {n}" for n in reversed(names)
    ]


async def test_holder_that_hangs_on_stop_is_cut_by_its_stop_timeout(
    concurrency: int | None,
) -> None:
    """A resource holding a task group is bounded by stop_timeout, naming it."""
    recorder = Recorder()
    registry = Registry()

    async def holds_group(base: object) -> AsyncIterator[str]:
        async with anyio.create_task_group():
            yield "group"
            await anyio.sleep_forever()

    registry.add("base", recorder.generator("base"))
    registry.add("group", holds_group, stop_timeout=0.02)
    registry.add("top", recorder.generator("top"), depends={"group": "group"})
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass
    (error,) = info.value.exceptions
    assert isinstance(error, StopTimeoutError)
    assert error.resource_name == "group"
    assert recorder.events == ["start base", "start top", "stop top", "stop base"]


async def test_start_timeout_after_resources_sharing_the_scope(
    concurrency: int | None,
) -> None:
    """A start that overruns in the shared scope fails alone; the others stop."""
    recorder = Recorder()
    registry = Registry()
    registry.add("a", recorder.generator("a"))
    registry.add("b", recorder.generator("b"), depends={"a": "a"})
    registry.add(
        "slow",
        recorder.generator("slow", delay=math.inf),
        depends={"b": "b"},
        start_timeout=0.02,
    )
    with anyio.fail_after(5), pytest.raises(StartTimeoutError) as info:
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert info.value.resource_name == "slow"
    assert recorder.events == ["start a", "start b", "start slow", "stop b", "stop a"]


async def test_unlimited_stop_timeout_sets_no_deadline(
    concurrency: int | None,
) -> None:
    """math.inf as stop_timeout lets a teardown take as long as it needs."""
    recorder = Recorder()
    registry = Registry(stop_timeout=math.inf)
    registry.add("slow", recorder.generator("slow", stop_delay=0.01))
    async with registry.lifespan(concurrency=concurrency):
        pass
    assert recorder.events == ["start slow", "stop slow"]


async def test_a_shortened_teardown_does_not_carry_over_to_the_next_run(
    concurrency: int | None,
) -> None:
    """Entering a lifespan again starts from the declared stop_timeout and no report."""
    registry = Registry()
    registry.add("slow", Recorder().generator("slow", stop_delay=0.05))
    lifespan = registry.lifespan(concurrency=concurrency)
    with anyio.fail_after(5), pytest.raises(ExceptionGroup):
        async with lifespan:
            shorten_teardown(lifespan, 0.01)
    with anyio.fail_after(5):
        async with lifespan as resources:
            assert resources["slow"] == "slow"
            assert list(lifespan.report.timings) == ["slow"]


async def test_a_teardown_that_shortens_itself_before_waiting_is_cut_at_the_grace(
    concurrency: int | None,
) -> None:
    """Shortening from the teardown's own first step applies once it waits."""
    registry = Registry(stop_timeout=30)
    lifespan: Lifespan[object]

    async def slow() -> AsyncIterator[str]:
        yield "slow"
        shorten_teardown(lifespan, 0.01)
        await anyio.sleep_forever()

    registry.add("slow", slow)
    lifespan = registry.lifespan(concurrency=concurrency)
    began = time.monotonic()
    with pytest.raises(ExceptionGroup) as info:
        async with lifespan:
            pass
    assert time.monotonic() - began < 5  # the teardown is shielded: no fail_after
    [error] = info.value.exceptions
    assert isinstance(error, StopTimeoutError)
    assert error.shortened_to == 0.01
