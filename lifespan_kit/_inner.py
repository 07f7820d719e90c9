"""The user's own lifespan run inside lifespan_kit's: every shape Starlette takes.

Starlette's ``lifespan=`` takes a function returning an async context manager,
and wraps an async generator function or a generator function into one. The
web integration's ``inner=`` takes the same shapes, called with the app and the
bundle, and turns each into a factory of async context managers; anything that
cannot be a lifespan is rejected when the app is built, with what to pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from types import TracebackType
from typing import Final, Literal, cast, final

from lifespan_kit.errors import InvalidOptionError

InnerState = Mapping[str, object] | None
"""What a lifespan yields: a mapping added to the lifespan state, or None."""

InnerFactory = Callable[[object, object], AbstractAsyncContextManager[InnerState]]
"""Called with the app and the bundle; returns the context manager to enter."""


def inner_factory(inner: object) -> InnerFactory:
    """Return `inner` as a factory of async context managers, or reject it now.

    Raises:
        InvalidOptionError: When `inner` cannot be a lifespan, saying what to pass.
    """
    if inspect.isclass(inner):
        return _class_factory(inner)
    if hasattr(inner, "__aenter__"):
        # What a lifespan function returns (also callable, as a decorator).
        raise _invalid_inner(kind="instance", found=_kind(inner))
    if not callable(inner):
        raise _invalid_inner(kind="not-callable", found=_kind(inner))
    _check_parameters(inner)
    if inspect.isasyncgenfunction(inner):
        return cast("InnerFactory", asynccontextmanager(inner))
    if inspect.isgeneratorfunction(inner):
        return _lifted(contextmanager(inner))
    if inspect.iscoroutinefunction(inner):
        raise _invalid_inner(kind="coroutine")
    return _checked(inner)


def _class_factory(cls: type[object]) -> InnerFactory:
    _check_parameters(cls)
    if hasattr(cls, "__aenter__"):
        return cast("InnerFactory", cls)
    if hasattr(cls, "__enter__"):
        return _lifted(cast("Callable[..., AbstractContextManager[InnerState]]", cls))
    raise _invalid_inner(kind="class")


def _check_parameters(inner: object) -> None:
    try:
        signature = inspect.signature(cast("Callable[..., object]", inner))
    except (TypeError, ValueError):  # builtins without a signature: unchecked
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise _invalid_inner(kind="parameters", found=str(signature)) from None


def _lifted(
    factory: Callable[..., AbstractContextManager[InnerState]],
) -> InnerFactory:
    def create(app: object, result: object) -> AbstractAsyncContextManager[InnerState]:
        return _SyncContext(factory(app, result))

    return create


def _checked(factory: Callable[..., object]) -> InnerFactory:
    """Wrap a callable whose result's kind is known only once it is called."""

    def create(app: object, result: object) -> AbstractAsyncContextManager[InnerState]:
        cm = factory(app, result)
        if isinstance(cm, AbstractAsyncContextManager):
            return cast("AbstractAsyncContextManager[InnerState]", cm)
        if isinstance(cm, AbstractContextManager):
            return _SyncContext(cast("AbstractContextManager[InnerState]", cm))
        raise _invalid_inner(kind="result", found=_kind(cm))

    return create


@final
class _SyncContext(AbstractAsyncContextManager[InnerState]):
    """A sync context manager, run on the event loop as Starlette runs one."""

    def __init__(self, cm: AbstractContextManager[InnerState]) -> None:
        self._cm = cm

    async def __aenter__(self) -> InnerState:
        return self._cm.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return self._cm.__exit__(exc_type, exc, tb)


_InnerProblem = Literal[
    "instance", "not-callable", "coroutine", "class", "parameters", "result"
]

_INNER_PROBLEMS: Final[dict[_InnerProblem, tuple[str, str]]] = {
    "instance": (
        "it is {found}, a context manager, not a function that returns one",
        "pass the function itself (`inner=warm_up`), not the result of a call.",
    ),
    "not-callable": (
        "it is {found}, not a function",
        "pass the function itself (`inner=warm_up`), not the result of a call.",
    ),
    "coroutine": (
        "it is an async function, which returns a coroutine, not a context manager",
        "make it an async generator that yields once (optionally decorated with "
        "@asynccontextmanager); the code after the yield runs at shutdown.",
    ),
    "class": (
        "it is a class that is not a context manager",
        "give the class __aenter__ and __aexit__, or pass a function decorated "
        "with @asynccontextmanager.",
    ),
    "parameters": (
        "it takes {found}, not the two arguments it is called with",
        "take the app and the bundle: `async def warm_up(app, resources)`.",
    ),
    "result": (
        "calling it returned {found}, not a context manager",
        "return an async context manager, or decorate the function with "
        "@asynccontextmanager.",
    ),
}


def _invalid_inner(*, kind: _InnerProblem, found: str = "") -> InvalidOptionError:
    problem, remedy = _INNER_PROBLEMS[kind]
    return InvalidOptionError(
        None,
        option="inner",
        problem=problem.format(found=found),
        remedy=remedy,
        owner="lifespan_kit.starlette.lifespan()",
    )


def _kind(value: object) -> str:
    return f"an instance of {type(value).__qualname__}"
