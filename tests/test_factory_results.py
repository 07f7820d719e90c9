"""What a factory's result becomes, and how a missing `await` is reported.

The rule: what a synchronous callable returns is awaited once if it is
awaitable (so ``lambda: connect(dsn)`` works); a resource's value is never a
coroutine. A coroutine where the value should be is a missing `await`: the
resource is stopped, the coroutine closed (Python does not warn that it was
never awaited) and the start fails with `MissingAwaitError`.
"""

from __future__ import annotations

import functools
import gc
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType

import pytest

from lifespan_kit import Bundle, Registry, ResourceEvent
from lifespan_kit.errors import (
    BundleTypeError,
    InvalidFactoryError,
    MissingAwaitError,
    ShutdownError,
    StartupError,
)

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import ExceptionGroup


async def fetch_token() -> str:
    """The async call whose `await` goes missing."""
    return "secret"


class Recorded:
    """Events of the resource under test, and of the one it depends on."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def listen(self, event: ResourceEvent) -> None:
        self.events.append(f"{event.kind} {event.resource_name}")


# --- a coroutine as the value: each way to write the mistake -------------------

Produce = Callable[[Recorded], object]


def _async_function(recorded: Recorded) -> object:
    async def token(settings: str) -> object:
        return fetch_token()

    return token


def _async_generator(recorded: Recorded) -> object:
    async def token(settings: str) -> AsyncIterator[object]:
        try:
            yield fetch_token()
        finally:
            recorded.events.append("teardown token")

    return token


def _sync_generator(recorded: Recorded) -> object:
    def token(settings: str) -> Iterator[object]:
        yield fetch_token()
        recorded.events.append("teardown token")

    return token


def _async_context_manager(recorded: Recorded) -> object:
    class Token:
        def __init__(self, settings: str) -> None:
            self.settings = settings

        async def __aenter__(self) -> object:
            return fetch_token()

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            recorded.events.append("teardown token")

    return Token


def _asynccontextmanager(recorded: Recorded) -> object:
    @asynccontextmanager
    async def token(settings: str) -> AsyncIterator[object]:
        yield fetch_token()
        recorded.events.append("teardown token")

    return token


def _lambda_returning_a_coroutine_of_a_coroutine(recorded: Recorded) -> object:
    async def outer() -> object:
        return fetch_token()

    return lambda settings: outer()


def _async_call_method(recorded: Recorded) -> object:
    class Token:
        async def __call__(self, settings: str) -> object:
            return fetch_token()

    return Token()


def _partial_of_an_async_function(recorded: Recorded) -> object:
    async def token(prefix: str, settings: str) -> object:
        return fetch_token()

    return functools.partial(token, "prefix")


MISTAKES = [
    pytest.param(_async_function, False, id="async-def"),
    pytest.param(_async_generator, True, id="async-generator"),
    pytest.param(_sync_generator, True, id="generator"),
    pytest.param(_async_context_manager, True, id="async-context-manager"),
    pytest.param(_asynccontextmanager, True, id="asynccontextmanager"),
    pytest.param(_lambda_returning_a_coroutine_of_a_coroutine, False, id="lambda"),
    pytest.param(_async_call_method, False, id="async-__call__"),
    pytest.param(_partial_of_an_async_function, False, id="partial"),
]


@pytest.mark.parametrize(("produce", "has_teardown"), MISTAKES)
async def test_a_coroutine_value_is_a_missing_await(
    produce: Produce, has_teardown: bool, concurrency: int | None
) -> None:
    """A coroutine value fails the start naming the resource, after a clean stop."""
    recorded = Recorded()
    registry = Registry()

    def settings() -> Iterator[str]:
        yield "settings"
        recorded.events.append("teardown settings")

    registry.add("settings", settings)
    registry.add("token", produce(recorded))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(MissingAwaitError, match="missing `await`") as info:
            async with registry.lifespan(
                concurrency=concurrency, listeners=[recorded.listen]
            ):
                pass  # pragma: no cover
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    error = info.value
    assert (error.code, error.resource_name) == ("missing-await", "token")
    assert error.coroutine == "fetch_token"
    assert "Resource 'token' returned a coroutine of fetch_token()" in str(error)
    assert "`return await fetch_token(...)`" in str(error)
    token_events = [e for e in recorded.events if e.endswith(" token")]
    teardown = ["teardown token"] if has_teardown else []
    assert token_events == [
        "starting token",
        "start_failed token",
        "stopping token",
        *teardown,
        "stopped token",
    ]
    assert recorded.events[-2:] == ["teardown settings", "stopped settings"]


async def test_a_missing_await_is_not_reported_as_a_bundle_type() -> None:
    """With a bundle, a coroutine value is a missing await, not a wrong annotation."""
    registry = Registry()

    @registry.resource
    async def token() -> object:
        return fetch_token()

    class Resources(Bundle):
        token: str

    with pytest.raises(MissingAwaitError, match="missing `await`") as info:
        async with registry.lifespan(Resources):
            pass  # pragma: no cover
    assert not isinstance(info.value, BundleTypeError)


async def test_a_missing_await_reads_well_without_listeners() -> None:
    """Without listeners, the start fails the same way."""
    registry = Registry()

    @registry.resource
    async def token() -> object:
        return fetch_token()

    with pytest.raises(MissingAwaitError, match="missing `await`"):
        async with registry.lifespan():
            pass  # pragma: no cover


async def test_a_failing_teardown_after_a_missing_await_is_raised_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The teardown's failure is logged and raised with the missing await."""
    registry = Registry()

    @registry.resource
    async def token() -> AsyncIterator[object]:
        yield fetch_token()
        raise ConnectionResetError("gone")

    with pytest.raises(ExceptionGroup) as info:
        async with registry.lifespan():
            pass  # pragma: no cover
    missing, stop = info.value.exceptions
    assert isinstance(missing, MissingAwaitError)
    assert isinstance(stop, ShutdownError)
    assert isinstance(stop.__cause__, ConnectionResetError)
    assert "ConnectionResetError: gone" in caplog.text


