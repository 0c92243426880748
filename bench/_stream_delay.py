"""A TCP delay line for ``bench/stream.py``'s slow link (this kernel has no netem).

Listens on ``LISTEN_HOST:LISTEN_PORT`` and relays each connection to
``127.0.0.1:TARGET_PORT``, holding every chunk ``DELAY_MS`` in each direction
before passing it on. At most ``LIMIT`` bytes wait per direction (then it stops
reading, as a full socket buffer would), so the sender still feels the link.
The rate limit is the tbf on the veth; this adds only the propagation delay.

    python bench/_stream_delay.py LISTEN_HOST LISTEN_PORT TARGET_PORT DELAY_MS
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections import deque

LIMIT = 256 << 10


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds late."""
    queue: deque[tuple[float, bytes]] = deque()
    filled, drained = asyncio.Event(), asyncio.Event()
    queued = 0

    async def send() -> None:
        nonlocal queued
        while True:
            if not queue:
                filled.clear()
                await filled.wait()
                continue
            due, data = queue.popleft()
            await asyncio.sleep(due - time.monotonic())
            if not data:
                writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            queued -= len(data)
            drained.set()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(64 << 10):
            queue.append((time.monotonic() + delay, data))
            queued += len(data)
            filled.set()
            while queued > LIMIT:
                drained.clear()
                await drained.wait()
        queue.append((time.monotonic() + delay, b""))
        filled.set()
        await sender
    finally:
        sender.cancel()


async def relay(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, target: int, delay: float
) -> None:
    try:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        client_w.close()
        return
    for w in (client_w, server_w):
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(pipe(client_r, server_w, delay), pipe(server_r, client_w, delay))
    except OSError:
        pass
    finally:
        for w in (client_w, server_w):
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()


async def main(host: str, port: int, target: int, delay_ms: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: relay(r, w, target, delay_ms / 1000), host, port
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
