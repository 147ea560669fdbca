"""POST /api/v1/agent/sync over HTTP, with the answers the loop acts on turned into exceptions.

urllib from the standard library: one small JSON POST every few seconds needs no pooling or retries of
a library's own, and an agent that needs nothing but Python installs on any bare host.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from agent.protocol import ProtocolError, SyncResponse, parse_sync_response

SYNC_PATH = "/agent/sync"
TIMEOUT_SECONDS = 10


class Unauthorized(Exception):
    """401: the token is wrong, revoked, or not an agent token. Retrying cannot help."""


class LeaseHeld(Exception):
    """409: another agent holds the cluster's lease. `message` says who, until when."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(Exception):
    """The API cannot be reached or cannot answer now (network, 5xx, an answer that makes no sense)."""


def sync_url(api: str) -> str:
    """The sync endpoint under the server's base URL (with or without its /api/v1 prefix)."""
    base = api.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"--api must be an http:// or https:// URL, got {api!r}")
    if not base.endswith("/api/v1"):
        base += "/api/v1"
    return base + SYNC_PATH


class Client:
    """The server, as the agent sees it: one call."""

    def __init__(self, api: str, token: str, timeout: float = TIMEOUT_SECONDS):
        self.url = sync_url(api)
        self._token = token
        self.timeout = timeout

    def sync(self, body: dict[str, Any], timeout: float | None = None) -> SyncResponse:
        """Send the reports, get the desired state; raises Unauthorized, LeaseHeld or Unavailable."""
        request = urllib.request.Request(  # noqa: S310 (sync_url allows only http and https)
            self.url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as answer:  # noqa: S310
                payload = answer.read()
        except urllib.error.HTTPError as error:
            raise _refusal(error) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise Unavailable(f"cannot reach {self.url}: {reason}") from None
        try:
            return parse_sync_response(json.loads(payload))
        except (ValueError, ProtocolError) as error:
            raise Unavailable(f"the server's answer does not follow the protocol: {error}") from None


def _refusal(error: urllib.error.HTTPError) -> Exception:
    """The exception for a non-2xx answer, with the server's own message (error bodies are JSON)."""
    try:
        raw = error.read()
    except OSError:
        raw = b""
    message = _message(raw) or error.reason or "no message"
    if error.code == 401:
        return Unauthorized(message)
    if error.code == 409:
        return LeaseHeld(message, _seconds(error.headers.get("Retry-After")))
    return Unavailable(f"HTTP {error.code}: {message}")


def _message(raw: bytes) -> str | None:
    try:
        body = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", errors="replace").strip()
        return text[:200] or None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return None
    # Details (e.g. which agent holds the lease, until when) may come in the error format's `errors`.
    errors = body.get("errors")
    if isinstance(errors, dict) and errors:
        details = ", ".join(f"{name}: {value}" for name, value in errors.items())
        return f"{body['message']} ({details})"
    return body["message"]


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
