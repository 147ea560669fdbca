"""The process's Redis client (rate limits, token blocklist, locks, pass coalescing)."""

from __future__ import annotations

import redis

_clients: dict[str, redis.Redis] = {}


def get_redis(url: str) -> redis.Redis:
    """A shared client for `url`; short timeouts so a Redis outage is an error, not a hang."""
    client = _clients.get(url)
    if client is None:
        client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30, decode_responses=True
        )
        _clients[url] = client
    return client
