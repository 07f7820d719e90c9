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

import functools
import heapq
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, cast

import anyio
import anyio.lowlevel

from lifespan_kit._graph import Plan
from lifespan_kit._host import Host, forgiver_for, spawner_for
from lifespan_kit._instance import Instance, Later, StartAborted
from lifespan_kit._report import log_fields, log_stop_failure, logger
from lifespan_kit.errors import ShutdownError

if TYPE_CHECKING:
    # Annotations only: anyio.abc's event loop module imports socket and more.
    from anyio.abc import AsyncBackend

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


async def wait_out(event: anyio.Event) -> BaseException | None:
    """Wait for `event`, shielded, even through an asyncio cancellation.

    anyio's shield does not hold back asyncio's own ``Task.cancel()`` (what
    ``asyncio.timeout``, ``wait_for``, a sibling's failure in an
    ``asyncio.TaskGroup`` and Ctrl+C under ``asyncio.run`` use). Such a
    cancellation is caught and returned, for the caller to raise once the
    wait is over: each teardown bounds the wait by its stop_timeout.
    """
    caught: BaseException | None = None
    while True:
        try:
            with anyio.CancelScope(shield=True):
                await event.wait()
        except anyio.get_cancelled_exc_class() as exc:  # noqa: PERF203  # rare
            caught = exc
        else:
            return caught


