"""Drive an ASGI app's lifespan in-process, as a server does, on asyncio and trio.

httpx's `ASGITransport` sends requests but never runs the lifespan; this module
runs the ASGI lifespan protocol in a task beside the test, and copies the
lifespan state into each request's scope, as uvicorn does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class LifespanFailedError(Exception):
    """The app answered the startup or shutdown with a "failed" message.

    Attributes:
        event: The message type, such as "lifespan.startup.failed".
        message: The text the app sent with it.
    """

    def __init__(self, event: str, message: str) -> None:
        super().__init__(f"{event}: {message}")
        self.event = event
        self.message = message


class _Protocol:
    """The two message streams between the driver and the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, object] = {}
        self.to_app, self.app_inbox = anyio.create_memory_object_stream[Message](1)
        self.app_outbox, self.from_app = anyio.create_memory_object_stream[Message](1)
        self.error: BaseException | None = None

    async def run_app(self) -> None:
        scope: Scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "state": self.state,
        }
        with self.app_inbox, self.app_outbox:
            try:
                await self.app(scope, self.app_inbox.receive, self.app_outbox.send)
            except Exception as exc:
                # Starlette raises again after sending the "failed" message.
                self.error = exc

    async def exchange(self, event: str) -> Message:
        await self.to_app.send({"type": event})
        return await self.from_app.receive()

    def check(self, reply: Message, expected: str) -> None:
        if reply["type"] != expected:
            raise LifespanFailedError(
                str(reply["type"]), str(reply.get("message", ""))
            ) from self.error


@asynccontextmanager
async def run_lifespan(app: ASGIApp) -> AsyncIterator[dict[str, object]]:
    """Start the app's lifespan, yield its state, then shut it down.

    Raises:
        LifespanFailedError: When the app reports a failed startup or shutdown;
            the exception the app raised is its `__cause__`.
    """
    protocol = _Protocol(app)
    replies: list[Message] = []
    async with anyio.create_task_group() as tg, protocol.to_app, protocol.from_app:
        tg.start_soon(protocol.run_app)
        replies.append(await protocol.exchange("lifespan.startup"))
        if replies[0]["type"] == "lifespan.startup.complete":
            try:
                yield protocol.state
            finally:
                with anyio.CancelScope(shield=True):
                    replies.append(await protocol.exchange("lifespan.shutdown"))
    # Checked once the app's task has ended, so its exception is known; after
    # a failed startup there is no shutdown reply.
    expected = ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    for reply, event in zip(replies, expected, strict=False):
        protocol.check(reply, event)


def with_state(app: ASGIApp, state: dict[str, object]) -> ASGIApp:
    """Wrap `app` so each request's scope gets a copy of the lifespan state."""

    async def app_with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    return app_with_state


@asynccontextmanager
async def open_client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield an httpx client that sends it requests."""
    async with run_lifespan(app) as state:
        transport = httpx.ASGITransport(app=with_state(app, state))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver"
        ) as client:
            yield client
