"""Examples run on both backends, like the tests."""

from tests.conftest import anyio_backend

__all__ = ["anyio_backend"]
