"""One running resource: start it with a deadline, stop it cleanly, once.

Each start runs in a cancel scope entered *before* its factory runs, so the
scope nests properly around anything the factory opens (task groups, other
cancel scopes). The scope carries the start deadline, then no deadline while
running, then the stop deadline with a shield against outer cancellation. A
resource that holds a scope open inside it owns it until its teardown ends;
the others share their host task's scope (see `_host`). Start and stop must
run in the same task.

Events come in pairs whatever happens: "starting" is closed by exactly one
"started" or "start_failed", "stopping" by exactly one "stopped" or
"stop_failed".
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from types import CoroutineType
from typing import Any, Final, Generic, NoReturn, TypeVar, cast, final

import anyio

from lifespan_kit._background import BackgroundTask
from lifespan_kit._host import Host, Scope, armed, disarm, resumed
from lifespan_kit._report import Monitor, log_fields, log_stop_failure, logger
from lifespan_kit._resource import Resource, matches
from lifespan_kit._status import waited_for
from lifespan_kit._sync import (
    ResourceThread,
    enter,
    enter_in_thread,
    exit_on_loop,
    is_async,
    is_async_context,
)
from lifespan_kit._types import AsyncContextManagerLike
from lifespan_kit.errors import (
    DependencyTypeError,
    MissingAwaitError,
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

ResultT = TypeVar("ResultT")
Teardown = Callable[[], Coroutine[Any, Any, None]]


class StartAborted(Exception):  # noqa: N818  # a signal between modules, not an error
    """The orchestrator cancelled this start because another one failed."""


@final
class Later(Generic[ResultT]):
    """A start or stop that has to wait: the caller awaits `step` for the outcome."""

    __slots__ = ("step",)

    def __init__(self, step: Awaitable[ResultT]) -> None:
        self.step = step


class Instance:
    """A resource being started, running or stopped by one lifespan."""

    __slots__ = (
        "_agen",
        "_grace",
        "_host",
        "_is_cancelled_early",
        "_stopping",
        "_teardown",
        "began",
        "busy",
        "dependency_path",
        "interrupted",
        "is_aborted",
        "monitor",
        "resource",
        "runtime_failure",
        "scope",
        "start_duration",
        "start_timeout",
        "stop_timeout",
        "suspended",
        "undo_error",
        "value",
    )

    def __init__(
        self,
        resource: Resource[object],
        *,
        dependency_path: tuple[str, ...],
        start_timeout: float,
        stop_timeout: float,
        monitor: Monitor,
    ) -> None:
        self.resource = resource
        self.dependency_path = dependency_path
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.monitor = monitor
        self.is_aborted = False
        self.value: object = None
        self.began = 0.0
        self.start_duration: float | None = None
        # The scope of the start in progress, then the scope the resource owns.
        self.scope: Scope | None = None
        # The task that started the resource, until its teardown begins.
        self._host: Host | None = None
        self._teardown: Teardown | None = None
        # An async generator factory's generator: it is its own teardown.
        self._agen: AsyncGenerator[object, NoReturn] | None = None
        self._grace: float | None = None
        self._stopping: Scope | None = None
        # Seconds the current start or stop has run itself, not waiting.
        self.busy = 0.0
        # Whether the current start or stop has yielded to the event loop, and
        # whether an exception (a cancellation) was thrown into it meanwhile.
        self.suspended = False
        self.interrupted = False
        # The owned scope was cancelled during the start, which swallowed it.
        self._is_cancelled_early = False
        # Set when the resource stopped working while running.
        self.runtime_failure: ResourceFailedError | None = None
        # The teardown failure of an overrun start that was undone.
        self.undo_error: ShutdownError | None = None

    def reset(self, monitor: Monitor) -> None:
        """Make a stopped (or never started) instance ready to start again."""
        self.monitor = monitor
        self.is_aborted = False
        self.value = None
        self.began = 0.0
        self.start_duration = None
        self._teardown = None
        self._grace = None
        self._is_cancelled_early = False
        self.runtime_failure = None
        self.undo_error = None

    @property
    def holds_scope(self) -> bool:
        """True while the started resource holds a cancel scope or task group open."""
        return self.scope is not None

    def abort(self) -> None:
        """Cancel the start in progress (or the one about to begin)."""
        self.is_aborted = True
        if self.scope is not None and self.start_duration is None:
            self.scope.cancel()

    def start_at_once(
        self, args: list[object], kwargs: dict[str, object], host: Host
    ) -> object:
        """Start the resource without awaiting, if it never has to wait.

        Returns:
            Its value; or, when the start has to wait, a `Later` whose step
            the caller awaits at once, in this task, for the value.

        Raises:
            StartupError: Or a subclass, naming this resource.
            StartAborted: When `abort()` cancelled the start.
        """
        resource = self.resource
        if resource.kind == "value":
            self.start_duration = 0.0
            self.began = time.perf_counter()
            self.value = resource.factory
            return self.value
        if self.monitor.is_active:
            self.monitor.emit(resource.name, "starting")
        if resource.dependencies:
            try:
                self._check_arguments(args, kwargs)
            except DependencyTypeError as type_error:
                if self.monitor.is_active:
                    self.monitor.emit(resource.name, "start_failed", error=type_error)
                raise
        self.suspended = False
        self.began = time.perf_counter()
        scope = self.scope = host.open_scope()
        # Deadlines follow the event loop's clock (virtual under trio's MockClock).
        timeout = self.start_timeout
        deadline = math.inf if timeout == math.inf else host.current_time() + timeout
        if resource.kind != "async_generator":
            self.busy = 0.0
            return Later(self._start_later(args, kwargs, host, scope, deadline))
        # The common case, inline: take the generator's first step by hand,
        # and await only if it suspends.
        # Not `cast`: this is the hot path, and `cast` is a call.
        factory: Callable[..., AsyncGenerator[object, NoReturn]]
        factory = resource.factory  # type: ignore[assignment]  # an async generator function
        try:
            agen = self._agen = factory(*args, **kwargs)
            step = agen.__anext__()
            signal = step.send(None)
        except StopIteration as done:
            value = done.value
        except StopAsyncIteration:
            self._raise_start_failure(host, scope, self._no_yield())
        except BaseException as exc:
            self._raise_start_failure(host, scope, exc)
        else:
            self.busy = time.perf_counter() - self.began
            return Later(self._finish_first_step(step, signal, host, scope, deadline))
        return self._settle_start(host, scope, value, deadline, False)

    async def _start_later(
        self,
        args: list[object],
        kwargs: dict[str, object],
        host: Host,
        scope: Scope,
        deadline: float,
    ) -> object:
        try:
            value = await armed(
                self._enter(args, kwargs, deadline), scope, deadline, self
            )
        except BaseException as exc:
            self._raise_start_failure(host, scope, exc)
        return await self._settle_suspended_start(host, scope, value, deadline)

    async def _finish_first_step(
        self,
        step: Coroutine[Any, Any, object],
        signal: object,
        host: Host,
        scope: Scope,
        deadline: float,
    ) -> object:
        """Finish the async generator's first step, which suspended on `signal`."""
        try:
            try:
                value = await resumed(step, signal, scope, deadline, self)
            except StopAsyncIteration:
                raise self._no_yield() from None
        except BaseException as exc:
            self._raise_start_failure(host, scope, exc)
        return await self._settle_suspended_start(host, scope, value, deadline)

    async def _settle_suspended_start(
        self, host: Host, scope: Scope, value: object, deadline: float
    ) -> object:
        # Only a start that suspended can have been cancelled (by its deadline
        # or by `abort()`).
        disarm(scope)
        result = self._settle_start(host, scope, value, deadline, True)
        if type(result) is Later:
            return await cast("Later[object]", result).step
        return result

    def _settle_start(
        self,
        host: Host,
        scope: Scope,
        value: object,
        deadline: float,
        suspended: bool,
    ) -> object:
        """Record a start that returned; return its value, or a Later to undo it.

        A start overran when it returned although its scope was cancelled (it
        swallowed the cancellation), or when it returned past its deadline on
        the event loop's clock because it blocked the loop itself: a start
        that waited while something else blocked the loop is not to blame,
        unless its own running time alone exceeds its timeout.
        """
        elapsed = time.perf_counter() - self.began
        self._host = host
        if suspended and scope.cancel_called:
            return self._swallowed(host, scope, elapsed)
        if not host.keeps(scope, False):
            self.scope = None
        if (
            deadline != math.inf
            and host.current_time() > deadline
            and (
                not suspended
                or self.busy > self.start_timeout
                or elapsed - self.busy <= self.start_timeout
            )
        ):
            return Later(self._undo_overrun(elapsed, swallowed=False))
        if type(value) is CoroutineType:
            # Never a resource's value: an `await` is missing in the factory.
            value.close()  # it never ran; closed, Python does not warn about it
            return Later(self._undo_missing_await(value.__qualname__))
        self.start_duration = elapsed
        self.value = value
        if self.monitor.is_active:
            self.monitor.emit(self.resource.name, "started", duration=elapsed)
        return value

    def _swallowed(self, host: Host, scope: Scope, elapsed: float) -> Later[object]:
        """Undo a start that returned although its deadline (or abort) cancelled it."""
        holds_nothing = host.holds_nothing(scope)
        host.forget(scope)
        if holds_nothing:
            # Leave the spent scope: the undo runs in a fresh one, with its
            # whole stop_timeout.
            scope.__exit__(None, None, None)
            self.scope = None
        else:
            # What the resource holds inside was cancelled with it.
            self.scope = scope
            self._is_cancelled_early = True
        return Later(self._undo_overrun(elapsed, swallowed=True))

    async def _undo_overrun(self, elapsed: float, *, swallowed: bool) -> NoReturn:
        """Undo a start that overran, then report it.

        It blocked the event loop, or it swallowed the cancellation and returned
        anyway. The start is reported failed before its undo begins.
        """
        error: Exception
        if swallowed and self.is_aborted:
            error = StartAborted()
            reported: Exception = self._cancelled()
        else:
            error = reported = StartTimeoutError(
                self.resource.name,
                timeout=self.start_timeout,
                elapsed=elapsed,
                blocked=not swallowed,
                dependency_path=self.dependency_path,
            )
        if self.monitor.is_active:
            self.monitor.emit(self.resource.name, "start_failed", error=reported)
        stop_error = await self.stop()
        if stop_error is not None:
            log_stop_failure(stop_error)
            self.undo_error = stop_error
        raise error

    def _cancelled(self) -> StartCancelledError:
        return StartCancelledError(
            self.resource.name, dependency_path=self.dependency_path
        )

    async def _undo_missing_await(self, coroutine: str) -> NoReturn:
        """Report the missing await of a start whose value is a coroutine; undo it."""
        error = MissingAwaitError(
            self.resource.name,
            coroutine=coroutine,
            dependency_path=self.dependency_path,
        )
        if self.monitor.is_active:
            self.monitor.emit(self.resource.name, "start_failed", error=error)
        stop_error = await self.stop()
        if stop_error is not None:
            log_stop_failure(stop_error)
            self.undo_error = stop_error
        raise error

    def _no_yield(self) -> NoYieldError:
        return NoYieldError(self.resource.name, dependency_path=self.dependency_path)

    def _raise_start_failure(
        self, host: Host, scope: Scope, exc: BaseException
    ) -> NoReturn:
        """Leave the scope and raise the error that `exc` stands for."""
        host.forget(scope)
        error, exc = self._start_failure(scope, exc, time.perf_counter() - self.began)
        if error is None:
            if self.monitor.is_active:
                self.monitor.emit(
                    self.resource.name, "start_failed", error=self._cancelled()
                )
            raise exc
        cause = _cause(error, exc)
        # Set the cause before listeners see the error, as `raise from` would.
        error.__cause__ = cause
        if self.monitor.is_active:
            reported = self._cancelled() if type(error) is StartAborted else error
            self.monitor.emit(self.resource.name, "start_failed", error=reported)
        raise error from cause

    def _start_failure(
        self, scope: Scope, exc: BaseException, elapsed: float
    ) -> tuple[Exception | None, BaseException]:
        """Exit the scope and turn `exc` into the error to raise.

        Returns:
            The error (None: re-raise) and the exception it stands for.
        """
        self.scope = self._agen = None
        try:
            swallowed = scope.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException as remaining:
            # trio: a group of which the scope removed its own cancellation.
            exc, swallowed = remaining, False
        if not swallowed:
            if (
                isinstance(exc, NoYieldError)
                and exc.resource_name == self.resource.name
            ):
                return exc, exc
            if isinstance(exc, Exception | anyio.get_cancelled_exc_class()):
                # A cancellation that is not this scope's is the factory's own.
                error = StartupError(
                    self.resource.name, dependency_path=self.dependency_path
                )
                return error, exc
            return None, exc
        if self.is_aborted:
            return StartAborted(), exc
        return StartTimeoutError(
            self.resource.name,
            timeout=self.start_timeout,
            elapsed=elapsed,
            dependency_path=self.dependency_path,
            waiting_for=waited_for(exc),
        ), exc

    def _check_arguments(self, args: list[object], kwargs: dict[str, object]) -> None:
        checked = self.resource.checked_annotations()
        if not checked:
            return
        values = dict(kwargs)
        positional = [d for d in self.resource.dependencies if d.is_positional]
        values.update(zip((d.parameter for d in positional), args, strict=True))
        for dependency in self.resource.dependencies:
            expected = checked.get(dependency.parameter)
            value = values[dependency.parameter]
            if expected is not None and not matches(value, expected):
                raise DependencyTypeError(
                    self.resource.name,
                    parameter=dependency.parameter,
                    dependency_name=dependency.resource_name,
                    expected=expected.__qualname__,
                    found=type(value).__qualname__,
                    dependency_path=self.dependency_path,
                )

    async def _enter(
        self, args: list[object], kwargs: dict[str, object], deadline: float
    ) -> object:
        """Call the factory and enter what it returned, by its kind."""
        factory = cast("Callable[..., object]", self.resource.factory)
        if self.resource.kind == "background":
            task = BackgroundTask(
                self.resource.name,
                cast("Callable[..., Awaitable[object]]", factory),
                dependency_path=self.dependency_path,
                monitor=self.monitor,
            )
            await task.start(args, kwargs)
            self._teardown = task.stop
            return None
        if self.resource.thread:
            return await self._enter_in_thread(factory, args, kwargs, deadline)
        result = factory(*args, **kwargs)
        if is_async(result):
            return await self._enter_async(result)
        value, exit_sync = enter(result, self.resource.name, self.dependency_path)
        if exit_sync is not None:
            self._teardown = functools.partial(exit_on_loop, exit_sync)
        return value

    async def _enter_in_thread(
        self,
        factory: Callable[..., object],
        args: list[object],
        kwargs: dict[str, object],
        deadline: float,
    ) -> object:
        """Call the factory, and enter its result, in a thread of the resource's own."""
        thread = ResourceThread(self.resource.name)
        entered = await thread.start(
            functools.partial(
                enter_in_thread,
                factory,
                args,
                kwargs,
                self.resource.name,
                self.dependency_path,
            ),
            deadline=deadline,
        )
        if entered.exit is not None:
            self._teardown = thread.stop
        if entered.is_async:
            return await self._enter_async(entered.value)
        return entered.value

    async def _enter_async(self, result: object) -> object:
        """Enter an async context manager or generator; await anything else."""
        if is_async_context(result):
            return await self._enter_context(
                cast("AsyncContextManagerLike[object]", result)
            )
        if inspect.isasyncgen(result):
            return await self._enter_async_generator(result)
        return await cast("Awaitable[object]", result)

    async def _enter_context(self, cm: AsyncContextManagerLike[object]) -> object:
        value = await cm.__aenter__()

        async def exit_cm() -> None:
            await cm.__aexit__(None, None, None)

        self._teardown = exit_cm
        return value

    async def _enter_async_generator(
        self, agen: AsyncGenerator[object, NoReturn]
    ) -> object:
        try:
            value = await agen.__anext__()
        except StopAsyncIteration:
            raise NoYieldError(
                self.resource.name, dependency_path=self.dependency_path
            ) from None
        self._agen = agen
        return value

    async def _finish_async_generator(
        self,
        agen: AsyncGenerator[object, NoReturn],
        step: Coroutine[Any, Any, object],
        signal: object,
        scope: Scope,
        deadline: float,
    ) -> None:
        """Finish the last step of `agen`, which suspended on `signal`."""
        try:
            await resumed(step, signal, scope, deadline, self)
        except StopAsyncIteration:
            return
        await self._close_after_second_yield(agen, scope, deadline)

    async def _close_after_second_yield(
        self, agen: AsyncGenerator[object, NoReturn], scope: Scope, deadline: float
    ) -> NoReturn:
        await armed(agen.aclose(), scope, deadline, self)
        raise MultipleYieldError(self.resource.name)

    def shorten_stop(self, grace: float) -> None:
        """Give the teardown at most `grace` more seconds, whether begun or not."""
        scope = self._stopping
        if scope is None:
            limit = self.stop_timeout if self._grace is None else self._grace
            if grace < limit:
                self._grace = grace
            return
        deadline = anyio.current_time() + grace
        if deadline < scope.deadline:
            scope.deadline = deadline
            self._grace = grace

    async def stop(self) -> ShutdownError | None:
        """Run the teardown, shielded and bounded by `stop_timeout`.

        Returns:
            The teardown's failure, or None. Never raises for a failed teardown.
        """
        result = self.stop_at_once()
        if isinstance(result, Later):
            return await result.step
        return result

    def stop_at_once(self) -> ShutdownError | Later[ShutdownError | None] | None:
        """Stop the resource without awaiting, if its teardown never has to wait.

        Returns:
            What `stop` returns; or, when the teardown has to wait, a `Later`
            whose step the caller awaits at once, in this task, for that.
        """
        host = self._host
        if host is None:
            return None
        scope = self.scope
        teardown = self._teardown
        agen = self._agen
        self._host = self.scope = self._teardown = self._agen = None
        owned = scope is not None
        if scope is None:
            scope = host.open_scope()
        else:
            # The shared scope, if open, was entered inside this one.
            host.close()
        monitor = self.monitor
        if monitor.is_active:
            monitor.emit(self.resource.name, "stopping")
        # A teardown can be shortened from the moment it begins (even by itself).
        self._stopping = scope
        self.interrupted = False
        began = time.perf_counter()
        timeout = self.stop_timeout if self._grace is None else self._grace
        deadline = math.inf if timeout == math.inf else host.current_time() + timeout
        rest: Awaitable[None]
        if agen is None:
            if teardown is None:
                return self._stopped(host, scope, began, deadline, owned, False)
            self.busy = 0.0
            rest = armed(teardown(), scope, deadline, self)
        else:
            # As in `start_at_once`: the last step by hand, awaited only if it
            # suspends.
            step = agen.__anext__()
            try:
                signal = step.send(None)
            except StopAsyncIteration:
                # A failure while running implies an owned scope.
                if (
                    owned
                    or self._grace is not None
                    or monitor.is_active
                    or time.perf_counter() - began > timeout
                ):
                    return self._stopped(host, scope, began, deadline, owned, False)
                self._stopping = None
                return None  # the common case: nothing to leave or report
            except StopIteration:
                self.busy = 0.0
                rest = self._close_after_second_yield(agen, scope, deadline)
            except BaseException as exc:
                return self._stop_failed(host, scope, exc, began, owned=owned)
            else:
                self.busy = time.perf_counter() - began
                rest = self._finish_async_generator(agen, step, signal, scope, deadline)
        return Later(self._stop_later(rest, host, scope, began, deadline, owned=owned))

    async def _stop_later(
        self,
        rest: Awaitable[None],
        host: Host,
        scope: Scope,
        began: float,
        deadline: float,
        *,
        owned: bool,
    ) -> ShutdownError | None:
        try:
            await rest
        except BaseException as exc:
            return self._stop_failed(host, scope, exc, began, owned=owned)
        return self._stopped(host, scope, began, deadline, owned, True)

    def _stopped(
        self,
        host: Host,
        scope: Scope,
        began: float,
        deadline: float,
        owned: bool,
        suspended: bool,
    ) -> ShutdownError | None:
        """Finish a teardown that returned; report a deadline it swallowed.

        A teardown that ran past its limit without being cancelled blocked the
        event loop: it is reported as well, if the time was its own (its
        own running time alone exceeds its limit, or its waiting does not).
        """
        self._stopping = None
        timed_out = False
        # Cut by its deadline only if the cancellation reached it: on asyncio,
        # one that fired after the teardown had finished (the event loop was
        # blocked by something else meanwhile) cut nothing.
        reached = self.interrupted or not host.throws_cancellation
        if owned:
            scope.__exit__(None, None, None)
            timed_out = scope.cancel_called and reached and not self._is_cancelled_early
        elif suspended or self._grace is not None:
            # A shared scope is never cancelled before a teardown begins; only
            # one that waited, or was shortened meanwhile, has a deadline.
            disarm(scope)
            if scope.cancel_called:
                host.forget(scope)
                scope.__exit__(None, None, None)
                timed_out = reached
        elapsed = time.perf_counter() - began
        limit = self.stop_timeout if self._grace is None else self._grace
        # The deadline may have been brought forward meanwhile (shorten_stop).
        deadline = min(deadline, scope.deadline)
        error: ShutdownError | None = None
        if timed_out:
            # It ran past its deadline and swallowed the cancellation.
            error = StopTimeoutError(
                self.resource.name,
                timeout=self.stop_timeout,
                elapsed=elapsed,
                shortened_to=self._grace,
            )
        elif (
            deadline != math.inf
            and host.current_time() > deadline
            and (not suspended or self.busy > limit or elapsed - self.busy <= limit)
        ):
            error = StopTimeoutError(
                self.resource.name,
                timeout=self.stop_timeout,
                elapsed=elapsed,
                shortened_to=self._grace,
                blocked=True,
            )
        if self.runtime_failure is not None:
            self._settle_runtime_failure(began, error)
            return None
        return self._report_stop(began, error)

    def _stop_failed(
        self,
        host: Host,
        scope: Scope,
        exc: BaseException,
        began: float,
        *,
        owned: bool,
    ) -> ShutdownError | None:
        self._stopping = None
        error = self._stop_failure(
            host, scope, exc, time.perf_counter() - began, owned=owned
        )
        if self.runtime_failure is not None:
            self._settle_runtime_failure(began, error)
            return None
        return self._report_stop(began, error)

    def fail_at_runtime(self) -> None:
        """Report that the resource stopped working while the lifespan runs.

        Its task group was cancelled from inside; the exception that did it
        surfaces when the teardown leaves the task group.
        """
        error = ResourceFailedError(
            self.resource.name, dependency_path=self.dependency_path
        )
        cause = _task_group_error(self._agen)
        if cause is not None:
            error.__cause__ = cause
            error.__suppress_context__ = True
        self.runtime_failure = error
        self.monitor.fail(error)

    def _settle_runtime_failure(
        self, began: float, error: ShutdownError | None
    ) -> None:
        """Fold the teardown's outcome into the failure reported while running.

        What the teardown raised is the exception that broke the resource: it
        becomes the failure's cause, not a second, shutdown failure.
        """
        failure = self.runtime_failure
        assert failure is not None
        found = None if error is None else error.__cause__
        if found is not None and _only_exception(found) is not failure.__cause__:
            # Learnt only now (the task group kept it out of reach until it exited).
            cause = _only_exception(found)
            failure.__cause__ = cause
            failure.__suppress_context__ = True
            logger.error(
                "%s",
                failure,
                exc_info=cause,
                extra=log_fields("stop_failed", error=failure),
            )
        if self.monitor.is_active:
            self.monitor.emit(
                self.resource.name,
                "stop_failed",
                duration=time.perf_counter() - began,
                error=failure,
            )

    def _report_stop(
        self, began: float, error: ShutdownError | None
    ) -> ShutdownError | None:
        if self.monitor.is_active:
            self.monitor.emit(
                self.resource.name,
                "stopped" if error is None else "stop_failed",
                duration=time.perf_counter() - began,
                error=error,
            )
        return error

    def _stop_failure(
        self,
        host: Host,
        scope: Scope,
        exc: BaseException,
        elapsed: float,
        *,
        owned: bool,
    ) -> ShutdownError | None:
        """Leave the scope if needed and turn `exc` into the failure to report.

        Returns None when the teardown was cut by a cancellation the start had
        swallowed: what the resource held was already cancelled then.
        """
        timed_out = False
        if owned or scope.cancel_called or not isinstance(exc, Exception):
            # Leave the scope: the resource owned it, or its deadline spent it,
            # or `exc` is about to propagate out of it.
            host.forget(scope)
            try:
                swallowed = scope.__exit__(type(exc), exc, exc.__traceback__)
            except BaseException as remaining:
                # trio: a group of which the scope removed its own cancellation.
                exc, swallowed = remaining, False
            # Inside this shielded scope a cancellation can only be its
            # deadline's, but anyio on asyncio declines to swallow it when an
            # outer scope was cancelled meanwhile (it cannot tell that request
            # from a native one).
            timed_out = swallowed or (
                scope.cancel_called
                and isinstance(exc, Exception | anyio.get_cancelled_exc_class())
            )
        else:
            disarm(scope)
        if timed_out and self._is_cancelled_early:
            if not isinstance(exc, Exception):
                return None
            timed_out = False
        if timed_out:
            error: ShutdownError = StopTimeoutError(
                self.resource.name,
                timeout=self.stop_timeout,
                elapsed=elapsed,
                shortened_to=self._grace,
            )
            error.__cause__ = exc if isinstance(exc, Exception) else None
        elif isinstance(exc, ShutdownError):
            error = exc
        elif isinstance(exc, Exception):
            error = ShutdownError(self.resource.name)
            error.__cause__ = exc
        else:
            raise exc
        error.__suppress_context__ = True
        return error


