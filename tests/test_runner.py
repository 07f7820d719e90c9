"""`lifespan_kit.run`, in-process: exit statuses, real signals, the shutdown deadline.

Each test runs the fake worker (tests/fake_worker.py) with `lifespan_kit.run`
in the test's own process, and sends real signals to it with `os.kill` at the
moment a resource says it reached a phase. tests/test_worker_process.py runs
the same scenarios in subprocesses, from the outside.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.lowlevel
import pytest

import lifespan_kit._runner
import lifespan_kit._signals
from lifespan_kit import Bundle, Registry, ResourceMap, run
from lifespan_kit._signals import SignalCounter
from lifespan_kit.errors import GraphError, InvalidMainError, InvalidOptionError
from tests import fake_worker
from tests.fake_worker import STARTED, STOPPED

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import ExceptionGroup

if TYPE_CHECKING:
    from lifespan_kit._runner import Backend

TERM, INT = signal.SIGTERM, signal.SIGINT


class Captured(Protocol):
    """What capsys and capfd return: the output captured so far."""

    @property
    def out(self) -> str: ...


class Capture(Protocol):
    """capsys or capfd."""

    def readouterr(self) -> Captured: ...


class Guard:
    """A SIGINT/SIGTERM handler installed before each test: the runner must
    replace it while it runs and put it back after; if it did not, a signal
    lands here instead of ending the test process."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)


@pytest.fixture(autouse=True)
def guard() -> Iterator[Guard]:
    """Install the guard handlers; restore the test process's own afterwards."""
    guard = Guard()
    previous = {signum: signal.signal(signum, guard) for signum in (INT, TERM)}
    yield guard
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the third signal's immediate exit instead of ending pytest."""
    calls: list[int] = []
    monkeypatch.setattr(lifespan_kit._signals, "exit_now", calls.append)
    return calls


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hurry the second signal's grace; the subprocess tests use the real one."""
    monkeypatch.setattr(lifespan_kit._runner, "SECOND_SIGNAL_GRACE", 0.05)


def run_worker(
    monkeypatch: pytest.MonkeyPatch,
    capture: Capture,
    backend: Backend,
    mode: str,
    *,
    signals_at: dict[str, list[signal.Signals]] | None = None,
    shutdown_timeout: float = 5,
    concurrency: int | None = None,
) -> tuple[int, list[str]]:
    """Run the fake worker; send each listed signal when its event is said."""
    schedule = signals_at or {}

    def send_signals(event: str) -> None:
        for signum in schedule.get(event, []):
            os.kill(os.getpid(), signum)

    monkeypatch.setenv("FAKE_WORKER_MODE", mode)
    monkeypatch.setattr(fake_worker, "HOOKS", [send_signals])
    capture.readouterr()
    status = run(
        fake_worker.main,
        fake_worker.registry,
        backend=backend,
        shutdown_timeout=shutdown_timeout,
        concurrency=concurrency,
    )
    return status, capture.readouterr().out.splitlines()


# --- exit statuses without signals -------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "events"),
    [
        pytest.param("return", 0, [*STARTED, *STOPPED], id="clean"),
        pytest.param("crash", 1, [*STARTED, *STOPPED], id="main-crashed"),
        pytest.param("exit", fake_worker.EXIT_CODE, [*STARTED, *STOPPED], id="exit"),
        pytest.param(
            "fail-start:second",
            3,
            ["start first", "start second", "stop first", "stopped first"],
            id="startup-failed",
        ),
        pytest.param(
            "return,fail-stop:second",
            1,
            [*STARTED, *(e for e in STOPPED if e != "stopped second")],
            id="teardown-failed",
        ),
        pytest.param(
            "background-crash", 1, [*STARTED, "pulse crashed", *STOPPED], id="pulse"
        ),
    ],
)
def test_exit_status_and_teardown_order(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    anyio_backend: Backend,
    concurrency: int | None,
    mode: str,
    status: int,
    events: list[str],
) -> None:
    """Each outcome exits with its status, after stopping everything in reverse."""
    assert run_worker(
        monkeypatch, capsys, anyio_backend, mode, concurrency=concurrency
    ) == (status, events)


