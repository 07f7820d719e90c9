"""Offline builds and fresh virtual environments, for the packaging and tutorial tests.

A fresh environment sees this one's installed packages through a ``.pth`` file,
so that pip, run with ``--no-index``, finds every dependency of lifespan_kit
already satisfied and installs from the checkout or a built wheel alone, with no
network. The checkout itself is not on its path: what it imports of
lifespan_kit is what was installed into it.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(destination: Path) -> tuple[Path, Path]:
    """Build the sdist, then the wheel from it, offline; return both paths."""
    subprocess.run(
        [
            *(sys.executable, "-m", "build", "--no-isolation"),
            *("--skip-dependency-check", "--outdir", str(destination), str(ROOT)),
        ],
        check=True,
        capture_output=True,
    )
    [sdist] = destination.glob("*.tar.gz")
    [wheel] = destination.glob("*.whl")
    return sdist, wheel


def create_environment(path: Path) -> Path:
    """Create a virtual environment at `path` on this one's packages; return it."""
    venv.create(path, with_pip=False, symlinks=os.name != "nt")
    paths = {"base": str(path), "platbase": str(path)}
    site_packages = Path(sysconfig.get_path("purelib", vars=paths))
    lines = "".join(f"{entry}\n" for entry in _installed_packages())
    (site_packages / "_outer_packages.pth").write_text(lines, encoding="utf-8")
    return path


def _installed_packages() -> list[str]:
    """Where this interpreter finds installed packages, without the checkout."""
    entries = [*os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    entries += site.getsitepackages()
    found = [entry for entry in entries if entry and Path(entry).is_dir()]
    return [entry for entry in dict.fromkeys(found) if Path(entry).resolve() != ROOT]


def scripts(environment: Path) -> Path:
    """Return the directory of the environment's commands (``bin`` on POSIX)."""
    paths = {"base": str(environment), "platbase": str(environment)}
    return Path(sysconfig.get_path("scripts", vars=paths))


def activated(environment: Path) -> dict[str, str]:
    """Return the process environment of a shell where `environment` is active.

    Nothing of this test run leaks in: no PYTHONPATH (which names the checkout),
    no coverage measurement, no pip or pytest settings.
    """
    leaks = ("PYTHONPATH", "COVERAGE_", "PIP_", "PYTEST_", "VIRTUAL_ENV")
    variables = {k: v for k, v in os.environ.items() if not k.startswith(leaks)}
    path = os.pathsep.join([str(scripts(environment)), variables.get("PATH", "")])
    return {**variables, "VIRTUAL_ENV": str(environment), "PATH": path}


def pip_offline(environment: Path, *arguments: str) -> list[str]:
    """Return a ``pip install`` command line for `environment` that stays offline.

    ``--isolated`` ignores the machine's pip configuration, ``--no-index`` the
    package index; ``--no-build-isolation`` builds the checkout with the
    hatchling installed here instead of downloading one.
    """
    python = scripts(environment) / "python"
    return [
        *(str(python), "-m", "pip", "--isolated", "install"),
        *("--no-index", "--no-build-isolation", "--disable-pip-version-check"),
        *arguments,
    ]
