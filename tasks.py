"""Project tasks that need nothing but Python: demo, test, lint, docs, bench.

Usage:
    python3 tasks.py demo        serve the example notes API on 127.0.0.1
    python3 tasks.py quickstart  run the quickstart example script
    python3 tasks.py test        run the whole test suite with branch coverage
    python3 tasks.py lint        ruff, mypy strict, pyright strict and verifytypes
    python3 tasks.py docs build  build the documentation site (strict) into site/
    python3 tasks.py docs serve  serve the documentation on http://127.0.0.1:8000
                                 (or the next free port)
    python3 tasks.py bench       run the benchmarks in bench/
    python3 tasks.py compare     compare lifespan_kit with other libraries

Each task creates ``.venv`` on first use (or when pyproject.toml changes) and
installs the project with the dependency groups it needs. ``compare`` uses its
own ``.venv-bench`` with bench/requirements-peers.txt, so the libraries it
compares never enter the development environment.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
BENCH_VENV = ROOT / ".venv-bench"
BENCH_PYTHON = (
    BENCH_VENV
    / ("Scripts" if os.name == "nt" else "bin")
    / ("python.exe" if os.name == "nt" else "python")
)
PEERS = ROOT / "bench" / "requirements-peers.txt"


def run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
    """Run a command (from the project root by default); exit if it fails."""
    printable = " ".join(str(a) for a in args)
    print(f"+ {printable}", flush=True)
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, check=False)
    if result.returncode != 0:
        sys.exit(result.returncode)


def ensure_venv(group: str) -> None:
    """Create .venv and install the project with `group`, unless already done."""
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    stamp = hashlib.sha256(pyproject + group.encode()).hexdigest()
    stamp_file = VENV / f".installed-{group}"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    if not PYTHON.exists():
        print(f"+ creating {VENV.name}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = (PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check")
    run(*pip, "--upgrade", "pip>=25.1")
    run(*pip, "--group", group, "--editable", ".")
    stamp_file.write_text(stamp)


def demo() -> None:
    """Serve the example notes service under uvicorn until Ctrl+C.

    It runs on its embedded defaults (SQLite, an in-memory cache) unless
    DATABASE_URL and REDIS_URL are set; ``--port N`` picks the port.
    """
    ensure_venv("test")
    command = [str(PYTHON), "-m", "examples.service", *sys.argv[2:]]
    print(f"+ {' '.join(command)}", flush=True)
    service = subprocess.Popen(command, cwd=ROOT)
    # Ctrl+C reaches the service as well: wait while it stops its resources.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        status = service.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    if status != 0:
        sys.exit(status if status > 0 else 128 - status)


def quickstart() -> None:
    """Run the quickstart script: start the resources, use them, stop them."""
    ensure_venv("test")
    run(PYTHON, ROOT / "examples" / "quickstart" / "app.py")


def test() -> None:
    """Run every test on asyncio and trio, under branch coverage (100% required)."""
    ensure_venv("test")
    for leftover in ROOT.glob(".coverage*"):
        leftover.unlink()
    run(PYTHON, "-m", "coverage", "run", "-m", "pytest", *sys.argv[2:])
    run(PYTHON, "-m", "coverage", "combine", "--quiet")
    run(PYTHON, "-m", "coverage", "report")


def lint() -> None:
    """Check formatting, lint, and strict typing of the package and its tests."""
    ensure_venv("dev")
    run(BIN / "ruff", "format", "--check", ".")
    run(BIN / "ruff", "check", ".")
    run(BIN / "mypy", "lifespan_kit", "tests", "typing_tests", "examples", "bench")
    pyright = (BIN / "pyright", "--pythonpath", PYTHON)
    run(*pyright)
    # verifytypes needs an installed (not editable) copy of the package.
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "site"
        run(
            PYTHON,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            target,
            ".",
        )
        env = {**os.environ, "PYTHONPATH": str(target)}
        run(
            *pyright,
            "--verifytypes",
            "lifespan_kit",
            "--ignoreexternal",
            env=env,
            cwd=Path(scratch),
        )


def docs() -> None:
    """Build the documentation site strictly, or serve it with live reload.

    ``build`` fails on any warning (a broken link, a missing snippet, an
    undocumented reference); ``serve`` rebuilds on every change, on
    http://127.0.0.1:8000, or on the next free port when that one is taken
    (by the demo, say). Options after the subcommand go to mkdocs, e.g.
    ``docs serve --dev-addr 127.0.0.1:8001``.
    """
    action = sys.argv[2] if len(sys.argv) > 2 else "build"
    if action not in ("build", "serve"):
        print("usage: python3 tasks.py docs [build|serve] [mkdocs options]")
        sys.exit(2)
    ensure_venv("docs")
    options = sys.argv[3:]
    if action == "build":
        options = ["--strict", *options]
    elif not any(o.startswith(("-a", "--dev-addr")) for o in options):
        options = ["--dev-addr", docs_address(), *options]
    # Material for MkDocs prints a notice about its successor on every build.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run(BIN / "mkdocs", action, *options, env=env)


def docs_address(host: str = "127.0.0.1", port: int = 8000) -> str:
    """Return ``host:port``, or the first free port after it, for ``docs serve``."""
    for candidate in range(port, port + 20):
        with socket.socket() as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
        if candidate != port:
            print(
                f"+ port {port} is taken (the demo?); serving the docs on "
                f"http://{host}:{candidate} instead",
                flush=True,
            )
        return f"{host}:{candidate}"
    print(
        f"ports {port} to {port + 19} are all taken; choose one with "
        "`python3 tasks.py docs serve --dev-addr 127.0.0.1:PORT`"
    )
    sys.exit(2)


def bench() -> None:
    """Run the benchmarks and print their tables."""
    ensure_venv("test")
    run(PYTHON, ROOT / "bench" / "run.py", *sys.argv[2:])


def ensure_bench_venv() -> None:
    """Create .venv-bench with the compared libraries and lifespan_kit (editable)."""
    stamp = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + PEERS.read_bytes()
    ).hexdigest()
    stamp_file = BENCH_VENV / ".installed"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    if not BENCH_PYTHON.exists():
        print(f"+ creating {BENCH_VENV.name}", flush=True)
        venv.create(BENCH_VENV, with_pip=True)
    pip = (
        BENCH_PYTHON,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    )
    run(*pip, "--requirement", PEERS, "--editable", ".")
    stamp_file.write_text(stamp)


def compare() -> None:
    """Compare lifespan_kit with other libraries; update bench/RESULTS.md."""
    ensure_bench_venv()
    run(BENCH_PYTHON, ROOT / "bench" / "compare.py", *sys.argv[2:])


TASKS = {
    "demo": demo,
    "quickstart": quickstart,
    "test": test,
    "lint": lint,
    "docs": docs,
    "bench": bench,
    "compare": compare,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        print(__doc__)
        sys.exit(2)
    TASKS[sys.argv[1]]()
