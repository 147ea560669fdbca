"""The API over HTTP, as `hv` needs it: JSON in and out, errors as exceptions, tokens refreshed on expiry.

urllib from the standard library, as the agent does: a command line makes a handful of calls.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from hv.credentials import Credentials, Store

DEFAULT_API = "http://127.0.0.1:8000"
TIMEOUT_SECONDS = 30
# Refresh a little before the access token expires, so that it does not expire on its way.
EXPIRY_MARGIN_SECONDS = 30
LOGIN_HINT = "run hv login"


class ApiError(Exception):
    """The API refused: its status, its one-sentence message, and per-field errors for a 422."""

    def __init__(self, status: int, message: str, errors: dict | None = None, hint: str | None = None):
        super().__init__(message)
        self.status, self.message, self.errors, self.hint = status, message, errors or {}, hint


class NotLoggedIn(Exception):
    """No credentials for this API, or its session has ended."""


class Unreachable(Exception):
    """The API cannot be reached, or answered something that is not the API's JSON."""


def base_url(api: str) -> str:
    """The API's base URL without a trailing slash or the /api/v1 prefix (the key credentials are stored under)."""
    base = api.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"the API address must be an http:// or https:// URL, got {api!r}")
    return base.removesuffix("/api/v1")


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without checking the signature (the server checks it): only to know
    when to refresh."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def _expired(token: str) -> bool:
    expiry = token_expiry(token)
    return expiry is not None and expiry - EXPIRY_MARGIN_SECONDS <= time.time()


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: Any


class Client:
    """One API, and the credentials stored for it."""

    def __init__(self, api: str, store: Store, timeout: float = TIMEOUT_SECONDS):
        self.api = base_url(api)
        self.store = store
        self.timeout = timeout

    # --- sessions

    def login(self, username: str, password: str) -> dict:
        """Log in and store the token pair; the API's answer."""
        answer = self._send("POST", "/auth/login", {"username": username, "password": password}).body
        self.store.save(self.api, Credentials(username, answer["access_token"], answer["refresh_token"]))
        return answer

    def logout(self) -> bool:
        """End the session on the server (when it still runs) and forget it here; whether there was one."""
        if self.store.load(self.api) is None:
            return False
        try:
            self.request("POST", "/auth/logout")
        except (ApiError, NotLoggedIn) as error:
            # An ended session is what logging out wants; anything else is worth saying, after forgetting.
            if isinstance(error, ApiError) and error.status != 401:
                self.store.remove(self.api)
                raise
        self.store.remove(self.api)
        return True

    def _credentials(self) -> Credentials:
        credentials = self.store.load(self.api)
        if credentials is None:
            raise NotLoggedIn(f"Not logged in to {self.api}: {LOGIN_HINT} (--api or HV_API for another server).")
        return credentials

    def _refresh(self, spent: Credentials) -> Credentials:
        """A fresh pair in place of `spent`, spending its refresh token once, whatever other `hv` processes do."""
        with self.store.locked():
            current = self.store.load(self.api)
            if current is None:
                raise NotLoggedIn(f"Not logged in to {self.api}: {LOGIN_HINT}.")
            if current.access_token != spent.access_token and not _expired(current.access_token):
                return current  # another process refreshed meanwhile
            try:
                answer = self._send("POST", "/auth/refresh", token=current.refresh_token).body
            except ApiError as error:
                if error.status == 401:
                    self.store.remove(self.api)
                    raise NotLoggedIn(f"{error.message.rstrip('.')} ({LOGIN_HINT}).") from None
                raise
            fresh = Credentials(
                current.username, answer["access_token"], answer.get("refresh_token", current.refresh_token)
            )
            self.store.save(self.api, fresh)
            return fresh

    # --- requests

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Response:
        """An authenticated call: refreshes the access token when it has expired (or the server says so once)."""
        credentials = self._credentials()
        if _expired(credentials.access_token):
            credentials = self._refresh(credentials)
        try:
            return self._send(method, path, body, query, token=credentials.access_token)
        except ApiError as error:
            if error.status != 401:
                raise
        # Refused although not expired by our clock (a clock behind the server's, a key rotated): once more.
        credentials = self._refresh(credentials)
        try:
            return self._send(method, path, body, query, token=credentials.access_token)
        except ApiError as error:
            if error.status == 401:
                error.hint = LOGIN_HINT
            raise

    def get(self, path: str, query: dict | None = None) -> Any:
        return self.request("GET", path, query=query).body

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body).body

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path).body

    def get_all(self, path: str, query: dict | None = None) -> list:
        """Every item of a paginated list, following the X-Pagination header page by page."""
        items: list = []
        page = 1
        while True:
            response = self.request("GET", path, query={**(query or {}), "page": page, "page_size": 1000})
            items.extend(response.body)
            pagination = _json_or_none(response.headers.get("x-pagination"))
            next_page = pagination.get("next_page") if isinstance(pagination, dict) else None
            if not next_page or next_page <= page:
                return items
            page = next_page

    def _send(
        self, method: str, path: str, body: Any = None, query: dict | None = None, token: str | None = None
    ) -> Response:
        url = f"{self.api}/api/v1{path}"
        if query:
            url += "?" + urllib.parse.urlencode({name: value for name, value in query.items() if value is not None})
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 (http(s) only)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                status, answer_headers, payload = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            raise _refusal(error) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(
                f"Cannot reach the API at {self.api} ({reason}). Is it running? Point --api or HV_API at it."
            ) from None
        headers_out = {name.lower(): value for name, value in answer_headers.items()}
        if not payload:
            return Response(status, headers_out, None)
        try:
            return Response(status, headers_out, json.loads(payload))
        except ValueError:
            raise Unreachable(f"{self.api} answered {method} {path} with something that is not JSON.") from None


def _json_or_none(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _refusal(error: urllib.error.HTTPError) -> Exception:
    """The API's error body as an ApiError; anything else (a proxy's HTML page) as Unreachable."""
    try:
        body = json.loads(error.read() or b"null")
    except (ValueError, OSError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return Unreachable(f"HTTP {error.code} from {error.url}, not an answer of the API.")
    errors = body.get("errors") if isinstance(body.get("errors"), dict) else None
    message = body["message"] or f"HTTP {error.code} {body.get('status', '')}".strip()
    retry_after = error.headers.get("Retry-After") if error.headers else None
    if error.code == 429 and retry_after:
        message = f"{message.rstrip('.')}. Try again in {retry_after} s."
    return ApiError(error.code, message, errors)
