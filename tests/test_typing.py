"""Annotations resolve at runtime, for tools that read them (pydantic, FastAPI, docs).

`from __future__ import annotations` turns every annotation into a string; a
name imported only under ``if TYPE_CHECKING:`` then breaks
`typing.get_type_hints` for whoever inspects the object. Each test resolves the
annotations of one public object, of its public methods (and their overloads),
and of every lifespan_kit class those annotations lead to.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable, Iterator

import pytest

import lifespan_kit
import lifespan_kit.errors

if sys.version_info >= (3, 11):
    from typing import get_overloads
else:  # pragma: no cover  # typing.overload keeps no registry before 3.11

    def get_overloads(func: Callable[..., object]) -> list[Callable[..., object]]:
        return []


PUBLIC_CLASSES_AND_CALLABLES = [
    pytest.param(getattr(module, name), id=f"{module.__name__}.{name}")
    for module in (lifespan_kit, lifespan_kit.errors)
    for name in module.__all__
    if inspect.isclass(getattr(module, name))
    or inspect.isfunction(getattr(module, name))
]


def _is_ours(obj: object) -> bool:
    module: object = getattr(obj, "__module__", "")
    return isinstance(module, str) and module.partition(".")[0] == "lifespan_kit"


def _members(cls: type) -> Iterator[Callable[..., object]]:
    """Yield the public and special methods `cls` defines or inherits from us."""
    for klass in cls.__mro__:
        if not _is_ours(klass):
            continue
        for name, attr in list(vars(klass).items()):  # a read may build a model
            if name.startswith("_") and not name.endswith("__"):
                continue
            func = attr.fget if isinstance(attr, property) else attr
            func = getattr(func, "__func__", func)  # classmethod, staticmethod
            # Helpers that dataclasses, pydantic or typing attach are not ours.
            if inspect.isfunction(func) and _is_ours(func):
                yield func
                yield from get_overloads(func)


def _classes_in(hint: object) -> Iterator[type]:
    """Yield our classes mentioned anywhere in a resolved annotation."""
    for part in (hint, typing.get_origin(hint), *typing.get_args(hint)):
        if inspect.isclass(part) and _is_ours(part):
            yield part
    for arg in typing.get_args(hint):
        yield from _classes_in(arg)


def _resolve_everything_reachable(root: object) -> list[str]:
    """Resolve `root`'s annotations and those of what they lead to; list failures."""
    failures: list[str] = []
    seen: set[int] = set()
    pending = [root]
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        try:
            hints = typing.get_type_hints(obj)
        except Exception as exc:
            name = getattr(obj, "__qualname__", repr(obj))
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        for hint in hints.values():
            pending.extend(_classes_in(hint))
        if inspect.isclass(obj):
            pending.extend(_members(obj))
    return failures


@pytest.mark.parametrize("obj", PUBLIC_CLASSES_AND_CALLABLES)
def test_annotations_resolve_at_runtime(obj: object) -> None:
    """get_type_hints resolves every annotation reachable from a public object."""
    assert _resolve_everything_reachable(obj) == []


def test_an_unresolvable_annotation_is_reported() -> None:
    """The check names the object whose annotation does not resolve at runtime."""

    def open_db() -> None:
        """Stand in for a factory whose annotation was imported for type checking."""

    open_db.__annotations__ = {"return": "TypeCheckingOnly"}
    assert _resolve_everything_reachable(open_db) == [
        f"{open_db.__qualname__}: NameError: name 'TypeCheckingOnly' is not defined"
    ]
