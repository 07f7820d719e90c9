"""`run`: a worker's main function, with its resources, signals and exit status.

The contract, as supervisors (Docker, Kubernetes, systemd) expect it:

| situation                                   | exit status             |
|---------------------------------------------|-------------------------|
| main returned                               | 0                       |
| a resource failed to start                  | 3                       |
| main raised, a background task failed, or a | 1                       |
| teardown failed                             |                         |
| first SIGINT / SIGTERM                      | reverse teardown, then  |
|                                             | 130 / 143               |
| second signal                               | each teardown left gets |
|                                             | at most 1 s             |
| third signal                                | immediate exit          |

The shutdown (from the first signal, or from main's end) is bounded by
`shutdown_timeout`; then every teardown still running is cancelled.
"""

from __future__ import annotations

import functools
import inspect
import os
import signal
import sys
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Literal, TypeVar, cast

import anyio

import lifespan_kit
from lifespan_kit._bundle import ResourceMap, is_bundle_class
from lifespan_kit._lifespan import Lifespan, shorten_teardown
from lifespan_kit._registry import Registry
from lifespan_kit._report import Listener, ResourceEvent, log_fields, logger
from lifespan_kit._resource import classify
from lifespan_kit._settings import check_seconds
from lifespan_kit._signals import Schedule, SignalCounter, exit_status
from lifespan_kit.errors import (
    InvalidMainError,
    InvalidOptionError,
    ResourceFailedError,
    ShutdownError,
)

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import BaseExceptionGroup

Backend = Literal["asyncio", "trio"]
"""The event loops `run` can use."""

ResourcesT = TypeVar("ResourcesT", bound="lifespan_kit.Bundle | ResourceMap")

DEFAULT_SHUTDOWN_TIMEOUT: Final = 8.0
"""Seconds the whole shutdown may take: below Docker's 10 s before SIGKILL."""

SECOND_SIGNAL_GRACE: Final = 1.0
"""Seconds each teardown still to run gets after a second signal."""

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_STARTUP_FAILED: Final = 3

_BACKENDS: Final = ("asyncio", "trio")

MainCall = Callable[[object], Awaitable[None]]


def run(
    main: Callable[[ResourcesT], Awaitable[None]] | Callable[[], Awaitable[None]],
    registry: Registry,
    *,
    backend: Backend = "asyncio",
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    concurrency: int | None = None,
    listeners: Sequence[Listener] = (),
) -> int:
    """Start the resources `main` needs, run it, stop them; return the exit status.

    The bundle class comes from the annotation of main's parameter: a
    [Bundle][lifespan_kit.Bundle] subclass starts exactly what its fields need;
    [ResourceMap][lifespan_kit.ResourceMap], or no parameter at all, starts
    every resource in the registry.

    SIGINT and SIGTERM are handled while it runs (in the main thread only; the
    previous handlers are restored): the first cancels main, or the startup, and
    stops every resource in reverse; the second gives each teardown still to
    run at most one more second; the third exits at once. A background task
    that fails stops the app too.

    Exit statuses: 0 when main returned; 3 when a resource failed to start;
    1 when main raised, a background task failed or a teardown failed;
    130 after SIGINT and 143 after SIGTERM. `raise SystemExit(n)` in main exits
    with n, after the teardown.

    Args:
        main: ``async def main(resources: Resources) -> None``.
        registry: The registry that declares the resources.
        backend: "asyncio" or "trio".
        shutdown_timeout: Seconds the whole shutdown may take; after that,
            every teardown still running is cancelled.
        concurrency: How many resources may start at once (see
            [Registry.lifespan][lifespan_kit.Registry.lifespan]).
        listeners: Extra event listeners for this run.

    Returns:
        The exit status; pass it to `sys.exit`.

    Raises:
        InvalidMainError: When `main` is not an async function taking a bundle.
        InvalidOptionError: When an option is out of range.
        GraphError: When the resource graph is invalid; nothing was started.

    Example:
        ```python
        async def main(resources: Resources) -> None:
            async for job in resources.queue:
                await handle(job, resources.db)

        if __name__ == "__main__":
            sys.exit(lifespan_kit.run(main, registry))
        ```

    Added in 0.1.
    """
    bundle, call = resolve_main(main)
    if backend not in _BACKENDS:
        raise InvalidOptionError(
            None,
            option="backend",
            problem="it must be 'asyncio' or 'trio'",
            owner="lifespan_kit.run()",
        )
    shutdown_timeout = check_seconds(
        None, "shutdown_timeout", shutdown_timeout, owner="lifespan_kit.run()"
    )
    runner = _Runner(call, backend=backend, shutdown_timeout=shutdown_timeout)
    run_listeners = (*listeners, runner.listen)
    lifespan: Lifespan[object] = (
        registry.lifespan(concurrency=concurrency, listeners=run_listeners)
        if bundle is None
        else registry.lifespan(bundle, concurrency=concurrency, listeners=run_listeners)
    )
    return runner.run(lifespan)


