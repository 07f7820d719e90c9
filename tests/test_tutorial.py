"""The tutorial, followed from an empty folder, exactly as the page shows it.

The page's blocks are taken in order: a titled block writes (or continues) a
file of the project, and each command of a ``console`` block runs, in bash, in
the folder the page is in at that point, with its environment active; the
output the page shows must be printed (``...`` stands for anything).

Only what needs the network is stood in for: ``git clone`` links this checkout;
``python3 -m venv`` makes an environment that sees only the distributions the
page's ``pip install`` lines name, and their dependencies, from this
environment (tests/distribution.py); ``pip install`` runs offline. Servers get
a free port instead of 8000; ``^C`` sends SIGINT to the command still running,
and ``echo $?`` prints its status.
"""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.distribution import (
    ROOT,
    activated,
    create_environment,
    install_scripts,
    link_distributions,
    pip_offline,
)
from tests.test_docs import tutorial_blocks

pytestmark = pytest.mark.timeout(180)

SERVERS = ("uvicorn ", "lifespan-kit run ")  # commands that run until ^C
DEADLINE = 60.0  # seconds a command may take to print what the page shows
BUILD_TOOLS = ["pip", "hatchling"]  # pip itself, and what builds the checkout


class Output:
    """The lines a running command prints, read by a thread as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.finished = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.finished = True
            self._changed.notify_all()

    def expect(self, expected: list[str], start: int) -> int:
        """Wait for the `expected` lines after line `start`, in order.

        Returns:
            The index of the line after the last one expected.
        """
        position = start
        for shown in expected:
            position = self._wait_for(_pattern(shown), position)
        return position

    def _wait_for(self, pattern: re.Pattern[str], start: int) -> int:
        with self._changed:
            self._changed.wait_for(
                lambda: self._after(pattern, start) or self.finished, DEADLINE
            )
            found = self._after(pattern, start)
            assert found, (pattern.pattern, self.lines[start:])
        return found

    def close(self) -> None:
        """Kill the command if it still runs, and close its output."""
        self.process.kill()
        self.process.wait()
        self._reader.join()
        assert self.process.stdout is not None
        self.process.stdout.close()

    def _after(self, pattern: re.Pattern[str], start: int) -> int:
        """Return 1 + the index of the first line from `start` that matches, or 0."""
        lines = self.lines[start:]
        return next(
            (start + i + 1 for i, line in enumerate(lines) if pattern.fullmatch(line)),
            0,
        )


def _pattern(line: str) -> re.Pattern[str]:
    """Match `line` as the page shows it: ``...`` is anything."""
    return re.compile(".*".join(re.escape(part) for part in line.split("...")))


@dataclass
class Shell:
    """A terminal that follows the page: its folder, environment and last status."""

    cwd: Path
    port: int
    view: Path
    environment: Path | None = None
    variables: dict[str, str] = field(default_factory=dict)
    running: Output | None = None
    read_up_to: int = 0
    status: int = 0
    started: list[Output] = field(default_factory=list)

    def run(self, command: str, expected: list[str]) -> None:
        """Run one command of the page and check the output it shows."""
        command = command.replace(":8000", f":{self.port}")
        expected = [line.replace(":8000", f":{self.port}") for line in expected]
        words = shlex.split(command)
        if command == "^C":
            self.interrupt(expected)
        elif command == "echo $?":
            assert expected == [str(self.status)]
        elif words[:2] == ["git", "clone"]:
            (self.cwd / Path(words[2]).name).symlink_to(ROOT)
        elif words[0] == "cd":
            self.cwd = (self.cwd / words[1]).resolve()
        elif words == ["python3", "-m", "venv", ".venv"]:
            link_distributions(self.view, BUILD_TOOLS)
            self.environment = create_environment(self.cwd / ".venv", [str(self.view)])
        elif words == ["source", ".venv/bin/activate"]:
            assert self.environment is not None
            self.variables = {**activated(self.environment), "COLUMNS": "80"}
        elif words[:2] == ["pip", "install"]:
            self.install(words[2:])
        elif command.startswith(SERVERS):
            self.serve(command, expected)
        else:
            self.execute(command, expected)

    def execute(self, command: str, expected: list[str]) -> None:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.variables or None,
            capture_output=True,
            text=True,
            check=False,
            timeout=DEADLINE,
        )
        self.status = result.returncode
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        if expected:
            lines = result.stdout.splitlines()
            assert len(lines) == len(expected), (command, lines)
            for line, shown in zip(lines, expected, strict=True):
                assert _pattern(shown).fullmatch(line), (command, line, shown)

    def install(self, arguments: list[str]) -> None:
        """Install offline what the page asks for, with what this test run has."""
        assert self.environment is not None
        requirements: list[str] = []
        installing = None
        for argument in arguments:
            path, bracket, extras = argument.partition("[")
            if (self.cwd / path).is_dir():  # the clone: pip builds and installs it
                installing = Path(path).name
                requirements.append(f"{installing}{bracket}{extras}")
            else:
                requirements.append(argument)
        linked = link_distributions(self.view, requirements, installing=installing)
        for distribution in linked:
            install_scripts(self.environment, distribution)
        self.execute(shlex.join(pip_offline(self.environment, *arguments)), [])

    def serve(self, command: str, expected: list[str]) -> None:
        if command.startswith("uvicorn "):
            command += f" --port {self.port}"
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.cwd,
            env=self.variables,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.running = Output(process)
        self.started.append(self.running)
        self.read_up_to = self.running.expect(expected, 0)

    def interrupt(self, expected: list[str]) -> None:
        assert self.running is not None, "^C with nothing running"
        self.running.process.send_signal(signal.SIGINT)
        self.running.expect(expected, self.read_up_to)
        self.status = self.running.process.wait(DEADLINE)
        self.running = None

    def stop(self) -> None:
        """Close every command started, killing any still running (after a failure)."""
        for output in self.started:
            output.close()


def _commands(body: list[str]) -> list[tuple[str, list[str]]]:
    """Split a console block into its commands, each with the output shown."""
    commands: list[tuple[str, list[str]]] = []
    for line in body:
        if line.startswith("$ ") or line == "^C":
            commands.append((line.removeprefix("$ "), []))
        else:
            assert commands, f"output before any command: {line!r}"
            commands[-1][1].append(line)
    return commands


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_tutorial_works_from_an_empty_folder(tmp_path: Path) -> None:
    """Every file of the tutorial, written as shown, runs every command as shown."""
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "home").mkdir()
    shell = Shell(tmp_path / "home", _free_port(), tmp_path / "site-packages")
    ran: list[str] = []
    try:
        for block in tutorial_blocks():
            if block.path is not None:
                file = shell.cwd / block.path
                file.parent.mkdir(parents=True, exist_ok=True)
                before = (
                    file.read_text(encoding="utf-8") + "\n\n" if block.continued else ""
                )
                file.write_text(before + "\n".join(block.body) + "\n", encoding="utf-8")
            elif block.lang == "console":
                for command, expected in _commands(block.body):
                    shell.run(command, expected)
                    ran.append(command.split(" ", 2)[0])
    finally:
        shell.stop()
    assert shell.running is None
    # The page's commands were found and run: a parsing slip cannot skip them.
    assert {"git", "pip", "lifespan-kit", "python", "uvicorn", "curl", "^C"} <= set(ran)