# Where task groups keep the exceptions of their crashed tasks until they exit:
# anyio's on asyncio, anyio's on trio (its trio nursery), trio's nursery and
# asyncio's TaskGroup. None of it is public, so a miss is only a later cause.
_PENDING_ERRORS: Final = (
    ("_exceptions",),
    ("_nursery", "_pending_excs"),
    ("_pending_excs",),
    ("_errors",),
)


def _task_group_error(agen: object) -> BaseException | None:
    """Find the exception that crashed a task group the generator `agen` holds.

    When a task in that group raises, the group keeps the exception until the
    resource's teardown leaves it; read it now, best effort, so that the
    failure can be reported with its cause when it happens.
    """
    frame = getattr(agen, "ag_frame", None)
    if frame is None:
        return None
    cancelled = anyio.get_cancelled_exc_class()
    for value in frame.f_locals.values():
        for path in _PENDING_ERRORS:
            found: object = value
            for attribute in path:
                found = getattr(found, attribute, None)
            if not isinstance(found, list):
                continue
            errors = [
                e
                for e in cast("list[object]", found)
                if isinstance(e, BaseException) and not isinstance(e, cancelled)
            ]
            if errors:
                return errors[0]
    return None


def _only_exception(exc: BaseException) -> BaseException:
    """Return the one exception of a group of one (a task group's), else `exc`."""
    only: BaseException = exc
    leaves: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    if isinstance(exc, BaseExceptionGroup) and len(leaves) == 1:
        only = leaves[0]
    return only


def _cause(error: BaseException, exc: BaseException) -> BaseException | None:
    """Pick the ``__cause__`` for `error` raised in place of `exc`."""
    if error is exc:
        return exc.__cause__
    if isinstance(error, StartTimeoutError | StartAborted):
        return None
    return exc
