"""A real server in a subprocess, on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """Return a port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """Run ``python -m <args> --port <free port>`` and collect its output by line.

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
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        self.lines: list[str] = []
        self._ready = ready
        self._serving = threading.Event()
        command = [sys.executable, "-m", *args, "--port", str(self.port)]
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
                self.lines.append(line.rstrip("\n"))
                if self._ready in line:
                    self._serving.set()
        # The server exited: nobody waits for it to serve any longer.
        self._serving.set()

    @property
    def output(self) -> str:
        """Everything the server wrote so far."""
        return "\n".join(self.lines)

    def wait_until_serving(self) -> None:
        """Return once uvicorn listens; fail if it exits or takes too long."""
        assert self._serving.wait(self.timeout), f"not serving:\n{self.output}"
        assert self._process.poll() is None, f"exited:\n{self.output}"

    def wait(self) -> int:
        """Wait for the server to exit and return its exit status."""
        status = self._process.wait(self.timeout)
        self._reader.join(self.timeout)
        return status

    def stop(self, sig: int) -> int:
        """Send `sig`, wait for the server to exit and return its exit status."""
        self._process.send_signal(sig)
        return self.wait()

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
