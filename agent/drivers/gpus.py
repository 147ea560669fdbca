"""GPUs handed out by explicit device id from the agent's `--gpus` inventory, each to one run at a time.

Docker's `count=N` device request always gives GPUs 0..N-1, so two runs asking for one GPU each would
share GPU 0: the docker driver never uses it and asks this allocator for device ids instead. What runs
hold is recovered from the containers' labels after a restart (`restore`). Pure bookkeeping: no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable


class GpusUnavailable(Exception):
    """A run asks for more GPUs than are free: the message says how many it needs and what is free."""


class GpuAllocator:
    """Which GPU of the inventory each run holds; a GPU is held by at most one run."""

    def __init__(self, inventory: Iterable[str]):
        self.inventory: list[str] = list(dict.fromkeys(inventory))
        self._held: dict[Hashable, list[str]] = {}
        self._lock = threading.Lock()

    def allocate(self, owner: Hashable, count: int) -> list[str]:
        """`count` free GPUs for `owner` (the ones it already holds, if any), or GpusUnavailable."""
        with self._lock:
            if owner in self._held:
                return list(self._held[owner])
            if count <= 0:
                return []
            free = self._free()
            if len(free) < count:
                raise GpusUnavailable(self._shortage(count, free))
            devices = free[:count]
            self._held[owner] = devices
            return list(devices)

    def restore(self, owner: Hashable, devices: Iterable[str]) -> list[str]:
        """Record that `owner` holds `devices` (read back from a container after a restart); returns the
        ones already held by another owner, which are not recorded twice."""
        with self._lock:
            taken = self._taken()
            conflicts = [device for device in devices if device in taken]
            kept = [device for device in dict.fromkeys(devices) if device not in taken]
            if kept:
                self._held[owner] = self._held.get(owner, []) + kept
            return conflicts

    def release(self, owner: Hashable) -> None:
        """Give back what `owner` holds (nothing if it holds nothing)."""
        with self._lock:
            self._held.pop(owner, None)

    def held(self, owner: Hashable) -> list[str]:
        """The GPUs `owner` holds."""
        with self._lock:
            return list(self._held.get(owner, []))

    def free(self) -> list[str]:
        """The GPUs of the inventory no run holds, in inventory order."""
        with self._lock:
            return self._free()

    def _taken(self) -> set[str]:
        return {device for devices in self._held.values() for device in devices}

    def _free(self) -> list[str]:
        taken = self._taken()
        return [device for device in self.inventory if device not in taken]

    def _shortage(self, count: int, free: list[str]) -> str:
        if not self.inventory:
            return f"needs {count} GPU(s) but this agent has none (start it with --gpus, e.g. --gpus 0,1)"
        return (
            f"needs {count} GPU(s) but only {len(free)} of this agent's {len(self.inventory)} "
            f"(--gpus {','.join(self.inventory)}) are free"
        )
