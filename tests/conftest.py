"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

import importlib.util

import pytest


def _trio_param() -> object:
    if importlib.util.find_spec("trio") is None:  # pragma: no cover  # trio-less CI job
        return pytest.param(
            "trio", id="trio", marks=pytest.mark.skip(reason="trio is not installed")
        )
    return pytest.param("trio", id="trio")


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), _trio_param()])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run the test on this backend."""
    return str(request.param)


@pytest.fixture(
    params=[pytest.param(1, id="sequential"), pytest.param(None, id="concurrent")]
)
def concurrency(request: pytest.FixtureRequest) -> int | None:
    """Run the test in the sequential mode and in the concurrent mode."""
    value: int | None = request.param
    return value