def test_a_failed_startup_is_logged_with_its_cause(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    anyio_backend: Backend,
) -> None:
    """Status 3 comes with the StartupError and its traceback in the log."""
    run_worker(monkeypatch, capsys, anyio_backend, "fail-start:second")
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == (
        "Startup failed; every resource that had started was stopped (exit status 3)."
    )
    assert record.exc_info is not None
    assert "Resource 'second' failed during startup." in str(record.exc_info[1])


def test_a_crash_in_main_is_logged_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    anyio_backend: Backend,
) -> None:
    """Status 1 after main raised comes with main's exception in the log."""
    run_worker(monkeypatch, capsys, anyio_backend, "crash")
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith("main() raised")
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "main crashed"


def test_failures_already_logged_are_summarised_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    anyio_backend: Backend,
) -> None:
    """A background failure and a teardown failure are not logged twice."""
    status, _ = run_worker(
        monkeypatch, capsys, anyio_backend, "background-crash,fail-stop:second"
    )
    assert status == 1
    summary = [r for r in caplog.records if r.getMessage().startswith("Stopped after")]
    assert [r.getMessage() for r in summary] == [
        "Stopped after failures (exit status 1): 1 resource(s) failed while running: "
        "'pulse'. Then 1 resource(s) failed during shutdown. (2 sub-exceptions)"
    ]
    assert all(r.exc_info is None for r in summary)


# --- signals -----------------------------------------------------------------

CANCELLED_START = ["start first", "start second", "cancelled start second"]
CUT_SECOND = [
    "pulse done",
    "stop third",
    "stopped third",
    "stop second",
    "cancelled stop second",
    "stop first",
    "stopped first",
]


@pytest.mark.parametrize(
    ("mode", "signals_at", "status", "events"),
    [
        pytest.param(
            "hang-start:second",
            {"start second": [TERM]},
            143,
            [*CANCELLED_START, "stop first", "stopped first"],
            id="startup-once",
        ),
        pytest.param(
            "hang-start:second,hang-stop:first",
            {"start second": [TERM], "stop first": [TERM]},
            1,
            [*CANCELLED_START, "stop first", "cancelled stop first"],
            id="startup-twice",
        ),
        pytest.param(
            "", {"running": [TERM]}, 143, [*STARTED, *STOPPED], id="running-sigterm"
        ),
        pytest.param(
            "", {"running": [INT]}, 130, [*STARTED, *STOPPED], id="running-sigint"
        ),
        pytest.param(
            "hang-stop:second",
            {"running": [TERM], "stop second": [INT]},
            1,
            [*STARTED, *CUT_SECOND],
            id="running-twice",
        ),
        pytest.param(
            "return,hang-stop:second",
            {"stop second": [TERM, TERM]},
            1,
            [*STARTED, *CUT_SECOND],
            id="teardown-twice",
        ),
    ],
)
def test_signals_stop_the_worker_in_order(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    anyio_backend: Backend,
    concurrency: int | None,
    guard: Guard,
    mode: str,
    signals_at: dict[str, list[signal.Signals]],
    status: int,
    events: list[str],
) -> None:
    """A first signal stops in reverse; a second cuts what still hangs, then goes on."""
    assert run_worker(
        monkeypatch,
        capsys,
        anyio_backend,
        mode,
        signals_at=signals_at,
        concurrency=concurrency,
    ) == (status, events)
    assert guard.received == []


