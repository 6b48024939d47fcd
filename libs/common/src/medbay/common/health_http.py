"""The services' small HTTP server behind ``/healthz`` and ``/metrics``.

One request per connection, bounded in size and time, whatever the client sends:
a request line over ``MAX_REQUEST_LINE`` bytes gets 414, more than ``MAX_HEADERS``
header lines or ``MAX_HEADER_BYTES`` of them 431, anything else that is not an
HTTP request 400, and a request not complete within ``REQUEST_SECONDS`` 408. A bad
request is an answer, never a traceback in the logs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024
REQUEST_SECONDS = 5.0
"""From the connection to the last byte of the answer sent."""

Answer = tuple[int, str, bytes]
"""Status, content type and body."""


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status


async def _line(reader: asyncio.StreamReader, limit: int, status: HTTPStatus, what: str) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:  # longer than the reader buffers (64 KiB by default)
        raise BadRequest(status, f"{what} too long") from None
    if len(line) > limit:
        raise BadRequest(status, f"{what} over {limit} bytes")
    return line


async def read_request(reader: asyncio.StreamReader) -> str:
    """The request's path, without its query."""
    line = await _line(reader, MAX_REQUEST_LINE, HTTPStatus.REQUEST_URI_TOO_LONG, "request line")
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "not an HTTP/1.x request line")
    too_large = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    count = size = 0
    while True:
        header = await _line(reader, MAX_HEADER_BYTES, too_large, "header")
        if header in (b"\r\n", b"\n"):
            return parts[1].split("?")[0]
        count, size = count + 1, size + len(header)
        if count > MAX_HEADERS:
            raise BadRequest(too_large, f"more than {MAX_HEADERS} headers")
        if size > MAX_HEADER_BYTES:
            raise BadRequest(too_large, f"headers over {MAX_HEADER_BYTES} bytes")


def _response(status: int, content_type: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def _problem(status: HTTPStatus, detail: str) -> bytes:
    return _response(status, "text/plain; charset=utf-8", f"{detail}\n".encode())


async def serve_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    answer: Callable[[str], Answer],
    timeout: float = REQUEST_SECONDS,
) -> None:
    """Read one request, send ``answer(path)`` (or what was wrong), close."""
    response: bytes | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                response = _response(*answer(await read_request(reader)))
            except BadRequest as exc:
                response = _problem(exc.status, str(exc))
            writer.write(response)
            await writer.drain()
    except TimeoutError:
        if response is None:  # still sending its request: told so as the connection closes
            writer.write(_problem(HTTPStatus.REQUEST_TIMEOUT, f"request over {timeout:g} s"))
        else:  # not reading its answer: nothing more to wait for
            writer.transport.abort()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # gone before the end of its request, or of the answer
    finally:
        writer.close()
