"""The two ways of running a plan: one task in order, or one host task per chain.

Both start resources in dependency order and stop them in reverse, never pass
another resource's exception into a factory, and report every failure.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Sequence
from typing import Final, cast

import anyio
from anyio.abc import AsyncBackend, TaskGroup

from lifespan_kit._graph import Plan
from lifespan_kit._host import Host
from lifespan_kit._instance import Instance, Later, StartAborted
from lifespan_kit._report import log_stop_failure, logger
from lifespan_kit.errors import ShutdownError

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import ExceptionGroup


_NO_ARGS: Final[list[object]] = []
_NO_KWARGS: Final[dict[str, object]] = {}


def arguments(
    instance: Instance, values: dict[str, object]
) -> tuple[list[object], dict[str, object]]:
    """Collect the factory's positional and keyword arguments from `values`."""
    if not instance.resource.dependencies:
        # Shared, never mutated: factories receive them unpacked.
        return _NO_ARGS, _NO_KWARGS
    args: list[object] = []
    kwargs: dict[str, object] = {}
    for dependency in instance.resource.dependencies:
        value = values[dependency.resource_name]
        if dependency.is_positional:
            args.append(value)
        else:
            kwargs[dependency.parameter] = value
    return args, kwargs


def one_or_group(
    first: Sequence[Exception], then: Sequence[ShutdownError], message: str
) -> Exception:
    """Return the single failure as is, or every failure in one group."""
    if len(first) == 1 and not then:
        return first[0]
    return ExceptionGroup(message, [*first, *then])


def startup_failure(
    start_errors: Sequence[Exception], stop_errors: Sequence[ShutdownError]
) -> Exception:
    """Return the one error to raise for a failed startup."""
    return one_or_group(
        start_errors,
        stop_errors,
        f"Startup failed: {len(start_errors)} resource(s) failed to start and "
        f"{len(stop_errors)} failed to stop during the rollback.",
    )


class SequentialRun:
    """Start resources one at a time in the caller's task; stop them in reverse."""

    def __init__(
        self, plan: Plan, instances: Sequence[Instance], backend: type[AsyncBackend]
    ) -> None:
        self.plan = plan
        self.instances = instances
        self.values: dict[str, object] = {}
        self._host = Host(backend, shielded=False)
        self._started: list[Instance] = []
        self._stop_errors: list[ShutdownError] = []

    async def start(self) -> dict[str, object]:
        """Start every resource in plan order; on failure stop them and raise."""
        values = self.values
        started = self._started
        host = self._host
        for instance in self.instances:
            if instance.resource.dependencies:
                args, kwargs = arguments(instance, values)
            else:
                args, kwargs = _NO_ARGS, _NO_KWARGS
            try:
                value = instance.start_at_once(args, kwargs, host)
                if type(value) is Later:
                    # A value is an object: what is waited for yields one too.
                    value = await cast("Later[object]", value).step
            except BaseException as exc:
                stop_errors = await self.stop()
                if not isinstance(exc, Exception):
                    raise
                error = startup_failure([exc], stop_errors)
                if error is exc:
                    raise
                raise error from None
            values[instance.resource.name] = value
            started.append(instance)
        return values

    async def stop(self) -> list[ShutdownError]:
        """Stop what started, in reverse order, and return the failures."""
        # Shield every scope up front: each teardown is then protected from
        # outer cancellation, and leaving a scope stops at its shielded parent
        # instead of walking the whole nested chain.
        for instance in self.instances:
            instance.shield()
        self._host.shield()
        started, self._started = self._started, []
        # Like an exit stack: every teardown runs, then the last exception
        # that is not a teardown failure propagates.
        escaped: BaseException | None = None
        stop_errors = self._stop_errors
        for instance in reversed(started):
            try:
                error = instance.stop_at_once()
                if type(error) is Later:
                    error = await error.step
            except BaseException as exc:  # noqa: PERF203  # each teardown is awaited
                escaped = exc
            else:
                if error is not None:
                    log_stop_failure(error)
                    stop_errors.append(error)
        self._host.close()
        if escaped is not None:
            raise escaped
        return self._stop_errors

    async def close(self) -> None:
        """Release what the run holds once everything has stopped."""


