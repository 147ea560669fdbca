"""gunicorn's own error answers in the API's JSON format.

gunicorn answers some requests before the app sees them (an oversized header or request line, a malformed
request line...). gunicorn 27 has no hook for these: `Worker.handle_error` picks the status and writes an
HTML page through `gunicorn.util.write_error`. This worker, named in gunicorn.conf.py, swaps that writer.
"""

from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from api.extensions import DEFAULT_MESSAGES, error_body
from api.security import BASE_HEADERS, STRICT_POLICY

MESSAGES = {
    414: "The request line is too long.",
    431: "The request's header fields are too large.",
}


def write_json_error(sock, status_int: int, reason: str, message: str) -> None:
    """Write gunicorn's error response as `{code, status, message}` JSON, with the usual security headers."""
    if status_int in MESSAGES:
        text = MESSAGES[status_int]
    elif status_int >= 500 or not message:
        text = DEFAULT_MESSAGES.get(status_int, reason)
    else:
        text = f"The request could not be parsed: {message[:200]}"
    body = json.dumps(error_body(status_int, text)).encode()
    headers = {
        "Connection": "close",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **BASE_HEADERS,
        "Content-Security-Policy": STRICT_POLICY,
    }
    head = f"HTTP/1.1 {status_int} {reason}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    util.write_nonblock(sock, head.encode("latin-1") + b"\r\n" + body)


class JsonErrorWorker(ThreadWorker):
    """gunicorn's threaded worker (gthread), answering the errors it raises itself in JSON."""

    def init_process(self):
        util.write_error = write_json_error
        super().init_process()
