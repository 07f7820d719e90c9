"""The signal contract from the outside: real processes, real signals, exit statuses.

Each test starts ``python -m lifespan_kit run tests.fake_worker:main`` (or the
console script), waits for the line a resource prints when it reaches a phase,
sends SIGTERM or SIGINT, and checks the exit status and every event line: the
teardown order, and that each resource started was stopped (or, after a third
signal, that the process did not wait). Every wait is bounded.

Before the third signal, a teardown waits for a line on stdin in a worker
thread, which no cancellation reaches: the process is stuck there however slow
the machine is, and only the third signal ends it.
"""

from __future__ import annotations

import os
import pty
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.fake_worker import STARTED, STOPPED

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0
COMMAND = [sys.executable, "-m", "lifespan_kit", "run"]
TERM, INT = signal.SIGTERM, signal.SIGINT

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


class Worker:
    """A worker process whose stdout (events) and stderr (logs) are read live."""

    def __init__(self, mode: str, *options: str) -> None:
        env = {**os.environ, "FAKE_WORKER_MODE": mode, "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        self.process = subprocess.Popen(
            [*COMMAND, "tests.fake_worker:main", *options],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[str] = []
        self.log: list[str] = []
        self._ending = threading.Lock()
        self._streams_open = 2
        self._lines: queue.Queue[tuple[list[str], str | None]] = queue.Queue()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(stream, into), daemon=True)
            for stream, into in (
                (self.process.stdout, self.events),
                (self.process.stderr, self.log),
            )
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], into: list[str]) -> None:
        for line in stream:
            self._lines.put((into, line.rstrip("\n")))
        # An exiting process closes its streams in any order: the end is when
        # both ended, or a line still on its way on the other would be missed.
        with self._ending:
            self._streams_open -= 1
            if not self._streams_open:
                self._lines.put((into, None))

    def wait_for(self, text: str) -> None:
        """Wait until an event or log line contains `text` (queue.Empty: timeout)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            into, line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, (text, self.events, self.log)
            into.append(line)
            if text in line:
                return

    def send(self, signum: signal.Signals, *, then_wait_for: str) -> None:
        """Send a signal, and wait for the log line that says it was handled.

        Signals sent before the handler ran would merge into one, as Unix does.
        """
        self.process.send_signal(signum)
        self.wait_for(then_wait_for)

    def finish(self) -> int:
        """Wait for the exit; collect what is left of the output."""
        status = self.process.wait(timeout=TIMEOUT)
        for reader in self._readers:
            reader.join(timeout=TIMEOUT)
        while not self._lines.empty():
            into, line = self._lines.get_nowait()
            if line is not None:
                into.append(line)
        return status


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Worker processes of one test; each is killed at the end, if still running."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.process.kill()  # does nothing once the process has exited
        worker.process.wait(timeout=TIMEOUT)
        for stream in (worker.process.stdin, worker.process.stdout):
            assert stream is not None
            stream.close()
        assert worker.process.stderr is not None
        worker.process.stderr.close()


@pytest.fixture
def start(workers: list[Worker], anyio_backend: str) -> type[Worker]:
    """Start the fake worker on the test's backend."""

    class Started(Worker):
        def __init__(self, mode: str, *options: str) -> None:
            super().__init__(mode, "--backend", anyio_backend, *options)
            workers.append(self)

    return Started


FIRST = "stopping; a second signal hurries the teardown"
SECOND = "a third signal exits at once"
THIRD = "third signal; exiting now with status"


def test_clean_run_exits_0(start: type[Worker]) -> None:
    """main returns: every resource stops in reverse order, status 0."""
    worker = start("return")
    assert worker.finish() == 0
    assert worker.events == [*STARTED, *STOPPED]


