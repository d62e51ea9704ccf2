"""`NameReplica`: every answer says which replica gave it, to see how load spreads and that a
browser's session sticks to one panel replica."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REPLICA_HEADER = "X-Augment-Replica"


class NameReplica:
    """Adds REPLICA_HEADER to every answer (ASGI middleware: streams pass unbuffered)."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app, self.value = app, replica.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER.lower().encode(),
                                                                                  self.value)]}
            await send(message)

        await self.app(scope, receive, named)
