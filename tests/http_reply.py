"""One helper for the tests' small HTTP servers (stand-in and proxy endpoints)."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


def reply(handler: BaseHTTPRequestHandler, code: int, body: bytes) -> None:
    """Send a JSON-typed response; a client that already gave up (timeout) is no error."""
    try:
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass
