"""Types of `lifespan_kit.opentelemetry`: a listener that goes wherever one goes.

Checked by mypy and pyright in strict mode; never executed. Each
``# type: ignore[...]`` marks a call the API must reject; both checkers flag
an ignore that is no longer needed.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from typing_extensions import assert_type

import lifespan_kit
from lifespan_kit import LifespanEvent, LifespanListener, Listener, Registry
from lifespan_kit.opentelemetry import Telemetry
from lifespan_kit.starlette import lifespan

registry = Registry()

telemetry = Telemetry()
assert_type(telemetry, Telemetry)
Telemetry(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
Telemetry(tracer_provider=None, meter_provider=None)
Telemetry(TracerProvider())  # type: ignore[call-arg]
Telemetry(tracer_provider=MeterProvider())  # type: ignore[arg-type]

# It is a listener and a lifespan listener: every place takes it.
as_listener: Listener = telemetry
as_lifespan_listener: LifespanListener = telemetry
registry.add_listener(telemetry)
registry.lifespan(listeners=[telemetry])
lifespan(registry, listeners=[telemetry])


async def main() -> None: ...


lifespan_kit.run(main, registry, listeners=[telemetry])


def forward(event: LifespanEvent) -> None:
    assert_type(telemetry.on_lifespan_event(event), None)