@pytest.mark.parametrize(
    ("mode", "status", "events"),
    [
        pytest.param(
            "fail-start:second",
            3,
            ["start first", "start second", "stop first", "stopped first"],
            id="startup-failed",
        ),
        pytest.param("crash", 1, [*STARTED, *STOPPED], id="main-crashed"),
        pytest.param(
            "background-crash", 1, [*STARTED, "pulse crashed", *STOPPED], id="pulse"
        ),
        pytest.param(
            "return,fail-stop:second",
            1,
            [*STARTED, *(e for e in STOPPED if e != "stopped second")],
            id="teardown-failed",
        ),
    ],
)
def test_failures_exit_with_their_status(
    start: type[Worker], mode: str, status: int, events: list[str]
) -> None:
    """3 for a failed start, 1 for a crash or a failed teardown; all stopped."""
    worker = start(mode)
    assert worker.finish() == status, worker.log
    assert worker.events == events


# --- during startup ----------------------------------------------------------


def test_one_signal_during_startup_stops_what_started(start: type[Worker]) -> None:
    """SIGTERM while 'second' starts: its start is cancelled, 'first' stopped, 143."""
    worker = start("hang-start:second")
    worker.wait_for("start second")
    worker.send(TERM, then_wait_for=FIRST)
    assert worker.finish() == 143, worker.log
    assert worker.events == [*CANCELLED_START, "stop first", "stopped first"]


def test_two_signals_during_startup_cut_the_rollback(start: type[Worker]) -> None:
    """A second signal while 'first' hangs in its rollback cuts it after 1 s: 1."""
    worker = start("hang-start:second,hang-stop:first")
    worker.wait_for("start second")
    worker.send(TERM, then_wait_for=FIRST)
    worker.wait_for("stop first")
    worker.send(TERM, then_wait_for=SECOND)
    assert worker.finish() == 1, worker.log
    assert worker.events == [*CANCELLED_START, "stop first", "cancelled stop first"]


def test_three_signals_during_startup_exit_at_once(start: type[Worker]) -> None:
    """A third signal exits without waiting for the stuck rollback: 143."""
    worker = start("hang-start:second,gate-stop:first")
    worker.wait_for("start second")
    worker.send(TERM, then_wait_for=FIRST)
    worker.wait_for("stop first")
    worker.send(TERM, then_wait_for=SECOND)
    worker.send(TERM, then_wait_for=THIRD)
    assert worker.finish() == 143, worker.log
    assert worker.events == [*CANCELLED_START, "stop first"]


# --- while running -----------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "status"),
    [pytest.param(TERM, 143, id="SIGTERM"), pytest.param(INT, 130, id="SIGINT")],
)
def test_one_signal_while_running_stops_everything_in_reverse(
    start: type[Worker], signum: signal.Signals, status: int
) -> None:
    """The first signal cancels main and stops every resource: 143 or 130."""
    worker = start("")
    worker.wait_for("running")
    worker.send(signum, then_wait_for=FIRST)
    assert worker.finish() == status, worker.log
    assert worker.events == [*STARTED, *STOPPED]


def test_two_signals_while_running_cut_a_hanging_teardown(
    start: type[Worker],
) -> None:
    """The second signal gives 'second' 1 s more; 'first' still stops after it: 1."""
    worker = start("hang-stop:second")
    worker.wait_for("running")
    worker.send(TERM, then_wait_for=FIRST)
    worker.wait_for("stop second")
    worker.send(INT, then_wait_for=SECOND)
    assert worker.finish() == 1, worker.log
    assert worker.events == [*STARTED, *CUT_SECOND]
    assert any("the shutdown was hurried, leaving it 1s" in line for line in worker.log)


def test_three_signals_while_running_exit_at_once(start: type[Worker]) -> None:
    """The third signal does not wait for the stuck teardown: 143."""
    worker = start("gate-stop:second")
    worker.wait_for("running")
    worker.send(TERM, then_wait_for=FIRST)
    worker.wait_for("stop second")
    worker.send(TERM, then_wait_for=SECOND)
    worker.send(TERM, then_wait_for=THIRD)
    assert worker.finish() == 143, worker.log
    assert worker.events == [*STARTED, *CUT_SECOND[:4]]


