"""Benchmark the pytest plugin against plain pytest-asyncio session fixtures.

Three measurements, each compared with a baseline run in the same invocation:

per-test overhead
    CPU time per test, in the steady state (after a warm-up of 20 tests), of
    an async test on pytest-asyncio's session loop that asks for 1 or 5
    session resources through the plugin, against the same test asking for
    1 or 5 plain ``@pytest_asyncio.fixture(scope="session")`` fixtures.
    Runs are interleaved round by round; the ratio is the median of the
    per-round ratios. Goal: at most 1.1.

import cost
    Time to import ``lifespan_kit.pytest_plugin`` in a fresh interpreter that
    already imported pytest, as pytest does in every run of a project where
    lifespan_kit is installed, with no registry configured. Goal: under 5 ms,
    without loading pydantic or the core library.

failed resource
    100 tests asking for a resource whose start fails, against 100 tests asking
    for a plain pytest-asyncio session fixture that fails the same way: lines
    and bytes of pytest's output and wall time of the run, with the default
    report and with ``--tb=no``.

Usage::

    python bench/pytest_plugin.py [--rounds N] [--tests N]

Run it from the repository root with the development environment; it starts
pytest in subprocesses, so run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
WARMUP: Final = 20
PLUGINS_OFF: Final = (
    "-p",
    "no:cacheprovider",
    "-p",
    "no:anyio",
    "-p",
    "no:randomly",
    "-p",
    "no:xdist",
    "-p",
    "no:hypothesispytest",
)

TIMER: Final = f"""
import os
import time

import pytest

_seen = []


def pytest_runtest_logfinish(nodeid, location):
    _seen.append(time.process_time())


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    try:
        return (yield)
    finally:
        count = len(_seen) - {WARMUP}
        with open(os.environ["BENCH_OUT"], "a") as out:
            out.write(f"{{(_seen[-1] - _seen[{WARMUP} - 1]) / count}}\\n")
"""

APP: Final = """
from lifespan_kit import Registry

registry = Registry()


async def value():
    yield {}


async def broken():
    raise ConnectionRefusedError("database is down")
    yield


for index in range(5):
    registry.add(f"r{index}", value)
registry.add("broken", broken)
"""

PLAIN_FIXTURES: Final = """
import pytest
import pytest_asyncio


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pbroken():
    raise ConnectionRefusedError("database is down")
    yield
""" + "".join(
    f"""

@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def p{index}():
    yield {{}}
"""
    for index in range(5)
)


def environment(folder: Path, **extra: str) -> dict[str, str]:
    """The subprocesses' environment: bytecode cached, as in an installed package."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(folder / "pycache"), **extra}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def write_project(folder: Path, tests: int) -> None:
    (folder / "timer_plugin.py").write_text(TIMER)
    (folder / "app.py").write_text(APP)
    (folder / "conftest.py").write_text(PLAIN_FIXTURES)
    (folder / "pytest.ini").write_text(
        textwrap.dedent(
            """
            [pytest]
            pythonpath = .
            asyncio_mode = strict
            asyncio_default_fixture_loop_scope = session
            asyncio_default_test_loop_scope = session
            """
        )
    )
    cases = {
        "plugin1": "r0",
        "plain1": "p0",
        "plugin5": "r0, r1, r2, r3, r4",
        "plain5": "p0, p1, p2, p3, p4",
        "plugin_broken": "broken",
        "plain_broken": "pbroken",
    }
    for name, arguments in cases.items():
        test = (
            "\n\n@pytest.mark.asyncio\nasync def test_{index}({arguments}):\n    pass\n"
        )
        body = "".join(
            test.format(index=index, arguments=arguments) for index in range(tests)
        )
        (folder / f"test_{name}.py").write_text("import pytest\n" + body)


def run_pytest(
    folder: Path, case: str, *args: str, out: Path | None = None
) -> subprocess.CompletedProcess[str]:
    registry = "app:registry" if case.startswith("plugin") else ""
    env = environment(folder, PYTHONPATH=f"{ROOT}{os.pathsep}{folder}")
    if out is not None:
        env["BENCH_OUT"] = str(out)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            *PLUGINS_OFF,
            "-o",
            f"lifespan_kit_registry={registry}",
            *args,
            f"test_{case}.py",
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def per_test(folder: Path, rounds: int) -> list[str]:
    cases = ("plain1", "plugin1", "plain5", "plugin5")
    times: dict[str, list[float]] = {case: [] for case in cases}
    for round_ in range(rounds + 1):  # the first round writes the bytecode
        for case in cases:
            out = folder / f"{case}.out"
            out.unlink(missing_ok=True)
            run_pytest(folder, case, "-p", "timer_plugin", out=out)
            if round_:
                times[case].append(float(out.read_text()))
    lines = [
        "per-test CPU time, steady state (median of "
        f"{rounds} interleaved rounds; ratio: median of per-round ratios)",
        f"  {'resources':<10} {'plain fixture':>14} {'plugin':>10} {'ratio':>7}",
    ]
    for count in (1, 5):
        plain, plugin = times[f"plain{count}"], times[f"plugin{count}"]
        ratio = statistics.median(b / a for a, b in zip(plain, plugin, strict=True))
        lines.append(
            f"  {count:<10} {statistics.median(plain) * 1e3:>11.3f} ms"
            f" {statistics.median(plugin) * 1e3:>7.3f} ms {ratio:>6.2f}x"
        )
    return lines


IMPORT: Final = """
import sys
import time

import pytest

began = time.perf_counter()
import lifespan_kit.pytest_plugin

elapsed = time.perf_counter() - began
heavy = [
    name
    for name in ("anyio", "lifespan_kit._registry", "pydantic")
    if name in sys.modules
]
print(elapsed, ",".join(heavy) or "-")
"""


def import_cost(folder: Path, rounds: int) -> list[str]:
    results = [
        subprocess.run(
            [sys.executable, "-c", IMPORT],
            env=environment(folder, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for _ in range(rounds + 1)  # the first one writes the bytecode
    ][1:]
    elapsed = statistics.median(float(seconds) for seconds, _ in results)
    loaded = results[0][1]
    return [
        f"import cost of the plugin without a registry (median of {rounds}): "
        f"{elapsed * 1e3:.2f} ms; heavy modules loaded: {loaded}"
    ]


def failed_resource(folder: Path, tests: int) -> list[str]:
    lines = [
        f"{tests} tests using a resource whose start fails",
        f"  {'report':<10} {'case':<14} {'lines':>8} {'bytes':>10} {'seconds':>8}",
    ]
    for report in ("default", "no"):
        for case in ("plain_broken", "plugin_broken"):
            args = () if report == "default" else ("--tb=no",)
            began = time.perf_counter()
            result = run_pytest(folder, case, *args)
            elapsed = time.perf_counter() - began
            output = result.stdout + result.stderr
            lines.append(
                f"  {report:<10} {case:<14} {len(output.splitlines()):>8}"
                f" {len(output.encode()):>10} {elapsed:>8.2f}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tests", type=int, default=300)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_project(folder, options.tests)
        lines = [
            *per_test(folder, options.rounds),
            "",
            *import_cost(folder, options.rounds),
            "",
        ]
        write_project(folder, 100)
        lines += failed_resource(folder, 100)
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
