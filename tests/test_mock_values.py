"""A `unittest.mock` object given for a resource is the value itself, not a factory."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from unittest import mock

import pytest

from lifespan_kit import Bundle, Registry

pytest_plugins = ["pytester"]


class Database:
    """The real resource's type, which the mocks stand for."""

    url = "postgresql://db.internal/app"


class Resources(Bundle):
    db: Database


def real_registry() -> Registry:
    registry = Registry()

    @registry.resource
    async def db() -> Database:  # pragma: no cover  # every test replaces it
        return Database()

    return registry


MOCKS: list[object] = [
    pytest.param(lambda: mock.Mock(spec_set=Database), id="Mock-spec_set"),
    pytest.param(lambda: mock.MagicMock(spec=Database), id="MagicMock-spec"),
    pytest.param(lambda: mock.AsyncMock(spec=Database), id="AsyncMock-spec"),
    pytest.param(lambda: mock.NonCallableMock(spec=Database), id="NonCallableMock"),
    pytest.param(
        lambda: mock.NonCallableMagicMock(spec_set=Database),
        id="NonCallableMagicMock",
    ),
    pytest.param(lambda: mock.create_autospec(Database), id="create_autospec-class"),
    pytest.param(
        lambda: mock.create_autospec(Database, instance=True),
        id="create_autospec-instance",
    ),
]


@pytest.mark.parametrize("make", MOCKS)
async def test_override_with_a_mock_gives_the_mock_itself(
    make: Callable[[], mock.NonCallableMock],
) -> None:
    """registry.override(db=Mock(spec_set=Database)): the bundle holds that mock."""
    fake = make()
    registry = real_registry().override(db=fake)
    async with registry.lifespan(Resources) as res:
        assert res.db is fake
    assert fake.mock_calls == []  # never called as a factory


@pytest.mark.parametrize("make", MOCKS)
async def test_add_with_a_mock_registers_the_mock_itself(
    make: Callable[[], mock.NonCallableMock],
) -> None:
    """registry.add("db", mock) registers the mock as the value, untyped or not."""
    fake = make()
    registry = Registry()
    registry.add("db", fake)
    async with registry.lifespan() as res:
        assert res["db"] is fake


async def test_a_mock_used_as_a_factory_is_wrapped() -> None:
    """To use a mock as a factory, wrap it in a function that calls it."""
    factory = mock.Mock(return_value=Database())
    registry = real_registry().override(db=lambda: factory())
    async with registry.lifespan(Resources) as res:
        assert res.db is factory.return_value
    factory.assert_called_once_with()


def test_marker_override_with_a_mock_gives_the_mock_itself(
    pytester: pytest.Pytester,
) -> None:
    """@pytest.mark.lifespan_kit(db=Mock(...)) hands the test that very mock."""
    pytester.makepyfile(
        sample_app=textwrap.dedent(
            """
            from lifespan_kit import Registry


            class Database:
                pass


            registry = Registry()


            @registry.resource
            async def db() -> Database:
                return Database()
            """
        ),
        test_sample=textwrap.dedent(
            """
            from unittest import mock

            import pytest

            from sample_app import Database

            FAKE = mock.AsyncMock(spec=Database)


            @pytest.mark.anyio
            @pytest.mark.lifespan_kit(db=FAKE)
            async def test_db_is_the_mock(db):
                assert db is FAKE
            """
        ),
    )
    pytester.makeini(
        "[pytest]\npythonpath = .\nlifespan_kit_registry = sample_app:registry\n"
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "anyio", "-p", "no:asyncio", "-v"
    )
    result.assert_outcomes(passed=2)  # on asyncio and on trio
