"""Declaring a resource: its name, factory, dependencies and options."""

from __future__ import annotations

import inspect
import keyword
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Generic, final

from lifespan_kit._settings import Timeouts
from lifespan_kit._types import FactoryKind, HealthCheck, ValueT_co
from lifespan_kit.errors import InvalidFactoryError, InvalidOptionError

_SKIPPED_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


@dataclass(frozen=True, slots=True)
class Dependency:
    """One factory parameter filled with another resource's value."""

    parameter: str
    resource_name: str
    is_positional: bool = False


@final
class Resource(Generic[ValueT_co]):
    """A named resource definition: a factory (or value) and its options.

    `Registry.resource` and `Registry.add` return one. It is also a typed key:
    ``resources[db]`` on a running [ResourceMap][lifespan_kit.ResourceMap]
    returns the value with the factory's type.

    Example:
        ```python
        registry = Registry()
        answer = registry.add("answer", 42)
        assert answer.name == "answer"
        ```

    Added in 0.1.
    """

    __slots__ = (
        "_annotations",
        "dependencies",
        "factory",
        "health_check",
        "kind",
        "name",
        "thread",
        "timeouts",
    )

    def __init__(
        self,
        name: str,
        factory: object,
        *,
        kind: FactoryKind,
        dependencies: tuple[Dependency, ...],
        timeouts: Timeouts,
        health_check: HealthCheck[object] | None,
        thread: bool = False,
    ) -> None:
        self.name: str = name
        self.factory: object = factory
        self.kind: FactoryKind = kind
        self.dependencies: tuple[Dependency, ...] = dependencies
        self.timeouts: Timeouts = timeouts
        self.health_check: HealthCheck[object] | None = health_check
        # Whether its start and stop run in a thread of its own (see `_sync`).
        self.thread: bool = thread
        self._annotations: Mapping[str, type] | None = None

    def __repr__(self) -> str:
        deps = ", ".join(d.resource_name for d in self.dependencies)
        return f"<Resource {self.name!r} ({self.kind}) depends on [{deps}]>"

    @property
    def origin(self) -> str:
        """Where the factory was defined, for error messages."""
        return describe_origin(self.factory)

    def checked_annotations(self) -> Mapping[str, type]:
        """Return the dependency parameters whose annotation can be checked."""
        if self._annotations is None:
            self._annotations = _checkable_annotations(self.factory, self.dependencies)
        return self._annotations


def create_resource(
    name: str,
    factory: object,
    *,
    depends: Mapping[str, str] | None,
    timeouts: Timeouts,
    health_check: HealthCheck[object] | None,
    kind: FactoryKind | None = None,
    thread: bool = False,
) -> Resource[object]:
    """Inspect `factory` and build a `Resource`.

    `kind` forces how the factory runs; by default it is read from the factory.

    Raises:
        InvalidFactoryError: When the factory cannot be run as a resource, or
            `depends` does not map names to names.
        InvalidOptionError: When `health` is not callable, or `thread` is set
            for a factory that is not sync.
    """
    if depends is not None:
        _check_depends(name, depends)
    if health_check is not None and not callable(health_check):
        raise InvalidOptionError(
            name,
            option="health",
            problem=(
                "it must be a function called with the value, not "
                f"{type(health_check).__qualname__}"
            ),
            remedy=(
                "pass a function (sync or async) that raises or returns False "
                "when the resource is unhealthy, such as health=check_db."
            ),
        )
    if kind is None:
        kind = classify(factory)
        if kind == "value" and inspect.iscoroutine(factory):
            factory.close()  # it never ran; closed, Python does not warn about it
            raise InvalidFactoryError(
                name,
                problem=(
                    "the value is a coroutine, which can be awaited only once "
                    f"({factory.__qualname__}() was called, not awaited)."
                ),
                remedy=(
                    f"register the async function itself, without calling it: "
                    f"registry.add('{name}', {factory.__qualname__})."
                ),
            )
    if thread is not False:
        _check_thread(name, thread, kind)
    dependencies = (
        () if kind == "value" else _dependencies(name, factory, depends or {})
    )
    if kind == "value" and depends:
        raise InvalidFactoryError(
            name,
            problem="depends= was given for a plain value, which has no parameters.",
            remedy="drop depends=, or register a factory function.",
        )
    return Resource(
        name,
        factory,
        kind=kind,
        dependencies=dependencies,
        timeouts=timeouts,
        health_check=health_check,
        thread=thread,
    )


