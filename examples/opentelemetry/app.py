"""A Starlette service whose startup, shutdown and health checks are traced.

Run it with ``python -m examples.opentelemetry.app`` (uvicorn on port 8000):
each span goes to the console, and ``GET /metrics`` serves the metrics (the
durations, states and outcomes) to Prometheus. To send the spans to a real
backend, replace the console exporter with an OTLP one
(``opentelemetry-exporter-otlp``).

The service keeps notes in a database that takes a moment to connect, and
greets with a word from a cache; ``GET /readyz`` runs the database's health
check, which makes a trace of its own.
"""

# --8<-- [start:imports]
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.resources import Resource as ServiceResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from lifespan_kit import Bundle, Registry
from lifespan_kit.opentelemetry import Telemetry
from lifespan_kit.starlette import health_routes, lifespan, resources

# --8<-- [end:imports]

tracer = trace.get_tracer("examples.opentelemetry")


@dataclass
class Database:
    """Notes in memory, behind a connection that can drop."""

    notes: list[str] = field(default_factory=list[str])
    is_connected: bool = False

    async def connect(self) -> None:
        # The driver's own span (from the global tracer provider, which
        # configure_opentelemetry sets): it nests under the "start db" span.
        with tracer.start_as_current_span("connect"):
            await anyio.sleep(0.01)
            self.is_connected = True

    async def ping(self) -> None:
        if not self.is_connected:
            message = "the database connection was lost"
            raise ConnectionError(message)


# --8<-- [start:resources]
registry = Registry(stop_timeout=5)


@registry.resource
def settings() -> dict[str, str]:
    return {"greeting": "hello"}


async def ping(database: Database) -> None:
    await database.ping()


@registry.resource(health=ping)
async def db(settings: dict[str, str]) -> AsyncIterator[Database]:
    database = Database()
    await database.connect()
    yield database
    database.is_connected = False


@registry.resource
async def greeting(settings: dict[str, str]) -> AsyncIterator[str]:
    yield settings["greeting"]


class Resources(Bundle):
    db: Database
    greeting: str


# --8<-- [end:resources]


async def list_notes(request: Request) -> JSONResponse:
    res = resources(request, Resources)
    return JSONResponse({"greeting": res.greeting, "notes": res.db.notes})


# --8<-- [start:app]
def create_app(telemetry: Telemetry) -> Starlette:
    """The service, whose lifespan tells `telemetry` every start, stop and check."""
    return Starlette(
        routes=[
            Route("/notes", list_notes),
            *health_routes(),
            Mount("/metrics", app=make_asgi_app()),
        ],
        lifespan=lifespan(registry, Resources, listeners=[telemetry]),
    )


# --8<-- [end:app]


# --8<-- [start:setup]
def configure_opentelemetry() -> None:
    """Set the global providers: spans to the console, metrics for Prometheus."""
    service = ServiceResource.create({SERVICE_NAME: "notes"})
    tracer_provider = TracerProvider(resource=service)
    tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    # Serves lifespan_kit_resource_start_duration_seconds and the rest on /metrics.
    meter_provider = MeterProvider(
        resource=service, metric_readers=[PrometheusMetricReader()]
    )
    metrics.set_meter_provider(meter_provider)


def main() -> None:
    import uvicorn  # only needed to serve

    configure_opentelemetry()
    uvicorn.run(create_app(Telemetry()), port=8000)


# --8<-- [end:setup]

if __name__ == "__main__":
    main()
