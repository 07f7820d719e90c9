"""The OpenTelemetry example: its traces, and its metrics as Prometheus reads them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from starlette.testclient import TestClient

from examples.opentelemetry.app import create_app
from lifespan_kit.opentelemetry import Telemetry


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans kept in memory."""
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def meter_provider() -> Iterator[MeterProvider]:
    """Metrics read by Prometheus's exporter, which /metrics serves."""
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader()], shutdown_on_exit=False
    )
    yield provider
    provider.shutdown()  # takes its collector off the global Prometheus registry


@pytest.fixture
def client(
    exporter: InMemorySpanExporter, meter_provider: MeterProvider, anyio_backend: str
) -> Iterator[TestClient]:
    """The service, traced into `exporter`, served on the test's backend."""
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    backend: Literal["asyncio", "trio"] = (
        "trio" if anyio_backend == "trio" else "asyncio"
    )
    yield TestClient(create_app(telemetry), backend=backend)
    tracer_provider.shutdown()


def parents(spans: tuple[ReadableSpan, ...]) -> list[str]:
    """Each span as "parent > name" (just "name" for a root), sorted."""
    names = {span.context.span_id: span.name for span in spans if span.context}
    return sorted(
        f"{names.get(span.parent.span_id, '?')} > {span.name}"
        if span.parent
        else span.name
        for span in spans
    )


def test_startup_teardown_and_readiness_are_traced(
    client: TestClient, exporter: InMemorySpanExporter
) -> None:
    """The service's startup, teardown and readiness checks each make a trace."""
    with client:
        assert client.get("/notes").json() == {"greeting": "hello", "notes": []}
        assert client.get("/readyz").status_code == 200
    assert parents(exporter.get_finished_spans()) == [
        "lifespan_kit health",
        "lifespan_kit health > check db",
        "lifespan_kit startup",
        "lifespan_kit startup > start db",
        "lifespan_kit startup > start greeting",
        "lifespan_kit startup > start settings",
        "lifespan_kit teardown",
        "lifespan_kit teardown > stop db",
        "lifespan_kit teardown > stop greeting",
        "lifespan_kit teardown > stop settings",
    ]


def test_metrics_are_served_to_prometheus(client: TestClient) -> None:
    """GET /metrics has each resource's start duration and state."""
    with client:
        text = client.get("/metrics").text
    count = re.search(
        r"^lifespan_kit_resource_start_duration_seconds_count\{[^}]*"
        r'lifespan_kit_resource_name="db"[^}]*\} (\S+)$',
        text,
        re.MULTILINE,
    )
    assert count is not None
    assert float(count.group(1)) == 1.0
    running = re.search(
        r'^lifespan_kit_resource_count\{[^}]*lifespan_kit_resource_name="db"'
        r'[^}]*lifespan_kit_resource_state="running"[^}]*\} (\S+)$',
        text,
        re.MULTILINE,
    )
    assert running is not None
    assert float(running.group(1)) == 1.0
