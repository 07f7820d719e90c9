"""A background task: an async function that runs for as long as its lifespan.

The task lives in a task group that its resource's host task enters at start
and exits at teardown, inside the resource's cancel scope, so it is cancelled
before the resources it depends on stop. It never lets an exception reach the
task group (that would cancel the host task, which may be running the body):
a crash, or a return before the teardown, is reported to the lifespan's
monitor instead, which logs it, tells the listeners and wakes
`Lifespan.wait_failed`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from lifespan_kit._report import Monitor
from lifespan_kit._status import set_reporter
from lifespan_kit.errors import BackgroundTaskError


class BackgroundTask:
    """One running background task, started and stopped by its instance."""

    __slots__ = (
        "_dependency_path",
        "_func",
        "_is_stopping",
        "_monitor",
        "_resource_name",
        "_stop_error",
        "_tg",
    )

    def __init__(
        self,
        resource_name: str,
        func: Callable[..., Awaitable[object]],
        *,
        dependency_path: tuple[str, ...],
        monitor: Monitor,
    ) -> None:
        self._resource_name = resource_name
        self._func = func
        self._dependency_path = dependency_path
        self._monitor = monitor
        self._is_stopping = False
        self._stop_error: Exception | None = None
        self._tg: TaskGroup = anyio.create_task_group()

    async def start(self, args: list[object], kwargs: dict[str, object]) -> None:
        """Spawn the task; it runs until `stop()` (or until it fails)."""
        await self._tg.__aenter__()
        self._tg.start_soon(
            self._run, args, kwargs, name=f"background task '{self._resource_name}'"
        )

    async def _run(self, args: list[object], kwargs: dict[str, object]) -> None:
        set_reporter(self._monitor, self._resource_name)
        try:
            await self._func(*args, **kwargs)
        except Exception as exc:
            if self._is_stopping:
                self._stop_error = exc
                return
            error = BackgroundTaskError(
                self._resource_name, dependency_path=self._dependency_path
            )
            error.__cause__ = exc
            self._monitor.fail(error)
            return
        # A return forced by a cancellation (the teardown's, or one from
        # outside) is no failure: the checkpoint raises it again.
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._monitor.fail(
            BackgroundTaskError(
                self._resource_name,
                returned=True,
                dependency_path=self._dependency_path,
            )
        )

    async def stop(self) -> None:
        """Cancel the task and wait for it; raise what it raised while stopping."""
        self._is_stopping = True
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        if self._stop_error is not None:
            raise self._stop_error