def _check_thread(name: str, thread: object, kind: FactoryKind) -> None:
    """Accept ``thread=True`` for a sync factory only."""
    if thread is not True:
        problem = "it must be True or False"
    elif kind == "value":
        problem = "a plain value has nothing to run in a thread"
    elif kind in ("generator", "callable"):
        return
    else:
        problem = (
            "thread=True runs a sync factory in a thread of its own, and this "
            "factory is async: it runs on the event loop (await its blocking "
            "calls with anyio.to_thread.run_sync)"
        )
    raise InvalidOptionError(name, option="thread", problem=problem)


def check_name(name: object) -> str:
    """Return `name` if it can name a resource, else raise `InvalidFactoryError`.

    A resource's name is also a parameter name, so it must be a string that
    is a Python identifier and not a keyword.
    """
    if not isinstance(name, str):
        raise InvalidFactoryError(
            repr(name),
            problem=f"the name must be a string, not {type(name).__qualname__}.",
            remedy=(
                "pass the name first, as a string: registry.add('db', factory), "
                "or @registry.resource(name='db')."
            ),
        )
    if not name.isidentifier():
        raise InvalidFactoryError(
            name,
            problem="the name is not a valid Python identifier.",
            remedy="use a name that can be a parameter name, such as 'db_pool'.",
        )
    if keyword.iskeyword(name):
        raise InvalidFactoryError(
            name,
            problem="the name is a Python keyword, so no parameter can have it.",
            remedy=f"use another name, such as '{name}_'.",
        )
    return name


def _is_name(text: object) -> bool:
    return isinstance(text, str) and text.isidentifier() and not keyword.iskeyword(text)


def _check_depends(name: str, depends: object) -> None:
    if not isinstance(depends, Mapping):
        raise InvalidFactoryError(
            name,
            problem=(
                "depends= must map parameter names to resource names, not be "
                f"a {type(depends).__qualname__}."
            ),
            remedy="pass a dict, such as depends={'cfg': 'settings'}.",
        )
    pairs: Mapping[object, object] = depends  # pyright: ignore[reportUnknownVariableType]  # untyped callers; checked below
    for parameter, target in pairs.items():
        if not (_is_name(parameter) and _is_name(target)):
            raise InvalidFactoryError(
                name,
                problem=(
                    f"depends= maps {parameter!r} to {target!r}; each side must "
                    "be a name: a string that is a Python identifier, not a keyword."
                ),
                remedy=(
                    "map the parameter's name to the resource's name, such as "
                    "depends={'cfg': 'settings'}."
                ),
            )


def classify(factory: object) -> FactoryKind:
    """Return how `factory` is run.

    A `unittest.mock` object is a value even when callable: tests pass mocks to
    stand for the resource itself (``override(db=Mock(spec_set=Database))``).
    """
    if not callable(factory) or _is_mock(factory):
        return "value"
    call = getattr(factory, "__call__", None)  # noqa: B004
    if inspect.isasyncgenfunction(factory) or inspect.isasyncgenfunction(call):
        return "async_generator"
    if inspect.iscoroutinefunction(factory) or inspect.iscoroutinefunction(call):
        return "coroutine"
    if inspect.isgeneratorfunction(factory) or inspect.isgeneratorfunction(call):
        return "generator"
    return "callable"


def _is_mock(obj: object) -> bool:
    # A program that never imported unittest.mock holds no mock: no import here.
    mock = sys.modules.get("unittest.mock")
    return mock is not None and isinstance(obj, mock.NonCallableMock)


