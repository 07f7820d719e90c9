"""Exceptions and warnings raised by lifespan_kit.

Every error carries data (``code``, ``resource_name``, ``dependency_path``,
``phase``) and builds its message from it, so a message always says which
resource, doing what, how the orchestrator got there and what to change.

The hierarchy:

```text
LifespanKitError
├── DefinitionError                 (phase "definition": nothing was started)
│   ├── DuplicateResourceError      (also ValueError)
│   ├── MissingDependencyError      (also LookupError)
│   ├── DependencyCycleError        (also ValueError)
│   ├── InvalidFactoryError         (also TypeError)
│   ├── InvalidOptionError          (also ValueError)
│   ├── InvalidBundleError          (also TypeError)
│   ├── InvalidMainError            (also TypeError; a worker's main function)
│   └── GraphError                  (also ValueError; holds every problem found)
├── UnknownResourceError            (also LookupError)
├── StartupError                    (phase "startup"; everything started was stopped)
│   ├── StartTimeoutError           (also TimeoutError)
│   ├── StartCancelledError         (only in events: another start failed first)
│   ├── NoYieldError                (also RuntimeError)
│   ├── MissingAwaitError           (also TypeError)
│   ├── DependencyTypeError         (also TypeError)
│   └── BundleTypeError             (also TypeError)
├── ResourceFailedError             (phase "running"; also RuntimeError)
│   └── BackgroundTaskError         (a background task raised or returned)
├── ShutdownError                   (phase "shutdown")
│   ├── StopTimeoutError            (also TimeoutError)
│   └── MultipleYieldError          (also RuntimeError)
├── NotRunningError                 (also RuntimeError)
│   └── LifespanNotRunError         (a request's app did not run the lifespan)
└── AlreadyRunningError             (also RuntimeError)

LifespanKitWarning (UserWarning)
```

Added in 0.1.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import ClassVar, Final, Literal

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "DOCS_URL",
    "AlreadyRunningError",
    "BackgroundTaskError",
    "BundleTypeError",
    "DefinitionError",
    "DependencyCycleError",
    "DependencyTypeError",
    "DuplicateResourceError",
    "ErrorCode",
    "GraphError",
    "InvalidBundleError",
    "InvalidFactoryError",
    "InvalidMainError",
    "InvalidOptionError",
    "LifespanKitError",
    "LifespanKitWarning",
    "LifespanNotRunCause",
    "LifespanNotRunError",
    "LockLostError",
    "LockUnavailableError",
    "MissingAwaitError",
    "MissingDependencyError",
    "MultipleYieldError",
    "NoYieldError",
    "NotRunningError",
    "Phase",
    "ResourceFailedError",
    "ShutdownError",
    "StartCancelledError",
    "StartTimeoutError",
    "StartupError",
    "StopTimeoutError",
    "UnknownResourceError",
]

DOCS_URL: Final = "https://lifespan-kit.readthedocs.io/en/latest/errors/"
"""The error catalogue: each message ends with this URL, ``#`` and the error's code.

It is the documentation site's ``site_url`` (in ``mkdocs.yml``) followed by
``errors/``; a test keeps the two in step.

Example:
    ```python
    error = StartupError("db")
    assert str(error).endswith(f"docs: {DOCS_URL}#startup-failed")
    ```
"""

ErrorCode = Literal[
    "already-running",
    "background-failed",
    "bundle-type",
    "dependency-cycle",
    "dependency-type",
    "duplicate-resource",
    "invalid-bundle",
    "invalid-factory",
    "invalid-graph",
    "invalid-main",
    "invalid-option",
    "lifespan-not-run",
    "lock-lost",
    "lock-unavailable",
    "missing-await",
    "missing-dependency",
    "multiple-yields",
    "no-yield",
    "not-running",
    "resource-failed",
    "shutdown-failed",
    "start-cancelled",
    "start-timeout",
    "startup-failed",
    "stop-timeout",
    "unknown-resource",
]
"""Stable, documented identifiers of every error; each has a section in the docs.

Example:
    ```python
    def is_worth_retrying(error: LifespanKitError) -> bool:
        code: ErrorCode = error.code
        return code in ("start-timeout", "startup-failed")
    ```
"""

Phase = Literal["definition", "startup", "running", "shutdown"]
"""The part of a resource's life in which an error happened.

Example:
    ```python
    def describe(error: LifespanKitError) -> str:
        phase: Phase = error.phase
        return f"'{error.resource_name}' failed during {phase}"
    ```
"""

LifespanNotRunCause = Literal[
    "mounted", "no-state", "not-entered", "no-lifespan", "other-bundle", "stopped"
]
"""Why a request found no resources: see `LifespanNotRunError.cause`.

Example:
    ```python
    def explain(error: LifespanNotRunError) -> str:
        cause: LifespanNotRunCause = error.cause
        if cause == "not-entered":
            return "use the test client as a context manager"
        return str(error)
    ```
