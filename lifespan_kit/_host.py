"""The cancel scopes of one task that hosts resources, shared where none is needed.

A resource that keeps a task group or a cancel scope open across its yield
needs a cancel scope of its own around it: its deadlines and shield must cover
what it holds, and scopes must be left in the reverse order they were entered.
Most resources hold nothing of the kind, and entering and leaving a scope for
each of them costs more than the rest of their start and stop together. So a
host task keeps one *shared* scope open: each start runs in it, and a resource
that turns out to hold something inside it takes it over as its own, leaving
the next start to open a fresh shared scope. Teardowns of the others run in a
shared scope again. A deadline that fires spends a shared scope: it is left
right away, and the next step opens a fresh one.

Deadlines are armed only when a step suspends: a step that finishes without
yielding to the event loop cannot be cancelled, and one that blocks is caught
afterwards by its overrun. Each step's own running time is added to a `Meter`,
so that an overrun is blamed on the resource that blocked the event loop, not
on one that merely waited while another blocked it.

Host tasks are not children of the task that enters a lifespan: `spawner_for`
starts them detached (an asyncio task, a trio system task), so a lifespan can
be entered in one task and exited in another, and the caller's cancellation
never reaches a resource.
"""

from __future__ import annotations

import contextvars
import functools
import math
import operator
import sys
import time
import types
from collections.abc import Callable, Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    # Annotations only: anyio.abc's event loop module imports socket and more.
    from anyio.abc import AsyncBackend

ResultT = TypeVar("ResultT")


class Scope(Protocol):
    """What the host and instances use of a cancel scope (anyio's or trio's)."""

    @property
    def deadline(self) -> float: ...
    @deadline.setter
    def deadline(self, value: float, /) -> None: ...
    @property
    def shield(self) -> bool: ...
    @shield.setter
    def shield(self, value: bool, /) -> None: ...
    @property
    def cancel_called(self) -> bool: ...
    def cancel(self) -> None: ...
    def __enter__(self) -> object: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> bool: ...


class Meter(Protocol):
    """Where a step's own running time (outside the event loop) is added up.

    `suspended` is set when the step yields to the event loop, `interrupted`
    when an exception (a cancellation) is thrown into it meanwhile.
    """

    busy: float
    suspended: bool
    interrupted: bool


CreateScope = Callable[[bool], Scope]
"""Create an unentered cancel scope, shielded or not."""
Innermost = Callable[[], object]
"""Return the host task's innermost cancel scope."""


class Host:
    """The shared cancel scope of one task that starts and stops resources.

    Create it in that task.
    """

    __slots__ = (
        "_create",
        "_find_innermost",
        "_innermost",
        "_shared",
        "current_time",
        "throws_cancellation",
    )

    def __init__(self, backend: type[AsyncBackend]) -> None:
        self._create, self._find_innermost, clock = scopes_for(backend)
        # The event loop's clock, which deadlines follow.
        self.current_time: Callable[[], float] = clock()
        self._innermost: Innermost | None = None
        # asyncio throws a cancellation into the awaiting coroutine (a `Meter`
        # sees it); trio hands it over inside its own trap, out of sight.
        self.throws_cancellation = backend.__module__ == "anyio._backends._asyncio"
        self._shared: Scope | None = None

    def open_scope(self) -> Scope:
        """Return the entered shared scope, entering a new one if there is none."""
        scope = self._shared
        if scope is None:
            # Shielded: nothing from outside the host task may cancel what
            # it runs (the event loop's end cancels trio's system tasks).
            scope = self._shared = self._create(True)
            scope.__enter__()
        return scope

    def holds_nothing(self, scope: Scope) -> bool:
        """Tell whether `scope` is the task's innermost: nothing was left open in it."""
        innermost = self._innermost
        if innermost is None:
            # Found once the task has entered a scope (anyio keeps no state before).
            innermost = self._innermost = self._find_innermost()
        return innermost() is scope

    def keeps(self, scope: Scope, is_cancelled: bool) -> bool:
        """Tell whether a resource just started in `scope` must own it from now on.

        It must when it holds a cancel scope (or a task group) open inside it,
        or when the scope was cancelled (`is_cancelled`). Otherwise the scope
        stays shared.
        """
        innermost = self._innermost
        if innermost is None:
            # Found once the task has entered a scope (anyio keeps no state before).
            innermost = self._innermost = self._find_innermost()
        if innermost() is scope and not is_cancelled:
            return False
        self._shared = None  # `scope` is the shared one: each start runs in it
        return True

    def forget(self, scope: Scope) -> None:
        """Stop sharing `scope`: a resource owns it, or it is being left."""
        if scope is self._shared:
            self._shared = None

    def close(self) -> None:
        """Leave the shared scope, if one is open (it must be the innermost)."""
        scope = self._shared
        if scope is not None:
            self._shared = None
            scope.__exit__(None, None, None)


@types.coroutine
def armed(
    coro: Coroutine[Any, Any, ResultT], scope: Scope, deadline: float, meter: Meter
) -> Generator[Any, Any, ResultT]:
    """Await `coro`; bring `scope`'s deadline forward to `deadline` if it suspends.

    The time `coro` runs in each of its steps is added to `meter.busy`.
    """
    began = time.perf_counter()
    try:
        signal = coro.send(None)
    except StopIteration as done:
        meter.busy += time.perf_counter() - began
        return done.value  # type: ignore[no-any-return]  # StopIteration.value is Any
    except BaseException:
        meter.busy += time.perf_counter() - began
        raise
    meter.busy += time.perf_counter() - began
    return (yield from _relay(coro, signal, scope, deadline, meter))


