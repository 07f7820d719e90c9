"""Offline builds and fresh virtual environments, for the packaging and tutorial tests.

A fresh environment sees packages installed here through a ``.pth`` file (all
of them, or a chosen few), so that pip, run with ``--no-index``, finds the
dependencies of lifespan_kit already satisfied and installs from the checkout or
a built wheel alone, with no network. The checkout itself is not on its path:
what it imports of lifespan_kit is what was installed into it.
"""

from __future__ import annotations

import importlib.metadata
import os
import site
import subprocess
import sys
import sysconfig
import venv
from importlib.metadata import Distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def create_environment(path: Path, packages: list[str] | None = None) -> Path:
    """Create a virtual environment at `path`; return it.

    It sees the packages installed in the directories `packages`, or by
    default every package installed here.
    """
    venv.create(path, with_pip=False, symlinks=os.name != "nt")
    paths = {"base": str(path), "platbase": str(path)}
    site_packages = Path(sysconfig.get_path("purelib", vars=paths))
    entries = installed_packages() if packages is None else packages
    lines = "".join(f"{entry}\n" for entry in entries)
    (site_packages / "_outer_packages.pth").write_text(lines, encoding="utf-8")
    return path


def installed_packages() -> list[str]:
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


def link_distributions(
    view: Path, requirements: list[str], *, installing: str | None = None
) -> list[Distribution]:
    """Make distributions installed here, and their dependencies, visible in `view`.

    Each top-level file of each distribution (a package, a module, its
    ``.dist-info``) gets a symbolic link in `view`, so that an environment on
    `view` has those distributions and nothing else; the distribution named
    `installing` is left out (its dependencies are not). Return the other
    distributions that `requirements` name.
    """
    left_out = {canonicalize_name(installing or "")}
    needed = [
        distribution
        for distribution in _with_dependencies([Requirement(r) for r in requirements])
        if canonicalize_name(distribution.name) not in left_out
    ]
    for distribution in needed:
        for part in {file.parts[0] for file in distribution.files or []} - {".."}:
            link = view / part
            if not link.exists():
                link.symlink_to(Path(str(distribution.locate_file(part))))
    names = {canonicalize_name(Requirement(r).name) for r in requirements}
    return [d for d in needed if canonicalize_name(d.name) in names]


def _with_dependencies(requirements: list[Requirement]) -> list[Distribution]:
    """Return the distributions `requirements` need, for this Python, transitively."""
    found: dict[str, Distribution] = {}
    seen: set[tuple[str, str]] = set()
    pending = list(requirements)
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = {"", *requirement.extras}
        if {(name, extra) for extra in extras} <= seen:
            continue
        seen.update((name, extra) for extra in extras)
        distribution = found.setdefault(
            name, importlib.metadata.distribution(requirement.name)
        )
        for text in distribution.requires or []:
            dependency = Requirement(text)
            marker = dependency.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras):
                pending.append(dependency)
    return list(found.values())


def install_scripts(environment: Path, distribution: Distribution) -> None:
    """Write the distribution's commands into the environment, as pip would."""
    python = scripts(environment) / "python"
    for entry_point in distribution.entry_points.select(group="console_scripts"):
        script = scripts(environment) / entry_point.name
        script.write_text(
            f"#!{python}\n"
            "import sys\n"
            f"from {entry_point.module} import {entry_point.attr.split('.')[0]}\n"
            f"sys.exit({entry_point.attr}())\n",
            encoding="utf-8",
        )
        script.chmod(0o755)