"""


def _quote_all(names: Sequence[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc)
    leaves: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    message: str = getattr(exc, "message", text)
    if leaves and isinstance(exc, BaseExceptionGroup):
        # A task group's: what matters is inside.
        return f"{name}: {message}: {'; '.join(_describe(leaf) for leaf in leaves)}"
    return f"{name}: {text}" if text else name


def _cause_details(error: BaseException) -> list[tuple[str, str]]:
    """The "cause" line of an error that wraps the exception it was raised from."""
    cause = error.__cause__
    return [] if cause is None else [("cause", _describe(cause))]


class LifespanKitError(Exception):
    """Root of every error raised by lifespan_kit.

    Subclasses set `code` and `phase` and compose their message from their
    fields, so the wording can improve while the data stays stable.

    Attributes:
        code: The stable error code; the docs have a section for each.
        phase: When the error happened.
        resource_name: The resource concerned, if any.
        dependency_path: Names from a requested resource down to this one.

    Example:
        ```python
        try:
            async with registry.lifespan(Resources) as resources:
                await serve(resources)
        except LifespanKitError as exc:
            print(exc.code, exc.phase, exc.resource_name, exc.dependency_path)
            raise
        ```
    """

    code: ClassVar[ErrorCode]
    phase: Phase = "startup"

    def __init__(
        self,
        resource_name: str | None = None,
        *,
        dependency_path: tuple[str, ...] = (),
    ) -> None:
        super().__init__(resource_name)
        self.resource_name: str | None = resource_name
        self.dependency_path: tuple[str, ...] = dependency_path or (
            (resource_name,) if resource_name is not None else ()
        )

    def summary(self) -> str:
        """Return the first line of the message: what went wrong, and where."""
        return f"Resource '{self.resource_name}' failed during {self.phase}."

    def details(self) -> list[tuple[str, str]]:
        """Return the labelled detail lines shown under the summary."""
        return []

    def fix(self) -> str:
        """Return one concrete change that resolves the error."""
        return "see the documentation for this error code."

    def __str__(self) -> str:
        lines = [self.summary()]
        if len(self.dependency_path) > 1:
            lines.append(f"  dependency path: {' -> '.join(self.dependency_path)}")
        lines.extend(f"  {label}: {text}" for label, text in self.details())
        lines.append(f"  fix: {self.fix()}")
        code = getattr(self, "code", None)  # the abstract roots have none
        if code is not None:
            lines.append(f"  docs: {DOCS_URL}#{code}")
        return "\n".join(lines)


class LifespanKitWarning(UserWarning):
    """Root of every warning emitted by lifespan_kit.

    Example:
        ```python
        import warnings

        warnings.simplefilter("error", LifespanKitWarning)  # in a test suite's setup
        ```
    """


# --- definition ---------------------------------------------------------------


class DefinitionError(LifespanKitError):
    """A declaration is wrong; it is reported before anything starts.

    Example:
        ```python
        try:
            registry.check(Resources)
        except DefinitionError as exc:
            print(exc)  # nothing was started
        ```
    """

    phase: Phase = "definition"


class DuplicateResourceError(DefinitionError, ValueError):
    """Two resources were registered under the same name.

    Attributes:
        first: Where the resource already registered was defined.
        second: Where the new one was defined.

    Example:
        ```python
        registry = Registry()
        registry.add("answer", 42)
        try:
            registry.add("answer", 43)
        except DuplicateResourceError as exc:
            print(exc.first, exc.second)  # where each one was defined
        ```
    """

    code: ClassVar[ErrorCode] = "duplicate-resource"

    def __init__(self, resource_name: str, *, first: str, second: str) -> None:
        super().__init__(resource_name)
        self.first: str = first
        self.second: str = second

    def summary(self) -> str:  # noqa: D102
        return f"Resource '{self.resource_name}' is registered twice."

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        return [("first", self.first), ("second", self.second)]

    def fix(self) -> str:  # noqa: D102
        return (
            "rename one of them (`name=` on the decorator), or use "
            "`registry.override()` to replace a resource on purpose."
        )


class MissingDependencyError(DefinitionError, LookupError):
    """A resource depends on a name that no resource has.

    Attributes:
        dependency_name: The name that was asked for.
        parameter: The factory parameter that asked for it.
        suggestions: Registered names close to `dependency_name`.
        available: Every registered name, when there are few of them.

    Example:
        ```python
        try:
            registry.check()
        except GraphError as exc:
            for problem in exc.problems:
                if isinstance(problem, MissingDependencyError):
                    print(problem.dependency_name, problem.suggestions)
        ```
    """

    code: ClassVar[ErrorCode] = "missing-dependency"

    def __init__(
        self,
        resource_name: str,
        *,
        dependency_name: str,
        parameter: str,
        dependency_path: tuple[str, ...] = (),
        suggestions: tuple[str, ...] = (),
        available: tuple[str, ...] = (),
    ) -> None:
        super().__init__(resource_name, dependency_path=dependency_path)
        self.dependency_name: str = dependency_name
        self.parameter: str = parameter
        self.suggestions: tuple[str, ...] = suggestions
        self.available: tuple[str, ...] = available

    def summary(self) -> str:  # noqa: D102
        via = (
            ""
            if self.parameter == self.dependency_name
            else f" (parameter '{self.parameter}')"
        )
        return (
            f"Resource '{self.resource_name}' depends on '{self.dependency_name}'"
            f"{via}, which is not registered."
        )

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        lines: list[tuple[str, str]] = []
        if self.suggestions:
            lines.append(("did you mean", _quote_all(self.suggestions)))
        if self.available:
            lines.append(("registered", _quote_all(self.available)))
        return lines

    def fix(self) -> str:  # noqa: D102
        return (
            f"register a resource named '{self.dependency_name}', fix the parameter "
            f"name, or map it with depends={{'{self.parameter}': '<resource>'}}."
        )


class DependencyCycleError(DefinitionError, ValueError):
    """Resources depend on each other in a circle.

    Attributes:
        cycle: The names around the circle; the first is repeated at the end.

    Example:
        ```python
        try:
            registry.check()
        except GraphError as exc:
            for problem in exc.problems:
                if isinstance(problem, DependencyCycleError):
                    print(" -> ".join(problem.cycle))  # a -> b -> a
        ```
    """

    code: ClassVar[ErrorCode] = "dependency-cycle"

    def __init__(self, cycle: tuple[str, ...]) -> None:
        super().__init__(cycle[0], dependency_path=cycle)
        self.cycle: tuple[str, ...] = cycle

    def summary(self) -> str:  # noqa: D102
        return f"Resource '{self.resource_name}' depends on itself through a cycle."

    def __str__(self) -> str:
        # The cycle is the dependency path; print it once, as "cycle".
        lines = [self.summary(), f"  cycle: {' -> '.join(self.cycle)}"]
        lines.append(f"  fix: {self.fix()}")
        lines.append(f"  docs: {DOCS_URL}#{self.code}")
        return "\n".join(lines)

    def fix(self) -> str:  # noqa: D102
        return (
            "break the cycle: merge the resources, or pass what one needs "
            "through a third resource that both depend on."
        )


class InvalidFactoryError(DefinitionError, TypeError):
    """A factory has a form lifespan_kit cannot run.

    Attributes:
        problem: What is wrong with it.
        remedy: What to change.

    Example:
        ```python
        try:
            registry.add("timer", lambda: 0.5, depends={"interval": "settings"})
        except InvalidFactoryError as exc:
            print(exc.problem)  # depends= names a parameter the factory does not have
        ```
    """

    code: ClassVar[ErrorCode] = "invalid-factory"

    def __init__(
        self,
        resource_name: str,
        *,
        problem: str,
        remedy: str,
        dependency_path: tuple[str, ...] = (),
    ) -> None:
        super().__init__(resource_name, dependency_path=dependency_path)
        self.problem: str = problem
        self.remedy: str = remedy

    def summary(self) -> str:  # noqa: D102
        return f"Resource '{self.resource_name}' has an invalid factory: {self.problem}"

    def fix(self) -> str:  # noqa: D102
        return self.remedy


class InvalidOptionError(DefinitionError, ValueError):
    """An option such as a timeout or a concurrency limit has a wrong type or value.

    Attributes:
        option: The option's name.
        problem: Why it was rejected.
        remedy: What to pass instead.
        owner: What takes the option, when it is neither a resource nor the
            registry (such as "lifespan_kit.run()").

    Example:
        ```python
        try:
            Registry(stop_timeout=-1)
        except InvalidOptionError as exc:
            assert exc.option == "stop_timeout"
        ```
    """

    code: ClassVar[ErrorCode] = "invalid-option"

    def __init__(
        self,
        resource_name: str | None,
        *,
        option: str,
        problem: str,
        remedy: str | None = None,
        owner: str | None = None,
    ) -> None:
        super().__init__(resource_name)
        self.option: str = option
        self.problem: str = problem
        self.remedy: str = remedy or f"pass a valid value for '{option}'."
        self.owner: str | None = owner

    def summary(self) -> str:  # noqa: D102
        if self.resource_name is not None:
            where = f"resource '{self.resource_name}'"
        else:
            where = self.owner or "the registry"
        return f"Option '{self.option}' of {where} is invalid."

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        return [("problem", self.problem)]

    def fix(self) -> str:  # noqa: D102
        return self.remedy


class InvalidBundleError(DefinitionError, TypeError):
    """The bundle passed to `lifespan()` is not a `Bundle` subclass.

    Attributes:
        found: A description of what was passed.

    Example:
        ```python
        import importlib

        bundle = getattr(importlib.import_module("app"), "Resources")
        try:
            lifespan = registry.lifespan(bundle)
        except InvalidBundleError as exc:
            print(exc.found)  # "an instance of ..." or "the class ..."
        ```
    """

    code: ClassVar[ErrorCode] = "invalid-bundle"

    def __init__(self, *, found: str) -> None:
        super().__init__(None)
        self.found: str = found

    def summary(self) -> str:  # noqa: D102
        return (
            f"The bundle must be a subclass of lifespan_kit.Bundle, not {self.found}."
        )

    def fix(self) -> str:  # noqa: D102
        return (
            "declare `class Resources(Bundle)` with one field per resource, "
            "or call `lifespan()` without a bundle to get every resource."
        )


class InvalidMainError(DefinitionError, TypeError):
    """`lifespan_kit.run` cannot call the main function it was given.

    Attributes:
        main: The function's name.
        problem: What is wrong with it.
        remedy: What to change.

    Example:
        ```python
        import importlib

        main = getattr(importlib.import_module("worker"), "main")
        try:
            status = lifespan_kit.run(main, registry)
        except InvalidMainError as exc:
            print(exc.problem, exc.remedy)  # e.g. main is not an async function
        ```
    """

    code: ClassVar[ErrorCode] = "invalid-main"

    def __init__(self, *, main: str, problem: str, remedy: str) -> None:
        super().__init__(None)
        self.main: str = main
        self.problem: str = problem
        self.remedy: str = remedy

    def summary(self) -> str:  # noqa: D102
        return f"The main function {self.main} cannot be run: {self.problem}"

    def fix(self) -> str:  # noqa: D102
        return self.remedy


class GraphError(DefinitionError, ValueError):
    """The resource graph has problems; all of them are listed together.

    Attributes:
        problems: Each problem found, as its own error with its own code.

    Example:
        ```python
        try:
            registry.check(Resources)
        except GraphError as exc:
            for problem in exc.problems:  # every problem, each with its own code
                print(problem.code, problem.resource_name)
        ```
    """

    code: ClassVar[ErrorCode] = "invalid-graph"

    def __init__(self, problems: Sequence[LifespanKitError]) -> None:
        super().__init__(problems[0].resource_name)
        self.problems: tuple[LifespanKitError, ...] = tuple(problems)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"The resource graph has {len(self.problems)} problems."]
        for number, problem in enumerate(self.problems, start=1):
            text = str(problem).replace("\n", "\n   ")
            lines.append(f"{number}. {text}")
        return "\n".join(lines)


class UnknownResourceError(LifespanKitError, LookupError):
    """A name was looked up that no resource in the registry has.

    Attributes:
        suggestions: Registered names close to the one asked for.
        available: Every registered name, when there are few of them.
        context: Where the name was used, for example "bundle field".

    Example:
        ```python
        try:
            registry["dbb"]
        except UnknownResourceError as exc:
            print(exc.suggestions)  # ('db',)
        ```
    """

    code: ClassVar[ErrorCode] = "unknown-resource"
    phase: Phase = "definition"

    def __init__(
        self,
        resource_name: str,
        *,
        context: str,
        suggestions: tuple[str, ...] = (),
        available: tuple[str, ...] = (),
        phase: Phase = "definition",
    ) -> None:
        super().__init__(resource_name)
        self.phase = phase
        self.context: str = context
        self.suggestions: tuple[str, ...] = suggestions
        self.available: tuple[str, ...] = available

    def summary(self) -> str:  # noqa: D102
        return f"No resource is named '{self.resource_name}' ({self.context})."

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        lines: list[tuple[str, str]] = []
        if self.suggestions:
            lines.append(("did you mean", _quote_all(self.suggestions)))
        if self.available:
            lines.append(("registered", _quote_all(self.available)))
        return lines

    def fix(self) -> str:  # noqa: D102
        return "use the name of a registered resource, or register one by that name."


# --- startup ------------------------------------------------------------------


class StartupError(LifespanKitError):
    """A resource failed to start; everything already started was stopped.

    The original exception is `__cause__`.

    Example:
        ```python
        try:
            async with registry.lifespan(Resources) as resources:
                await serve(resources)
        except StartupError as exc:  # everything that had started was stopped
            print(f"{exc.resource_name} failed to start: {exc.__cause__!r}")
        ```
    """

    code: ClassVar[ErrorCode] = "startup-failed"
    phase: Phase = "startup"

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        return _cause_details(self)

    def fix(self) -> str:  # noqa: D102
        statement = _wrong_with_statement(self.__cause__)
        if statement == "with":
            return (
                f"the factory of '{self.resource_name}' entered an asynchronous "
                "context manager with `with`: use `async with` (in an `async "
                "def` factory)."
            )
        if statement == "async with":
            return (
                f"the factory of '{self.resource_name}' entered a synchronous "
                "context manager with `async with`: use `with`."
            )
        return (
            f"read the cause above; the failure is inside the factory of "
            f"'{self.resource_name}'."
        )


_LACKED_PROTOCOL: Final = re.compile(
    r"does not support the (asynchronous )?context manager protocol"
)


def _wrong_with_statement(cause: BaseException | None) -> str | None:
    """Say which statement entered a context manager of the other kind, if one did.

    Python 3.11 and later raise a TypeError naming the protocol the object
    lacks (3.14 adds the one it has); 3.10 raises an AttributeError naming the
    missing method.
    """
    if isinstance(cause, TypeError):
        lacking = _LACKED_PROTOCOL.search(str(cause))
        if lacking is not None:
            return "async with" if lacking.group(1) else "with"
    elif isinstance(cause, AttributeError) and cause.args in (
        ("__enter__",),
        ("__aenter__",),
    ):
        return "with" if cause.args == ("__enter__",) else "async with"
    return None


class StartTimeoutError(StartupError, TimeoutError):
    """A resource did not finish starting within its `start_timeout`.

    Attributes:
        timeout: The limit, in seconds.
        elapsed: How long the start ran, in seconds.
        blocked: True when a synchronous factory blocked the event loop.
        waiting_for: What the start was waiting for when its time ran out, when
            it said (a run-once step names the lock and its holder).

    Example:
        ```python
        @registry.resource(start_timeout=10)
        async def broker(settings: Settings) -> str:
            await anyio.sleep_forever()  # waits for a server that never answers
            return settings.database_url


        try:
            async with registry.lifespan():
                pass
        except StartTimeoutError as exc:
            print(exc.resource_name, exc.timeout, exc.elapsed, exc.blocked)
        ```
    """

    code: ClassVar[ErrorCode] = "start-timeout"

    def __init__(
        self,
        resource_name: str,
        *,
        timeout: float,
        elapsed: float,
        blocked: bool = False,
        dependency_path: tuple[str, ...] = (),
        waiting_for: str | None = None,
    ) -> None:
        super().__init__(resource_name, dependency_path=dependency_path)
        self.timeout: float = timeout
        self.elapsed: float = elapsed
        self.blocked: bool = blocked
        self.waiting_for: str | None = waiting_for

    def summary(self) -> str:  # noqa: D102
        how = (
            "blocked the event loop for" if self.blocked else "was still starting after"
        )
        return (
            f"Resource '{self.resource_name}' {how} {self.elapsed:.3f}s "
            f"(start_timeout={self.timeout:g}s)."
        )

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        if self.waiting_for is None:
            return []
        return [("waiting for", self.waiting_for)]

    def fix(self) -> str:  # noqa: D102
        if self.waiting_for is not None:
            return (
                f"find why what '{self.resource_name}' waits for is not done in "
                "time (a run-once step held by another replica can be slow or "
                "stuck), or raise its start_timeout."
            )
        if self.blocked:
            return (
                "make the factory `async def` and await its I/O, move the "
                "blocking call to `anyio.to_thread.run_sync`, or register a sync "
                "factory with thread=True."
            )
        return (
            f"find what '{self.resource_name}' waits for, or raise its start_timeout."
        )


class StartCancelledError(StartupError):
    """A resource's start was cancelled before it finished; it is not its failure.

    Another resource failed to start (or the lifespan was cancelled) while this
    one was starting, so its start was cancelled and whatever it had opened was
    closed. It is never raised: listeners receive it with the ``start_failed``
    event that closes the ``starting`` one, and the error that stopped the
    startup is raised instead.

    Example:
        ```python
        def report(event: ResourceEvent) -> None:
            if isinstance(event.error, StartCancelledError):
                return  # the resource that really failed has its own event
            if event.kind == "start_failed":
                print(event.resource_name, event.error)


        registry.add_listener(report)
        ```

    Added in 0.1.
    """

    code: ClassVar[ErrorCode] = "start-cancelled"

    def summary(self) -> str:  # noqa: D102
        return (
            f"The start of resource '{self.resource_name}' was cancelled because "
            "the startup failed elsewhere, or the lifespan was cancelled."
        )

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        return []

    def fix(self) -> str:  # noqa: D102
        return (
            "nothing to fix here; look for the error that stopped the startup "
            "(the resource that failed, or the cancellation)."
        )


class NoYieldError(StartupError, RuntimeError):
    """A generator factory finished without yielding its value.

    Example:
        ```python
        @registry.resource
        async def primary_url(settings: Settings) -> AsyncIterator[str]:
            if settings.database_url:  # nothing is yielded when it is empty
                yield settings.database_url
        ```
    """

    code: ClassVar[ErrorCode] = "no-yield"

    def summary(self) -> str:  # noqa: D102
        return f"Resource '{self.resource_name}' returned without yielding a value."

    def fix(self) -> str:  # noqa: D102
        return (
            "yield the value exactly once; put cleanup after the yield, in a "
            "`finally:` block."
        )


class MissingAwaitError(StartupError, TypeError):
    """A resource's value is a coroutine: its factory is missing an `await`.

    A coroutine is never a resource's value. The resource was stopped, and the
    coroutine, which never ran, was closed.

    Attributes:
        coroutine: The qualified name of the coroutine's function.

    Example:
        ```python
        async def fetch_token() -> str:
            return "secret"


        @registry.resource
        async def token() -> object:
            return fetch_token()  # no `await`: MissingAwaitError at startup
        ```
    """

    code: ClassVar[ErrorCode] = "missing-await"

    def __init__(
        self,
        resource_name: str,
        *,
        coroutine: str,
        dependency_path: tuple[str, ...] = (),
    ) -> None:
        super().__init__(resource_name, dependency_path=dependency_path)
        self.coroutine: str = coroutine

    def summary(self) -> str:  # noqa: D102
        return (
            f"Resource '{self.resource_name}' returned a coroutine of "
            f"{self.coroutine}() instead of a value: missing `await`?"
        )

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        return []

    def fix(self) -> str:  # noqa: D102
        return (
            f"await the call in the factory of '{self.resource_name}': "
            f"`return await {self.coroutine}(...)` (or `yield await ...` in a "
            "generator)."
        )


class DependencyTypeError(StartupError, TypeError):
    """A dependency's value does not match the parameter's annotation.

    Attributes:
        parameter: The factory parameter.
        dependency_name: The resource that provided the value.
        expected: The annotated type's name.
        found: The value's type name.

    Example:
        ```python
        @registry.resource
        def port() -> str:
            return "8000"


        @registry.resource
        def address(port: int) -> str:  # 'port' provides a str: DependencyTypeError
            return f"0.0.0.0:{port}"
        ```
    """

    code: ClassVar[ErrorCode] = "dependency-type"

    def __init__(
        self,
        resource_name: str,
        *,
        parameter: str,
        dependency_name: str,
        expected: str,
        found: str,
        dependency_path: tuple[str, ...] = (),
    ) -> None:
        super().__init__(resource_name, dependency_path=dependency_path)
        self.parameter: str = parameter
        self.dependency_name: str = dependency_name
        self.expected: str = expected
        self.found: str = found

    def summary(self) -> str:  # noqa: D102
        return (
            f"Resource '{self.resource_name}' expects parameter '{self.parameter}' "
            f"to be {self.expected}, but resource '{self.dependency_name}' "
            f"provided {self.found}."
        )

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        return []

    def fix(self) -> str:  # noqa: D102
        return (
            f"correct the annotation of '{self.parameter}', or what "
            f"'{self.dependency_name}' yields."
        )


class BundleTypeError(StartupError, TypeError):
    """A started resource's value does not match its bundle field's type.

    Attributes:
        bundle: The bundle class name.
        expected: The field's type.
        found: The value's type name.
        problem: What the check found wrong, when it says more than the types
            (a constraint, an item of a list).

    Example:
        ```python
        registry.add("port", "8000")


        class Config(Bundle):
            port: int  # the value is a str: BundleTypeError when the lifespan starts
        ```
    """

    code: ClassVar[ErrorCode] = "bundle-type"

    def __init__(
        self,
        resource_name: str,
        *,
        bundle: str,
        expected: str,
        found: str,
        problem: str | None = None,
    ) -> None:
        super().__init__(resource_name)
        self.bundle: str = bundle
        self.expected: str = expected
        self.found: str = found
        self.problem: str | None = problem

    def summary(self) -> str:  # noqa: D102
        return (
            f"Resource '{self.resource_name}' provided {self.found}, but field "
            f"'{self.resource_name}' of {self.bundle} expects {self.expected}."
        )

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        return [] if self.problem is None else [("problem", self.problem)]

    def fix(self) -> str:  # noqa: D102
        return f"correct the field's annotation, or what '{self.resource_name}' yields."


# --- running ------------------------------------------------------------------


class ResourceFailedError(LifespanKitError, RuntimeError):
    """A resource stopped working while its lifespan was running.

    A task in the task group the resource holds across its ``yield`` raised,
    which cancels that task group; or the resource's own code cancelled it.
    It is reported when it happens (a log line, a ``failed`` event,
    [Lifespan.wait_failed][lifespan_kit.Lifespan.wait_failed]); the lifespan
    keeps running until it is left, then raises this error. The task's
    exception is `__cause__`: read from the task group when the failure is
    reported (an async generator holding an anyio, trio or asyncio task
    group), or else once the teardown leaves the task group.

    Example:
        ```python
        lifespan = registry.lifespan(Resources)
        try:
            async with lifespan:
                failure = await lifespan.wait_failed()  # the lifespan keeps running
                print(failure.resource_name)
        except ResourceFailedError as exc:  # raised again once everything stopped
            print(exc.__cause__)
        ```

    Added in 0.1.
    """

    code: ClassVar[ErrorCode] = "resource-failed"
    phase: Phase = "running"

    def summary(self) -> str:  # noqa: D102
        return (
            f"Resource '{self.resource_name}' failed while the lifespan was running: "
            "its task group was cancelled from inside."
        )

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        if self.__cause__ is None:
            return [
                (
                    "cause",
                    "a task it started raised, or it cancelled its own task group; "
                    "the exception is reported when the resource stops.",
                )
            ]
        return _cause_details(self)

    def fix(self) -> str:  # noqa: D102
        return (
            f"read the cause; handle the errors the tasks of '{self.resource_name}' "
            "should survive inside them, and let the others stop the service."
        )


class BackgroundTaskError(ResourceFailedError):
    """A background task stopped while its lifespan was still running.

    The original exception is `__cause__`; there is none when the task returned.

    Attributes:
        returned: True when the task returned instead of raising.

    Example:
        ```python
        lifespan = registry.lifespan(Resources)
        try:
            async with lifespan:
                failure = await lifespan.wait_failed()  # the lifespan keeps running
                if isinstance(failure, BackgroundTaskError):
                    print(failure.resource_name, failure.returned)
        except BackgroundTaskError as exc:  # raised again once everything stopped
            print(exc.__cause__)
        ```
    """

    code: ClassVar[ErrorCode] = "background-failed"
    phase: Phase = "running"

    def __init__(
        self,
        resource_name: str,
        *,
        returned: bool = False,
        dependency_path: tuple[str, ...] = (),
    ) -> None:
        super().__init__(resource_name, dependency_path=dependency_path)
        self.returned: bool = returned

    def summary(self) -> str:  # noqa: D102
        how = "returned" if self.returned else "failed"
        return (
            f"Background task '{self.resource_name}' {how} while the lifespan "
            "was running."
        )

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        return _cause_details(self)

    def fix(self) -> str:  # noqa: D102
        if self.returned:
            return (
                "keep the task running until it is cancelled (loop, or end with "
                "`await anyio.sleep_forever()`); do one-off work in a resource "
                "instead."
            )
        return (
            f"read the cause above; handle the errors '{self.resource_name}' "
            "should survive inside its loop, and let the others stop the service."
        )


# --- shutdown -----------------------------------------------------------------


class ShutdownError(LifespanKitError):
    """A resource's teardown failed; the other teardowns still ran.

    The original exception is `__cause__`.

    Example:
        ```python
        def report(event: ResourceEvent) -> None:
            if event.kind == "stop_failed" and isinstance(event.error, ShutdownError):
                print(event.resource_name, event.error.__cause__)


        registry.add_listener(report)
        ```
    """

    code: ClassVar[ErrorCode] = "shutdown-failed"
    phase: Phase = "shutdown"

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        return _cause_details(self)

    def fix(self) -> str:  # noqa: D102
        return (
            f"read the cause above; the failure is in the teardown of "
            f"'{self.resource_name}'."
        )


class StopTimeoutError(ShutdownError, TimeoutError):
    """A resource's teardown did not finish within its `stop_timeout`.

    Attributes:
        timeout: The limit, in seconds.
        elapsed: How long the teardown ran before it was cancelled, or how
            long it blocked the event loop.
        shortened_to: The shorter limit the shutdown was hurried to, or None:
            0 when a worker's shutdown deadline cut the teardown, the grace
            left by a worker's second signal otherwise.
        blocked: True when the teardown itself blocked the event loop past the
            limit (a synchronous call), so it could not be cancelled.

    Example:
        ```python
        def report(event: ResourceEvent) -> None:
            if isinstance(event.error, StopTimeoutError):
                print(f"{event.resource_name} hung for {event.error.elapsed:.1f}s")


        registry.add_listener(report)
        ```
    """

    code: ClassVar[ErrorCode] = "stop-timeout"

    def __init__(
        self,
        resource_name: str,
        *,
        timeout: float,
        elapsed: float,
        shortened_to: float | None = None,
        blocked: bool = False,
    ) -> None:
        super().__init__(resource_name)
        self.timeout: float = timeout
        self.elapsed: float = elapsed
        self.shortened_to: float | None = shortened_to
        self.blocked: bool = blocked

    def summary(self) -> str:  # noqa: D102
        limit = f"stop_timeout={self.timeout:g}s"
        if self.shortened_to == 0:
            limit = f"cut by the shutdown deadline; {limit}"
        elif self.shortened_to is not None:
            limit = (
                f"the shutdown was hurried, leaving it {self.shortened_to:g}s; {limit}"
            )
        if self.blocked:
            return (
                f"Resource '{self.resource_name}' blocked the event loop for "
                f"{self.elapsed:.3f}s while stopping ({limit})."
            )
        return (
            f"Resource '{self.resource_name}' was still stopping after "
            f"{self.elapsed:.3f}s; it was cancelled ({limit})."
        )

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        return []

    def fix(self) -> str:  # noqa: D102
        if self.blocked:
            return (
                "await the teardown's I/O instead of blocking, move the blocking "
                "call to `anyio.to_thread.run_sync`, or declare the resource with "
                "thread=True."
            )
        if self.shortened_to == 0:
            return (
                f"find what the teardown of '{self.resource_name}' waits for; the "
                "worker's whole shutdown ran past its shutdown_timeout, so raise "
                "shutdown_timeout (--shutdown-timeout) or make the teardowns faster."
            )
        if self.shortened_to is not None:
            return (
                f"find what the teardown of '{self.resource_name}' waits for; the "
                "shutdown was hurried (a second signal), so wait longer before "
                "signalling again."
            )
        return (
            f"find what the teardown of '{self.resource_name}' waits for, or raise "
            "its stop_timeout."
        )


class MultipleYieldError(ShutdownError, RuntimeError):
    """A generator factory yielded a second time instead of finishing.

    Example:
        ```python
        @registry.resource
        async def session() -> AsyncIterator[str]:
            yield "first"
            yield "second"  # MultipleYieldError at teardown: yield exactly once
        ```
    """

    code: ClassVar[ErrorCode] = "multiple-yields"

    def summary(self) -> str:  # noqa: D102
        return (
            f"Resource '{self.resource_name}' yielded a second time during "
            "teardown; it was closed at the second yield."
        )

    def fix(self) -> str:  # noqa: D102
        return "yield exactly once; a resource provides a single value."


# --- replicas -----------------------------------------------------------------


class LockUnavailableError(LifespanKitError, ConnectionError):
    """A deployment-wide lock backend cannot be used.

    It is unreachable, or it cannot hold a lock the way lifespan_kit needs (a
    PostgreSQL connection through a transaction-pooling proxy, where a
    session's advisory lock does not hold). It is raised by the lock backend's
    resource while it starts, so the startup fails naming that resource, this
    error being its cause.

    Attributes:
        backend: The backend and its address.
        reason: What went wrong.
        remedy: What to change.
        lasting: True when trying again cannot help (a pooling proxy, a
            backend used outside its `async with`); a replica waiting for a
            lock tries again after the others, which may be a blip.

    Example:
        ```python
        try:
            async with PostgresLocks("postgresql://nobody@127.0.0.1:1/none"):
                pass
        except LockUnavailableError as exc:
            print(exc.backend, exc.reason)
        ```

    Added in 0.1.
    """

    code: ClassVar[ErrorCode] = "lock-unavailable"

    def __init__(
        self, backend: str, *, reason: str, remedy: str, lasting: bool = False
    ) -> None:
        super().__init__(None)
        self.backend: str = backend
        self.reason: str = reason
        self.remedy: str = remedy
        self.lasting: bool = lasting

    def summary(self) -> str:  # noqa: D102
        return f"The lock backend {self.backend} cannot be used: {self.reason}."

    def fix(self) -> str:  # noqa: D102
        return self.remedy


class LockLostError(LifespanKitError, RuntimeError):
    """A replica lost a deployment-wide lock while it acted under it.

    It could not renew the lock before its `renew_deadline` (the backend was
    unreachable, the connection holding it was closed, or the lease was taken
    over), so what it ran under the lock was cancelled before any other
    replica could take the lock, and this error was raised in its place. In
    a background task it is a runtime failure like any other: the place the
    lifespan runs in decides whether the service stops.

    Attributes:
        key: The lock's key.
        backend: The backend and its address.
        holder: This replica, as it held the lock.
        reason: Why the lock counts as lost.

    Example:
        ```python
        @registry.background
        async def scheduler(locks: Locks, db: Database) -> None:
            try:
                async with leadership(locks, "scheduler") as term:
                    while True:
                        await db.run_due_jobs(fencing_token=term.token)
                        await anyio.sleep(60)
            except LockLostError as exc:
                print(exc.key, exc.reason)
                raise
        ```

    Added in 0.1.
    """

    code: ClassVar[ErrorCode] = "lock-lost"
    phase: Phase = "running"

    def __init__(self, key: str, *, backend: str, holder: str, reason: str) -> None:
        super().__init__(None)
        self.key: str = key
        self.backend: str = backend
        self.holder: str = holder
        self.reason: str = reason

    def summary(self) -> str:  # noqa: D102
        return (
            f"Lock '{self.key}' on {self.backend} was lost by {self.holder}: "
            f"{self.reason}; what ran under it was cancelled."
        )

    def fix(self) -> str:  # noqa: D102
        return (
            "check the lock backend's availability and latency; raise "
            "Timing.renew_deadline if renewals are merely slow. Another replica "
            "takes over on its own."
        )


# --- misuse -------------------------------------------------------------------


class NotRunningError(LifespanKitError, RuntimeError):
    """Something was used that needs a running lifespan.

    Attributes:
        action: What was attempted.

    Example:
        ```python
        lifespan = registry.lifespan(Resources)
        try:
            print(lifespan.report)  # before the lifespan started
        except NotRunningError as exc:
            print(exc.action)
        ```
    """

    code: ClassVar[ErrorCode] = "not-running"
    phase: Phase = "running"

    def __init__(self, resource_name: str | None = None, *, action: str) -> None:
        super().__init__(resource_name)
        self.action: str = action

    def summary(self) -> str:  # noqa: D102
        return f"Cannot {self.action}: the lifespan is not running."

    def fix(self) -> str:  # noqa: D102
        return (
            "use resources only inside `async with registry.lifespan(...)`; "
            "keep the work that needs them inside that block."
        )


class LifespanNotRunError(NotRunningError):
    """A request asked for resources, but its app did not run lifespan_kit's lifespan.

    Raised by the Starlette and FastAPI accessors, which look for the resources
    in the request's lifespan state; the cause is worked out from the request.

    Attributes:
        cause: Why the resources are missing: "mounted" (the app is mounted in
            another app, and only the outermost app's lifespan runs),
            "no-state" (the server or test client ran no lifespan at all),
            "not-entered" (the app's lifespan is lifespan_kit's but did not run),
            "no-lifespan" (the app was not given lifespan_kit's lifespan),
            "other-bundle" (no lifespan that ran yields that bundle class) or
            "stopped" (the lifespan ran, and has stopped: its resources are
            closed).
        app: The class name of the app that served the request.
        expected: The bundle class asked for, if one was.
        found: The bundle class the running lifespan yields ("other-bundle").

    Example:
        ```python
        @app.get("/notes")
        async def list_notes(request: Request) -> list[str]:
            try:
                res = resources(request, Resources)
            except LifespanNotRunError as exc:
                print(exc.cause)  # "not-entered": a TestClient used without `with`
                raise
            return await res.db.fetch_notes()
        ```

    Added in 0.1.
    """

    code: ClassVar[ErrorCode] = "lifespan-not-run"

    def __init__(
        self,
        *,
        action: str,
        cause: LifespanNotRunCause,
        app: str,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        super().__init__(action=action)
        self.cause: LifespanNotRunCause = cause
        self.app: str = app
        self.expected: str | None = expected
        self.found: str | None = found

    def summary(self) -> str:  # noqa: D102
        if self.cause == "other-bundle":
            return (
                f"Cannot {self.action}: the lifespan that ran for this request "
                f"yields {self.found}, not {self.expected}."
            )
        if self.cause == "stopped":
            return (
                f"Cannot {self.action}: the lifespan of the app that served this "
                f"request ({self.app}) has stopped; its resources are closed."
            )
        return (
            f"Cannot {self.action}: lifespan_kit's lifespan did not run for the "
            f"app that served this request ({self.app})."
        )

    def details(self) -> list[tuple[str, str]]:  # noqa: D102
        return [("cause", _NOT_RUN_CAUSES[self.cause])]

    def fix(self) -> str:  # noqa: D102
        if self.cause == "other-bundle":
            return (
                f"ask for {self.found}, or give the outermost app a lifespan "
                f"that yields {self.expected}."
            )
        return _NOT_RUN_FIXES[self.cause]


_NOT_RUN_CAUSES: Final[dict[LifespanNotRunCause, str]] = {
    "mounted": (
        "the app is mounted inside another app; Starlette runs only the "
        "outermost app's lifespan, and that one is not lifespan_kit's."
    ),
    "no-state": (
        "the request carries no lifespan state: the server or test client did "
        "not run the app's lifespan (httpx.ASGITransport never runs it)."
    ),
    "not-entered": (
        "the app's lifespan is lifespan_kit's, but it was not run for the client "
        "or server that sent this request (a TestClient used without `with`, or "
        "a server started with the lifespan turned off)."
    ),
    "no-lifespan": (
        "the app was created without `lifespan=lifespan_kit.starlette.lifespan(...)`."
    ),
    "other-bundle": (
        "the resources come from the lifespans of the outermost app (a mounted "
        "app's own lifespan never runs), and none was created with that bundle."
    ),
    "stopped": (
        "the server or test client shut the app's lifespan down, and then sent "
        "this request (a TestClient used after its `with` block)."
    ),
}

_NOT_RUN_FIXES: Final[dict[LifespanNotRunCause, str]] = {
    "mounted": (
        "pass `lifespan=lifespan_kit.starlette.lifespan(registry, Resources)` to "
        "the outermost app, the one the server runs; mounted apps share its "
        "resources."
    ),
    "no-state": (
        "enter the lifespan before sending requests: `with TestClient(app) as "
        "client:`, or drive the lifespan around the transport."
    ),
    "not-entered": (
        "use the test client as a context manager, `with TestClient(app) as "
        "client:`, and keep the server's lifespan on."
    ),
    "no-lifespan": (
        "pass `lifespan=lifespan_kit.starlette.lifespan(registry, Resources)` to "
        "the app."
    ),
    "stopped": (
        "send requests while the lifespan runs: inside `with TestClient(app) as "
        "client:`, or enter the test client again for a new run."
    ),
}


class AlreadyRunningError(LifespanKitError, RuntimeError):
    """A lifespan object was entered while it was already running.

    Example:
        ```python
        lifespan = registry.lifespan(Resources)
        async with lifespan:
            try:
                async with lifespan:  # the same object, a second time
                    pass
            except AlreadyRunningError:
                second = registry.lifespan(Resources)  # a new, independent one
        ```
    """

    code: ClassVar[ErrorCode] = "already-running"
    phase: Phase = "startup"

    def summary(self) -> str:  # noqa: D102
        return "This lifespan is already running; it cannot be entered twice."

    def fix(self) -> str:  # noqa: D102
        return (
            "call `registry.lifespan(...)` again for a second, independent set "
            "of resources."
        )
