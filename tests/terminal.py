"""A tiny terminal emulator: what a person would see after a program's output.

It understands what the live display and the programs it runs write: text,
CR, LF, backspace, tab, cursor up (``ESC [ n A``), clearing to the end of the
screen (``ESC [ J``) and colours (``ESC [ ... m``, ignored). Lines wrap at
the right edge as xterm does (the wrap waits for the next character), and
lines that scroll off the top are kept as scrollback; `text()` joins a line
that wrapped with its continuation, as a terminal that reflows would. Any other escape
sequence is an error: a test must know everything a program sends.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

_ESCAPE = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])")


class Screen:
    """The screen and scrollback of a terminal of `columns` x `lines`."""

    def __init__(self, columns: int, lines: int) -> None:
        self.columns = columns
        self.lines = lines
        self.scrollback: list[tuple[str, bool]] = []
        self.screen: list[list[str]] = [[] for _ in range(lines)]
        # Whether each screen line wrapped onto the next one.
        self.wrapped = [False] * lines
        self.row = 0
        self.column = 0
        self._wrap_pending = False

    def feed(self, text: str) -> None:
        """Interpret `text`, as written by the program (after the tty's LF->CRLF)."""
        position = 0
        while position < len(text):
            escape = _ESCAPE.match(text, position)
            if escape is not None:
                self._escape(escape.group(1), escape.group(2))
                position = escape.end()
                continue
            self._character(text[position])
            position += 1

    def text(self) -> list[str]:
        """Scrollback then screen, one string per line, without trailing blanks."""
        rows = [
            *self.scrollback,
            *(
                # A row that wrapped is full: its trailing blanks are text.
                ("".join(row) if wrapped else "".join(row).rstrip(), wrapped)
                for row, wrapped in zip(self.screen, self.wrapped, strict=True)
            ),
        ]
        lines: list[str] = []
        joined = False
        for row, wrapped in rows:
            if joined:
                lines[-1] += row
            else:
                lines.append(row)
            joined = wrapped
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def _escape(self, parameter: str, command: str) -> None:
        if command == "m":
            return
        if command == "A":
            self.row = max(0, self.row - int(parameter or "1"))
        elif command == "J" and parameter in ("", "0"):
            del self.screen[self.row][self.column :]
            self.wrapped[self.row] = False
            for row in range(self.row + 1, self.lines):
                self.screen[row] = []
                self.wrapped[row] = False
        else:
            raise AssertionError(f"unexpected escape sequence: {parameter}{command}")
        self._wrap_pending = False

    def _character(self, character: str) -> None:
        if character == "\r":
            self.column = 0
        elif character == "\n":
            self._line_feed()
        elif character == "\b":
            self.column = max(0, self.column - 1)
        elif character == "\t":
            self.column = min(self.columns - 1, (self.column // 8 + 1) * 8)
        elif not character.isprintable():
            raise AssertionError(f"unexpected control character: {character!r}")
        else:
            self._print(character)
            return
        self._wrap_pending = False

    def _print(self, character: str) -> None:
        if self._wrap_pending:
            self.wrapped[self.row] = True
            self.column = 0
            self._line_feed()
            self._wrap_pending = False
        line = self.screen[self.row]
        line.extend(" " * (self.column + 1 - len(line)))
        line[self.column] = character
        if self.column == self.columns - 1:
            self._wrap_pending = True
        else:
            self.column += 1

    def _line_feed(self) -> None:
        if self.row == self.lines - 1:
            wrapped = self.wrapped.pop(0)
            row = "".join(self.screen.pop(0))
            self.scrollback.append((row if wrapped else row.rstrip(), wrapped))
            self.screen.append([])
            self.wrapped.append(False)
        else:
            self.row += 1


def run_in_terminal(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    columns: int,
    lines: int,
    timeout: float,
) -> tuple[int, str]:
    """Run `command` on a new pseudo-terminal of that size; return status and output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    output = b""
    try:
        deadline = time.monotonic() + timeout
        while chunk := _read(leader, deadline):
            output += chunk
    finally:
        os.close(leader)
        status = process.wait(timeout=timeout)
    return status, output.decode()


def _read(fd: int, deadline: float) -> bytes:
    """Read what the terminal has; b"" once the other side closed it."""
    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    assert ready, "the program wrote nothing before the deadline"
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the program exited and closed its side
        return b""