def _relay(
    coro: Coroutine[Any, Any, ResultT] | Generator[Any, Any, ResultT],
    signal: object,
    scope: Scope,
    deadline: float,
    meter: Meter,
) -> Generator[Any, Any, ResultT]:
    """Finish awaiting `coro`, which suspended on `signal`, under `deadline`.

    The first step of an awaitable is taken by hand, to learn whether it
    suspends at all; this passes `signal` on to the event loop, then relays
    between the two until `coro` returns, adding each step's time to `meter`.
    """
    meter.suspended = True
    if deadline < scope.deadline:
        scope.deadline = deadline
    clock = time.perf_counter
    while True:
        try:
            sent = yield signal
        except GeneratorExit:  # noqa: PERF203  # each turn is one resumption
            coro.close()
            raise
        except BaseException as exc:
            meter.interrupted = True
            began = clock()
            try:
                signal = coro.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]  # as above
            finally:
                meter.busy += clock() - began
        else:
            began = clock()
            try:
                signal = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]  # as above
            finally:
                meter.busy += clock() - began


resumed = types.coroutine(_relay)


def disarm(scope: Scope) -> None:
    """Remove a deadline set on `scope` for the step that just ended."""
    if scope.deadline != math.inf:
        scope.deadline = math.inf


def _nothing() -> object:
    return None


def _keep_cancellation() -> None:
    return None


@functools.cache
def forgiver_for(backend: type[AsyncBackend]) -> Callable[[], None]:
    """Return how to withdraw the cancellation the current task just caught.

    A task that catches an asyncio cancellation on purpose, and goes on
    working, must withdraw it (``Task.uncancel``), or what it runs next sees
    the task as still being cancelled. trio has nothing to withdraw.
    """
    if backend.__module__ != "anyio._backends._asyncio":
        return _keep_cancellation
    import asyncio

    def uncancel() -> None:
        # Task.uncancel is new in Python 3.11; 3.10 counts no cancellations.
        withdraw = getattr(asyncio.current_task(), "uncancel", None)
        if withdraw is not None:  # pragma: no branch  # always there on 3.11+
            withdraw()

    return uncancel


Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]], str], None]
"""Start a detached task running the coroutine function, under the given name."""

# Detached asyncio tasks are referenced here until they finish, as asyncio asks.
_detached: set[object] = set()


@functools.cache
def spawner_for(backend: type[AsyncBackend]) -> Spawn:
    """Return how to start a task that belongs to no task group on `backend`.

    The task inherits the caller's context variables, as with `start_soon`.
    It must never raise: nothing would receive the exception.
    """
    if backend.__module__ == "anyio._backends._trio":
        import trio

        def spawn_system_task(
            func: Callable[[], Coroutine[Any, Any, None]], name: str
        ) -> None:
            trio.lowlevel.spawn_system_task(
                func, name=name, context=contextvars.copy_context()
            )

        return spawn_system_task
    import asyncio

    def create_task(func: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        task = asyncio.get_running_loop().create_task(func(), name=name)
        _detached.add(task)
        task.add_done_callback(_detached.discard)

    return create_task


@functools.cache
def scopes_for(
    backend: type[AsyncBackend],
) -> tuple[CreateScope, Callable[[], Innermost], Callable[[], Callable[[], float]]]:
    """Return how to create scopes on `backend`, find the innermost, read the clock.

    Finding the innermost scope reads the event loop library's task state. Where
    it cannot be read, the probe finds nothing, and every resource owns the
    scope it started in.
    """
    if backend.__module__ == "anyio._backends._trio":
        return _trio_scopes()
    if backend.__module__ == "anyio._backends._asyncio":
        return _asyncio_scopes(backend)
    return _anyio_scopes(backend), lambda: _nothing, lambda: backend.current_time


def _anyio_scopes(backend: type[AsyncBackend]) -> CreateScope:
    def create(shield: bool) -> Scope:
        return backend.create_cancel_scope(shield=shield)

    return create


def _asyncio_scopes(
    backend: type[AsyncBackend],
) -> tuple[CreateScope, Callable[[], Innermost], Callable[[], Callable[[], float]]]:
    import asyncio  # only here: trio programs need not import it

    task_states = vars(sys.modules[backend.__module__]).get("_task_states")

    def find_innermost() -> Innermost:
        if task_states is None:  # pragma: no cover  # an anyio release that moved it
            return _nothing
        state = task_states.get(asyncio.current_task())
        if not hasattr(state, "cancel_scope"):  # pragma: no cover  # as above
            return _nothing
        return functools.partial(operator.attrgetter("cancel_scope"), state)

    def clock() -> Callable[[], float]:
        return asyncio.get_running_loop().time

    return _anyio_scopes(backend), find_innermost, clock


def _trio_scopes() -> tuple[
    CreateScope, Callable[[], Innermost], Callable[[], Callable[[], float]]
]:
    import trio  # only on the trio backend, which has it

    # trio's own scopes are what anyio's wrap on trio: the same semantics,
    # without a wrapper around every call.
    def create(shield: bool) -> Scope:
        return trio.CancelScope(shield=shield)

    read = operator.attrgetter("_cancel_status._scope")

    def find_innermost() -> Innermost:
        task = trio.lowlevel.current_task()
        try:
            read(task)
        except AttributeError:  # pragma: no cover  # a trio release that changed it
            return _nothing
        return functools.partial(read, task)

    def clock() -> Callable[[], float]:
        return trio.lowlevel.current_clock().current_time

    return create, find_innermost, clock
