"""Drivers: how runs are executed on this host (base.py is the interface the loop uses)."""

from __future__ import annotations

from pathlib import Path

from agent.drivers.base import Driver, DriverUnavailable

DRIVERS = ("docker", "process")


def create(name: str, *, state_dir: Path, gpus: list[str], network: str | None = None) -> Driver:
    """The driver called `name`, or DriverUnavailable saying why it cannot be used here. `gpus` and
    `network` concern the docker driver (the process driver has no isolation)."""
    if name == "process":
        from agent.drivers.process import ProcessDriver

        return ProcessDriver(state_dir)
    if name == "docker":
        from agent.drivers.docker import DockerDriver

        return DockerDriver(gpus=gpus, network=network)
    raise DriverUnavailable(f"unknown driver {name!r}: expected one of {', '.join(DRIVERS)}")
