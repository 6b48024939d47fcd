"""demo-web: a tiny HTTP service that `medbay up` watches, and that goes down now and then.

It serves ``200 OK`` for ``--first-up`` seconds (then ``--up`` seconds), stops
listening for ``--down`` seconds, and starts again, so a first look at Medbay
shows a real ``service_down`` issue being opened and resolved within the first
half-minute. ``medbay up --no-demo`` leaves it out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def serve(port: int, first_up: float, up: float, down: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        await writer.drain()
        writer.close()

    period = first_up
    while True:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        print(f"serving on http://127.0.0.1:{port}/ for {period:.0f} s", flush=True)
        await asyncio.sleep(period)
        period = up
        server.close()
        await server.wait_closed()
        print(f"down for {down:.0f} s (on purpose)", flush=True)
        await asyncio.sleep(down)


def main() -> None:
    parser = argparse.ArgumentParser(prog="demo-web")
    parser.add_argument("--port", type=int, default=9480)
    parser.add_argument("--first-up", type=float, default=15.0)
    parser.add_argument("--up", type=float, default=60.0)
    parser.add_argument("--down", type=float, default=15.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.first_up, args.up, args.down))


if __name__ == "__main__":
    main()
