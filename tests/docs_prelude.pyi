# The names the docstring examples of lifespan_kit use without defining them.
# tests/test_docs.py type-checks each example with the names it needs from here;
# a stub, because it is only ever type-checked.

import sys as sys
from collections.abc import AsyncIterator as AsyncIterator
from contextlib import AbstractAsyncContextManager
from contextlib import asynccontextmanager as asynccontextmanager
from typing import Annotated as Annotated

import anyio as anyio
import httpx as httpx
from fastapi import Depends as Depends
from fastapi import FastAPI as FastAPI
from starlette.applications import Starlette as Starlette
from starlette.requests import Request as Request
from starlette.responses import JSONResponse as JSONResponse
from starlette.responses import Response as Response
from starlette.routing import BaseRoute

import lifespan_kit as lifespan_kit
from lifespan_kit import Bundle as Bundle
from lifespan_kit import EventKind as EventKind
from lifespan_kit import HealthReport as HealthReport
from lifespan_kit import Lifespan as Lifespan
from lifespan_kit import LifespanEvent as LifespanEvent
from lifespan_kit import LifespanEventKind as LifespanEventKind
from lifespan_kit import LifespanListener as LifespanListener
from lifespan_kit import Listener as Listener
from lifespan_kit import Registry as Registry
from lifespan_kit import Resource as Resource
from lifespan_kit import ResourceEvent as ResourceEvent
from lifespan_kit import ResourceHealth as ResourceHealth
from lifespan_kit import ResourceMap as ResourceMap
from lifespan_kit import ResourceTiming as ResourceTiming
from lifespan_kit import StartupReport as StartupReport
from lifespan_kit import run as run
from lifespan_kit.errors import DOCS_URL as DOCS_URL
from lifespan_kit.errors import AlreadyRunningError as AlreadyRunningError
from lifespan_kit.errors import BackgroundTaskError as BackgroundTaskError
from lifespan_kit.errors import BundleTypeError as BundleTypeError
from lifespan_kit.errors import DefinitionError as DefinitionError
from lifespan_kit.errors import DependencyCycleError as DependencyCycleError
from lifespan_kit.errors import DependencyTypeError as DependencyTypeError
from lifespan_kit.errors import DuplicateResourceError as DuplicateResourceError
from lifespan_kit.errors import ErrorCode as ErrorCode
from lifespan_kit.errors import GraphError as GraphError
from lifespan_kit.errors import InvalidBundleError as InvalidBundleError
from lifespan_kit.errors import InvalidFactoryError as InvalidFactoryError
from lifespan_kit.errors import InvalidMainError as InvalidMainError
from lifespan_kit.errors import InvalidOptionError as InvalidOptionError
from lifespan_kit.errors import LifespanKitError as LifespanKitError
from lifespan_kit.errors import LifespanKitWarning as LifespanKitWarning
from lifespan_kit.errors import LifespanNotRunCause as LifespanNotRunCause
from lifespan_kit.errors import LifespanNotRunError as LifespanNotRunError
from lifespan_kit.errors import LockLostError as LockLostError
from lifespan_kit.errors import LockUnavailableError as LockUnavailableError
from lifespan_kit.errors import MissingAwaitError as MissingAwaitError
from lifespan_kit.errors import MissingDependencyError as MissingDependencyError
from lifespan_kit.errors import MultipleYieldError as MultipleYieldError
from lifespan_kit.errors import NotRunningError as NotRunningError
from lifespan_kit.errors import NoYieldError as NoYieldError
from lifespan_kit.errors import Phase as Phase
from lifespan_kit.errors import ResourceFailedError as ResourceFailedError
from lifespan_kit.errors import ShutdownError as ShutdownError
from lifespan_kit.errors import StartCancelledError as StartCancelledError
from lifespan_kit.errors import StartTimeoutError as StartTimeoutError
from lifespan_kit.errors import StartupError as StartupError
from lifespan_kit.errors import StopTimeoutError as StopTimeoutError
from lifespan_kit.errors import UnknownResourceError as UnknownResourceError
from lifespan_kit.postgres import PostgresLocks as PostgresLocks
from lifespan_kit.redis import RedisLocks as RedisLocks
from lifespan_kit.replicas import Locks as Locks
from lifespan_kit.replicas import MemoryLocks as MemoryLocks
from lifespan_kit.replicas import StepOutcome as StepOutcome
from lifespan_kit.replicas import Timing as Timing
from lifespan_kit.replicas import leadership as leadership
from lifespan_kit.replicas import run_once as run_once
from lifespan_kit.replicas import standings as standings
from lifespan_kit.starlette import health_routes as health_routes
from lifespan_kit.starlette import lifespan as lifespan
from lifespan_kit.starlette import resource as resource
from lifespan_kit.starlette import resources as resources

class Settings:
    database_url: str
    redis_url: str

class Database:
    @classmethod
    def connect(cls, url: str) -> AbstractAsyncContextManager[Database]: ...
    async def execute(self, sql: str, *params: object) -> list[tuple[object, ...]]: ...
    async def fetch_greeting(self) -> str: ...
    async def fetch_notes(self) -> list[str]: ...
    async def migrate(self) -> None: ...
    async def run_due_jobs(self, *, fencing_token: int) -> None: ...

class FakeDatabase(Database): ...

class Cache:
    async def set(self, key: str, value: str) -> None: ...

class Note: ...

class Job:
    id: int

class Queue:
    async def get(self) -> Job: ...
    def __aiter__(self) -> AsyncIterator[Job]: ...

class Resources(Bundle):
    db: Database
    cache: Cache
    queue: Queue

class _Package:
    registry: Registry

registry: Registry
app_registry: Registry
payments: _Package
app: FastAPI
routes: list[BaseRoute]
db: Resource[Database]
cache_resource: Resource[Cache]
locks: Locks

async def handle(job: Job, db: Database) -> None: ...
async def serve(resources: Resources) -> None: ...
