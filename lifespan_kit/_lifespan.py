"""`Lifespan`: start a plan's resources, hand out the bundle, stop them in reverse."""

from __future__ import annotations

import inspect
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Generic, Literal, TypeVar, final

import anyio
import anyio.lowlevel

import lifespan_kit
from lifespan_kit._bundle import BundleTypeGroup, ResourceMap
from lifespan_kit._graph import Plan
from lifespan_kit._instance import Instance
from lifespan_kit._outcome import (
    StartupReport,
    create_report,
)
from lifespan_kit._report import LifespanEvent, LifespanEventKind, Listener, Monitor
from lifespan_kit._run import Run, one_or_group, startup_failure
from lifespan_kit._settings import Timeouts
from lifespan_kit.errors import (
    AlreadyRunningError,
    InvalidOptionError,
    NotRunningError,
    ResourceFailedError,
    ShutdownError,
)

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import ExceptionGroup

ResultT_co = TypeVar("ResultT_co", covariant=True)
State = Literal["idle", "starting", "running", "stopping"]


@final
class Lifespan(Generic[ResultT_co]):
    """Start a set of resources on entry and stop them, in reverse, on exit.

    Get one from [Registry.lifespan][lifespan_kit.Registry.lifespan]; entering
    it yields the bundle (or a [ResourceMap][lifespan_kit.ResourceMap]).
    A lifespan can be entered again after it exited, never twice at once.

    Example:
        ```python
        lifespan = registry.lifespan(Resources)
        async with lifespan as resources:
            print(lifespan.report)
            print(await lifespan.health())
        ```

    Added in 0.1.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        build: Callable[[Mapping[str, object]], ResultT_co],
        concurrency: float,
        defaults: Timeouts,
        listeners: Sequence[Listener],
    ) -> None:
        self._plan = plan
        self._build = build
        self._concurrency = concurrency
        self._defaults = defaults
        self._listeners = tuple(listeners)
        self._state: State = "idle"
        self._run: Run | None = None
        self._monitor: Monitor | None = None
        self._began = 0.0
        self._created: list[Instance] | None = None

    @property
    def is_running(self) -> bool:
        """True between a successful start and the beginning of the teardown."""
        return self._state == "running"

    @property
    def resource_names(self) -> tuple[str, ...]:
        """The resources this lifespan starts, in sequential start order."""
        return self._plan.names

    @property
    def resources(self) -> ResourceMap:
        """Every started resource's value, including dependencies not in the bundle.

        Raises:
            NotRunningError: Outside a running lifespan.
        """
        run = self._running_run("read the resources")
        return ResourceMap(run.values)

    @property
    def report(self) -> StartupReport:
        """Per-resource start timings and the critical path of the last start.

        Raises:
            NotRunningError: Before the first start.
        """
        run = self._run
        if run is None:
            raise NotRunningError(action="read the startup report before starting")
        instances = run.instances
        return create_report(
            self._plan.names,
            self._plan.dependencies,
            [instance.began - self._began for instance in instances],
            [instance.start_duration for instance in instances],
        )

    async def __aenter__(self) -> ResultT_co:
        if self._state != "idle":
            raise AlreadyRunningError
        self._state = "starting"
        monitor = self._monitor = Monitor(self._listeners)
        began = time.perf_counter()
        if monitor.observers:
            self._tell(monitor, "starting")
        try:
            result = await self._start(monitor)
        except BaseException as exc:
            self._state = "idle"
            if monitor.observers:
                self._tell(monitor, "start_failed", began, error=exc)
            raise
        self._state = "running"
        if monitor.observers:
            self._tell(monitor, "started", began, report=self.report)
        return result

    def _tell(
        self,
        monitor: Monitor,
        kind: LifespanEventKind,
        began: float | None = None,
        *,
        error: BaseException | None = None,
        report: StartupReport | None = None,
        health: lifespan_kit.HealthReport | None = None,
    ) -> None:
        """Tell the lifespan listeners about a moment of this run."""
        monitor.tell(
            LifespanEvent(
                kind,
                monitor.run_id,
                self._plan.resources,
                duration=None if began is None else time.perf_counter() - began,
                error=error,
                report=report,
                health=health,
            )
        )

    def _tell_stopped(
        self, monitor: Monitor, began: float, errors: Sequence[ShutdownError]
    ) -> None:
        if not errors:
            self._tell(monitor, "stopped", began)
            return
        error = (
            errors[0]
            if len(errors) == 1
            else ExceptionGroup(_shutdown_message(errors), errors)
        )
        self._tell(monitor, "stop_failed", began, error=error)

    async def _start(self, monitor: Monitor) -> ResultT_co:
        backend = anyio.lowlevel.current_token().backend_class
        instances = self._instances(monitor)
        run = self._run = Run(self._plan, instances, backend, self._concurrency)
        self._began = time.perf_counter()
        values = await run.start()
        try:
            return self._build(values)
        except BundleTypeGroup as exc:
            # The run shields its own teardown from the caller's cancellation.
            stop_errors = await run.stop()
            raise startup_failure(exc.errors, stop_errors) from None
        except BaseException:
            # The bundle's own code raised (a validator, model_post_init):
            # what started is stopped, and its failures logged, all the same.
            await run.stop()
            raise

    def _instances(self, monitor: Monitor) -> list[Instance]:
        """Return one instance per resource: made on the first start, then reset."""
        instances = self._created
        if instances is None:
            plan = self._plan
            instances = self._created = [
                Instance(
                    resource,
                    dependency_path=path,
                    start_timeout=timeouts[0],
                    stop_timeout=timeouts[1],
                    monitor=monitor,
                )
                for resource, path, timeouts in zip(
                    plan.resources,
                    plan.paths,
                    (r.timeouts.resolve(self._defaults) for r in plan.resources),
                    strict=True,
                )
            ]
        else:
            for instance in instances:
                instance.reset(monitor)
        return instances

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run = self._run
        if self._state != "running" or run is None:
            raise NotRunningError(action="exit a lifespan that is not running")
        self._state = "stopping"
        monitor = self._monitor
        assert monitor is not None
        began = time.perf_counter()
        if monitor.observers:
            self._tell(monitor, "stopping")
        errors: list[ShutdownError] = []
        try:
            errors = await run.stop()
        finally:
            self._state = "idle"
            monitor.failed.set()  # wakes wait_failed(): nothing can fail any more
            if monitor.observers:
                self._tell_stopped(monitor, began, errors)
        run.raise_escaped()
        failures = monitor.failures
        if not errors and not failures:
            return
        if exc is None:
            if failures:
                raise _failure(failures, errors)
            raise ExceptionGroup(_shutdown_message(errors), errors)
        if isinstance(exc, Exception):
            # The body's exception propagates unchanged; the failures were
            # logged and are listed on it so they are not lost.
            notes: list[str] = exc.__dict__.setdefault("__notes__", [])
            for found, message in (
                (failures, _failures_message(failures)),
                (errors, _shutdown_message(errors)),
            ):
                if found:
                    notes.append(message)
                    notes.extend(f"  {error.summary()}" for error in found)

    async def wait_failed(self) -> ResourceFailedError:
        """Wait until a resource of this lifespan fails while running; return why.

        A resource fails while running when a task in the task group it holds
        across its ``yield`` raises (which cancels that task group), and a
        background task (see
        [Registry.background][lifespan_kit.Registry.background]) when it
        raises or returns. The failure is logged and sent to listeners as a
        ``failed`` event when it happens. The lifespan keeps running: stop it
        by leaving the ``async with`` block, which then raises the error.
        Returns at once if a resource has already failed.

        Returns:
            The first failure.

        Raises:
            NotRunningError: Outside a running lifespan, and when the lifespan
                stops before anything failed.

        Example:
            ```python
            lifespan = registry.lifespan(Resources)
            async with lifespan as resources, anyio.create_task_group() as tg:

                async def stop_on_failure() -> None:
                    await lifespan.wait_failed()
                    tg.cancel_scope.cancel()

                tg.start_soon(stop_on_failure)
                await serve(resources)
            ```

        Added in 0.1.
        """
        self._running_run("wait for a resource to fail")
        monitor = self._monitor
        assert monitor is not None
        await monitor.failed.wait()
        if not monitor.failures:
            raise NotRunningError(action="wait for a resource to fail once it stopped")
        return monitor.failures[0]

    async def health(self) -> lifespan_kit.HealthReport:
        """Run every declared health check concurrently, each bounded by its timeout.

        Returns:
            One outcome per resource that declares a check, in start order.

        Raises:
            NotRunningError: Outside a running lifespan.
        """
        run = self._running_run("check health")
        began = time.perf_counter()
        checked = [i for i in run.instances if i.resource.health_check is not None]
        results: dict[str, lifespan_kit.ResourceHealth] = {}
        async with anyio.create_task_group() as tg:
            for instance in checked:
                tg.start_soon(self._check, instance, results)
        report = lifespan_kit.HealthReport(
            resources={i.resource.name: results[i.resource.name] for i in checked}
        )
        monitor = self._monitor
        assert monitor is not None
        if monitor.observers:
            self._tell(monitor, "checked", began, health=report)
        return report

    async def _check(
        self, instance: Instance, results: dict[str, lifespan_kit.ResourceHealth]
    ) -> None:
        resource = instance.resource
        check = resource.health_check
        assert check is not None
        _, _, timeout = resource.timeouts.resolve(self._defaults)
        began = time.perf_counter()
        blocked = 0.0
        error: str | None = None
        detail: str | None = None
        with anyio.move_on_after(timeout) as scope:
            try:
                outcome = check(instance.value)
                # A synchronous check cannot be cancelled: what it blocked counts.
                blocked = time.perf_counter() - began
                if inspect.isawaitable(outcome):
                    outcome = await outcome
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if outcome is False:
                    error = "the check returned False"
                elif isinstance(outcome, str):
                    detail = outcome
        if scope.cancelled_caught:
            error = f"the check did not finish within {timeout:g}s (health_timeout)"
        elif blocked > timeout:
            error = (
                f"the check blocked the event loop for {blocked:.3f}s "
                f"(health_timeout={timeout:g}s)"
            )
        results[resource.name] = lifespan_kit.ResourceHealth(
            status="healthy" if error is None else "unhealthy",
            duration=time.perf_counter() - began,
            error=error,
            detail=detail if error is None else None,
        )

    def _running_run(self, action: str) -> Run:
        run = self._run
        if self._state != "running" or run is None:
            raise NotRunningError(action=action)
        return run

    def __del__(self) -> None:
        if self._state in ("running", "starting"):
            run = self._run
            what = (
                "they were stopped only because its event loop ended"
                if run is not None and run.is_stopped
                else "they were never stopped"
            )
            warnings.warn(
                f"A lifespan holding {len(self._plan.resources)} resource(s) was "
                f"garbage-collected without being exited; {what}. Use it with "
                "`async with`.",
                ResourceWarning,
                stacklevel=1,
            )

    def __repr__(self) -> str:
        return f"<Lifespan {self._state} resources={list(self._plan.names)!r}>"


def shorten_teardown(lifespan: Lifespan[object], grace: float) -> None:
    """Give each teardown of `lifespan` still to come, or running, at most `grace` s.

    Raises:
        InvalidOptionError: When `grace` is negative.
    """
    if not grace >= 0:
        raise InvalidOptionError(
            None, option="grace", problem="it must be 0 or more seconds"
        )
    # A helper of the worker runner, kept off the public Lifespan API.
    run = lifespan._run  # pyright: ignore[reportPrivateUsage]
    if run is not None:
        for instance in run.instances:
            instance.shorten_stop(grace)


def _failure(
    failures: Sequence[ResourceFailedError], errors: Sequence[ShutdownError]
) -> Exception:
    """Return the one error to raise when resources failed while running."""
    return one_or_group(
        failures,
        errors,
        f"{_failures_message(failures)} Then {len(errors)} resource(s) failed "
        "during shutdown.",
    )


def _failures_message(failures: Sequence[ResourceFailedError]) -> str:
    names = ", ".join(f"'{e.resource_name}'" for e in failures)
    return f"{len(failures)} resource(s) failed while running: {names}."


def _shutdown_message(errors: Sequence[ShutdownError]) -> str:
    names = ", ".join(f"'{e.resource_name}'" for e in errors)
    return f"{len(errors)} resource(s) failed during shutdown: {names}."
