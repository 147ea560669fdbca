"""Drivers: how runs are executed on this host (base.py is the interface the loop uses)."""

from __future__ import annotations

from pathlib import Path

from agent.drivers.base import Driver, DriverUnavailable

DRIVERS = ("docker", "process")


def create(name: str, *, state_dir: Path, gpus: list[str]) -> Driver:
    """The driver called `name`, or DriverUnavailable saying why it cannot be used here."""
    if name == "process":
        from agent.drivers.process import ProcessDriver

        return ProcessDriver(state_dir)
    if name == "docker":
        # RUNTIME.md's docker driver (Docker SDK, labels for adoption, GPUs by device id) comes in a later
        # issue; it will live in agent/drivers/docker.py and be returned here.
        raise DriverUnavailable("the docker driver is not available yet in this version; use --driver process")
    raise DriverUnavailable(f"unknown driver {name!r}: expected one of {', '.join(DRIVERS)}")
