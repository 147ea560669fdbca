"""The docs work offline (every asset from the app itself), and every response carries security headers."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

STRICT_POLICY = "default-src 'none'; frame-ancestors 'none'"


class AssetLinks(HTMLParser):
    """The scripts' and stylesheets' URLs of a page, and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            if attrs.get("src"):
                self.urls.append(attrs["src"])
            else:
                self._in_inline_script = True
        elif tag == "link" and "stylesheet" in (attrs.get("rel") or ""):
            self.urls.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_inline_script = False

    def handle_data(self, data):
        if self._in_inline_script:
            self.inline_scripts.append(data)


def _links(html: str) -> AssetLinks:
    parser = AssetLinks()
    parser.feed(html)
    return parser


@pytest.mark.parametrize("page, expected_assets", [("/docs", 3), ("/redoc", 1)])
def test_docs_pages_load_every_asset_from_the_app(client, page, expected_assets):
    html = client.get(page).get_data(as_text=True)
    assert not re.search(r"https?://", html), "an absolute URL: the page would need another host"
    urls = _links(html).urls
    assert len(urls) == expected_assets
    for url in urls:
        absolute = urljoin(f"http://localhost{page}", url)
        assert urlsplit(absolute).netloc == "localhost", url
        response = client.get(urlsplit(absolute).path)
        assert response.status_code == 200, url
        assert len(response.data) > 10_000, url  # the real bundle, not a stub


def test_swagger_ui_keeps_the_pasted_token_across_reloads(client):
    html = client.get("/docs").get_data(as_text=True)
    assert '"persistAuthorization": true' in html


def test_assets_outside_the_distributions_are_not_served(client):
    assert client.get("/docs/assets/redoc/../../../wsgi.py").status_code == 404
    assert client.get("/docs/assets/elsewhere/app.js").status_code == 404


@pytest.mark.parametrize("path", ["/healthz", "/", "/openapi.json", "/api/v1/no-such-thing", "/api/v1/auth/me"])
def test_api_responses_carry_strict_security_headers(client, path):
    headers = client.get(path).headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Security-Policy"] == STRICT_POLICY
    assert "Strict-Transport-Security" not in headers  # plain HTTP


def _directives(policy: str) -> dict[str, list[str]]:
    return {name: sources for name, *sources in (part.split() for part in policy.split(";"))}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_policy_allows_self_and_exactly_the_inline_script(client, page):
    response = client.get(page)
    policy = _directives(response.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    inline = _links(response.get_data(as_text=True)).inline_scripts
    hashes = [f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline]
    assert policy["script-src"] == ["'self'", *hashes]
    assert len(hashes) == (1 if page == "/docs" else 0)
    assert not any("http" in source for sources in policy.values() for source in sources)


def test_hsts_only_over_https(client):
    assert "Strict-Transport-Security" not in client.get("/healthz").headers
    secure = client.get("/healthz", base_url="https://localhost").headers
    assert secure["Strict-Transport-Security"].startswith("max-age=")
