"""The live display on a real terminal: nothing written by others is ever erased.

The worker runs under a pseudo-terminal; its whole output is fed to a small
terminal emulator, and the tests read the final screen and scrollback as a
person would.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import struct
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from lifespan_kit import ResourceEvent
from lifespan_kit._console import Display
from lifespan_kit._redirect import Passthrough, redirect_outside_writes
from tests.noisy_worker import expected_lines
from tests.terminal import Screen, run_in_terminal

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0


def run_noisy_worker(
    names: list[str], *, columns: int, lines: int, backend: str
) -> tuple[int, list[str]]:
    """Run the noisy worker on a terminal; return its status and the final text."""
    env = {
        **os.environ,
        "NOISY_RESOURCES": ",".join(names),
        "TERM": "xterm",
        "PYTHONUNBUFFERED": "1",
    }
    for variable in ("NO_COLOR", "PYTHONWARNINGS", "COLUMNS", "LINES"):
        env.pop(variable, None)
    command = [sys.executable, "-m", "lifespan_kit", "run", "tests.noisy_worker:main"]
    status, output = run_in_terminal(
        [*command, "--concurrency", "1", "--backend", backend],
        env=env,
        cwd=ROOT,
        columns=columns,
        lines=lines,
        timeout=TIMEOUT,
    )
    screen = Screen(columns, lines)
    screen.feed(output)
    return status, screen.text()


def written_by_the_worker(text: list[str], expected: list[str]) -> list[str]:
    """The lines of `text` that hold one of the worker's lines, as that line."""
    found: list[str] = []
    for line in text:
        found.extend(e for e in expected if line == e or line.endswith(f": {e}"))
    return found


def assert_nothing_erased_and_no_stale_rows(text: list[str], names: list[str]) -> None:
    """Every worker line once, in order; the final table once; no live row left."""
    expected = expected_lines(names)
    assert written_by_the_worker(text, expected) == expected, "\n".join(text)
    never_awaited = [line for line in text if "was never awaited" in line]
    assert len(never_awaited) == 1, "\n".join(text)
    live_row = re.compile(rf"^  ({'|'.join(map(re.escape, names))})\s")
    assert [line for line in text if live_row.match(line)] == [], "\n".join(text)
    assert [line for line in text if line.startswith("resource ")] == [
        text[-1 - len(names)]
    ]
    assert [line.split()[0] for line in text[-len(names) :]] == names
    assert all(line.endswith("stopped") for line in text[-len(names) :])


@pytest.mark.parametrize(
    ("names", "columns", "lines"),
    [
        pytest.param(["settings", "database", "cache"], 100, 40, id="roomy"),
        pytest.param(
            [f"resource_{number}" for number in range(12)], 100, 8, id="more-rows"
        ),
        pytest.param(
            ["a_resource_whose_row_is_wider_than_the_screen", "db"],
            40,
            12,
            id="narrow",
        ),
    ],
)
def test_outside_writes_stay_above_the_live_table(
    anyio_backend: str, names: list[str], columns: int, lines: int
) -> None:
    """Prints, log lines, warnings and half lines all stay on screen, once each."""
    status, text = run_noisy_worker(
        names, columns=columns, lines=lines, backend=anyio_backend
    )
    assert status == 0, "\n".join(text)
    assert_nothing_erased_and_no_stale_rows(text, names)


# --- the pieces, in-process --------------------------------------------------


def screen_of(stream: io.StringIO, columns: int = 80, lines: int = 24) -> list[str]:
    """What a person sees after everything written to `stream`."""
    screen = Screen(columns, lines)
    screen.feed(stream.getvalue().replace("\n", "\r\n"))
    return screen.text()


def test_half_lines_wait_for_their_end_above_the_block() -> None:
    """A line is written above the block once whole; what is left, at the end."""
    terminal = io.StringIO()
    other = io.StringIO()
    with Display(
        terminal,
        is_live=True,
        has_color=False,
        clock=lambda: 0.0,
        interval=60,
        size=lambda: (80, 24),
    ) as display:
        display.write_above("before any row\n", terminal)
        display.listen(ResourceEvent("db", "starting"))
        display.write_above("half ", terminal)
        display.write_above("and half\nunfinished", terminal)
        display.write_above("elsewhere, unfinished", other)
        assert screen_of(terminal)[-2:] == [
            "half and half",
            "  db  starting            0.0 ms",
        ]
        display.listen(ResourceEvent("db", "started", duration=0.001))
        display.listen(ResourceEvent("db", "stopping"))
        display.listen(ResourceEvent("db", "stopped", duration=0.001))
    display.write_above("after the end\n", terminal)
    assert screen_of(terminal) == [
        "before any row",
        "half and half",
        "unfinished",
        "resource      start       stop  outcome",
        "db           1.0 ms     1.0 ms  stopped",
        "after the end",
    ]
    assert other.getvalue() == "elsewhere, unfinished\n"


def test_the_block_never_outgrows_the_screen() -> None:
    """Rows in progress and the latest changes are shown; a line counts the rest."""
    terminal = io.StringIO()
    display = Display(terminal, is_live=True, has_color=True, size=lambda: (24, 4))
    for name in ["a", "b", "c", "d"]:
        display.listen(ResourceEvent(name, "starting"))
        display.listen(ResourceEvent(name, "started", duration=0.001))
    display.listen(ResourceEvent("a_long_name_that_does_not_fit", "starting"))
    display.listen(ResourceEvent("b", "stopping"))
    assert screen_of(terminal, columns=24, lines=4) == [
        "  b",
        "  a_long_name_that_does",
        "  (3 more not shown)",
    ]


