"""Synchronous resources: entering what a sync factory returns, maybe in a thread.

A sync factory's result is entered as an async one would be: a generator runs
up to its ``yield`` and a context manager is entered with ``with``; at teardown
the generator takes its last step, or ``__exit__(None, None, None)`` runs.
Anything else is the value itself.

With ``thread=True`` the factory's call, that entering and, later, the exit
all run in one thread of the resource's own, so a blocking start or stop never
holds the event loop, and an object bound to the thread that opened it (a
sqlite3 connection) is closed in that thread. The event loop waits for each
step without blocking: the thread schedules a callback on it when a step is
done. A start aborted because another failed is still waited for, up to its
deadline, then undone in its thread like any start that overran. A step the
event loop stops waiting for (at its deadline) is finished by the thread on its
own: what a start given up on opened is left there as soon as the start
returns; then the thread ends.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import math
import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar, cast, final

import anyio
import anyio.lowlevel

from lifespan_kit._report import log_stop_failure
from lifespan_kit._types import SyncExit
from lifespan_kit.errors import MultipleYieldError, NoYieldError, ShutdownError

ResultT = TypeVar("ResultT")

Schedule = Callable[[Callable[[], object]], object]
"""Schedule a callback on an event loop from another thread."""


def is_async_context(result: object) -> bool:
    """Tell whether `result` is an async context manager."""
    # Looked up on the type, as `async with` does: a class is no context manager.
    cls = type(result)
    return hasattr(cls, "__aenter__") and hasattr(cls, "__aexit__")


def is_async(result: object) -> bool:
    """Tell whether the event loop enters `result`, rather than `enter`.

    An async context manager wins over the rest: asyncpg's pool, for one, is
    also awaitable, but only `async with` closes it again. A generator is
    never awaited, even one that is awaitable too.
    """
    return (
        is_async_context(result)
        or inspect.isasyncgen(result)
        or (inspect.isawaitable(result) and not inspect.isgenerator(result))
    )


def enter(
    result: object, resource_name: str, dependency_path: tuple[str, ...]
) -> tuple[object, SyncExit | None]:
    """Enter a generator or a context manager; any other result is the value.

    Returns:
        The value, and what leaves it at teardown (None: nothing to leave).

    Raises:
        NoYieldError: When a generator returns without yielding.
    """
    if inspect.isgenerator(result):
        generator = cast("Generator[object, None, object]", result)
        try:
            value = next(generator)
        except StopIteration:
            raise NoYieldError(resource_name, dependency_path=dependency_path) from None
        return value, functools.partial(_finish_generator, generator, resource_name)
    # As `with` does: the methods are looked up on the type.
    cls = type(result)
    enter_cm = getattr(cls, "__enter__", None)
    exit_cm = getattr(cls, "__exit__", None)
    if enter_cm is None or exit_cm is None:
        return result, None
    value = enter_cm(result)
    # Never another resource's exception: the resource is exited cleanly.
    return value, functools.partial(exit_cm, result, None, None, None)


def _finish_generator(
    generator: Generator[object, None, object], resource_name: str
) -> None:
    try:
        next(generator)
    except StopIteration:
        return
    generator.close()
    raise MultipleYieldError(resource_name)


async def exit_on_loop(exit_sync: SyncExit) -> None:
    """Leave a sync resource started on the event loop: its teardown."""
    exit_sync()


@final
@dataclass(frozen=True, slots=True)
class Entered:
    """What a start in a thread produced.

    Attributes:
        value: The value; when `is_async`, the factory's result instead, for
            the event loop to enter.
        exit: What leaves the value, in the thread (None: nothing to leave).
        is_async: The result is entered on the event loop, not in the thread.
    """

    value: object
    exit: SyncExit | None
    is_async: bool


def enter_in_thread(
    factory: Callable[..., object],
    args: list[object],
    kwargs: dict[str, object],
    resource_name: str,
    dependency_path: tuple[str, ...],
) -> Entered:
    """In the thread: call `factory`, and enter its result unless the loop must."""
    result = factory(*args, **kwargs)
    if is_async(result):
        return Entered(result, None, is_async=True)
    value, exit_sync = enter(result, resource_name, dependency_path)
    return Entered(value, exit_sync, is_async=False)


def _discard(entered: Entered) -> None:
    """Leave what a start nobody waits for any more opened (in its thread)."""
    if entered.exit is not None:
        entered.exit()
    elif inspect.iscoroutine(entered.value):
        entered.value.close()  # it will never be awaited


@final
class ResourceThread:
    """The thread of one resource registered with ``thread=True``.

    Create it on the event loop, in the task that starts the resource; it
    lives from `start` to the end of `stop`.
    """

    __slots__ = ("_context", "_exit", "_jobs", "_resource_name", "_schedule", "_thread")

    def __init__(self, resource_name: str) -> None:
        self._resource_name = resource_name
        self._schedule = _scheduler(anyio.lowlevel.current_token().native_token)
        # The factory sees the caller's context variables, as with anyio.to_thread.
        self._context = contextvars.copy_context()
        # Jobs for the thread, in order; None ends it.
        self._jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._exit: SyncExit | None = None
        self._thread = threading.Thread(
            target=self._serve,
            name=f"lifespan_kit resource '{resource_name}'",
            daemon=True,  # a stop given up on never holds the interpreter's exit
        )

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._context.run(job)

    async def start(self, start: Callable[[], Entered], *, deadline: float) -> Entered:
        """Start the thread and run `start` in it.

        The thread then waits for `stop`, or ends when there is nothing to
        leave. A start cancelled before `deadline` (on the event loop's clock)
        is still waited for until then: another start failed, and what this
        one opens must be left before what it depends on stops. Having
        returned, it is undone as a start that swallowed its cancellation.
        """
        self._thread.start()
        entered = await self._run(
            _Call(start, self._schedule, self._resource_name, discard=_discard),
            deadline,
        )
        if entered.exit is None:
            self._end()
        else:
            self._exit = entered.exit
        return entered

    async def stop(self) -> None:
        """Leave the value in the thread, and end the thread."""
        exit_sync = cast("SyncExit", self._exit)  # `start` set it, or no teardown
        self._exit = None
        await self._run(_Call(exit_sync, self._schedule, self._resource_name))
        self._end()

    async def _run(self, call: _Call[ResultT], deadline: float = -math.inf) -> ResultT:
        self._jobs.put(call)
        try:
            try:
                await call.wait()
            except anyio.get_cancelled_exc_class():
                if not await call.wait_until(deadline):
                    raise
        except BaseException:
            # Given up on (a timeout, an aborted start): the thread finishes
            # the job on its own, leaves what it opened, and ends.
            if call.abandon():
                self._jobs.put(call.discard)
            self._jobs.put(None)
            raise
        return self._outcome(call)

    def _outcome(self, call: _Call[ResultT]) -> ResultT:
        if call.error is not None:
            self._end()
            raise call.error
        return cast("ResultT", call.result)

    def _end(self) -> None:
        """End the thread, which has nothing left to do, and wait for it to."""
        self._jobs.put(None)
        # Not a wait for user code: the thread only has to return.
        self._thread.join()


def _scheduler(token: object) -> Schedule:
    """Return how another thread schedules a callback on `token`'s event loop."""
    # asyncio's event loop has call_soon_threadsafe; trio's token, run_sync_soon.
    name = (
        "call_soon_threadsafe"
        if hasattr(token, "call_soon_threadsafe")
        else "run_sync_soon"
    )
    schedule: Schedule = getattr(token, name)
    return schedule


@final
class _Call(Generic[ResultT]):
    """One job for the thread, awaited on the event loop."""

    __slots__ = (
        "_discard",
        "_done",
        "_func",
        "_lock",
        "_resource_name",
        "_schedule",
        "_state",
        "error",
        "result",
    )

    def __init__(
        self,
        func: Callable[[], ResultT],
        schedule: Schedule,
        resource_name: str,
        *,
        discard: Callable[[ResultT], None] | None = None,
    ) -> None:
        self._func = func
        self._schedule = schedule
        self._resource_name = resource_name
        self._discard = discard
        self._done = anyio.Event()
        # Whether the thread hands the outcome over, or the event loop gave
        # up first, is decided once, under this lock.
        self._lock = threading.Lock()
        self._state: Literal["running", "finished", "abandoned"] = "running"
        self.result: ResultT | None = None
        self.error: BaseException | None = None

    def __call__(self) -> None:
        """Run the job (in the thread); hand its outcome over, or discard it."""
        try:
            self.result = self._func()
        except BaseException as exc:  # all of it goes back to the event loop
            self.error = exc
        with self._lock:
            is_abandoned = self._state == "abandoned"
            if not is_abandoned:
                self._state = "finished"
        if not is_abandoned:
            try:
                self._schedule(self._done.set)
            except RuntimeError:
                # The event loop is closed: nobody will ever take the outcome.
                with self._lock:
                    self._state = "abandoned"
            else:
                return
        self.discard()

    async def wait(self) -> None:
        """Wait, on the event loop, until the job is done."""
        await self._done.wait()

    async def wait_until(self, deadline: float) -> bool:
        """Wait, shielded, until the job is done or `deadline` passes; tell which."""
        if anyio.current_time() >= deadline:
            return False
        with anyio.CancelScope(deadline=deadline, shield=True):
            await self._done.wait()
        return self._done.is_set()

    def abandon(self) -> bool:
        """Stop waiting; return True when the job had finished (discard it then)."""
        with self._lock:
            if self._state == "finished":
                return True
            self._state = "abandoned"
            return False

    def discard(self) -> None:
        """Leave what the job opened, in the thread: nobody will use it."""
        if self.error is not None or self._discard is None:
            return
        try:
            self._discard(cast("ResultT", self.result))
        except Exception as exc:
            error = ShutdownError(self._resource_name)
            error.__cause__ = exc
            log_stop_failure(error)
