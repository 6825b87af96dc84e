"""uvicorn's h11 protocol with Nagle's algorithm off on every connection.

asyncio turns Nagle off itself only for sockets created with ``IPPROTO_TCP``; the
listening socket uvicorn shares between ``--workers`` processes is created without it,
so there a response's headers and body, written separately, waited for the client's
delayed ACK: 40–50 ms per request on a kept-alive connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
