"""A real server in a subprocess, on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """Return a port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_option(port: int) -> Sequence[str]:
    """The option that gives uvicorn, granian and the demo their port."""
    return ["--port", str(port)]


class Server:
    """Run ``python -m <args> --port <free port>`` and collect its output by line.

    `listen` gives the options that pass the port, for a server that takes it
    otherwise (hypercorn's ``--bind 127.0.0.1:<port>``).

    The output merges stdout and stderr, so what the app prints and what the
    server logs keep their relative order. The server counts as serving once
    it writes a line containing `ready`.
    """

    def __init__(
        self,
        *args: str,
        ready: str = "Uvicorn running on",
        env: dict[str, str] | None = None,
        timeout: float = 20,
        listen: Callable[[int], Sequence[str]] = port_option,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        self.lines: list[str] = []
        self._ready = ready
        self._serving = threading.Event()
        self._written = threading.Condition()
        self._is_done = False
        command = [sys.executable, "-m", *args, *listen(self.port)]
        self._process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        with self._process.stdout:
            for line in self._process.stdout:
                with self._written:
                    self.lines.append(line.rstrip("\n"))
                    self._written.notify_all()
                if self._ready in line:
                    self._serving.set()
        # The server exited: nobody waits for it to serve any longer.
        with self._written:
            self._is_done = True
            self._written.notify_all()
        self._serving.set()

    @property
    def output(self) -> str:
        """Everything the server wrote so far."""
        return "\n".join(self.lines)

    def wait_until_serving(self) -> None:
        """Return once the server serves; fail if it exits or takes too long."""
        assert self._serving.wait(self.timeout), f"not serving:\n{self.output}"
        assert self._process.poll() is None, f"exited:\n{self.output}"

    def wait(self) -> int:
        """Wait for the server to exit and return its exit status."""
        status = self._process.wait(self.timeout)
        self._reader.join(self.timeout)
        return status

    def stop(self, sig: int) -> int:
        """Send `sig`, wait for the server to exit and return its exit status."""
        self.send(sig)
        return self.wait()

    def send(self, sig: int) -> None:
        """Send `sig` to the server's main process."""
        self._process.send_signal(sig)

    def wait_for_line(self, text: str) -> None:
        """Return once the server wrote a line containing `text`; fail after timeout."""
        with self._written:
            found = self._written.wait_for(
                lambda: any(text in line for line in self.lines) or self._is_done,
                self.timeout,
            )
        assert found, f"no line with {text!r}:\n{self.output}"
        assert any(text in line for line in self.lines), f"exited:\n{self.output}"

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process.poll() is None:  # pragma: no cover  # a test failed early
            self._process.kill()
        self.wait()