class _Runner:
    """One run of a worker: the state its signal handling and shutdown share."""

    def __init__(
        self, call: MainCall, *, backend: Backend, shutdown_timeout: float
    ) -> None:
        self._call = call
        self._backend: Backend = backend
        self._shutdown_timeout = shutdown_timeout
        self._signals = SignalCounter()
        self._handled_signals = 0
        self._exit_code: int | None = None
        self._outcome = EXIT_OK
        self._has_errors = False
        self._lifespan: Lifespan[object] | None = None
        self._stop_scope: anyio.CancelScope | None = None
        self._stopping: anyio.Event | None = None

    def run(self, lifespan: Lifespan[object]) -> int:
        self._lifespan = lifespan
        installed = self._signals.install()
        try:
            return anyio.run(self._serve, backend=self._backend)
        finally:
            if installed:
                self._signals.restore()

    async def _serve(self) -> int:
        self._stop_scope = anyio.CancelScope()
        self._stopping = anyio.Event()
        self._signals.attach(_scheduler(self._backend), self._on_signal)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._enforce_deadline)
                self._outcome = await self._run_lifespan()
                tg.cancel_scope.cancel()
        finally:
            # The loop is about to close: a late signal must not schedule on it.
            self._signals.detach()
        return self._outcome

    async def _run_lifespan(self) -> int:
        lifespan, stop_scope = self._lifespan, self._stop_scope
        assert lifespan is not None
        assert stop_scope is not None
        has_started = False
        try:
            with stop_scope:
                async with lifespan as resources:
                    has_started = True
                    notify("READY=1")
                    await self._run_main(resources)
        except Exception as exc:
            return self._failed(exc, during_startup=not has_started)
        return self._status()

    async def _run_main(self, resources: object) -> None:
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._stop_on_failure, tg.cancel_scope)
                try:
                    await self._call(resources)
                except Exception as exc:
                    error = exc
                except SystemExit as exc:
                    self._exit_code = _system_exit_status(exc)
                tg.cancel_scope.cancel()
        finally:
            self._begin_shutdown()
        if error is not None:
            raise error

    async def _stop_on_failure(self, scope: anyio.CancelScope) -> None:
        assert self._lifespan is not None
        error = await self._lifespan.wait_failed()
        logger.info(
            "Stopping: resource '%s' failed while running.",
            error.resource_name,
            extra=log_fields("stopping_app", error=error),
        )
        scope.cancel()

    async def _enforce_deadline(self) -> None:
        assert self._stopping is not None
        await self._stopping.wait()
        await anyio.sleep(self._shutdown_timeout)
        logger.warning(
            "The shutdown took longer than shutdown_timeout=%gs; cancelling every "
            "teardown still running.",
            self._shutdown_timeout,
            extra=log_fields("shutdown_timeout"),
        )
        assert self._lifespan is not None
        shorten_teardown(self._lifespan, 0)

    def _on_signal(self) -> None:
        """React, in the event loop, to the signals received and not yet handled."""
        received = self._signals.received
        while self._handled_signals < min(len(received), 2):
            self._handled_signals += 1
            name = _signal_name(received[self._handled_signals - 1])
            if self._handled_signals == 1:
                logger.info(
                    "Received %s: stopping; a second signal hurries the teardown.",
                    name,
                    extra=log_fields("signal"),
                )
                assert self._stop_scope is not None
                self._stop_scope.cancel()
                self._begin_shutdown()
            else:
                logger.warning(
                    "Received %s again: each teardown still running gets at most "
                    "%gs more; a third signal exits at once.",
                    name,
                    SECOND_SIGNAL_GRACE,
                    extra=log_fields("second_signal"),
                )
                assert self._lifespan is not None
                shorten_teardown(self._lifespan, SECOND_SIGNAL_GRACE)

    def _begin_shutdown(self) -> None:
        assert self._stopping is not None
        if not self._stopping.is_set():
            self._stopping.set()
            notify("STOPPING=1")

    def listen(self, event: ResourceEvent) -> None:
        """Note failures that the lifespan may not raise (it was cancelled)."""
        if event.kind in ("failed", "stop_failed"):
            self._has_errors = True
        elif event.kind == "start_failed":
            self._begin_shutdown()

    def _failed(self, exc: Exception, *, during_startup: bool) -> int:
        if during_startup:
            logger.error(
                "Startup failed; every resource that had started was stopped "
                "(exit status 3).",
                exc_info=exc,
                extra=log_fields("startup_failed", error=exc),
            )
            return EXIT_STARTUP_FAILED
        if _is_logged(exc):
            logger.error(
                "Stopped after failures (exit status 1): %s",
                str(exc).splitlines()[0],
                extra=log_fields("stopped_after_failures", error=exc),
            )
        else:
            logger.error(
                "main() raised; every resource was stopped (exit status 1).",
                exc_info=exc,
                extra=log_fields("main_failed", error=exc),
            )
        return EXIT_FAILED

    def _status(self) -> int:
        if self._has_errors:
            logger.error(
                "Stopped, but the shutdown had failures (exit status 1).",
                extra=log_fields("stopped_after_failures"),
            )
            return EXIT_FAILED
        if self._exit_code is not None:
            return self._exit_code
        if self._signals.received:
            return exit_status(self._signals.received[0])
        return EXIT_OK