def test_a_coroutine_registered_as_a_value_is_rejected() -> None:
    """registry.add("token", fetch_token()) fails at once, and does not warn."""
    registry = Registry()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(
            InvalidFactoryError, match="the value is a coroutine"
        ) as info:
            registry.add("token", fetch_token())
        registry.add("token", fetch_token)
        with pytest.raises(InvalidFactoryError, match="the value is a coroutine"):
            registry.override(token=fetch_token())
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert info.value.resource_name == "token"
    assert "registry.add('token', fetch_token)" in str(info.value)


# --- what a synchronous callable returns is awaited once ----------------------


class Ready:
    """An awaitable that is not a coroutine, as some drivers return."""

    def __await__(self) -> Generator[None, None, str]:
        return fetch_token().__await__()


def _def_returning_a_coroutine() -> object:
    def connect() -> Coroutine[None, None, str]:
        return fetch_token()

    return connect


def _sync_call_method() -> object:
    class Connect:
        def __call__(self) -> Coroutine[None, None, str]:
            return fetch_token()

    return Connect()


AWAITED_ONCE = [
    pytest.param(lambda: lambda: fetch_token(), id="lambda"),
    pytest.param(_def_returning_a_coroutine, id="def"),
    pytest.param(lambda: functools.partial(fetch_token), id="partial-of-async"),
    pytest.param(_sync_call_method, id="sync-__call__"),
    pytest.param(lambda: Ready, id="awaitable-class"),
]


@pytest.mark.parametrize("make", AWAITED_ONCE)
async def test_what_a_sync_callable_returns_is_awaited_once(
    make: Callable[[], object], concurrency: int | None
) -> None:
    """`lambda: connect(dsn)` works: the coroutine it returns is awaited."""
    registry = Registry()
    registry.add("token", make())
    async with registry.lifespan(concurrency=concurrency) as resources:
        assert resources["token"] == "secret"


# --- `with` where `async with` belongs, and the reverse --------------------------


class AsyncOnly:
    """An async context manager only, as httpx.AsyncClient is."""

    async def __aenter__(self) -> AsyncOnly:
        return self  # pragma: no cover  # only ever entered the wrong way

    async def __aexit__(self, *exc_info: object) -> None:
        """Nothing to close."""


