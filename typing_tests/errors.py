"""Types of `lifespan_kit.errors`: the data every error carries.

Checked by mypy and pyright in strict mode; never executed. Each
``# type: ignore[...]`` marks a call the API must reject; both checkers flag
an ignore that is no longer needed.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

from typing_extensions import assert_type

from lifespan_kit.errors import (
    DOCS_URL,
    AlreadyRunningError,
    BundleTypeError,
    DefinitionError,
    DependencyCycleError,
    DependencyTypeError,
    DuplicateResourceError,
    ErrorCode,
    GraphError,
    InvalidBundleError,
    InvalidFactoryError,
    InvalidOptionError,
    LifespanKitError,
    LifespanKitWarning,
    MissingDependencyError,
    MultipleYieldError,
    NotRunningError,
    NoYieldError,
    Phase,
    ShutdownError,
    StartTimeoutError,
    StartupError,
    StopTimeoutError,
    UnknownResourceError,
)

docs_url: str = DOCS_URL

code: ErrorCode = "startup-failed"
phase: Phase = "shutdown"
assert_type(NoYieldError.code, ErrorCode)
assert_type(StartupError.phase, Phase)


def read_common_fields(exc: LifespanKitError) -> None:
    assert_type(exc.code, ErrorCode)
    assert_type(exc.phase, Phase)
    assert_type(exc.resource_name, str | None)
    assert_type(exc.dependency_path, tuple[str, ...])
    assert_type(exc.summary(), str)
    assert_type(exc.details(), list[tuple[str, str]])
    assert_type(exc.fix(), str)
    assert_type(str(exc), str)


def read_definition_fields(
    duplicate: DuplicateResourceError,
    missing: MissingDependencyError,
    cycle: DependencyCycleError,
    factory: InvalidFactoryError,
    option: InvalidOptionError,
    bundle: InvalidBundleError,
    graph: GraphError,
    unknown: UnknownResourceError,
) -> None:
    assert_type(duplicate.first, str)
    assert_type(duplicate.second, str)
    assert_type(missing.dependency_name, str)
    assert_type(missing.parameter, str)
    assert_type(missing.suggestions, tuple[str, ...])
    assert_type(missing.available, tuple[str, ...])
    assert_type(cycle.cycle, tuple[str, ...])
    assert_type(factory.problem, str)
    assert_type(factory.remedy, str)
    assert_type(option.option, str)
    assert_type(option.problem, str)
    assert_type(bundle.found, str)
    assert_type(graph.problems, tuple[LifespanKitError, ...])
    assert_type(unknown.context, str)
    assert_type(unknown.suggestions, tuple[str, ...])
    assert_type(unknown.available, tuple[str, ...])


def read_startup_fields(
    timeout: StartTimeoutError, dependency: DependencyTypeError, bundle: BundleTypeError
) -> None:
    assert_type(timeout.timeout, float)
    assert_type(timeout.elapsed, float)
    assert_type(timeout.blocked, bool)
    assert_type(dependency.parameter, str)
    assert_type(dependency.dependency_name, str)
    assert_type(dependency.expected, str)
    assert_type(dependency.found, str)
    assert_type(bundle.bundle, str)
    assert_type(bundle.expected, str)
    assert_type(bundle.found, str)


def read_shutdown_and_misuse_fields(
    timeout: StopTimeoutError, not_running: NotRunningError
) -> None:
    assert_type(timeout.timeout, float)
    assert_type(timeout.elapsed, float)
    assert_type(not_running.action, str)


# Each error is also the built-in exception whose meaning it narrows.
definition: DefinitionError = DuplicateResourceError("db", first="a.db", second="b.db")
duplicate: ValueError = DuplicateResourceError("db", first="a.db", second="b.db")
missing: LookupError = MissingDependencyError(
    "db", dependency_name="settings", parameter="cfg", dependency_path=("api", "db")
)
cycle: ValueError = DependencyCycleError(("a", "b", "a"))
factory: TypeError = InvalidFactoryError("db", problem="...", remedy="...")
option: ValueError = InvalidOptionError(None, option="concurrency", problem="...")
bundle: TypeError = InvalidBundleError(found="the class Settings")
graph: ValueError = GraphError([DependencyCycleError(("a", "a"))])
unknown: LookupError = UnknownResourceError("db", context="passed to override()")
startup: LifespanKitError = StartupError("db", dependency_path=("api", "db"))
start_timeout: TimeoutError = StartTimeoutError("db", timeout=1, elapsed=1.5)
no_yield: RuntimeError = NoYieldError("db")
dependency_type: TypeError = DependencyTypeError(
    "api", parameter="db", dependency_name="db", expected="Database", found="int"
)
bundle_type: TypeError = BundleTypeError(
    "db", bundle="Resources", expected="Database", found="int"
)
shutdown: LifespanKitError = ShutdownError("db")
stop_timeout: TimeoutError = StopTimeoutError("db", timeout=1, elapsed=1.5)
multiple_yields: RuntimeError = MultipleYieldError("db")
not_running: RuntimeError = NotRunningError(action="read the resources")
already_running: RuntimeError = AlreadyRunningError()
warning: UserWarning = LifespanKitWarning("message")
startup_errors: list[StartupError] = [
    StartTimeoutError("db", timeout=1, elapsed=1.5),
    NoYieldError("db"),
    DependencyTypeError(
        "api", parameter="db", dependency_name="db", expected="Database", found="int"
    ),
    BundleTypeError("db", bundle="Resources", expected="Database", found="int"),
]
shutdown_errors: list[ShutdownError] = [
    StopTimeoutError("db", timeout=1, elapsed=1.5),
    MultipleYieldError("db"),
]

# After the resource's name, the data is passed by keyword.
DuplicateResourceError("db", "a.db", "b.db")  # type: ignore[call-arg]
StartTimeoutError("db", 1, 1.5)  # type: ignore[call-arg]
