"""Workers served inside the controller's process: the built-in demo workers.

Each one is an ASGI app served by uvicorn's HTTP protocol on a loopback port
of its own, in the controller's event loop, from the controller's lifespan
on. The controller reaches it over TCP like any other worker: the forward
path (pool, headers, streaming, failures) is the same one.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import uvicorn
from starlette.types import ASGIApp
from uvicorn.server import ServerState


@dataclass(slots=True)
class LocalWorker:
    """An app to serve as worker ``id`` for ``capabilities``; ``url`` is set once it serves."""

    id: str
    capabilities: tuple[str, ...]
    app: ASGIApp
    url: str | None = None
    _server: asyncio.Server | None = field(default=None, repr=False)
    _state: ServerState | None = field(default=None, repr=False)

    async def start(self) -> str:
        """Serve on a free loopback port; return the base URL."""
        config = uvicorn.Config(
            self.app, lifespan="off", log_level="warning", access_log=False, log_config=None
        )
        config.load()
        state = ServerState()
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state={}
            )
            return made

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._server = await loop.create_server(protocol, sock=sock)
        self._state = state
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def close(self) -> None:
        if self._server is None or self._state is None:
            return
        self._server.close()
        for connection in list(self._state.connections):
            connection.shutdown()
        await self._server.wait_closed()
        self._server = self._state = None