def test_a_signal_during_the_teardown_sets_the_status(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    anyio_backend: Backend,
) -> None:
    """main returned, then SIGTERM came while stopping: the teardown ends, 143."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("go on\n"))
    assert run_worker(
        monkeypatch,
        capsys,
        anyio_backend,
        "return,gate-stop:second",
        signals_at={"stop second": [TERM]},
    ) == (143, [*STARTED, *STOPPED])


@pytest.mark.parametrize(
    ("mode", "signals_at", "events"),
    [
        pytest.param(
            "hang-start:second,hang-stop:first",
            {"start second": [TERM], "stop first": [TERM, INT]},
            [*CANCELLED_START, "stop first", "cancelled stop first"],
            id="startup",
        ),
        pytest.param(
            "hang-stop:second",
            {"running": [TERM], "stop second": [TERM, TERM]},
            [*STARTED, *CUT_SECOND],
            id="running",
        ),
        pytest.param(
            "return,hang-stop:second",
            {"stop second": [TERM, TERM, TERM]},
            [*STARTED, *CUT_SECOND],
            id="teardown",
        ),
    ],
)
def test_a_third_signal_exits_at_once(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    anyio_backend: Backend,
    exits: list[int],
    mode: str,
    signals_at: dict[str, list[signal.Signals]],
    events: list[str],
) -> None:
    """The third signal exits from the handler, with the first signal's status."""
    status, said = run_worker(
        monkeypatch, capfd, anyio_backend, mode, signals_at=signals_at
    )
    assert exits == [143]
    # The recorded exit returns, so the run goes on here; a real one ends it.
    assert (status, said) == (1, events)


def test_the_third_signal_says_why_it_exits(
    capfd: pytest.CaptureFixture[str], exits: list[int]
) -> None:
    """The immediate exit writes one line to stderr first."""
    counter = SignalCounter()
    assert counter.install()
    try:
        for _ in range(3):
            os.kill(os.getpid(), TERM)
    finally:
        counter.restore()
    assert exits == [143]
    assert capfd.readouterr().err == (
        "lifespan_kit: third signal; exiting now with status 143, without waiting "
        "for the teardowns still running.\n"
    )


def test_the_shutdown_deadline_cancels_what_still_runs(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    anyio_backend: Backend,
) -> None:
    """Past shutdown_timeout every teardown still running is cancelled; status 1."""
    assert run_worker(
        monkeypatch,
        capsys,
        anyio_backend,
        "hang-stop:second",
        signals_at={"running": [TERM]},
        shutdown_timeout=0.05,
    ) == (1, [*STARTED, *CUT_SECOND])
    assert any(
        r.getMessage().startswith(
            "The shutdown took longer than shutdown_timeout=0.05s"
        )
        for r in caplog.records
    )


LOG_FIELDS = (
    "lifespan_kit_resource",
    "lifespan_kit_event",
    "lifespan_kit_duration",
    "lifespan_kit_error_code",
)


@pytest.mark.parametrize(
    ("mode", "signals_at", "expected"),
    [
        pytest.param(
            "fail-start:second",
            {},
            ("second", "startup_failed", "startup-failed"),
            id="startup-failed",
        ),
        pytest.param("crash", {}, (None, "main_failed", None), id="main-crashed"),
        pytest.param(
            "background-crash",
            {},
            ("pulse", "stopping_app", "background-failed"),
            id="pulse",
        ),
        pytest.param(
            "hang-stop:second",
            {"running": [TERM], "stop second": [INT]},
            (None, "second_signal", None),
            id="signals",
        ),
    ],
)
def test_every_log_record_of_the_worker_has_the_structured_fields(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    anyio_backend: Backend,
    mode: str,
    signals_at: dict[str, list[signal.Signals]],
    expected: tuple[str | None, str, str | None],
) -> None:
    """Each record names its resource, event and error code, or says it has none."""
    with caplog.at_level(logging.DEBUG, logger="lifespan_kit"):
        run_worker(monkeypatch, capsys, anyio_backend, mode, signals_at=signals_at)
    records = [r for r in caplog.records if r.name == "lifespan_kit"]
    for record in records:
        assert all(name in record.__dict__ for name in LOG_FIELDS), record
    fields = {
        (
            record.__dict__["lifespan_kit_resource"],
            record.__dict__["lifespan_kit_event"],
            record.__dict__["lifespan_kit_error_code"],
        )
        for record in records
    }
    assert expected in fields


