"""Running a plan: resources start in host tasks, in order, and stop in reverse.

One engine serves both modes. With a concurrency limit of 1 (the sequential
mode) one resource starts at a time, in the plan's order, and teardowns run one
at a time in the exact reverse order; otherwise each resource starts as soon as
its dependencies are ready, and stops as soon as its dependents have stopped.

Resources never live in the task that enters the lifespan. A detached *root*
task (see `_host.spawner_for`) owns a task group of *host* tasks, and each
resource is entered and exited in one host task. So the caller's cancellation
never reaches a resource (its teardown still runs, bounded by its
stop_timeout), the lifespan may be entered in one task and exited in another,
and a resource that holds a task group cannot cancel the body or another
resource when a task in that group crashes: only its own host task notices,
and reports it while the lifespan runs.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Sequence
from typing import Final, cast

import anyio
import anyio.lowlevel
from anyio.abc import AsyncBackend, TaskGroup

from lifespan_kit._graph import Plan
from lifespan_kit._host import Host, spawner_for
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


class Run:
    """Start a plan's resources in host tasks; stop them in reverse.

    Host tasks are spawned just in time: before each start, a host makes sure
    one helper task is pending. If the start never suspends, the helper has
    not run yet and the host goes on with the next runnable resource itself,
    so synchronous starts cost no task at all. If the start suspended, the
    helper has run and taken the next resource, and the host continues only
    with a dependent of the resource it just started. A resource that holds a
    cancel scope or a task group across its yield ends its host's chain:
    nothing else is started inside what it holds, and its host waits directly
    inside it, so that a crash in its task group wakes that host at once.
    Each host stops its chain last-in first-out; that never deadlocks, since
    each chain is in start order and the reverse of the global start order
    satisfies every chain and every dependency at once.
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
        self._is_sequential = limit == 1
        self._waiting = [len(deps) for deps in plan.dependencies]
        self._runnable = [p for p, count in enumerate(self._waiting) if count == 0]
        self._running = 0
        self._is_helper_pending = False
        self._helpers_run = 0
        self._is_failing = False
        self._started: list[int] = []
        self._start_errors: list[Exception] = []
        self._stop_errors: list[ShutdownError] = []
        # A BaseException that is no failure (KeyboardInterrupt, SystemExit)
        # raised by a factory or teardown: raised again once all has stopped.
        self._escaped: BaseException | None = None
        self._is_released = [False] * len(instances)
        self._teardown_began = anyio.Event()
        self._waiters: dict[int, anyio.Event] = {}
        self._remaining: list[int] = []
        self._to_stop = 0
        self._next_to_stop = 0
        self._is_stopping = False
        self._settled = anyio.Event()
        self._all_stopped = anyio.Event()
        self._closing = anyio.Event()
        self._finished = anyio.Event()
        # The event loop cancelled the root: it is ending with the lifespan open.
        self._is_abandoned = False
        self._tg: TaskGroup | None = None

    async def start(self) -> dict[str, object]:
        """Start every resource; on failure stop those started and raise."""
        spawner_for(self._backend)(self._root, "lifespan_kit root")
        try:
            await self._settled.wait()
        except BaseException:
            # Cancelled from outside: stop what started, then let it propagate.
            with anyio.CancelScope(shield=True):
                self._fail()
                await self._settled.wait()
                await self.stop()
                await self.close()
            for error in self._start_errors:
                logger.warning("%s", error)
            raise
        if self._start_errors or self._escaped is not None:
            stop_errors: list[ShutdownError] = []
            with anyio.CancelScope(shield=True):
                stop_errors = await self.stop()
                await self.close()
            if self._escaped is not None:
                raise self._escaped
            raise startup_failure(self._start_errors, stop_errors)
        return self.values

    async def _root(self) -> None:
        """Own the host tasks' task group until the lifespan is closed."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._ensure_helper()
                self._check_settled()
                try:
                    await self._closing.wait()
                except anyio.get_cancelled_exc_class():
                    # The event loop is ending with the lifespan never exited:
                    # stop everything in reverse before it goes.
                    self._is_abandoned = True
                    with anyio.CancelScope(shield=True):
                        self._fail()
                        await self._settled.wait()
                        await self.stop()
        except BaseException as exc:  # pragma: no cover  # a bug in this module
            self._escaped = exc
            self._settled.set()
            self._all_stopped.set()
        finally:
            self._finished.set()

    def _ensure_helper(self) -> None:
        """Keep one helper task pending while there is work it could take."""
        if (
            self._runnable
            and not self._is_helper_pending
            and self._running < self._limit
            and not self._is_failing
        ):
            self._is_helper_pending = True
            assert self._tg is not None
            self._tg.start_soon(self._helper)

    async def _helper(self) -> None:
        self._is_helper_pending = False
        self._helpers_run += 1
        await self._host(self._take())

    def _take(self) -> int | None:
        """Claim the runnable resource first in start order, if the limit allows."""
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

    async def _host(self, position: int | None) -> None:
        # Shielded: a host's scopes protect its resources from the cancellation
        # of the root (an event loop that ends with the lifespan open).
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
                if instance.undo_error is not None:
                    self._stop_errors.append(instance.undo_error)
                self._fail()
                break
            except BaseException as exc:
                self._running -= 1
                self._escaped = exc
                self._fail()
                break
            chain.append(position)
            position = self._on_started(position, helpers_run != self._helpers_run)
        self._check_settled()
        if chain:
            await self._wait(self._teardown_began, self.instances[chain[-1]], host)
        while chain:
            position = chain.pop()
            instance = self.instances[position]
            if not self._is_released[position]:
                waiter = self._waiters[position] = anyio.Event()
                await self._wait(waiter, instance, host)
            try:
                error = instance.stop_at_once()
                if isinstance(error, Later):
                    error = await error.step
            except BaseException as exc:
                # Not a failure (KeyboardInterrupt, SystemExit): stop the rest.
                self._escaped = exc
                error = None
            self._on_stopped(position, error)
        host.close()

    async def _wait(self, event: anyio.Event, instance: Instance, host: Host) -> None:
        """Wait for `event` as `instance`'s host; notice if it fails meanwhile.

        A resource that holds a task group is waited for inside it: a task of
        that group that crashes cancels the group, which wakes this wait. That
        is the resource failing while the lifespan runs: it is reported, and
        the host goes on waiting for its turn to stop it.
        """
        is_watched = instance.holds_scope and instance.runtime_failure is None
        if not instance.holds_scope:
            host.open_scope()
        try:
            await event.wait()
        except anyio.get_cancelled_exc_class():
            # On asyncio, an event loop that ends cancels every task, shields
            # or not; the root is cancelled too, and stops everything.
            with anyio.CancelScope(shield=True):
                if is_watched:
                    await anyio.lowlevel.checkpoint()
                    if not self._is_abandoned:
                        instance.fail_at_runtime()
                await event.wait()

    def _on_started(self, position: int, suspended: bool) -> int | None:
        """Record a start; return the next resource this host should start."""
        instance = self.instances[position]
        self.values[instance.resource.name] = instance.value
        self._started.append(position)
        self._running -= 1
        waiting = self._waiting
        # In the sequential mode the next start is always the first runnable.
        may_follow = (
            suspended
            and not self._is_failing
            and not self._is_sequential
            and not instance.holds_scope
        )
        follow: int | None = None
        for dependent in self.plan.dependents[position]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                if follow is None and may_follow:
                    follow = dependent
                else:
                    heapq.heappush(self._runnable, dependent)
        if follow is not None:
            self._running += 1
            return follow
        if instance.holds_scope or (suspended and not self._is_sequential):
            self._ensure_helper()
            return None
        return self._take()

    async def stop(self) -> list[ShutdownError]:
        """Stop every started resource after its dependents; return failures."""
        if self._is_stopping:
            with anyio.CancelScope(shield=True):
                await self._all_stopped.wait()
            return self._stop_errors
        self._is_stopping = True
        remaining = self._remaining = [0] * len(self.instances)
        for position in self._started:
            for dependency in self.plan.dependencies[position]:
                remaining[dependency] += 1
        self._to_stop = len(self._started)
        if self._to_stop == 0:
            self._all_stopped.set()
            return self._stop_errors
        if self._is_sequential:
            self._next_to_stop = len(self._started) - 1
            self._release(self._started[self._next_to_stop])
        else:
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
        self._to_stop -= 1
        if self._to_stop == 0:
            self._all_stopped.set()
            return
        if self._is_sequential:
            self._next_to_stop -= 1
            self._release(self._started[self._next_to_stop])
            return
        remaining = self._remaining
        for dependency in self.plan.dependencies[position]:
            remaining[dependency] -= 1
            if remaining[dependency] == 0:
                self._release(dependency)

    def _release(self, position: int) -> None:
        self._is_released[position] = True
        waiter = self._waiters.pop(position, None)
        if waiter is not None:
            waiter.set()

    async def close(self) -> None:
        """Let the root task end once every host has finished its teardown."""
        self._closing.set()
        with anyio.CancelScope(shield=True):
            await self._finished.wait()

    def raise_escaped(self) -> None:
        """Raise what a factory or teardown raised that is not a failure, if any."""
        if self._escaped is not None:
            raise self._escaped
