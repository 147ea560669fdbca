"""Resource quantities as exact integers: CPU in milli-cores, RAM in MB, GPUs whole.

The API speaks cores and GB with at most 3 decimals; this module is the one place that converts, so
accounting never drifts (0.1 + 0.1 + 0.1 cores is exactly 300 milli-cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

CPU_SCALE = 1000  # milli-cores per core
RAM_SCALE = 1000  # MB per GB (decimal units, so 3 decimals of GB are whole MB)
DECIMALS = 3


@dataclass(frozen=True, order=True, slots=True)
class Resources:
    cpu_millis: int = 0
    ram_mb: int = 0
    gpu: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis + other.cpu_millis, self.ram_mb + other.ram_mb, self.gpu + other.gpu)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis - other.cpu_millis, self.ram_mb - other.ram_mb, self.gpu - other.gpu)

    def fits_in(self, room: Resources) -> bool:
        """Whether every resource of this request fits in `room`."""
        return self.cpu_millis <= room.cpu_millis and self.ram_mb <= room.ram_mb and self.gpu <= room.gpu

    def shortfalls(self, room: Resources) -> list[tuple[str, int, int]]:
        """(API name, needed, available) for each resource this request lacks in `room`."""
        return [
            (name, need, have)
            for name, need, have in zip(NAMES, self.as_tuple(), room.as_tuple(), strict=True)
            if need > have
        ]

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.cpu_millis, self.ram_mb, self.gpu)

    def to_api(self) -> dict:
        return {
            "cpu": from_units(self.cpu_millis, CPU_SCALE),
            "ram_gb": from_units(self.ram_mb, RAM_SCALE),
            "gpu": self.gpu,
        }

    @classmethod
    def from_api(cls, cpu, ram_gb, gpu) -> Resources:
        return cls(to_units(cpu, CPU_SCALE), to_units(ram_gb, RAM_SCALE), int(gpu))


NAMES = ("cpu", "ram_gb", "gpu")


def to_units(value: int | float | Decimal, scale: int) -> int:
    """An API number (<= 3 decimals, already validated) as an exact integer of units."""
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    units = exact * scale
    if units != units.to_integral_value():
        raise ValueError(f"{value} has more than {DECIMALS} decimals")
    return int(units)


def from_units(units: int, scale: int) -> int | float:
    """Integer units back to the API's number: a whole number stays an integer."""
    whole, rest = divmod(units, scale)
    return whole if rest == 0 else units / scale


def describe(name: str, units: int) -> str:
    """`4 GPU`, `2.5 CPU`, `16 GB RAM`: a quantity as a person reads it."""
    if name == "cpu":
        return f"{from_units(units, CPU_SCALE)} CPU"
    if name == "ram_gb":
        return f"{from_units(units, RAM_SCALE)} GB RAM"
    return f"{units} GPU"