def test_handlers_are_replaced_while_running_and_restored_after(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    anyio_backend: Backend,
    guard: Guard,
) -> None:
    """The runner's handlers are in place while main runs; the guard's come back."""
    seen: list[object] = []

    def look(event: str) -> None:
        if event == "running":
            seen.extend(signal.getsignal(s) for s in (INT, TERM))

    monkeypatch.setattr(fake_worker, "HOOKS", [look])
    monkeypatch.setenv("FAKE_WORKER_MODE", "return")
    assert run(fake_worker.main, fake_worker.registry, backend=anyio_backend) == 0
    assert len(seen) == 2
    assert guard not in seen
    assert [signal.getsignal(s) for s in (INT, TERM)] == [guard, guard]
    os.kill(os.getpid(), TERM)
    assert guard.received == [TERM]


def test_no_handler_is_installed_outside_the_main_thread(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    anyio_backend: Backend,
    guard: Guard,
) -> None:
    """Run from another thread, the worker leaves the signal handlers alone."""
    seen: list[object] = []
    statuses: list[int] = []
    monkeypatch.setattr(
        fake_worker, "HOOKS", [lambda event: seen.append(signal.getsignal(TERM))]
    )
    monkeypatch.setenv("FAKE_WORKER_MODE", "return")
    thread = threading.Thread(
        target=lambda: statuses.append(
            run(fake_worker.main, fake_worker.registry, backend=anyio_backend)
        )
    )
    thread.start()
    thread.join(timeout=20)
    assert statuses == [0]
    assert set(seen) == {guard}


def test_a_signal_received_before_the_loop_runs_is_handled_once_it_does() -> None:
    """A signal counted before attach() is passed to the loop at attach()."""
    counter = SignalCounter()
    assert counter.install()
    try:
        os.kill(os.getpid(), TERM)
        callbacks: list[Callable[[], None]] = []
        counter.attach(callbacks.append, lambda: None)
        assert len(callbacks) == 1
        os.kill(os.getpid(), INT)
        assert len(callbacks) == 2
        counter.detach()
        assert counter.received == [TERM, INT]
    finally:
        counter.restore()


# --- main's signature --------------------------------------------------------


class Answer(Bundle):
    """The bundle of the small registry below."""

    answer: int


def answer_registry() -> tuple[Registry, list[str]]:
    """A registry with 'answer' (42) and 'unused', which records its start."""
    started: list[str] = []
    registry = Registry()
    registry.add("answer", 42)

    @registry.resource
    def unused() -> str:
        started.append("unused")
        return "unused"

    return registry, started


def test_main_without_parameters_starts_every_resource(anyio_backend: Backend) -> None:
    """A main() with no parameter runs with every resource started."""
    registry, started = answer_registry()

    async def main() -> None:
        started.append("main")

    assert run(main, registry, backend=anyio_backend) == 0
    assert started == ["unused", "main"]


def test_main_taking_a_resource_map_gets_every_resource(
    anyio_backend: Backend,
) -> None:
    """A ResourceMap annotation starts everything and passes the mapping."""
    registry, _ = answer_registry()
    seen: list[object] = []

    async def main(resources: ResourceMap) -> None:
        seen.append(dict(resources))

    assert run(main, registry, backend=anyio_backend) == 0
    assert seen == [{"answer": 42, "unused": "unused"}]


class Service:
    """main as a method, and as a callable object."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def main(self, resources: Answer) -> None:
        self.seen.append(resources.answer)

    async def __call__(self, *, resources: Answer, verbose: bool = False) -> None:
        self.seen.append(resources.answer)


async def answer_with(resources: Answer, seen: list[int]) -> None:
    """main for functools.partial."""
    seen.append(resources.answer)


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(lambda service: service.main, id="method"),
        pytest.param(lambda service: service, id="callable-keyword-only"),
        pytest.param(
            lambda service: functools.partial(answer_with, seen=service.seen),
            id="partial",
        ),
    ],
)
def test_main_forms_read_the_bundle_and_start_only_it(
    anyio_backend: Backend, form: Callable[[Service], Callable[[Answer], object]]
) -> None:
    """Methods, callable objects and partials work; only the bundle's needs start."""
    registry, started = answer_registry()
    service = Service()
    main = form(service)
    assert run(main, registry, backend=anyio_backend) == 0  # type: ignore[arg-type]  # the forms are checked at runtime
    assert service.seen == [42]
    assert started == []


