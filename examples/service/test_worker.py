"""The notes service's worker: same registry, its own bundle, a warm cache."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from examples.service.app import create_app, registry
from examples.service.settings import Settings
from examples.service.worker import WorkerResources, warm
from lifespan_kit import Registry
from tests.integrations.driver import open_client


@pytest.fixture
def memory_registry() -> Registry:
    """The service's registry on an in-memory database and cache, whatever the env."""
    settings = Settings(database_url=SecretStr("sqlite:///:memory:"), redis_url=None)
    return registry.override(settings=settings)


def test_worker_starts_only_what_it_uses(memory_registry: Registry) -> None:
    """The worker's bundle starts the settings, the database and the cache."""
    assert memory_registry.check(WorkerResources) == ("settings", "db", "cache")


# --8<-- [start:test]
async def test_warm_caches_every_note(memory_registry: Registry) -> None:
    """After a warm-up, every note is in the cache, as the API serves it."""
    async with memory_registry.lifespan(WorkerResources) as resources:
        first = await resources.db.add_note("buy milk")
        second = await resources.db.add_note("call mum")
        assert await warm(resources) == 2
        cached = [await resources.cache.get(f"note:{n.id}") for n in (first, second)]
    assert cached == [first.model_dump_json(), second.model_dump_json()]


# --8<-- [end:test]


async def test_the_api_app_and_the_worker_share_one_registry(
    memory_registry: Registry,
) -> None:
    """The API starts the same declarations the worker does."""
    async with open_client(create_app(memory_registry)) as client:
        response = await client.get("/readyz")
    assert response.json()["status"] == "ready"
