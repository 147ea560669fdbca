"""The HTTP side of the agent that needs no server: the URL it calls, how refusals read, a closed port."""

from __future__ import annotations

import re

import pytest

from agent.client import Client, Unavailable, _message, sync_url


@pytest.mark.parametrize("api", ["http://127.0.0.1:8000", "http://127.0.0.1:8000/", "http://127.0.0.1:8000/api/v1/"])
def test_the_sync_url_is_under_api_v1_whether_or_not_the_prefix_is_given(api):
    assert sync_url(api) == "http://127.0.0.1:8000/api/v1/agent/sync"


def test_an_api_url_that_is_not_http_is_refused():
    with pytest.raises(ValueError, match="must be an http:// or https:// URL"):
        sync_url("file:///etc/passwd")


def test_a_refusal_reads_as_the_servers_message_with_its_details():
    body = b'{"code": "conflict", "status": 409, "message": "cluster held", "errors": {"agent": "gpu-2", "until": "T"}}'
    assert _message(body) == "cluster held (agent: gpu-2, until: T)"
    assert _message(b'{"message": "token revoked"}') == "token revoked"
    assert _message(b"Bad Gateway") == "Bad Gateway"


def test_a_closed_port_is_unavailable_not_a_crash():
    with pytest.raises(Unavailable, match=re.escape("cannot reach http://127.0.0.1:1/api/v1/agent/sync")):
        Client("http://127.0.0.1:1", "token").sync({"agent": {}, "deployments": []})