def test_the_shutdown_deadline_cuts_a_hanging_teardown(start: type[Worker]) -> None:
    """Past --shutdown-timeout, the teardown still running is cancelled: 1."""
    worker = start("hang-stop:second", "--shutdown-timeout", "0.5")
    worker.wait_for("running")
    worker.send(TERM, then_wait_for=FIRST)
    assert worker.finish() == 1, worker.log
    assert worker.events == [*STARTED, *CUT_SECOND]
    assert any("shutdown_timeout=0.5s" in line for line in worker.log)
    assert any("cut by the shutdown deadline" in line for line in worker.log)


# --- during the teardown -----------------------------------------------------


def test_one_signal_during_the_teardown_lets_it_finish(start: type[Worker]) -> None:
    """main returned; SIGTERM while stopping changes nothing but the status: 143."""
    worker = start("return,gate-stop:second")
    worker.wait_for("stop second")
    worker.send(TERM, then_wait_for=FIRST)
    assert worker.process.stdin is not None
    worker.process.stdin.write("go on\n")
    worker.process.stdin.flush()
    assert worker.finish() == 143, worker.log
    assert worker.events == [*STARTED, *STOPPED]


def test_two_signals_during_the_teardown_cut_what_hangs(start: type[Worker]) -> None:
    """The second signal during the teardown cuts 'second'; 'first' stops: 1."""
    worker = start("return,hang-stop:second")
    worker.wait_for("stop second")
    worker.send(TERM, then_wait_for=FIRST)
    worker.send(TERM, then_wait_for=SECOND)
    assert worker.finish() == 1, worker.log
    assert worker.events == [*STARTED, *CUT_SECOND]


def test_three_signals_during_the_teardown_exit_at_once(start: type[Worker]) -> None:
    """The third signal during the teardown exits at once: 143."""
    worker = start("return,gate-stop:second")
    worker.wait_for("stop second")
    worker.send(TERM, then_wait_for=FIRST)
    worker.send(TERM, then_wait_for=SECOND)
    worker.send(TERM, then_wait_for=THIRD)
    assert worker.finish() == 143, worker.log
    assert worker.events == [*STARTED, *CUT_SECOND[:4]]


# --- the command itself ------------------------------------------------------


def test_the_console_script_is_installed_and_runs() -> None:
    """`lifespan-kit` is on the venv's PATH and runs the command line."""
    script = shutil.which("lifespan-kit", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run(
        [script, "check", "tests.cli_apps"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("tests.cli_apps: OK; 4 resource(s)")


def test_bad_input_in_a_real_process_is_one_line() -> None:
    """From a shell: a module that does not import gives one line and status 2."""
    result = subprocess.run(
        [sys.executable, "-m", "lifespan_kit", "run", "no_such_app:main"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "lifespan-kit: error: cannot import module 'no_such_app': "
        "ModuleNotFoundError: No module named 'no_such_app'\n"
    )


def test_the_live_table_on_a_real_terminal(anyio_backend: str) -> None:
    """Under a pseudo-terminal the table is drawn live, then the final one."""
    leader, follower = pty.openpty()
    env = {**os.environ, "FAKE_WORKER_MODE": "return", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [*COMMAND, "tests.fake_worker:main", "--backend", anyio_backend],
        cwd=ROOT,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    try:
        deadline = time.monotonic() + TIMEOUT
        while chunk := _read_terminal(leader, deadline):
            output += chunk
    finally:
        os.close(leader)
        status = process.wait(timeout=TIMEOUT)
    text = output.decode()
    assert status == 0
    assert "\x1b[32mrunning" in text
    assert "\r\x1b[" in text
    assert text.rstrip().endswith("stopped")


def _read_terminal(fd: int, deadline: float) -> bytes:
    """Read what the terminal has; b"" once the other side closed it."""
    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    assert ready, "the worker wrote nothing before the deadline"
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the worker exited and closed its side
        return b""
