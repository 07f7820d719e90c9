"""lifespan_kit.starlette after startup: runtime failures, and a stopped lifespan."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from types import FrameType
from typing import Literal

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from lifespan_kit import (
    Bundle,
    Registry,
    _server,  # the unit that sends the signal
)
from lifespan_kit.errors import InvalidOptionError, LifespanNotRunError
from lifespan_kit.starlette import (
    FailurePolicy,
    health_routes,
    lifespan,
    resource,
    resources,
)
from tests.fakes import Recorder
from tests.integrations.driver import LifespanFailedError, run_lifespan, with_state


class Resources(Bundle):
    db: str
    worker: None


class Crash:
    """Makes the background task of `crashing_registry` fail on demand."""

    def __init__(self) -> None:
        self.now = anyio.Event()

    def trigger(self) -> None:
        self.now.set()


def crashing_registry(recorder: Recorder, crash: Crash) -> Registry:
    """db <- worker: a background task that raises once `crash` is triggered."""
    registry = Registry()
    registry.add("db", recorder.generator("db"))

    @registry.background
    async def worker(db: str) -> None:
        await crash.now.wait()
        raise ConnectionResetError("the queue went away")

    return registry


async def home(request: Request) -> PlainTextResponse:
    """Answer with the db resource, read through the bundle."""
    return PlainTextResponse(resources(request, Resources).db)


def crashing_app(
    recorder: Recorder,
    crash: Crash,
    *,
    on_failure: FailurePolicy,
    concurrency: int | None = None,
) -> Starlette:
    registry = crashing_registry(recorder, crash)
    return Starlette(
        routes=[Route("/", home), *health_routes()],
        lifespan=lifespan(
            registry, Resources, on_failure=on_failure, concurrency=concurrency
        ),
    )


class PolicyLog(logging.Handler):
    """Collects lifespan_kit's log records; wakes a waiter on a chosen event."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.events: list[str] = []
        self._waiters: dict[str, anyio.Event] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        event = str(getattr(record, "lifespan_kit_event", ""))
        self.events.append(event)
        waiter = self._waiters.get(event)
        if waiter is not None:
            waiter.set()

    async def wait_for(self, event: str) -> logging.LogRecord:
        """Return the first record of `event`, waiting for it (at most 10 s)."""
        if event not in self.events:
            waiter = self._waiters.setdefault(event, anyio.Event())
            with anyio.fail_after(10):
                await waiter.wait()
        return self.records[self.events.index(event)]


@pytest.fixture
def policy_log() -> Iterator[PolicyLog]:
    """Capture the lifespan_kit logger's records for the test."""
    handler = PolicyLog()
    logger = logging.getLogger("lifespan_kit")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class StopRequests:
    """Stands in for `ask_server_to_stop`: records calls, answers as told."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        return self.answer


class Served:
    """What a client got from an app whose background task was made to fail."""

    def __init__(self) -> None:
        self.before: list[httpx.Response] = []
        self.after: list[httpx.Response] = []
        self.events: list[str] = []
        self.record: logging.LogRecord | None = None


async def crash_while_serving(
    app: Starlette,
    crash: Crash,
    log: PolicyLog,
    served: Served,
    *,
    until: str,
    paths: tuple[str, ...] = (),
    recorder: Recorder | None = None,
) -> None:
    """Serve, request `paths`, fail the task, wait for the `until` log, request again.

    Leaving the lifespan then raises the failure, as LifespanFailedError.
    """
    async with run_lifespan(app) as state:
        transport = httpx.ASGITransport(app=with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            served.before = [await c.get(path) for path in paths]
            crash.trigger()
            served.record = await log.wait_for(until)
            served.events = list(log.events)
            served.after = [await c.get(path) for path in paths]
        if recorder is not None:
            recorder.events.append("server stops")


# --- a runtime failure ----------------------------------------------------------


@pytest.mark.parametrize("on_failure", ["stop", "degrade"])
async def test_runtime_failure_turns_both_probes_503_naming_the_resource(
    on_failure: FailurePolicy,
    concurrency: int | None,
    policy_log: PolicyLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a background task fails, /readyz and /livez answer 503 and name it."""
    monkeypatch.setattr(_server, "ask_server_to_stop", StopRequests(None))
    crash = Crash()
    app = crashing_app(
        Recorder(), crash, on_failure=on_failure, concurrency=concurrency
    )
    served = Served()
    with pytest.raises(LifespanFailedError, match="Background task 'worker' failed"):
        await crash_while_serving(
            app,
            crash,
            policy_log,
            served,
            until="degraded",
            paths=("/readyz", "/livez", "/"),
        )
    before = [response.status_code for response in served.before]
    ready, live, after = served.after
    failed = {
        "worker": "Background task 'worker' failed while the lifespan was running. "
        "cause: ConnectionResetError: the queue went away"
    }
    assert before == [200, 200, 200]
    assert (ready.status_code, ready.json()) == (
        503,
        {"status": "failed", "resources": {}, "failed": failed},
    )
    assert (live.status_code, live.json()) == (
        503,
        {"status": "failed", "lifespan": "running", "failed": failed},
    )
    assert after.text == "db"  # still serving until the server stops


