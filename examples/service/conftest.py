"""Fixtures for the service's tests: the backend, and the real PostgreSQL and Redis."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

POSTGRES_DSN_VARIABLE = "LIFESPAN_KIT_TEST_POSTGRES_DSN"
REDIS_URL_VARIABLE = "LIFESPAN_KIT_TEST_REDIS_URL"
POSTGRES_DSN = os.environ.get(
    POSTGRES_DSN_VARIABLE, "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get(REDIS_URL_VARIABLE, "redis://127.0.0.1:6379/0")


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param(
            "trio",
            id="trio",
            marks=pytest.mark.skip(
                reason="the service's drivers (aiosqlite, asyncpg, redis.asyncio) "
                "run on asyncio only; lifespan_kit itself is tested on trio too"
            ),
        ),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run the service's async tests on asyncio, the only loop its drivers support."""
    return str(request.param)


def require_server(service: str, url: str, variable: str) -> str:
    """Return `url` if a server listens there; skip the test otherwise (fail in CI)."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 0)
    try:
        socket.create_connection(address, timeout=2).close()
    except OSError as exc:
        reason = (
            f"{service} is unreachable at {address[0]}:{address[1]} ({exc}); "
            f"start it, or point {variable} at one"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}. CI requires it.")
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_dsn() -> str:
    """The test PostgreSQL server's DSN; the test skips (or fails in CI) without it."""
    return require_server("PostgreSQL", POSTGRES_DSN, POSTGRES_DSN_VARIABLE)


@pytest.fixture
def redis_url() -> str:
    """The test Redis server's URL; the test skips (or fails in CI) without it."""
    return require_server("Redis", REDIS_URL, REDIS_URL_VARIABLE)
