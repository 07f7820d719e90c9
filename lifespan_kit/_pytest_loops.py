"""Where the pytest plugin's resources run: host tasks and event loop drivers.

- A *host* is one task, on a test's event loop, that enters a layer's
  lifespans, waits on each one's `wait_failed`, and exits them in reverse when
  the layer stops, so that resources enter and exit in one task whichever task
  asks for them.
- A *driver* runs coroutines on a test's loop from pytest's synchronous code:
  pytest-asyncio's runner, anyio's test runner (asyncio or trio), or a
  background loop for sync tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio
import anyio.from_thread

if TYPE_CHECKING:
    import asyncio

    from anyio.abc import TestRunner
    from anyio.streams.memory import (
        MemoryObjectReceiveStream,
        MemoryObjectSendStream,
    )

    from lifespan_kit._bundle import ResourceMap
    from lifespan_kit._lifespan import Lifespan

# pytest leaves the frames of this module out of failure reports.
__tracebackhide__ = True

T = TypeVar("T")


class Driver(Protocol):
    """Runs coroutines on one event loop from synchronous fixture code."""

    def run(self, func: Callable[[], Coroutine[object, object, T]]) -> T: ...

    def close(self) -> None: ...


# --- the host task -------------------------------------------------------------

_Request = tuple["Lifespan[ResourceMap]", str, "Reply"]


class Reply:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: ResourceMap | None = None
        self.error: Exception | None = None


class Host:
    """One task that enters a layer's lifespans, watches them, exits them in reverse.

    A lifespan's failure while it runs (`Lifespan.wait_failed`) is passed to
    `on_failure` at once, and left out of the errors of the teardown.
    """

    def __init__(
        self,
        send: MemoryObjectSendStream[_Request],
        on_failure: Callable[[str, BaseException], None],
    ) -> None:
        self._send = send
        self._on_failure = on_failure
        self._stopped = anyio.Event()
        self._errors: list[BaseException] = []
        # Each failure reported while running, with its cause at that moment.
        self._reported: list[tuple[BaseException, BaseException | None]] = []

    @classmethod
    async def spawn(cls, on_failure: Callable[[str, BaseException], None]) -> Host:
        send, receive = anyio.create_memory_object_stream[_Request](1)
        host = cls(send, on_failure)
        spawn_task(lambda: host.serve(receive))
        return host

    async def start(self, lifespan: Lifespan[ResourceMap], name: str) -> ResourceMap:
        reply = Reply()
        await self._send.send((lifespan, name, reply))
        await reply.done.wait()
        if reply.error is not None:
            raise reply.error
        assert reply.value is not None
        return reply.value

    async def stop(self) -> list[BaseException]:
        self._send.close()
        await self._stopped.wait()
        return self._errors

    async def serve(self, requests: MemoryObjectReceiveStream[_Request]) -> None:
        """Enter each lifespan sent, until the stream closes; then exit them all."""
        opened: list[Lifespan[ResourceMap]] = []
        watchers: list[anyio.CancelScope] = []
        try:
            async with anyio.create_task_group() as tg:
                try:
                    with requests:
                        async for lifespan, name, reply in requests:
                            try:
                                reply.value = await lifespan.__aenter__()
                            except Exception as exc:
                                reply.error = exc
                            else:
                                opened.append(lifespan)
                                watcher = anyio.CancelScope()
                                watchers.append(watcher)
                                tg.start_soon(self._watch, lifespan, name, watcher)
                            finally:
                                reply.done.set()
                finally:
                    for watcher in watchers:
                        watcher.cancel()
                    for lifespan in reversed(opened):
                        await self._exit(lifespan)
        finally:
            self._send.close()
            self._stopped.set()

    async def _watch(
        self, lifespan: Lifespan[ResourceMap], name: str, scope: anyio.CancelScope
    ) -> None:
        with scope:
            error = await lifespan.wait_failed()
            self._reported.append((error, error.__cause__))
            self._on_failure(name, error)

    async def _exit(self, lifespan: Lifespan[ResourceMap]) -> None:
        try:
            await lifespan.__aexit__(None, None, None)
        except Exception as exc:  # reported at the end of the layer's scope
            # A failure while running, raised again on exit, was reported; but
            # a crash in a resource's task group learns its cause only now.
            if not any(
                exc is failure and exc.__cause__ is cause
                for failure, cause in self._reported
            ):
                self._errors.append(exc)


def spawn_task(func: Callable[[], Coroutine[object, object, None]]) -> None:
    """Start `func` in a task of its own that outlives the calling task."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio

        trio.lowlevel.spawn_system_task(func)
    else:
        task = loop.create_task(func())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)


_TASKS: set[asyncio.Task[None]] = set()


# --- drivers: where a test's event loop comes from -----------------------------


class PortalDriver:
    """A background loop for sync tests, alive until the end of the session."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(
            anyio.from_thread.start_blocking_portal("asyncio")
        )

    def run(self, func: Callable[[], Coroutine[object, object, T]]) -> T:
        return self._portal.call(func)

    def close(self) -> None:
        self._stack.close()


class AnyioDriver:
    """anyio's test runner, kept open between tests of the same backend."""

    def __init__(self, backend: object) -> None:
        from anyio.pytest_plugin import extract_backend_and_options, get_runner

        self.backend = backend
        name, options = extract_backend_and_options(backend)
        self._stack = contextlib.ExitStack()
        self._runner: TestRunner = self._stack.enter_context(get_runner(name, options))

    def run(self, func: Callable[[], Coroutine[object, object, T]]) -> T:
        return self._runner.run_fixture(func, {})

    def close(self) -> None:
        self._stack.close()


class AsyncioRunner(Protocol):
    """What pytest-asyncio's runner fixtures give: an `asyncio.Runner`."""

    def run(self, coro: Coroutine[object, object, T]) -> T: ...


class AsyncioDriver:
    """pytest-asyncio's runner for the test's loop scope."""

    def __init__(self, runner: AsyncioRunner) -> None:
        self.runner = runner

    def run(self, func: Callable[[], Coroutine[object, object, T]]) -> T:
        async def call() -> T:
            return await func()

        return self.runner.run(call())

    def close(self) -> None:
        """The runner is pytest-asyncio's: it closes it."""
