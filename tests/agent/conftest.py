"""Helpers for the agent's tests: real processes, no server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.drivers.process import ProcessDriver

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02):
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"not true after {timeout} s: {condition}")


@pytest.fixture
def driver(tmp_path):
    driver = ProcessDriver(tmp_path / "state")
    yield driver
    driver.close()