class ConcurrentRun:
    """Start each resource as soon as its dependencies are ready.

    Resources live in worker tasks of a task group that the caller's task
    owns; a worker stops its resources last-in first-out, in its own task.
    Workers are spawned just in time: before each start, a worker makes sure
    one helper task is pending. If the start never suspends, the helper has
    not run yet and the worker goes on with the next runnable resource itself,
    so synchronous starts cost no task at all. If the start suspended, the
    helper has run and taken the next resource, and the worker continues only
    with a dependent of the resource it just started, keeping its chain in
    dependency order. Stopping every worker's chain last-in first-out never
    deadlocks: each chain is in start order, so the reverse of the global
    start order satisfies every chain and every dependency at once.
    """

    def __init__(
        self,
        plan: Plan,
        instances: Sequence[Instance],
        backend: type[AsyncBackend],
        limit: float,
    ) -> None:
        self.plan = plan
        self.instances = instances
        self.values: dict[str, object] = {}
        self._backend = backend
        self._limit = limit
        self._waiting = [len(deps) for deps in plan.dependencies]
        self._runnable = [p for p, count in enumerate(self._waiting) if count == 0]
        self._running = 0
        self._is_helper_pending = False
        self._helpers_run = 0
        self._is_failing = False
        self._started: list[int] = []
        self._start_errors: list[Exception] = []
        self._stop_errors: list[ShutdownError] = []
        self._is_released = [False] * len(instances)
        self._teardown_began = anyio.Event()
        self._waiters: dict[int, anyio.Event] = {}
        self._remaining: list[int] = []
        self._to_stop = 0
        self._settled = anyio.Event()
        self._all_stopped = anyio.Event()
        self._tg: TaskGroup = anyio.create_task_group()

    async def start(self) -> dict[str, object]:
        """Start every resource; on failure stop those started and raise."""
        await self._tg.__aenter__()
        self._ensure_helper()
        self._check_settled()
        try:
            await self._settled.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                self._fail()
                await self._settled.wait()
                await self.stop()
            await self.close()
            for error in self._start_errors:
                logger.warning("%s", error)
            raise
        if self._start_errors:
            stop_errors: list[ShutdownError] = []
            with anyio.CancelScope(shield=True):
                stop_errors = await self.stop()
            await self.close()
            raise startup_failure(self._start_errors, stop_errors)
        return self.values

    def _ensure_helper(self) -> None:
        """Keep one helper task pending while there is work it could take."""
        if (
            self._runnable
            and not self._is_helper_pending
            and self._running < self._limit
            and not self._is_failing
        ):
            self._is_helper_pending = True
            self._tg.start_soon(self._helper)

    async def _helper(self) -> None:
        self._is_helper_pending = False
        self._helpers_run += 1
        await self._work(self._take())

    def _take(self) -> int | None:
        """Claim the runnable resource registered first, if the limit allows."""
        if not self._runnable or self._running >= self._limit or self._is_failing:
            return None
        self._running += 1
        return heapq.heappop(self._runnable)

    def _check_settled(self) -> None:
        if len(self._started) == len(self.instances) or (
            self._is_failing and self._running == 0
        ):
            self._settled.set()

    def _fail(self) -> None:
        self._is_failing = True
        for instance in self.instances:
            if instance.start_duration is None:
                instance.abort()

    async def _work(self, position: int | None) -> None:
        # Shielded: a worker's scopes protect its resources, and its waits
        # for the teardown, from the caller's cancellation.
        host = Host(self._backend, shielded=True)
        chain: list[int] = []
        while position is not None:
            self._ensure_helper()
            # A helper that runs during this start means the start suspended.
            helpers_run = self._helpers_run if self._is_helper_pending else -1
            instance = self.instances[position]
            args, kwargs = arguments(instance, self.values)
            try:
                started = instance.start_at_once(args, kwargs, host)
                if type(started) is Later:
                    await cast("Later[object]", started).step
            except StartAborted:
                self._running -= 1
                break
            except Exception as exc:
                self._running -= 1
                self._start_errors.append(exc)
                self._fail()
                break
            chain.append(position)
            position = self._on_started(position, helpers_run != self._helpers_run)
        self._check_settled()
        if chain:
            host.open_scope()
            await self._teardown_began.wait()
        while chain:
            position = chain.pop()
            if not self._is_released[position]:
                host.open_scope()
                waiter = self._waiters[position] = anyio.Event()
                await waiter.wait()
            error = self.instances[position].stop_at_once()
            if isinstance(error, Later):
                error = await error.step
            self._on_stopped(position, error)
        host.close()

    def _on_started(self, position: int, suspended: bool) -> int | None:
        """Record a start; return the next resource this worker should start."""
        instance = self.instances[position]
        self.values[instance.resource.name] = instance.value
        self._started.append(position)
        self._running -= 1
        waiting = self._waiting
        follow: int | None = None
        for dependent in self.plan.dependents[position]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                if follow is None and suspended and not self._is_failing:
                    follow = dependent
                else:
                    heapq.heappush(self._runnable, dependent)
        if follow is not None:
            self._running += 1
            return follow
        if suspended:
            self._ensure_helper()
            return None
        return self._take()

    async def stop(self) -> list[ShutdownError]:
        """Stop every started resource after its dependents; return failures."""
        remaining = self._remaining = [0] * len(self.instances)
        for position in self._started:
            for dependency in self.plan.dependencies[position]:
                remaining[dependency] += 1
        self._to_stop = len(self._started)
        if self._to_stop == 0:
            return self._stop_errors
        for position in self._started:
            if remaining[position] == 0:
                self._is_released[position] = True
        self._teardown_began.set()
        with anyio.CancelScope(shield=True):
            await self._all_stopped.wait()
        return self._stop_errors

    def _on_stopped(self, position: int, error: ShutdownError | None) -> None:
        if error is not None:
            log_stop_failure(error)
            self._stop_errors.append(error)
        remaining = self._remaining
        for dependency in self.plan.dependencies[position]:
            remaining[dependency] -= 1
            if remaining[dependency] == 0:
                self._release(dependency)
        self._to_stop -= 1
        if self._to_stop == 0:
            self._all_stopped.set()

    def _release(self, position: int) -> None:
        self._is_released[position] = True
        waiter = self._waiters.pop(position, None)
        if waiter is not None:
            waiter.set()

    async def close(self) -> None:
        """Exit the task group once every host has finished its teardown."""
        self._tg.cancel_scope.shield = True
        await self._tg.__aexit__(None, None, None)
