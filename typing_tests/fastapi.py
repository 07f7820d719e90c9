"""Types of `lifespan_kit.fastapi`: dependencies for `Depends`.

Checked by mypy and pyright in strict mode; never executed. Each
``# type: ignore[...]`` marks a call the API must reject; both checkers flag
an ignore that is no longer needed.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.requests import HTTPConnection
from typing_extensions import assert_type

from lifespan_kit import Bundle, Registry, ResourceMap
from lifespan_kit.fastapi import bundle, resource, resources
from lifespan_kit.starlette import lifespan


class Database:
    async def execute(self, query: str) -> None: ...


registry = Registry()


@registry.resource
async def db() -> AsyncIterator[Database]:
    yield Database()


class Resources(Bundle):
    db: Database


bundle_dependency: Callable[[HTTPConnection], Awaitable[Bundle | ResourceMap]] = (
    resources
)
assert_type(resource(db), Callable[[HTTPConnection], Awaitable[Database]])
assert_type(resource("db"), Callable[[HTTPConnection], Awaitable[object]])
resource(42)  # type: ignore[call-overload]  # a handle or a name
assert_type(bundle(Resources), Callable[[HTTPConnection], Awaitable[Resources]])
bundle(Database)  # type: ignore[type-var]  # not a Bundle

app = FastAPI(lifespan=lifespan(registry, Resources))

Res = Annotated[Resources, Depends(resources)]
Db = Annotated[Database, Depends(resource(db))]
Checked = Annotated[Resources, Depends(bundle(Resources))]


@app.get("/")
async def home(res: Res, database: Db, checked: Checked) -> None:
    assert_type(res, Resources)
    assert_type(checked, Resources)
    assert_type(database, Database)
    await res.db.execute("select 1")
