"""Security headers on every response: no MIME sniffing, no framing, a Content-Security-Policy, and HSTS
over HTTPS. Behind a TLS-terminating proxy, `request.is_secure` is true only if the app trusts the proxy's
X-Forwarded-Proto (werkzeug's ProxyFix); without it no HSTS is sent."""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, Response, request

# JSON and everything else: nothing may load, nothing may frame it.
STRICT_POLICY = "default-src 'none'; frame-ancestors 'none'"
BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
HSTS = "max-age=31536000; includeSubDomains"
DOCS_PAGES = {"api-docs.openapi_swagger_ui", "api-docs.openapi_redoc"}
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def docs_policy(page: bytes) -> str:
    """The CSP of a docs page: its assets from 'self', and exactly the inline scripts it carries, by hash.

    The Swagger UI page's one inline script is flask-smorest's template filled with our config (no request
    input reaches it); ReDoc's page has none. Styles allow 'unsafe-inline': ReDoc (styled-components)
    injects <style> elements at run time, and a style cannot run code. ReDoc's search runs in a blob: worker.
    """
    sources = ["'self'"] + [
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in INLINE_SCRIPT.findall(page)
    ]
    return (
        f"default-src 'none'; script-src {' '.join(sources)}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def add_security_headers(response: Response) -> Response:
    """Set the security headers on `response` (an after_request hook)."""
    response.headers.update(BASE_HEADERS)
    if request.endpoint in DOCS_PAGES and response.status_code == 200:
        response.headers["Content-Security-Policy"] = docs_policy(response.get_data())
    else:
        response.headers["Content-Security-Policy"] = STRICT_POLICY
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    return response


def init_security_headers(app: Flask) -> None:
    """Send the security headers on every response of `app`."""
    app.after_request(add_security_headers)
