"""Error messages: built from data, in the documented layout, with a docs link."""

from __future__ import annotations

from typing import ClassVar

import pytest

from lifespan_kit.errors import (
    DOCS_URL,
    BundleTypeError,
    DependencyTypeError,
    ErrorCode,
    LifespanKitError,
    MissingDependencyError,
    NoYieldError,
    Phase,
    StartupError,
    StopTimeoutError,
    UnknownResourceError,
)


def test_message_layout_is_summary_path_details_fix_docs() -> None:
    """A message reads: summary, dependency path, details, fix, docs link."""
    error = MissingDependencyError(
        "db",
        dependency_name="settings",
        parameter="settings",
        dependency_path=("api", "db"),
        suggestions=("setting",),
    )
    assert str(error).splitlines() == [
        "Resource 'db' depends on 'settings', which is not registered.",
        "  dependency path: api -> db",
        "  did you mean: 'setting'",
        "  fix: register a resource named 'settings', fix the parameter name, or map "
        "it with depends={'settings': '<resource>'}.",
        f"  docs: {DOCS_URL}#missing-dependency",
    ]


def test_errors_refine_the_builtin_they_narrow() -> None:
    """Each error is also the built-in exception whose meaning it narrows."""
    assert issubclass(MissingDependencyError, LookupError)
    assert issubclass(UnknownResourceError, LookupError)
    assert issubclass(DependencyTypeError, TypeError)
    assert issubclass(NoYieldError, RuntimeError)


def test_a_subclass_without_overrides_still_reads_well() -> None:
    """The root's defaults give a complete message for any new error class."""

    class CustomError(LifespanKitError):
        code: ClassVar[ErrorCode] = "startup-failed"
        phase: Phase = "startup"

    text = str(CustomError("db"))
    assert text.splitlines()[0] == "Resource 'db' failed during startup."
    assert "fix: see the documentation for this error code." in text


def test_startup_error_without_a_cause_omits_the_cause_line() -> None:
    """A StartupError raised without a cause prints no cause line."""
    assert "cause:" not in str(StartupError("db"))


def test_unknown_resource_without_suggestions_keeps_it_short() -> None:
    """No close match and a long registry give just the summary and the fix."""
    error = UnknownResourceError("x", context="looked up")
    assert str(error).splitlines()[:2] == [
        "No resource is named 'x' (looked up).",
        "  fix: use the name of a registered resource, or register one by that name.",
    ]


@pytest.mark.parametrize(
    ("error", "first_line", "fix"),
    [
        pytest.param(
            NoYieldError("db"),
            "Resource 'db' returned without yielding a value.",
            "yield the value exactly once",
            id="no-yield",
        ),
        pytest.param(
            DependencyTypeError(
                "db",
                parameter="port",
                dependency_name="port",
                expected="int",
                found="str",
            ),
            "Resource 'db' expects parameter 'port' to be int, but resource 'port' "
            "provided str.",
            "correct the annotation of 'port'",
            id="dependency-type",
        ),
        pytest.param(
            BundleTypeError("db", bundle="Resources", expected="int", found="str"),
            "Resource 'db' provided str, but field 'db' of Resources expects int.",
            "correct the field's annotation",
            id="bundle-type",
        ),
    ],
)
def test_startup_errors_say_what_was_expected(
    error: LifespanKitError, first_line: str, fix: str
) -> None:
    """Startup errors name the resource, the expectation and the fix."""
    lines = str(error).splitlines()
    assert lines[0] == first_line
    assert lines[1].startswith(f"  fix: {fix}")
    assert lines[2] == f"  docs: {DOCS_URL}#{error.code}"


def test_root_error_prints_without_a_code() -> None:
    """The abstract root has no code: its message simply omits the docs link."""
    text = str(LifespanKitError("db"))
    assert text.splitlines()[0] == "Resource 'db' failed during startup."
    assert "docs:" not in text


def test_unknown_resource_carries_the_phase_it_was_raised_in() -> None:
    """A lookup during a running lifespan says so."""
    error = UnknownResourceError("x", context="not started", phase="running")
    assert error.phase == "running"


@pytest.mark.parametrize(
    ("shortened_to", "blocked", "summary", "fix"),
    [
        pytest.param(
            None,
            False,
            "was still stopping after 6.000s; it was cancelled (stop_timeout=5s).",
            "or raise its stop_timeout.",
            id="own-limit",
        ),
        pytest.param(
            0.0,
            False,
            "was still stopping after 6.000s; it was cancelled (cut by the "
            "shutdown deadline; stop_timeout=5s).",
            "so raise shutdown_timeout (--shutdown-timeout) or make the teardowns "
            "faster.",
            id="deadline",
        ),
        pytest.param(
            1.0,
            False,
            "was still stopping after 6.000s; it was cancelled (the shutdown was "
            "hurried, leaving it 1s; stop_timeout=5s).",
            "so wait longer before signalling again.",
            id="second-signal",
        ),
        pytest.param(
            0.0,
            True,
            "blocked the event loop for 6.000s while stopping (cut by the shutdown "
            "deadline; stop_timeout=5s).",
            "or declare the resource with thread=True.",
            id="blocked-past-the-deadline",
        ),
    ],
)
def test_a_stop_timeout_says_what_cut_the_teardown(
    shortened_to: float | None, blocked: bool, summary: str, fix: str
) -> None:
    """Its own limit, the shutdown deadline or a second signal: said in words."""
    error = StopTimeoutError(
        "db", timeout=5, elapsed=6, shortened_to=shortened_to, blocked=blocked
    )
    assert error.summary() == f"Resource 'db' {summary}"
    assert error.fix().endswith(fix)
