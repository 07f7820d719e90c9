"""The reports service as a web app: ``uvicorn examples.replicas.web:app``.

The same resources as the worker (`examples.replicas.app`), started by the
app's lifespan: ``/readyz`` runs their health checks (the locks' check says
which replica leads), ``/livez`` answers 503 once a resource failed (a lost
lock fails the report job), and ``/reports`` lists the latest reports.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from examples.replicas.app import Resources, registry
from lifespan_kit import Registry
from lifespan_kit.starlette import health_routes, lifespan, resources


async def list_reports(request: Request) -> JSONResponse:
    """The latest reports, newest first."""
    reports = await resources(request, Resources).db.latest_reports()
    return JSONResponse([report.model_dump(mode="json") for report in reports])


def create_app(app_registry: Registry = registry) -> Starlette:
    """Build the web app; tests pass a registry with overrides."""
    routes = [*health_routes(), Route("/reports", list_reports, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan(app_registry, Resources))


app = create_app()
