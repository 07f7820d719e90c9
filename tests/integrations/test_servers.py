"""lifespan_kit.starlette served by uvicorn, hypercorn (asyncio and trio) and granian.

Each test serves `tests.integrations.served_app` in a subprocess on a free port
of 127.0.0.1, and reads the order of events from what the app prints. The exit
statuses asserted here are the ones docs/integrations/starlette.md documents.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import pytest

from tests.integrations import served_app
from tests.integrations.driver import LifespanFailedError, open_client, run_lifespan
from tests.integrations.server import Server, port_option

APP = "tests.integrations.served_app:app"
STARTED = ["start settings", "start db", "start cache"]
STOPPED = ["stop cache", "stop db", "stop settings"]


def bind_option(port: int) -> Sequence[str]:
    return ["--bind", f"127.0.0.1:{port}"]


@dataclass(frozen=True)
class Kind:
    """How to run one server, and the exit statuses it ends with."""

    args: tuple[str, ...]
    ready: str
    listen: Callable[[int], Sequence[str]]
    after_sigterm: int
    after_sigint: int
    after_startup_failure: int
    after_runtime_failure: int
    # hypercorn's trio worker logs that it runs before it sees the failure.
    announces_before_failing: bool = False

    def serve(self, **env: str) -> Server:
        return Server(*self.args, ready=self.ready, listen=self.listen, env=env)


# uvicorn re-raises the signal it handled, so SIGTERM ends it by SIGTERM (143
# in a shell) and SIGINT as a KeyboardInterrupt it catches (0). hypercorn's
# supervisor exits 0 whatever its worker did; with --workers 0 there is no
# supervisor, and a failure ends hypercorn with status 1. granian's supervisor
# exits 1 when its worker exits on its own, before it was told to.
SERVERS = [
    pytest.param(
        Kind(
            ("uvicorn", APP, "--host", "127.0.0.1"),
            "Uvicorn running on",
            port_option,
            after_sigterm=-signal.SIGTERM,
            after_sigint=0,
            after_startup_failure=3,
            after_runtime_failure=-signal.SIGTERM,
        ),
        id="uvicorn",
    ),
    pytest.param(
        Kind(
            ("hypercorn", APP),
            "Running on http://",
            bind_option,
            after_sigterm=0,
            after_sigint=0,
            after_startup_failure=0,
            after_runtime_failure=0,
        ),
        id="hypercorn",
    ),
    pytest.param(
        Kind(
            ("hypercorn", APP, "--worker-class", "trio"),
            "Running on http://",
            bind_option,
            after_sigterm=0,
            after_sigint=0,
            after_startup_failure=0,
            after_runtime_failure=0,
            announces_before_failing=True,
        ),
        id="hypercorn-trio",
    ),
    pytest.param(
        Kind(
            ("hypercorn", APP, "--workers", "0"),
            "Running on http://",
            bind_option,
            after_sigterm=0,
            after_sigint=0,
            after_startup_failure=1,
            after_runtime_failure=1,
        ),
        id="hypercorn-workers-0",
    ),
    pytest.param(
        Kind(
            ("granian", "--interface", "asgi", APP, "--host", "127.0.0.1"),
            "Started worker-1",
            port_option,
            after_sigterm=0,
            after_sigint=0,
            after_startup_failure=1,
            after_runtime_failure=1,
        ),
        id="granian",
    ),
]


def events(server: Server) -> list[str]:
    """The app's own lines, in the order it printed them."""
    prefixes = ("start ", "stop ", "slow request ", "consumer ")
    return [line for line in server.lines if line.startswith(prefixes)]


class InFlight:
    """A request sent from a thread, so the test can signal the server meanwhile."""

    def __init__(self, url: str) -> None:
        self.response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._send, args=(url,), daemon=True)
        self._thread.start()

    def _send(self, url: str) -> None:
        self.response = httpx.get(url, timeout=10)

    def result(self) -> httpx.Response:
        self._thread.join(10)
        assert self.response is not None, "the request in flight got no answer"
        return self.response


@pytest.mark.parametrize("kind", SERVERS)
def test_serves_then_drains_and_stops_in_reverse_on_sigterm(kind: Kind) -> None:
    """Handlers get the bundle; on SIGTERM, the request in flight ends first."""
    with kind.serve() as server:
        server.wait_until_serving()
        home = httpx.get(f"{server.url}/", timeout=10)
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        in_flight = InFlight(f"{server.url}/slow")
        server.wait_for_line("slow request begins")
        status = server.stop(signal.SIGTERM)
        slow = in_flight.result()
    assert home.json() == {"db": "db", "cache": "cache"}
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    assert slow.text == "slow db cache"
    assert events(server) == [
        *STARTED,
        *("slow request begins", "slow request ends"),
        *STOPPED,
    ], server.output
    assert status == kind.after_sigterm, server.output