class SyncOnly:
    """A sync context manager only."""

    def __enter__(self) -> SyncOnly:
        return self  # pragma: no cover  # only ever entered the wrong way

    def __exit__(self, *exc_info: object) -> None:
        """Nothing to close."""


def _with_on_async_in_a_generator() -> object:
    async def client() -> AsyncIterator[object]:
        with AsyncOnly() as entered:  # type: ignore[attr-defined]  # the mistake
            yield entered  # pragma: no cover  # the line above fails

    return client


def _with_on_async_in_a_function() -> object:
    async def client() -> object:
        with AsyncOnly() as entered:  # type: ignore[attr-defined]  # the mistake
            return entered  # pragma: no cover  # the line above fails

    return client


def _with_on_asynccontextmanager() -> object:
    @asynccontextmanager
    async def connect() -> AsyncIterator[str]:
        yield "connection"  # pragma: no cover  # never entered

    async def client() -> AsyncIterator[object]:
        with connect() as entered:  # type: ignore[attr-defined]  # the mistake
            yield entered  # pragma: no cover  # the line above fails

    return client


def _async_with_on_sync() -> object:
    async def client() -> AsyncIterator[object]:
        async with SyncOnly() as entered:  # type: ignore[attr-defined]  # the mistake
            yield entered  # pragma: no cover  # the line above fails

    return client


def _async_with_on_contextmanager() -> object:
    @contextmanager
    def connect() -> Iterator[str]:
        yield "connection"  # pragma: no cover  # never entered

    async def client() -> object:
        async with connect() as entered:  # type: ignore[attr-defined]  # the mistake
            return entered  # pragma: no cover  # the line above fails

    return client


@pytest.mark.parametrize(
    ("make", "statement"),
    [
        pytest.param(
            _with_on_async_in_a_generator, "`async with`", id="with-in-generator"
        ),
        pytest.param(
            _with_on_async_in_a_function, "`async with`", id="with-in-function"
        ),
        pytest.param(_with_on_asynccontextmanager, "`async with`", id="with-on-acm"),
        pytest.param(_async_with_on_sync, "use `with`", id="async-with-on-sync"),
        pytest.param(
            _async_with_on_contextmanager, "use `with`", id="async-with-on-cm"
        ),
    ],
)
async def test_the_wrong_with_statement_gets_a_fix_that_names_the_right_one(
    make: Callable[[], object], statement: str, concurrency: int | None
) -> None:
    """A factory entering a context manager with the wrong statement is told which."""
    registry = Registry()
    registry.add("client", make())
    with pytest.raises(StartupError, match=f"fix: .*{statement}") as info:
        async with registry.lifespan(concurrency=concurrency):
            pass  # pragma: no cover
    assert (info.value.code, info.value.resource_name) == ("startup-failed", "client")
    assert isinstance(info.value.__cause__, TypeError | AttributeError)


@pytest.mark.parametrize(
    ("cause", "statement"),
    [
        pytest.param(
            TypeError(
                "'AsyncOnly' object does not support the context manager protocol "
                "(missed __exit__ method) but it supports the asynchronous context "
                "manager protocol. Did you mean to use 'async with'?"
            ),
            "use `async with`",
            id="3.14-with",
        ),
        pytest.param(
            TypeError(
                "'SyncOnly' object does not support the asynchronous context "
                "manager protocol (missed __aexit__ method) but it supports the "
                "context manager protocol. Did you mean to use 'with'?"
            ),
            "use `with`.",
            id="3.14-async-with",
        ),
        pytest.param(AttributeError("__enter__"), "use `async with`", id="3.10-with"),
        pytest.param(AttributeError("__aenter__"), "use `with`.", id="3.10-async-with"),
        pytest.param(
            AttributeError("pool"), "read the cause above", id="other-attribute"
        ),
        pytest.param(
            TypeError("bad argument"), "read the cause above", id="other-type"
        ),
        pytest.param(None, "read the cause above", id="no-cause"),
    ],
)
def test_the_with_statement_hint_reads_every_python_versions_wording(
    cause: BaseException | None, statement: str
) -> None:
    """The wordings of 3.10 and 3.14 are recognised too; other causes are not."""
    error = StartupError("client")
    error.__cause__ = cause
    assert statement in error.fix()
