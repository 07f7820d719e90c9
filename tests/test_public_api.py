"""The public surface: a complete, sorted `__all__`; a core that needs no extras."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
from types import ModuleType

import pytest

import lifespan_kit
import lifespan_kit.errors
from lifespan_kit._bundle import is_bundle_class

PUBLIC_MODULES = [
    pytest.param(lifespan_kit, id="lifespan_kit"),
    pytest.param(lifespan_kit.errors, id="lifespan_kit.errors"),
]

# The edges and the test tooling: the core must neither need nor load them.
OPTIONAL_MODULES = ("fastapi", "httpx", "opentelemetry", "pytest", "starlette")

IMPORT_CORE = """
import importlib.abc
import json
import sys

BLOCKED = set(sys.argv[1:])


class BlockOptionalModules(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, BlockOptionalModules())

import lifespan_kit
import lifespan_kit.errors

print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def _isort_style_key(name: str) -> tuple[int, list[str | int]]:
    """Order as ruff's RUF022 does: CONSTANTS, then Classes, then the rest."""
    if name.isupper() and len(name) > 1:
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    natural = [
        int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)
    ]
    return group, natural


def _names_imported_from_elsewhere(module: ModuleType) -> set[str]:
    """Return the names `module` takes with `from x import y` from outside the package.

    Plain `import x` binds a module, and modules are never part of `__all__`.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").partition(".")[0] != "lifespan_kit"
        ):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _public_attributes(module: ModuleType) -> set[str]:
    """Return what `module` defines or re-exports from the package, submodules aside."""
    imported = _names_imported_from_elsewhere(module)
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and name not in imported
    }


def _run_python(*args: str) -> subprocess.CompletedProcess[str]:
    # -I: no user site, no PYTHON* variables, no current directory on sys.path,
    # so the interpreter sees the installed package as a user's would.
    # -W error: importing the package must not warn either.
    return subprocess.run(
        [sys.executable, "-I", "-W", "error", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_all_is_sorted_without_duplicates(module: ModuleType) -> None:
    """__all__ lists each name once, in the order ruff's RUF022 keeps."""
    assert module.__all__ == sorted(set(module.__all__), key=_isort_style_key)


def test_sort_order_is_ruffs() -> None:
    """The order checked is RUF022's: CONSTANTS, Classes, then the rest, naturally."""
    names = ["open_lifespan", "Registry", "Item10", "DOCS_URL", "Item9", "Bundle"]
    assert sorted(names, key=_isort_style_key) == [
        "DOCS_URL",
        "Bundle",
        "Item9",
        "Item10",
        "Registry",
        "open_lifespan",
    ]


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_name_in_all_exists(module: ModuleType) -> None:
    """Every name in __all__ is an attribute of the module."""
    assert [name for name in module.__all__ if not hasattr(module, name)] == []


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(lifespan_kit, id="lifespan_kit"),
        pytest.param(lifespan_kit.errors, id="lifespan_kit.errors"),
    ],
)
def test_every_public_attribute_is_in_all(module: ModuleType) -> None:
    """Every public name a module defines or re-exports is listed in __all__."""
    assert sorted(_public_attributes(module) - set(module.__all__)) == []


def test_core_imports_with_optional_modules_blocked() -> None:
    """`import lifespan_kit` works when the frameworks and pytest cannot be imported."""
    result = _run_python("-c", IMPORT_CORE, *OPTIONAL_MODULES)
    assert result.returncode == 0, result.stderr


def test_core_import_loads_no_optional_module() -> None:
    """Importing lifespan_kit leaves the frameworks, httpx and pytest unimported."""
    result = _run_python("-c", IMPORT_CORE)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert sorted(loaded.intersection(OPTIONAL_MODULES)) == []


def test_blocker_fails_imports_of_installed_modules() -> None:
    """The blocker makes an installed module fail to import, as if it were missing."""
    result = _run_python("-c", IMPORT_CORE, "lifespan_kit")
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'lifespan_kit'" in result.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    """The lazily filled package namespace still refuses names it does not have."""
    with pytest.raises(AttributeError, match="has no attribute 'Regsitry'"):
        _ = lifespan_kit.Regsitry  # type: ignore[attr-defined]  # the typo is the test


def test_dir_lists_every_public_name_before_first_use() -> None:
    """dir() shows the whole public surface, imported or not yet."""
    assert set(lifespan_kit.__all__) <= set(dir(lifespan_kit))


PLUGIN_IMPORT = """
import json
import sys

import pytest

import lifespan_kit.pytest_plugin

print(json.dumps(sorted(sys.modules)))
"""


def test_the_pytest_plugin_imports_neither_the_core_nor_pydantic() -> None:
    """pytest imports the plugin in every run; without a registry it stays light."""
    # Not isolated: the copy of the package under test, as pytest would load it.
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", PLUGIN_IMPORT],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    heavy = {"pydantic", "anyio", "lifespan_kit._registry", "lifespan_kit._lifespan"}
    assert sorted(loaded & heavy) == []


IMPORT_COST = """
import sys

import anyio
import pydantic

pydantic.BaseModel
before = set(sys.modules)
import lifespan_kit

# The core, as a program that uses it loads it; the models are not needed yet.
lifespan_kit.Registry, lifespan_kit.Lifespan, lifespan_kit.run
models = [
    name
    for name, value in vars(lifespan_kit).items()
    if isinstance(value, type) and issubclass(value, pydantic.BaseModel)
]
print(sorted(set(sys.modules) - before), models)
"""


def test_import_creates_no_pydantic_model() -> None:
    """The core's import creates no model class: pydantic.fields stays unloaded."""
    # Not isolated: the package under test, wherever the tests import it from.
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_COST],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    loaded, models = result.stdout.rsplit("] ", 1)
    assert "'lifespan_kit._registry'" in loaded
    assert "'pydantic.fields'" not in loaded
    assert "'lifespan_kit._models'" not in loaded
    assert "'difflib'" not in loaded
    assert "'socket'" not in loaded
    assert models.strip() == "[]"


@pytest.mark.parametrize("name", ["Bundle", "HealthReport", "ResourceHealth"])
def test_models_are_created_on_first_use(name: str) -> None:
    """The models are reached as attributes of the package, and listed by dir()."""
    model = getattr(lifespan_kit, name)
    assert model.__module__ == "lifespan_kit._models"
    assert name in dir(lifespan_kit)


def test_nothing_is_a_bundle_before_bundle_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Until the models module is loaded, no class can subclass Bundle."""
    monkeypatch.delitem(sys.modules, "lifespan_kit._models")
    assert not is_bundle_class(lifespan_kit.Registry)