def resolve_main(main: object) -> tuple[type[lifespan_kit.Bundle] | None, MainCall]:
    """Read the bundle class from main's signature; return it and how to call main.

    Raises:
        InvalidMainError: Naming what is wrong with `main` and what to change.
    """
    label = getattr(main, "__qualname__", None) or repr(main)
    if classify(main) != "coroutine":
        raise InvalidMainError(
            main=label,
            problem=f"it is {_describe_kind(main)}, not an async function.",
            remedy="declare it as `async def main(resources: Resources) -> None`.",
        )
    function = cast("Callable[..., Awaitable[None]]", main)
    required = [
        parameter
        for parameter in inspect.signature(function).parameters.values()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind
        not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if not required:
        return None, lambda _: function()
    if len(required) > 1:
        names = ", ".join(f"'{p.name}'" for p in required)
        raise InvalidMainError(
            main=label,
            problem=f"it takes {len(required)} parameters without defaults ({names}).",
            remedy=(
                "take one parameter, the bundle of resources, or none to start "
                "every resource; give the others default values."
            ),
        )
    parameter = required[0]
    bundle = _bundle_of(function, parameter.name, label)
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
        return bundle, lambda resources: function(**{parameter.name: resources})
    return bundle, lambda resources: function(resources)


def _bundle_of(
    function: Callable[..., object], parameter: str, label: str
) -> type[lifespan_kit.Bundle] | None:
    try:
        hints = typing.get_type_hints(_annotated(function))
    except Exception as exc:
        raise InvalidMainError(
            main=label,
            problem=(
                f"the annotation of '{parameter}' does not resolve "
                f"({type(exc).__name__}: {exc})."
            ),
            remedy=(
                "import the bundle class at runtime, not under `if TYPE_CHECKING:`; "
                "the runner reads it from the annotation."
            ),
        ) from exc
    hint: object = hints.get(parameter)
    if hint is ResourceMap:
        return None
    if is_bundle_class(hint):
        return hint
    problem = (
        f"its parameter '{parameter}' has no annotation."
        if hint is None
        else f"its parameter '{parameter}' is annotated as {_type_name(hint)}, "
        "which is neither a Bundle subclass nor ResourceMap."
    )
    raise InvalidMainError(
        main=label,
        problem=problem,
        remedy=(
            f"annotate it with your bundle: `async def main({parameter}: Resources)`, "
            "where `class Resources(Bundle)` lists the resources main uses."
        ),
    )


def _annotated(function: Callable[..., object]) -> object:
    """Return the object whose annotations describe `function`'s parameters."""
    if isinstance(function, functools.partial):
        return cast("functools.partial[object]", function).func
    if inspect.isfunction(function) or inspect.ismethod(function):
        return function
    return type(function).__call__


def _describe_kind(main: object) -> str:
    if inspect.isclass(main):
        return "a class"
    if inspect.isasyncgenfunction(main):
        return "an async generator function"
    if callable(main):
        return "a synchronous function"
    return f"an instance of {type(main).__name__}"


def _type_name(hint: object) -> str:
    return getattr(hint, "__qualname__", None) or repr(hint)


def _system_exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return EXIT_OK
    if isinstance(exc.code, int):
        return exc.code
    logger.error("main() exited: %s", exc.code, extra=log_fields("main_exited"))
    return EXIT_FAILED


def _is_logged(exc: BaseException) -> bool:
    """Whether the lifespan already logged every failure inside `exc`."""
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return all(_is_logged(inner) for inner in group.exceptions)
    return isinstance(exc, ResourceFailedError | ShutdownError)


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _scheduler(backend: Backend) -> Schedule:
    if backend == "trio":
        import trio  # only loaded on the trio backend

        return trio.lowlevel.current_trio_token().run_sync_soon
    import asyncio  # only loaded on the asyncio backend (trio programs skip it)

    return asyncio.get_running_loop().call_soon_threadsafe


def notify(message: str) -> None:
    """Send `message` to the service manager (systemd), if NOTIFY_SOCKET is set.

    A failure is logged and never stops the worker.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket, as systemd spells it
        address = "\0" + address[1:]
    import socket  # only under systemd: the import stays cheap

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(message.encode(), address)
    except OSError as exc:
        logger.warning(
            "Could not send %s to the service manager (NOTIFY_SOCKET): %s",
            message,
            exc,
            extra=log_fields("notify_failed"),
        )