def not_async(resources: Answer) -> None:
    """Forgot async."""


async def settings() -> AsyncIterator[str]:
    """A resource factory, which is easily passed as main by mistake."""
    yield "settings"


async def two(resources: Answer, other: int) -> None:
    """Takes a second required parameter."""


async def bare(resources) -> None:  # type: ignore[no-untyped-def]  # the mistake tested
    """No annotation."""


async def wrong_type(resources: int) -> None:
    """Annotated with something that is not a bundle."""


async def optional(resources: int | None) -> None:
    """Annotated with a union."""


async def unresolvable(resources: MissingBundle) -> None:  # type: ignore[name-defined]  # noqa: F821  # the mistake tested
    """Annotated with a name that does not exist at runtime."""


@pytest.mark.parametrize(
    ("main", "problem"),
    [
        pytest.param(not_async, "it is a synchronous function", id="sync"),
        pytest.param(settings, "it is an async generator function", id="agen"),
        pytest.param(Answer, "it is a class", id="class"),
        pytest.param(42, "it is an instance of int", id="value"),
        pytest.param(two, "it takes 2 parameters without defaults", id="two"),
        pytest.param(bare, "its parameter 'resources' has no annotation", id="bare"),
        pytest.param(wrong_type, "annotated as int, which is neither", id="int"),
        pytest.param(optional, "annotated as int | None", id="union"),
        pytest.param(unresolvable, "does not resolve (NameError", id="unresolved"),
    ],
)
def test_an_unusable_main_is_refused_before_anything_starts(
    main: object, problem: str
) -> None:
    """InvalidMainError names the function and what is wrong with it."""
    registry, started = answer_registry()
    with pytest.raises(InvalidMainError, match="cannot be run") as info:
        run(main, registry)  # type: ignore[arg-type]  # the mistakes tested
    assert problem in str(info.value)
    assert info.value.code == "invalid-main"
    assert started == []


class Missing(Bundle):
    """A bundle whose field no resource provides."""

    missing: int


def test_a_resource_factory_is_a_resource_not_a_main(anyio_backend: Backend) -> None:
    """The factory that main was confused with runs fine as a resource."""
    registry = Registry()
    registry.add("settings", settings)
    seen: list[object] = []

    async def main(resources: ResourceMap) -> None:
        seen.append(resources["settings"])

    assert run(main, registry, backend=anyio_backend) == 0
    assert seen == ["settings"]


def test_options_are_checked_before_anything_starts() -> None:
    """A bad backend or shutdown_timeout, and a broken graph, raise at once."""
    registry, started = answer_registry()

    async def main(resources: Answer) -> None:
        """Never called."""

    with pytest.raises(InvalidOptionError, match="Option 'backend'"):
        run(main, registry, backend="curio")  # type: ignore[arg-type]  # tested
    with pytest.raises(InvalidOptionError, match="Option 'shutdown_timeout'"):
        run(main, registry, shutdown_timeout=0)

    async def needs_missing(resources: Missing) -> None:
        """Never called."""

    with pytest.raises(GraphError):
        run(needs_missing, registry)
    assert started == []


@pytest.mark.parametrize(
    ("code", "status"),
    [
        pytest.param(None, 0, id="none"),
        pytest.param(4, 4, id="int"),
        pytest.param("bad config", 1, id="message"),
    ],
)
def test_system_exit_in_main_sets_the_status_after_the_teardown(
    anyio_backend: Backend,
    caplog: pytest.LogCaptureFixture,
    code: str | int | None,
    status: int,
) -> None:
    """raise SystemExit(n) exits with n (None: 0; a message: logged, then 1)."""
    registry, _ = answer_registry()

    async def main(resources: Answer) -> None:
        raise SystemExit(code)

    assert run(main, registry, backend=anyio_backend) == status
    messages = [r.getMessage() for r in caplog.records]
    assert ("main() exited: bad config" in messages) == (code == "bad config")


