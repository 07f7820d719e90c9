"""docs/errors.md: one section per error code, in order, each reproducing its error."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import get_args

import pytest

import lifespan_kit.errors
from lifespan_kit.errors import ErrorCode, GraphError, LifespanKitError

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

ERRORS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)
FENCE = re.compile(r"^```(\w*)$")


def _sections(text: str) -> list[tuple[str, str]]:
    """Split the page at its `## ` headings, skipping lines inside code fences."""
    sections: list[tuple[str, list[str]]] = []
    lines: list[str] = []
    in_code = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and line.startswith("## "):
            lines = []
            sections.append((line.removeprefix("## "), lines))
            continue
        lines.append(line)
    return [(heading, "\n".join(body)) for heading, body in sections]


def _first_python_block(section: str) -> str:
    """Return the source of the section's first ```python block."""
    match = re.search(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert match is not None, "the section has no ```python block"
    return match.group(1)


def _codes_raised(exc: BaseException) -> list[ErrorCode]:
    """Return the code of `exc` and of every lifespan_kit error wrapped in it."""
    codes: list[ErrorCode] = [exc.code] if isinstance(exc, LifespanKitError) else []
    inner: tuple[BaseException, ...] = ()
    if isinstance(exc, GraphError):
        inner = exc.problems
    elif isinstance(exc, BaseExceptionGroup):
        inner = exc.exceptions
    for error in inner:
        codes.extend(_codes_raised(error))
    return codes


def _error_classes() -> list[type[LifespanKitError]]:
    """Return every error class that carries a code (the roots carry none)."""
    classes = [
        getattr(lifespan_kit.errors, name) for name in lifespan_kit.errors.__all__
    ]
    return [
        cls
        for cls in classes
        if isinstance(cls, type)
        and issubclass(cls, LifespanKitError)
        and hasattr(cls, "code")
    ]


HEADINGS_AND_SECTIONS = _sections(ERRORS_PAGE.read_text(encoding="utf-8"))
SECTIONS = dict(HEADINGS_AND_SECTIONS)
CLASS_BY_CODE = {cls.code: cls for cls in _error_classes()}


def test_headings_are_the_error_codes_in_order() -> None:
    """The `## ` headings of errors.md are exactly the ErrorCode values, in order."""
    headings = [heading for heading, _ in HEADINGS_AND_SECTIONS]
    assert headings == list(ERROR_CODES)


@pytest.mark.parametrize(
    "cls", [pytest.param(cls, id=cls.__name__) for cls in _error_classes()]
)
def test_every_error_class_code_has_a_section(cls: type[LifespanKitError]) -> None:
    """Each error class's code has a section in errors.md."""
    assert cls.code in SECTIONS


def test_each_code_belongs_to_exactly_one_error_class() -> None:
    """No two error classes share a code, and no code is left without a class."""
    codes = [cls.code for cls in _error_classes()]
    assert sorted(codes) == sorted(ERROR_CODES)


@pytest.mark.parametrize("code", ERROR_CODES)
def test_section_names_its_exception_class(code: ErrorCode) -> None:
    """The section for a code names the exception class that carries that code."""
    assert f"**Exception:** `{CLASS_BY_CODE[code].__name__}`" in SECTIONS[code]


@pytest.mark.parametrize("code", ERROR_CODES)
def test_section_has_a_fix(code: ErrorCode) -> None:
    """Every section gives the fix after its reproduction."""
    section = SECTIONS[code]
    assert section.index("**Fix:**") > section.index("```python")


@pytest.mark.parametrize("code", ERROR_CODES)
def test_reproduction_raises_its_error(code: ErrorCode) -> None:
    """Running a section's reproduction raises the error with that section's code."""
    source = _first_python_block(SECTIONS[code])
    program = compile(source, f"<docs/errors.md#{code}>", "exec")
    with pytest.raises((LifespanKitError, ExceptionGroup)) as info:
        exec(program, {"__name__": f"errors_md_{code.replace('-', '_')}"})
    assert code in _codes_raised(info.value)
