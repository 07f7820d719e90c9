"""Fixtures for the service's tests: the backend, and the real PostgreSQL and Redis."""

from __future__ import annotations

import pytest

from tests import servers


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


@pytest.fixture
def postgres_dsn() -> str:
    """The test PostgreSQL server's DSN; the test skips (or fails in CI) without it."""
    return servers.postgres_dsn()


@pytest.fixture
def redis_url() -> str:
    """The test Redis server's URL; the test skips (or fails in CI) without it."""
    return servers.redis_url()
