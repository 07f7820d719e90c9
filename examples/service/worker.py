"""The notes service's worker: it keeps the cache warm, from the same declarations.

Run it beside the API, on the same PostgreSQL and Redis (``DATABASE_URL`` and
``REDIS_URL``; on the embedded defaults each process has its own memory)::

    lifespan-kit run examples.service.worker:main

It starts only what it needs from the service's registry (the settings, the
database and the cache), caches every note so that the API's reads hit, and
does it again every ``WARM_INTERVAL`` seconds until it is stopped.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

import anyio

import lifespan_kit
from examples.service.app import registry
from examples.service.cache import Cache
from examples.service.database import Database
from examples.service.settings import Settings
from lifespan_kit import Bundle

logger = logging.getLogger(__name__)

WARM_INTERVAL: Final = 30.0


# --8<-- [start:worker]
class WorkerResources(Bundle):
    """What the worker uses: no HTTP, same database and cache as the API."""

    settings: Settings
    db: Database
    cache: Cache


async def warm(resources: WorkerResources) -> int:
    """Cache every note under the key the API reads; return how many."""
    notes = await resources.db.list_notes()
    for note in notes:
        await resources.cache.set(
            f"note:{note.id}", note.model_dump_json(), ttl=resources.settings.cache_ttl
        )
    return len(notes)


async def main(resources: WorkerResources) -> None:
    """Warm the cache, then again every WARM_INTERVAL seconds, until stopped."""
    while True:
        count = await warm(resources)
        logger.info("Cached %d note(s).", count)
        await anyio.sleep(WARM_INTERVAL)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(lifespan_kit.run(main, registry))
# --8<-- [end:worker]
