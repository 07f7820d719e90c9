"""The service's resources as test fixtures, from lifespan_kit's pytest plugin.

Setting ``lifespan_kit_registry`` here gives this directory one fixture per
resource: ``settings``, ``db``, ``cache`` and the test-only ``client``. They
live for the whole session unless a test overrides something they need.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from examples.service.app import create_app, registry
from examples.service.cache import Cache
from examples.service.database import Database
from examples.service.settings import Settings
from lifespan_kit import Registry
from tests.integrations.driver import open_client

# --8<-- [start:registry]
test_registry = Registry()
test_registry.include(registry)


@test_registry.resource
async def client(
    settings: Settings, db: Database, cache: Cache
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app, which serves the resources the tests get."""
    app = create_app(registry.override(settings=settings, db=db, cache=cache))
    async with open_client(app) as http:
        yield http


lifespan_kit_registry = test_registry
# --8<-- [end:registry]