def _dependencies(
    name: str, factory: object, depends: Mapping[str, str]
) -> tuple[Dependency, ...]:
    try:
        signature = inspect.signature(factory)  # type: ignore[arg-type]  # callable
    except (TypeError, ValueError):
        # Builtins and some C types have no signature: they take no resources.
        signature = None
    except Exception as exc:
        raise InvalidFactoryError(
            name,
            problem=f"reading its signature raised {type(exc).__name__}: {exc}",
            remedy="make `inspect.signature()` work on the factory.",
        ) from exc
    parameters = {} if signature is None else dict(signature.parameters)
    accepts_any = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    unknown = [p for p in depends if p not in parameters and not accepts_any]
    if unknown:
        raise InvalidFactoryError(
            name,
            problem=f"depends= names parameter '{unknown[0]}', which it does not have.",
            remedy=f"use one of its parameters: {', '.join(parameters) or '(none)'}.",
        )
    found = [
        dependency
        for parameter in parameters.values()
        if (dependency := _dependency(name, parameter, depends)) is not None
    ]
    found.extend(
        Dependency(param, target)
        for param, target in depends.items()
        if param not in parameters
    )
    return tuple(found)


def _dependency(
    name: str, parameter: inspect.Parameter, depends: Mapping[str, str]
) -> Dependency | None:
    if parameter.kind in _SKIPPED_KINDS:
        return None
    target = depends.get(parameter.name)
    if target is None and parameter.default is not inspect.Parameter.empty:
        return None
    is_positional = parameter.kind is inspect.Parameter.POSITIONAL_ONLY
    return Dependency(parameter.name, target or parameter.name, is_positional)


def _checkable_annotations(
    factory: object, dependencies: tuple[Dependency, ...]
) -> Mapping[str, type]:
    try:
        target = factory.__init__ if inspect.isclass(factory) else factory
        hints = typing.get_type_hints(target)
    except Exception:
        # Unresolvable forward references only document the type; skip the check.
        return {}
    checked: dict[str, type] = {}
    for dependency in dependencies:
        hint = hints.get(dependency.parameter)
        if _is_checkable(hint):
            checked[dependency.parameter] = hint  # type: ignore[assignment]  # checked
    return checked


_PROBE: Final = object()


def _is_checkable(hint: object) -> bool:
    """Return whether `isinstance(value, hint)` is a meaningful, working check.

    Plain classes are; `object`, protocols and parametrised generics are not,
    nor is anything `isinstance` refuses (`typing.Any`, a `TypedDict`, a class
    whose `__instancecheck__` raises): one probing call finds those.
    """
    try:
        if not (
            isinstance(hint, type)
            and typing.get_origin(hint) is None  # list[int] is a type on 3.10
            and hint is not object
            and not getattr(hint, "_is_protocol", False)
        ):
            return False
        isinstance(_PROBE, hint)  # raises for what isinstance refuses
    except Exception:
        return False
    return True


def matches(value: object, expected: type) -> bool:
    """Return whether `value` fits the annotation `expected` (numeric tower aware).

    A check that raises counts as a match: an annotation that cannot be
    checked is not checked, and never fails a start.
    """
    try:
        if isinstance(value, expected):
            return True
    except Exception:
        return True
    if expected is float:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is complex:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return False


def describe_origin(factory: object) -> str:
    """Say where a factory was defined: ``module.qualname (file:line)``."""
    target = inspect.unwrap(factory) if inspect.isfunction(factory) else factory
    qualname = getattr(target, "__qualname__", None)
    if qualname is None:
        return f"a value of type {type(factory).__qualname__}"
    module = getattr(target, "__module__", "?")
    try:
        file = inspect.getsourcefile(target)  # type: ignore[arg-type]  # best effort
        _, line = inspect.getsourcelines(target)  # type: ignore[arg-type]
    except (TypeError, OSError):
        return f"{module}.{qualname}"
    return f"{module}.{qualname} ({file}:{line})"
