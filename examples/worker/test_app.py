"""The worker example: it handles every job, recovers stale ones, stops on SIGTERM."""

from __future__ import annotations

import queue
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Literal

import anyio
import pytest

import lifespan_kit
from examples.worker.app import Resources, Settings, enqueue, main, registry

ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT = 20.0
COMMAND = [sys.executable, "-m", "lifespan_kit", "run", "examples.worker.app:main"]
Backend = Literal["asyncio", "trio"]


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh queue database, and settings that poll it often."""
    path = tmp_path / "jobs.sqlite3"
    monkeypatch.setenv("WORKER_DATABASE", str(path))
    monkeypatch.setenv("WORKER_POLL_INTERVAL", "0.01")
    return path


def jobs_in(path: Path) -> list[tuple[int, str, str | None]]:
    """Each job's id, status and result."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute("select id, status, result from jobs order by id")
        return [(int(i), str(s), r) for i, s, r in rows]


def test_handles_every_job_then_exits_when_idle(
    monkeypatch: pytest.MonkeyPatch, database: Path, anyio_backend: Backend
) -> None:
    """Each job is done (or failed, for an empty one), then the worker exits 0."""
    monkeypatch.setenv("WORKER_EXIT_WHEN_IDLE", "true")
    ids = anyio.run(enqueue, ["a b c", " ", "one"], backend=anyio_backend)
    assert ids == [1, 2, 3]
    assert lifespan_kit.run(main, registry, backend=anyio_backend) == 0
    assert jobs_in(database) == [
        (1, "done", "3"),
        (2, "failed", "the payload is empty"),
        (3, "done", "1"),
    ]


async def test_a_job_left_running_is_requeued_and_handled(
    monkeypatch: pytest.MonkeyPatch, database: Path
) -> None:
    """A job claimed by a worker that died is put back by the requeuer, then done."""
    monkeypatch.setenv("WORKER_EXIT_WHEN_IDLE", "true")
    monkeypatch.setenv("WORKER_STALE_AFTER", "0.05")
    [job_id] = await enqueue(["left behind"])
    with sqlite3.connect(database) as connection:
        connection.execute(
            "update jobs set status = 'running', claimed_at = ? where id = ?",
            (time.time() - 60, job_id),
        )
    async with registry.lifespan(Resources) as resources:
        with anyio.fail_after(TIMEOUT):
            await main(resources)
    assert jobs_in(database) == [(job_id, "done", "2")]


def read_lines(stream: IO[str], into: queue.Queue[str]) -> None:
    """Pass each line of `stream` on, as it comes."""
    for line in stream:
        into.put(line)


def test_the_command_line_runs_it_and_sigterm_stops_it(
    database: Path, anyio_backend: Backend
) -> None:
    """`lifespan-kit run examples.worker.app:main` works, and stops on SIGTERM: 143."""
    anyio.run(enqueue, ["first job", "second job here"], backend=anyio_backend)
    process = subprocess.Popen(
        [*COMMAND, "--backend", anyio_backend],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    reader = threading.Thread(target=read_lines, args=(process.stderr, lines))
    reader.start()
    deadline = time.monotonic() + TIMEOUT
    while "Job 2 done: 3 word(s)." not in lines.get(
        timeout=max(0.0, deadline - time.monotonic())
    ):
        pass
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=TIMEOUT) == 143
    reader.join(timeout=TIMEOUT)
    process.stderr.close()
    assert jobs_in(database) == [(1, "done", "2"), (2, "done", "3")]


def test_the_default_database_is_in_the_temporary_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run from a clone, the worker leaves no database file in the working tree."""
    monkeypatch.delenv("WORKER_DATABASE", raising=False)
    database = Path(Settings.from_environment().database)
    assert database.parent == Path(tempfile.gettempdir())
    assert database.name == "lifespan_kit_worker.sqlite3"