class Run:
    """Start a plan's resources in host tasks; stop them in reverse.

    Host tasks are spawned just in time: before each start, a host makes sure
    one helper task is pending. If the start never suspends, the helper has
    not run yet and the host goes on with the next runnable resource itself,
    so synchronous starts cost no task at all. If the start suspended, the
    helper takes the next resource (it may have already), and the host
    continues only with a dependent of the resource it just started. So
    independent resources share a host, and stop one after the other, only
    when their starts never suspended. A resource that holds a
    cancel scope or a task group across its yield ends its host's chain:
    nothing else is started inside what it holds, and its host waits directly
    inside it, so that a crash in its task group wakes that host at once.
    Each host stops its chain last-in first-out; that never deadlocks, since
    each chain is in start order and the reverse of the global start order
    satisfies every chain and every dependency at once.

    In the sequential mode the plan's order is the start order, so hosts take
    positions one after the other; teardowns are released one at a time, in
    the exact reverse of the start order.

    A *root* task waits beside the hosts while the lifespan runs, for one
    reason: if the event loop ends with the lifespan never exited, it is
    cancelled (trio cancels system tasks, asyncio every task), and it then
    stops everything in reverse before the loop goes.
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
        self._spawn = spawner_for(backend)
        self._forgive = forgiver_for(backend)
        self._limit = limit
        self._is_sequential = is_sequential = limit == 1
        # What the concurrent mode tracks; the sequential one follows the plan.
        self._waiting: list[int] = (
            [] if is_sequential else [len(deps) for deps in plan.dependencies]
        )
        self._runnable: list[int] = (
            [] if is_sequential else [p for p, n in enumerate(self._waiting) if n == 0]
        )
        # The sequential mode's next position to start.
        self._next = 0
        self._running = 0
        self._is_helper_pending = False
        self._is_failing = False
        self._started: list[int] = []
        self._start_errors: list[Exception] = []
        self._stop_errors: list[ShutdownError] = []
        # A BaseException that is no failure (KeyboardInterrupt, SystemExit)
        # raised by a factory or teardown: raised again once all has stopped.
        self._escaped: BaseException | None = None
        self._is_released = [False] * len(instances)
        create_event = backend.create_event
        self._create_event = create_event
        self._teardown_began = create_event()
        self._waiters: dict[int, anyio.Event] = {}
        self._remaining: list[int] = []
        self._to_stop = 0
        self._next_to_stop = 0
        self._is_stopping = False
        self._settled = create_event()
        self._all_stopped = create_event()
        # The event loop cancelled the root: it is ending with the lifespan open.
        self._is_abandoned = False

    async def start(self) -> dict[str, object]:
        """Start every resource; on failure stop those started and raise."""
        self._spawn(self._root, "lifespan_kit root")
        first = self._take_next() if self._is_sequential else self._take()
        if first is None:
            self._settled.set()  # nothing to start
        else:
            self._spawn(functools.partial(self._host, first), "lifespan_kit host")
        try:
            await self._settled.wait()
        except BaseException:
            # Cancelled from outside: stop what started, then let it propagate.
            self._fail()
            await wait_out(self._settled)
            await self._stop()
            for error in self._start_errors:
                logger.warning(
                    "%s", error, extra=log_fields("start_failed", error=error)
                )
            raise
        if self._start_errors or self._escaped is not None:
            stop_errors = await self.stop()
            if self._escaped is not None:
                raise self._escaped
            raise startup_failure(self._start_errors, stop_errors)
        return self.values

    async def _root(self) -> None:
        """Wait while the lifespan runs; stop everything if the loop ends first."""
        try:
            await self._teardown_began.wait()
        except anyio.get_cancelled_exc_class():
            self._is_abandoned = True
            self._forgive()
            self._fail()
            await wait_out(self._settled)
            await self._stop()

    def _ensure_helper(self) -> None:
        """Keep one helper task pending while there is work it could take."""
        if (
            not self._is_helper_pending
            and self._running < self._limit
            and not self._is_failing
            and (
                self._next < len(self.instances)
                if self._is_sequential
                else self._runnable
            )
        ):
            self._is_helper_pending = True
            self._spawn(self._helper, "lifespan_kit host")

    async def _helper(self) -> None:
        self._is_helper_pending = False
        position = self._take_next() if self._is_sequential else self._take()
        if position is None:
            self._check_settled()
        else:
            await self._host(position)

    def _take(self) -> int | None:
        """Claim the runnable resource first in start order, if the limit allows."""
        if not self._runnable or self._running >= self._limit or self._is_failing:
            return None
        self._running += 1
        return heapq.heappop(self._runnable)

    def _take_next(self) -> int | None:
        """Claim the sequential mode's next resource, if it may start now."""
        position = self._next
        if position >= len(self.instances) or self._running or self._is_failing:
            return None
        self._running = 1
        self._next = position + 1
        return position

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

    async def _host(self, position: int) -> None:
        """Start a chain of resources in this task, then stop them in reverse."""
        host = Host(self._backend)
        try:
            if self._is_sequential:
                chain = await self._start_in_order(position, host)
            else:
                chain = await self._start_as_ready(position, host)
            self._check_settled()
            if chain:
                await self._stop_chain(chain, host)
        except BaseException as exc:  # pragma: no cover  # a bug in this module
            self._escaped = exc
            self._settled.set()
            self._all_stopped.set()

    async def _start_in_order(self, position: int, host: Host) -> list[int]:
        """Start resources in plan order from `position` until one holds a scope."""
        instances = self.instances
        values = self.values
        started = self._started
        count = len(instances)
        chain: list[int] = []
        while True:
            instance = instances[position]
            if instance.resource.dependencies:
                args, kwargs = arguments(instance, values)
            else:
                args, kwargs = _NO_ARGS, _NO_KWARGS
            try:
                value = instance.start_at_once(args, kwargs, host)
                if type(value) is Later:
                    value = await cast("Later[object]", value).step
            except BaseException as exc:
                self._start_failed(instance, exc)
                return chain
            values[instance.resource.name] = value
            started.append(position)
            chain.append(position)
            position += 1
            if position == count or self._is_failing or instance.scope is not None:
                self._next = position
                self._running = 0
                self._ensure_helper()
                return chain

    async def _start_as_ready(self, position: int | None, host: Host) -> list[int]:
        """Start `position`, then whatever this host should start next."""
        chain: list[int] = []
        while position is not None:
            self._ensure_helper()
            instance = self.instances[position]
            args, kwargs = arguments(instance, self.values)
            try:
                started = instance.start_at_once(args, kwargs, host)
                if type(started) is Later:
                    await cast("Later[object]", started).step
            except BaseException as exc:
                self._start_failed(instance, exc)
                break
            chain.append(position)
            # Not whether the helper ran meanwhile: trio may resume this
            # task before it even after the start suspended.
            position = self._on_started(position, instance.suspended)
        return chain

    def _start_failed(self, instance: Instance, exc: BaseException) -> None:
        self._running -= 1
        if isinstance(exc, StartAborted):
            return
        if isinstance(exc, Exception):
            self._start_errors.append(exc)
            if instance.undo_error is not None:
                self._stop_errors.append(instance.undo_error)
        else:
            self._escaped = exc
        self._fail()

    def _on_started(self, position: int, suspended: bool) -> int | None:
        """Record a start; return the next resource this host should start."""
        instance = self.instances[position]
        self.values[instance.resource.name] = instance.value
        self._started.append(position)
        self._running -= 1
        waiting = self._waiting
        holds_scope = instance.holds_scope
        may_follow = suspended and not self._is_failing and not holds_scope
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
        if suspended or holds_scope:
            self._ensure_helper()
            return None
        return self._take()

    async def _stop_chain(self, chain: list[int], host: Host) -> None:
        """Stop this host's resources last-in first-out, each once it is released."""
        instances = self.instances
        await self._wait(self._teardown_began, instances[chain[-1]], host)
        if self._is_sequential:
            await self._stop_in_order(chain, host)
            return
        released = self._is_released
        while chain:
            position = chain.pop()
            instance = instances[position]
            if not released[position]:
                waiter = self._waiters[position] = self._create_event()
                await self._wait(waiter, instance, host)
            try:
                error = instance.stop_at_once()
                if type(error) is Later:
                    error = await error.step
            except BaseException as exc:
                # Not a failure (KeyboardInterrupt, SystemExit): raised once
                # everything else has stopped.
                self._escaped = exc
                error = None
            self._on_stopped(position, error)
        host.close()

    async def _stop_in_order(self, chain: list[int], host: Host) -> None:
        """Stop this host's resources in the exact reverse of the start order.

        In the sequential mode the started positions are 0, 1, ... in order, so
        the next to stop is always the highest one not yet stopped.
        """
        instances = self.instances
        waiters = self._waiters
        while chain:
            position = chain.pop()
            instance = instances[position]
            if position != self._next_to_stop:
                waiter = waiters[position] = self._create_event()
                await self._wait(waiter, instance, host)
            try:
                error = instance.stop_at_once()
                if type(error) is Later:
                    error = await error.step
            except BaseException as exc:
                # Not a failure (KeyboardInterrupt, SystemExit): raised once
                # everything else has stopped.
                self._escaped = exc
                error = None
            if error is not None:
                log_stop_failure(error)
                self._stop_errors.append(error)
            following = self._next_to_stop = position - 1
            if following < 0:
                self._all_stopped.set()
            elif following in waiters:
                waiters.pop(following).set()
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
                        return
                # The event loop's own cancellation of every task, caught here
                # so that this host still stops its resources in order.
                self._forgive()
                await event.wait()

    async def stop(self) -> list[ShutdownError]:
        """Stop every started resource after its dependents; return failures.

        When it returns, every host task has finished its last teardown. A
        cancellation of the calling task does not cut it short: it is raised
        once everything has stopped.
        """
        cancelled = await self._stop()
        if cancelled is not None:
            raise cancelled
        return self._stop_errors

    async def _stop(self) -> BaseException | None:
        """Stop everything; return a cancellation of this task that came meanwhile."""
        if self._is_stopping:
            return await wait_out(self._all_stopped)
        self._is_stopping = True
        self._to_stop = len(self._started)
        if self._to_stop == 0:
            self._all_stopped.set()
            self._teardown_began.set()
            return None
        if self._is_sequential:
            self._next_to_stop = len(self._started) - 1
        else:
            remaining = self._remaining = [0] * len(self.instances)
            for position in self._started:
                for dependency in self.plan.dependencies[position]:
                    remaining[dependency] += 1
            for position in self._started:
                if remaining[position] == 0:
                    self._is_released[position] = True
        self._teardown_began.set()
        return await wait_out(self._all_stopped)

    def _on_stopped(self, position: int, error: ShutdownError | None) -> None:
        if error is not None:
            log_stop_failure(error)
            self._stop_errors.append(error)
        self._to_stop -= 1
        if self._to_stop == 0:
            self._all_stopped.set()
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

    @property
    def is_stopped(self) -> bool:
        """True once every started resource has stopped."""
        return self._all_stopped.is_set()

    def raise_escaped(self) -> None:
        """Raise what a factory or teardown raised that is not a failure, if any."""
        if self._escaped is not None:
            raise self._escaped
