"""The distributions, as the package index and a user's installer would see them.

The sdist is built from the checkout and the wheel from the sdist, offline, as
``python -m build`` does; the wheel is installed into a fresh virtual
environment (see ``tests/distribution.py``), and the checks run there.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

import lifespan_kit
from tests.distribution import ROOT, activated, build, create_environment, pip_offline

pytestmark = pytest.mark.timeout(120)

NAME = "lifespan_kit"
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
MKDOCS = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def _setting(text: str, pattern: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, pattern
    return match.group(1)


VERSION = _setting(PYPROJECT, r'^version = "([^"]+)"$')
SITE_URL = _setting(MKDOCS, r"^site_url: (\S+)$")


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel, built once for the module."""
    return build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def sdist(distributions: tuple[Path, Path]) -> Path:
    """The source distribution."""
    return distributions[0]


@pytest.fixture(scope="module")
def wheel(distributions: tuple[Path, Path]) -> Path:
    """The wheel, built from the sdist."""
    return distributions[1]


@pytest.fixture(scope="module")
def metadata(wheel: Path) -> Message:
    """The wheel's core metadata."""
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"{NAME}-{VERSION}.dist-info/METADATA").decode()
    return Parser().parsestr(text)


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtual environment with the wheel and its extras installed."""
    path = create_environment(tmp_path_factory.mktemp("venv") / "venv")
    subprocess.run(
        pip_offline(path, f"{wheel}[fastapi,pytest]"),
        check=True,
        capture_output=True,
    )
    return path


def _run(environment: Path, *command: str, cwd: Path) -> str:
    """Run `command` with `environment` active; return its output."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env=activated(environment),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_metadata_names_the_project(metadata: Message) -> None:
    """Name, version (pyproject's), summary, Python and license are in the metadata."""
    assert metadata["Name"] == NAME
    assert metadata["Version"] == VERSION
    assert metadata["Summary"].startswith("Declare async resources once")
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]


def test_project_urls_lead_to_the_docs_source_changelog_and_issues(
    metadata: Message,
) -> None:
    """The index links the docs site (mkdocs.yml's), the source, changelog, issues."""
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    source = "https://github.com/lifespan-kit/lifespan_kit"
    assert urls == {
        "Documentation": SITE_URL,
        "Source": source,
        "Changelog": f"{SITE_URL}changelog/",
        "Issues": f"{source}/issues",
    }


def test_classifiers_name_the_pythons_and_frameworks(metadata: Message) -> None:
    """Every supported Python version and both frameworks are classifiers."""
    classifiers = set(metadata.get_all("Classifier", []))
    pythons = {
        f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 15)
    }
    assert pythons <= classifiers
    assert {"Framework :: FastAPI", "Framework :: Pytest", "Typing :: Typed"} <= (
        classifiers
    )
    # License-Expression supersedes the License classifiers (PEP 639).
    assert not [c for c in classifiers if c.startswith("License ::")]


def test_long_description_is_the_readme(metadata: Message) -> None:
    """The index shows the README, as Markdown."""
    assert metadata["Description-Content-Type"] == "text/markdown"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert description.strip() == readme.strip()


def test_wheel_holds_the_typed_package_and_its_license(wheel: Path) -> None:
    """Every module, py.typed and the license are in the wheel; nothing else."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    modules = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / NAME).iterdir()
        if path.suffix == ".py" or path.name == "py.typed"
    }
    dist_info = f"{NAME}-{VERSION}.dist-info"
    assert {n for n in names if not n.startswith(dist_info)} == modules
    assert f"{NAME}/py.typed" in names
    assert f"{dist_info}/licenses/LICENSE" in names


def test_entry_points_are_the_command_and_the_pytest_plugin(wheel: Path) -> None:
    """The wheel declares the `lifespan-kit` command and the `pytest11` plugin."""
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"{NAME}-{VERSION}.dist-info/entry_points.txt").decode()
    assert text.split() == [
        "[console_scripts]",
        *("lifespan-kit", "=", "lifespan_kit.cli:main"),
        "[pytest11]",
        *("lifespan_kit", "=", "lifespan_kit.pytest_plugin"),
    ]


def test_installed_package_reports_its_version(
    environment: Path, tmp_path: Path
) -> None:
    """`lifespan_kit.__version__` is the installed metadata's, from the wheel."""
    code = "import lifespan_kit; print(lifespan_kit.__version__, lifespan_kit.__file__)"
    version, path = _run(environment, "python", "-c", code, cwd=tmp_path).split()
    assert version == VERSION
    assert Path(path).is_relative_to(environment)


def test_version_is_read_from_the_metadata() -> None:
    """In this environment too, the version is the installed distribution's."""
    from importlib.metadata import version

    assert lifespan_kit.__version__ == version(NAME)


def test_unknown_attribute_is_an_attribute_error() -> None:
    """Only `__version__` is computed on access; other names fail as usual."""
    with pytest.raises(AttributeError, match="has no attribute 'version'"):
        lifespan_kit.version  # type: ignore[attr-defined]  # noqa: B018


def test_installed_command_runs(environment: Path, tmp_path: Path) -> None:
    """The `lifespan-kit` script is installed, and runs the command line."""
    output = _run(environment, "lifespan-kit", "--help", cwd=tmp_path)
    assert output.startswith("usage: lifespan-kit")


def test_pytest_loads_the_installed_plugin(environment: Path, tmp_path: Path) -> None:
    """pytest finds the plugin through the wheel's entry point."""
    output = _run(environment, "python", "-m", "pytest", "--help", cwd=tmp_path)
    assert "lifespan_kit_registry" in output


def test_sdist_holds_what_its_test_suite_needs(sdist: Path) -> None:
    """The sdist has the tests and what they read: docs, examples, configuration."""
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = {
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "mkdocs.yml",
        "tests/conftest.py",
        "docs/tutorial.md",
        "docs/hooks/cli_reference.py",
        "examples/service/app.py",
        "bench/RESULTS.md",
    }
    assert expected <= names
    assert not [name for name in names if "__pycache__" in name or ".venv" in name]


def test_sdist_test_suite_collects(
    sdist: Path, environment: Path, tmp_path: Path
) -> None:
    """Unpacked, the sdist's own test suite collects without an error."""
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    [project] = tmp_path.iterdir()
    command = (
        "python",
        "-m",
        "pytest",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
    )
    output = _run(environment, *command, cwd=project)
    assert re.search(r"^\d+ tests collected", output, re.MULTILINE), output