def test_a_running_resource_shows_its_status_on_its_row() -> None:
    """A "status" event (a replica that leads) is written after the duration."""
    terminal = io.StringIO()
    display = Display(terminal, is_live=True, has_color=False, size=lambda: (72, 6))
    display.listen(ResourceEvent("scheduler", "starting"))
    display.listen(ResourceEvent("scheduler", "started", duration=0.001))
    display.listen(
        ResourceEvent("scheduler", "status", detail="leading 'scheduler' (token 3)")
    )
    assert screen_of(terminal, columns=72, lines=6) == [
        "  scheduler  running             1.0 ms  leading 'scheduler' (token 3)"
    ]
    display.listen(ResourceEvent("scheduler", "stopping"))
    assert "token" not in screen_of(terminal, columns=72, lines=6)[0]


def test_the_terminal_size_is_read_from_the_stream() -> None:
    """The size of the display's own terminal; 80 x 24 when it has none."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 9, 33, 0, 0))
    with open(follower, "w") as stream, open(leader, "rb"):
        assert Display(stream, is_live=True, has_color=False)._terminal_size() == (
            33,
            9,
        )
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        sizes = Display(stream, is_live=True, has_color=False)._terminal_size()
        assert sizes == (80, 24)
    assert Display(io.StringIO(), is_live=True, has_color=False)._terminal_size() == (
        80,
        24,
    )


@pytest.fixture
def terminal_streams() -> Iterator[tuple[TextIO, TextIO, TextIO]]:
    """Two streams on one pseudo-terminal, and one on another."""
    first_leader, first = pty.openpty()
    second_leader, second = pty.openpty()
    with (
        open(first, "w") as one,
        open(os.dup(first), "w") as same,
        open(second, "w") as other,
    ):
        yield one, same, other
    os.close(first_leader)
    os.close(second_leader)


def test_redirect_sends_the_terminal_streams_through_the_display(
    monkeypatch: pytest.MonkeyPatch, terminal_streams: tuple[TextIO, TextIO, TextIO]
) -> None:
    """stdout, stderr and handlers on the display's terminal write above it."""
    terminal, stdout, other = terminal_streams
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", terminal)
    on_terminal = logging.StreamHandler(terminal)
    elsewhere = logging.StreamHandler(other)
    logger = logging.getLogger("tests.test_console.redirect")
    monkeypatch.setattr(logger, "handlers", [on_terminal, elsewhere])
    written: list[tuple[str, TextIO]] = []
    with redirect_outside_writes(lambda text, to: written.append((text, to)), terminal):
        print("printed")
        logger.warning("logged")
        print("to stderr", file=sys.stderr)
        stand_in = sys.stdout
        assert isinstance(stand_in, Passthrough)
        assert stand_in.isatty()
        assert stand_in.writable()
        assert stand_in.fileno() == stdout.fileno()
        assert stand_in.encoding == stdout.encoding
        assert stand_in.buffer is stdout.buffer  # anything else: the target's
        assert elsewhere.stream is other
    assert (sys.stdout, sys.stderr) == (stdout, terminal)
    assert on_terminal.stream is terminal
    assert [to for _, to in written][:3] == [stdout, stdout, terminal]
    text = "".join(text for text, _ in written)
    assert text == "printed\nlogged\nto stderr\n"


def test_redirect_leaves_what_others_replaced_meanwhile(
    monkeypatch: pytest.MonkeyPatch, terminal_streams: tuple[TextIO, TextIO, TextIO]
) -> None:
    """A stream or a handler's stream replaced inside is not put back over."""
    terminal, _, other = terminal_streams
    monkeypatch.setattr(sys, "stdout", other)  # another terminal: left alone
    monkeypatch.setattr(sys, "stderr", terminal)
    handler = logging.StreamHandler(terminal)
    logger = logging.getLogger("tests.test_console.replaced")
    monkeypatch.setattr(logger, "handlers", [handler])
    replacement = io.StringIO()
    with redirect_outside_writes(lambda text, to: None, terminal):
        assert sys.stdout is other
        sys.stderr = replacement
        handler.setStream(replacement)
    assert sys.stderr is replacement
    assert handler.stream is replacement


def test_a_closed_stream_is_not_on_the_terminal(
    monkeypatch: pytest.MonkeyPatch, terminal_streams: tuple[TextIO, TextIO, TextIO]
) -> None:
    """A stream that cannot say where it writes is left alone."""
    terminal, _, _ = terminal_streams
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    with redirect_outside_writes(lambda text, to: None, terminal):
        assert sys.stdout is closed


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        pytest.param("ab\bc\tx\r\n", ["ac   x"], id="backspace-and-tab"),
        pytest.param("abcdef\r\n", ["abcdef"], id="wrap-waits-for-a-character"),
        pytest.param("abcdefg\x1b[1;31m\r\n", ["abcdefg"], id="wrapped-and-joined"),
        pytest.param(
            "1\r\n2\r\n3\r\n\x1b[5A\x1b[J4", ["1", "2", "4"], id="scrolled-off"
        ),
    ],
)
def test_the_test_terminal(text: str, lines: list[str]) -> None:
    """The emulator the tests read screens with: wrapping, scrolling, clearing."""
    screen = Screen(6, 2)
    screen.feed(text)
    assert screen.text() == lines


@pytest.mark.parametrize("text", ["\x1b[2J", "\x07"])
def test_the_test_terminal_refuses_what_it_does_not_know(text: str) -> None:
    """An escape sequence or a control character it cannot interpret is an error."""
    with pytest.raises(AssertionError, match="unexpected"):
        Screen(6, 2).feed(text)
