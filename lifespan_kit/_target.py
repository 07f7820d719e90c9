"""Loading what the command line names: ``package.module:attribute``.

The module part may also be the path of a Python file (``app.py``,
``./src/app.py``): it is imported as a module, by its dotted name from the
first folder above it that is not a package, with that folder on `sys.path`,
so that its own imports (absolute, or relative inside its package) work.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Final, NoReturn

from lifespan_kit import Registry
from lifespan_kit._bundle import is_bundle_class

if TYPE_CHECKING:
    from lifespan_kit._models import Bundle


class InputError(Exception):
    """The command's input cannot be used; its message is the one line shown."""


def fail(message: str, *, cause: BaseException | None = None) -> NoReturn:
    """Stop the command: its input cannot be used."""
    raise InputError(message) from cause


def load(target: str, default_attribute: str) -> tuple[object, ModuleType]:
    """Import ``module:attribute`` and return the attribute and its module."""
    module_name, _, attribute = target.partition(":")
    attribute = attribute or default_attribute
    if not module_name:
        fail(f"'{target}' names no module; write 'package.module:{attribute}'.")
    if module_name.endswith(".py") or "/" in module_name:
        module_name = _import_name_of_file(module_name, attribute)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        fail(
            f"cannot import module '{module_name}': {type(exc).__name__}: {exc}",
            cause=exc,
        )
    found: object = module
    for part in attribute.split("."):
        parent, found = found, getattr(found, part, _MISSING)
        if found is _MISSING:
            close = difflib.get_close_matches(part, dir(parent), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else "."
            fail(f"module '{module_name}' has no attribute '{attribute}'{hint}")
    return found, module


_MISSING: Final = object()


def _import_name_of_file(name: str, attribute: str) -> str:
    """Put the folder a file is imported from on `sys.path`; return its module name."""
    path = Path(name)
    if path.suffix != ".py":
        path = path.with_suffix(".py")
    if not path.is_file():
        dotted = name.removesuffix(".py").strip("./").replace("/", ".")
        fail(
            f"'{name}' is not a Python file; name the module as "
            f"'{dotted}:{attribute}', or give the path of a .py file."
        )
    path = path.resolve()
    parts = [] if path.stem == "__init__" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    module_name = ".".join(parts)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    loaded = sys.modules.get(module_name)
    if loaded is not None and _file_of(loaded) != path:
        fail(
            f"'{name}' would be imported as module '{module_name}', but another "
            "module of that name is already loaded "
            f"({_file_of(loaded) or 'built into Python'}); rename the file."
        )
    return module_name


def _file_of(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return None if file is None else Path(file).resolve()


def load_registry(target: str) -> Registry:
    """Load the `Registry` that `target` names (default attribute: ``registry``)."""
    found, _ = load(target, "registry")
    if not isinstance(found, Registry):
        fail(f"'{target}' is {_describe(found)}, not a lifespan_kit.Registry.")
    return found


def load_bundle(target: str | None) -> type[Bundle] | None:
    """Load the `Bundle` class that `target` names, if any."""
    if target is None:
        return None
    found, _ = load(target, "Resources")
    if not is_bundle_class(found):
        fail(f"'{target}' is {_describe(found)}, not a lifespan_kit.Bundle subclass.")
    return found


def find_registry(module: ModuleType) -> Registry:
    """Return the one `Registry` among a module's globals."""
    found = {id(v): v for v in vars(module).values() if isinstance(v, Registry)}
    if len(found) == 1:
        return next(iter(found.values()))
    many = f"{len(found)} registries" if found else "no Registry"
    fail(
        f"module '{module.__name__}' has {many}; pass --registry "
        "package.module:registry."
    )


def _describe(found: object) -> str:
    if isinstance(found, ModuleType):
        return f"the module {found.__name__}"
    if isinstance(found, type):
        return f"the class {found.__qualname__}"
    if callable(found):
        return f"the callable {getattr(found, '__qualname__', repr(found))}"
    return f"an instance of {type(found).__qualname__}"