async def test_failure_is_logged_when_it_happens_then_the_policy(
    policy_log: PolicyLog,
) -> None:
    """The engine logs the failure at once; the app logs what it does about it."""
    crash = Crash()
    app = crashing_app(Recorder(), crash, on_failure="degrade")
    served = Served()
    with pytest.raises(LifespanFailedError):
        await crash_while_serving(app, crash, policy_log, served, until="degraded")
    record = served.record
    assert record is await policy_log.wait_for("degraded")  # logged once
    assert served.events.index("failed") < served.events.index("degraded")
    assert record.levelno == logging.ERROR
    assert getattr(record, "lifespan_kit_resource", None) == "worker"
    assert "on_failure='degrade': the app keeps serving" in record.getMessage()


async def test_stop_policy_asks_the_server_to_stop(
    policy_log: PolicyLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With on_failure="stop", the app asks the server to stop, and logs how."""
    stop = StopRequests("sent SIGTERM to this process, 42")
    monkeypatch.setattr(_server, "ask_server_to_stop", stop)
    crash = Crash()
    app = crashing_app(Recorder(), crash, on_failure="stop")
    served = Served()
    with pytest.raises(LifespanFailedError):
        await crash_while_serving(app, crash, policy_log, served, until="stopping_app")
    assert stop.calls == 1
    assert served.record is not None
    assert served.record.getMessage() == (
        "Resource 'worker' failed while the app was running; stopping the server "
        "gracefully (sent SIGTERM to this process, 42)."
    )


async def test_stop_policy_without_a_server_to_stop_stays_up(
    policy_log: PolicyLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no process stops the server on SIGTERM, the app says so and stays up."""
    monkeypatch.setattr(_server, "ask_server_to_stop", StopRequests(None))
    crash = Crash()
    app = crashing_app(Recorder(), crash, on_failure="stop")
    served = Served()
    with pytest.raises(LifespanFailedError):
        await crash_while_serving(app, crash, policy_log, served, until="degraded")
    assert served.record is not None
    assert "no process here stops the server on SIGTERM" in served.record.getMessage()


async def test_failure_is_raised_again_as_the_lifespan_ends_after_teardown(
    monkeypatch: pytest.MonkeyPatch, policy_log: PolicyLog, concurrency: int | None
) -> None:
    """Leaving stops the resources, then reports the failure to the server."""
    monkeypatch.setattr(_server, "ask_server_to_stop", StopRequests(None))
    recorder, crash = Recorder(), Crash()
    app = crashing_app(recorder, crash, on_failure="stop", concurrency=concurrency)
    with pytest.raises(LifespanFailedError) as info:
        await crash_while_serving(
            app, crash, policy_log, Served(), until="degraded", recorder=recorder
        )
    assert info.value.event == "lifespan.shutdown.failed"
    assert "ConnectionResetError: the queue went away" in info.value.message
    assert recorder.events == ["start db", "server stops", "stop db"]


def test_unknown_failure_policy_is_rejected() -> None:
    """on_failure takes "stop" or "degrade", nothing else, when the app is built."""
    registry = crashing_registry(Recorder(), Crash())
    with pytest.raises(InvalidOptionError, match="Option 'on_failure'") as info:
        lifespan(registry, Resources, on_failure="restart")  # type: ignore[call-overload]
    assert info.value.code == "invalid-option"
    assert info.value.resource_name is None
    assert "it must be 'stop' or 'degrade', not 'restart'" in str(info.value)


def test_failure_policy_is_stop_by_default() -> None:
    """Without on_failure, a runtime failure stops the server."""
    app_lifespan = lifespan(crashing_registry(Recorder(), Crash()), Resources)
    assert app_lifespan.on_failure == "stop"
    assert repr(app_lifespan) == (
        "<AppLifespan resources=['db', 'worker'] on_failure='stop'>"
    )


# --- asking the server to stop ---------------------------------------------------


class Kills:
    """Stands in for os.kill: records (pid, signal) pairs."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def __call__(self, pid: int, sig: int) -> None:
        self.sent.append((pid, sig))


def test_sigterm_goes_to_this_process_when_it_handles_sigterm() -> None:
    """A process with a SIGTERM handler (uvicorn, granian) gets the SIGTERM itself."""
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        pytest.skip("signal handlers can only be installed in the main thread")
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        how = _server.ask_server_to_stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]
    assert how == f"sent SIGTERM to this process, {os.getpid()}"


class FakeParent:
    def __init__(self, pid: int) -> None:
        self.pid = pid


@pytest.mark.parametrize(
    ("parent", "expected"),
    [
        pytest.param("spawner", True, id="spawned-by-the-live-parent"),
        pytest.param("adopter", False, id="parent-died-and-was-replaced"),
        pytest.param(None, False, id="not-a-multiprocessing-child"),
    ],
)
def test_sigterm_goes_to_the_supervisor_of_a_worker_that_ignores_it(
    monkeypatch: pytest.MonkeyPatch,
    parent: Literal["spawner", "adopter"] | None,
    expected: bool,
) -> None:
    """A worker without a SIGTERM handler (hypercorn's) asks its live parent."""
    kills = Kills()
    monkeypatch.setattr(signal, "getsignal", lambda signum: signal.SIG_DFL)
    monkeypatch.setattr(os, "kill", kills)
    found = {"spawner": FakeParent(os.getppid()), "adopter": FakeParent(1), None: None}
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: found[parent])
    how = _server.ask_server_to_stop()
    if expected:
        assert kills.sent == [(os.getppid(), signal.SIGTERM)]
        assert how == f"sent SIGTERM to the worker's supervisor, process {os.getppid()}"
    else:
        assert (kills.sent, how) == ([], None)


# --- after the lifespan stopped -------------------------------------------------


def greeting_registry(recorder: Recorder) -> Registry:
    registry = Registry()
    registry.add("db", recorder.generator("db"))
    registry.add("settings", "hello")
    return registry


class DbOnly(Bundle):
    db: str


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(lambda r: resources(r, DbOnly).db, id="resources-with-bundle"),
        pytest.param(lambda r: str(resources(r)), id="resources-without-bundle"),
        pytest.param(lambda r: str(resource(r, "db")), id="resource-by-name"),
    ],
)
async def test_accessors_refuse_closed_resources_after_shutdown(
    read: Callable[[Request], str],
) -> None:
    """A request with the state of a stopped lifespan gets LifespanNotRunError."""

    async def handler(request: Request) -> PlainTextResponse:
        return PlainTextResponse(read(request))

    app = Starlette(
        routes=[Route("/", handler), *health_routes()],
        lifespan=lifespan(greeting_registry(Recorder()), DbOnly),
    )
    async with run_lifespan(app) as state:
        pass
    transport = httpx.ASGITransport(app=with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(LifespanNotRunError) as info:
            await client.get("/")
        ready = await client.get("/readyz")
    assert info.value.code == "lifespan-not-run"
    assert info.value.cause == "stopped"
    assert info.value.phase == "running"
    assert "has stopped; its resources are closed" in str(info.value)
    assert (ready.status_code, ready.json()) == (
        503,
        {"status": "stopped", "resources": {}},
    )


def test_test_client_reused_after_its_block_raises_not_running(
    anyio_backend_name: str,
) -> None:
    """A TestClient used after `with` gets NotRunningError, not closed resources."""
    backend: Literal["asyncio", "trio"] = (
        "trio" if anyio_backend_name == "trio" else "asyncio"
    )

    async def handler(request: Request) -> PlainTextResponse:
        return PlainTextResponse(resources(request, DbOnly).db)

    app = Starlette(
        routes=[Route("/", handler)],
        lifespan=lifespan(greeting_registry(Recorder()), DbOnly),
    )
    with TestClient(app, backend=backend) as client:
        assert client.get("/").text == "db"
    with pytest.raises(LifespanNotRunError, match="TestClient used after its `with`"):
        client.get("/")


async def test_resources_are_refused_once_their_teardown_began() -> None:
    """While the resources stop, readiness says draining and accessors refuse."""
    stopping, may_stop = anyio.Event(), anyio.Event()
    registry = Registry()

    @registry.resource
    async def db() -> AsyncIterator[str]:
        yield "db"
        stopping.set()
        await may_stop.wait()

    app = Starlette(
        routes=[
            Route("/", lambda r: PlainTextResponse(resources(r, DbOnly).db)),
            *health_routes(),
        ],
        lifespan=lifespan(registry, DbOnly),
    )
    states: list[dict[str, object]] = []
    entered, shutdown = anyio.Event(), anyio.Event()

    async def serve() -> None:
        async with run_lifespan(app) as state:
            states.append(state)
            entered.set()
            await shutdown.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            await entered.wait()
            transport = httpx.ASGITransport(app=with_state(app, states[0]))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                shutdown.set()
                await stopping.wait()
                ready = await c.get("/readyz")
                with pytest.raises(LifespanNotRunError, match="has stopped"):
                    await c.get("/")
                may_stop.set()
    assert ready.json() == {"status": "draining", "resources": {}}


async def test_asgi_lifespan_manager_serves_then_refuses_after_shutdown() -> None:
    """Driven by asgi-lifespan's LifespanManager, requests get the bundle, then not."""
    registry = greeting_registry(Recorder())

    async def handler(request: Request) -> PlainTextResponse:
        return PlainTextResponse(resources(request, DbOnly).db)

    app = Starlette(routes=[Route("/", handler)], lifespan=lifespan(registry, DbOnly))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            served = await c.get("/")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        with pytest.raises(LifespanNotRunError, match="has stopped"):
            await c.get("/")
    assert served.text == "db"


async def test_a_crashed_task_of_a_resource_is_a_runtime_failure_too(
    policy_log: PolicyLog, concurrency: int | None
) -> None:
    """A task a resource holds in its task group crashes: the probes say 503."""
    crash = Crash()
    registry = Registry()

    async def consume() -> None:
        await crash.now.wait()
        raise ConnectionResetError("the subscription dropped")

    @registry.resource
    async def db() -> AsyncIterator[str]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            yield "db"

    app = Starlette(
        routes=health_routes(),
        lifespan=lifespan(
            registry, DbOnly, on_failure="degrade", concurrency=concurrency
        ),
    )
    served = Served()
    with pytest.raises(LifespanFailedError, match="Resource 'db' failed while the"):
        await crash_while_serving(
            app, crash, policy_log, served, until="degraded", paths=("/livez",)
        )
    before, after = served.before[0], served.after[0]
    assert (before.status_code, after.status_code) == (200, 503)
    assert after.json()["failed"] == {
        "db": "Resource 'db' failed while the lifespan was running: its task group "
        "was cancelled from inside. cause: ConnectionResetError: the subscription "
        "dropped"
    }