@pytest.mark.parametrize("kind", SERVERS)
def test_sigint_stops_in_reverse(kind: Kind) -> None:
    """SIGINT (Ctrl+C) stops the resources in reverse too."""
    with kind.serve() as server:
        server.wait_until_serving()
        home = httpx.get(f"{server.url}/", timeout=10)
        status = server.stop(signal.SIGINT)
    assert home.status_code == 200
    assert events(server) == [*STARTED, *STOPPED], server.output
    assert status == kind.after_sigint, server.output


@pytest.mark.parametrize("kind", SERVERS)
def test_startup_failure_exits_without_serving(kind: Kind) -> None:
    """A resource that fails to start stops the others; the server exits unserved."""
    with kind.serve(**{served_app.FAIL_VARIABLE: "cache"}) as server:
        status = server.wait()
    assert events(server) == [*STARTED, "stop db", "stop settings"], server.output
    assert "Resource 'cache' failed during startup." in server.output
    assert (kind.ready in server.output) is kind.announces_before_failing
    assert status == kind.after_startup_failure, server.output


@pytest.mark.parametrize("kind", SERVERS)
def test_runtime_failure_stops_the_server_gracefully(kind: Kind) -> None:
    """With on_failure="stop", a crashed background task stops the whole server."""
    with kind.serve() as server:
        server.wait_until_serving()
        crash = httpx.get(f"{server.url}/crash", timeout=10)
        status = server.wait()
    assert crash.text == "crashing"
    assert events(server) == [*STARTED, "consumer fails", *STOPPED], server.output
    assert "Background task 'consumer' failed" in server.output
    assert "stopping the server gracefully (sent SIGTERM to" in server.output
    assert status == kind.after_runtime_failure, server.output


# The policy acts the same under every server; one asyncio and one trio server.
@pytest.mark.parametrize("kind", [SERVERS[0], SERVERS[2]])
def test_runtime_failure_degrades_with_both_probes_503(kind: Kind) -> None:
    """With on_failure="degrade", the server serves on; /readyz and /livez say 503."""
    policy = {served_app.POLICY_VARIABLE: "degrade"}
    with kind.serve(**policy) as server:
        server.wait_until_serving()
        httpx.get(f"{server.url}/crash", timeout=10)
        server.wait_for_line("on_failure='degrade'")
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        live = httpx.get(f"{server.url}/livez", timeout=10)
        home = httpx.get(f"{server.url}/", timeout=10)
        status = server.stop(signal.SIGTERM)
    assert (ready.status_code, ready.json()["status"]) == (503, "failed")
    assert (live.status_code, list(live.json()["failed"])) == (503, ["consumer"])
    assert home.status_code == 200
    assert events(server) == [*STARTED, "consumer fails", *STOPPED], server.output
    assert status == kind.after_sigterm, server.output


# --- the served app, in process ---------------------------------------------------


async def test_served_app_prints_its_events_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app served above prints each start and stop, and fails on request."""
    monkeypatch.setattr(served_app, "SLOW_REQUEST", 0)
    monkeypatch.setattr("lifespan_kit._server.ask_server_to_stop", lambda: None)
    responses: list[httpx.Response] = []

    async def serve() -> None:
        async with open_client(served_app.app) as client:
            responses.extend([await client.get(path) for path in ("/", "/slow")])
            await client.get("/crash")
            await client.get("/crash")  # idempotent

    with pytest.raises(LifespanFailedError, match="Background task 'consumer'"):
        await serve()
    home, slow = responses
    monkeypatch.setenv(served_app.FAIL_VARIABLE, "db")
    with pytest.raises(LifespanFailedError, match="Resource 'db' failed"):
        await run_lifespan(served_app.app).__aenter__()
    assert home.json() == {"db": "db", "cache": "cache"}
    assert slow.text == "slow db cache"
    lines = capsys.readouterr().out.split("\n")
    assert lines[:5] == [*STARTED, "slow request begins", "slow request ends"]
    assert lines[-4:] == ["start settings", "start db", "stop settings", ""]
