"""The real servers some tests need, PostgreSQL and Redis, found from the environment.

A test that needs one calls `postgres_dsn()` or `redis_url()`: it gets the
address when a server listens there, and is skipped otherwise, except in CI
(`CI=true`), where a missing server fails the test instead of hiding it.
"""

from __future__ import annotations

import os
import socket
from typing import Final
from urllib.parse import urlsplit

import pytest

POSTGRES_DSN_VARIABLE: Final = "LIFESPAN_KIT_TEST_POSTGRES_DSN"
REDIS_URL_VARIABLE: Final = "LIFESPAN_KIT_TEST_REDIS_URL"
DEFAULT_POSTGRES_DSN: Final = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"


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


def postgres_dsn() -> str:
    """Return the test PostgreSQL server's DSN; skip (fail in CI) without one."""
    dsn = os.environ.get(POSTGRES_DSN_VARIABLE, DEFAULT_POSTGRES_DSN)
    return require_server("PostgreSQL", dsn, POSTGRES_DSN_VARIABLE)


def redis_url() -> str:
    """Return the test Redis server's URL; skip (fail in CI) without one."""
    url = os.environ.get(REDIS_URL_VARIABLE, DEFAULT_REDIS_URL)
    return require_server("Redis", url, REDIS_URL_VARIABLE)