def test_an_exception_group_from_main_is_logged_in_full(
    anyio_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """A group raised by main is main's own failure: logged with its traceback."""
    registry, _ = answer_registry()

    async def main(resources: Answer) -> None:
        raise ExceptionGroup("two jobs failed", [ValueError("a"), KeyError("b")])

    assert run(main, registry, backend=anyio_backend) == 1
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith("main() raised")
    assert isinstance(record.exc_info and record.exc_info[1], ExceptionGroup)


# --- telling the service manager ---------------------------------------------


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    """A datagram socket bound where NOTIFY_SOCKET will point (a short path)."""
    with tempfile.TemporaryDirectory(prefix="lk") as directory:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with sock:
            sock.bind(str(Path(directory) / "notify"))
            sock.settimeout(5)
            yield sock


def test_ready_and_stopping_are_sent_to_notify_socket(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    anyio_backend: Backend,
    notify_socket: socket.socket,
) -> None:
    """With NOTIFY_SOCKET set, READY=1 follows the startup and STOPPING=1 the end."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.getsockname())
    assert run_worker(monkeypatch, capsys, anyio_backend, "return")[0] == 0
    assert [notify_socket.recv(64) for _ in range(2)] == [b"READY=1", b"STOPPING=1"]


def test_an_abstract_notify_socket_is_reached(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: Backend
) -> None:
    """An address starting with '@' is a Linux abstract socket, as systemd says."""
    name = f"lifespan-kit-test-{os.getpid()}-{threading.get_ident()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(f"\0{name}")
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        registry, _ = answer_registry()

        async def main(resources: Answer) -> None:
            """Return at once."""

        assert run(main, registry, backend=anyio_backend) == 0
        assert sock.recv(64) == b"READY=1"


def test_an_unreachable_notify_socket_is_only_a_warning(
    monkeypatch: pytest.MonkeyPatch,
    anyio_backend: Backend,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A notification that cannot be sent is logged; the worker runs on."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    registry, _ = answer_registry()

    async def main(resources: Answer) -> None:
        """Return at once."""

    assert run(main, registry, backend=anyio_backend) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("Could not send READY=1 to the service manager")


def test_async_main_signature_is_awaited_in_the_loop(anyio_backend: Backend) -> None:
    """main runs inside the event loop of the chosen backend."""
    registry, _ = answer_registry()
    seen: list[str] = []

    async def main(resources: Answer) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(anyio_backend)

    assert run(main, registry, backend=anyio_backend) == 0
    assert seen == [anyio_backend]


# --- failures while running ------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, None])
def test_a_task_group_crash_stops_the_worker_with_status_1(
    anyio_backend: Backend, concurrency: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash inside a resource's task group stops everything in reverse: 1."""
    registry = Registry()
    events: list[str] = []

    @registry.resource
    async def db() -> AsyncIterator[str]:
        yield "db"
        events.append("stop db")

    @registry.resource
    async def consumer(db: str) -> AsyncIterator[str]:
        async def poll() -> None:
            await anyio.lowlevel.checkpoint()
            raise ConnectionError("the queue went away")

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(poll)
                yield "consumer"
        finally:
            events.append("stop consumer")

    async def main(resources: ResourceMap) -> None:
        await anyio.sleep_forever()

    with caplog.at_level(logging.INFO, logger="lifespan_kit"):
        status = run(main, registry, backend=anyio_backend, concurrency=concurrency)
    assert status == 1
    assert events == ["stop consumer", "stop db"]
    assert "Stopping: resource 'consumer' failed while running." in caplog.text
    assert "ConnectionError: the queue went away" in caplog.text


def test_a_teardown_that_blocks_the_loop_sets_status_1(anyio_backend: Backend) -> None:
    """A teardown that blocks the event loop past its stop_timeout is a failure."""
    registry = Registry()

    @registry.resource(stop_timeout=0.01)
    def blocking() -> Iterator[str]:
        yield "value"
        time.sleep(0.05)

    async def main() -> None:
        pass

    assert run(main, registry, backend=anyio_backend) == 1
