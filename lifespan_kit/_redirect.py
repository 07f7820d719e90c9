"""Outside writes to the terminal, sent above the live display.

While `lifespan-kit run` draws its live block, anything else written to the
same terminal must go above it, or the next redraw, which goes back up over
the block and clears to the end of the screen, erases it. So `sys.stdout` and
`sys.stderr` are replaced by stand-ins that hand each whole line to the
display (print, warnings, "coroutine ... was never awaited", tracebacks of
threads), and every logging handler that writes to one of them (such as the
one `logging.basicConfig()` installs at import) writes to its stand-in.

What bypasses Python's streams (a subprocess, or C code writing to the file
descriptor) cannot be seen, and can be erased.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import TextIO, cast

WriteAbove = Callable[[str, TextIO], None]
"""Write text to a stream on the display's terminal, above the live block."""


class Passthrough(io.TextIOBase):
    """Stands for a stream on the display's terminal: writes go above the block."""

    def __init__(self, write_above: WriteAbove, target: TextIO) -> None:
        super().__init__()
        self._write_above = write_above
        self.target = target

    def write(self, text: str) -> int:
        self._write_above(text, self.target)
        return len(text)

    def flush(self) -> None:
        # Never waits for the display: the third signal's handler flushes.
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]  # the target's, never None
        """The target's encoding."""
        return self.target.encoding

    def __getattr__(self, name: str) -> object:
        return getattr(self.target, name)


@contextmanager
def redirect_outside_writes(
    write_above: WriteAbove, terminal: TextIO
) -> Generator[None, None, None]:
    """Send what others write to `terminal` through `write_above`, while inside.

    Only streams on that terminal are replaced: a redirected stdout is left
    alone. Each is put back afterwards, unless someone replaced it meanwhile.
    """
    # A stand-in is no TextIO subclass, but has all that print() and logging use.
    stand_ins = {
        id(stream): cast("TextIO", Passthrough(write_above, stream))
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        if stream is not None and _shares_terminal(stream, terminal)
    }
    saved = sys.stdout, sys.stderr
    sys.stdout = stand_ins.get(id(sys.stdout), sys.stdout)
    sys.stderr = stand_ins.get(id(sys.stderr), sys.stderr)
    handlers = [(h, h.stream) for h in _stream_handlers() if id(h.stream) in stand_ins]
    for handler, stream in handlers:
        handler.setStream(stand_ins[id(stream)])
    try:
        yield
    finally:
        for handler, stream in handlers:
            if handler.stream is stand_ins[id(stream)]:
                handler.setStream(stream)
        if sys.stdout is stand_ins.get(id(saved[0])):
            sys.stdout = saved[0]
        if sys.stderr is stand_ins.get(id(saved[1])):
            sys.stderr = saved[1]


def _shares_terminal(stream: TextIO, terminal: TextIO) -> bool:
    """Tell whether `stream` writes to the same terminal as `terminal`."""
    if stream is terminal:
        return True
    try:
        return stream.isatty() and (
            os.fstat(stream.fileno()).st_rdev == os.fstat(terminal.fileno()).st_rdev
        )
    except (OSError, ValueError):  # no file descriptor, or a closed one
        return False


def _stream_handlers() -> list[logging.StreamHandler[TextIO]]:
    """Every handler of every logger that writes to a stream, once each."""
    loggers = [logging.getLogger()]
    loggers.extend(
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    )
    handlers: dict[int, logging.StreamHandler[TextIO]] = {}
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                # Its stream may be any object with write(); identity is all we use.
                known = cast("logging.StreamHandler[TextIO]", handler)
                handlers[id(known)] = known
    return list(handlers.values())
