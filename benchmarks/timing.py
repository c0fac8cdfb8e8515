"""Interleaved rounds, medians and spreads: how every number here is measured.

The machines these run on are small and shared, so a side measured after
another can look faster only because a neighbour went quiet. Each round
therefore runs every side once, in an order rotated by one each round, and
a ratio is taken round by round (the two sides of a ratio ran seconds
apart) before its median is taken.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stat:
    """The median of a few repeats, and half their range relative to it."""

    median: float
    spread: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        median = statistics.median(values)
        return cls(median, (max(values) - min(values)) / 2 / median if median else 0)

    def format(self, scale: float = 1.0, digits: int = 1) -> str:
        return f"{self.median * scale:.{digits}f} ±{self.spread:.0%}"


def interleaved(
    sides: dict[str, Callable[[], float]], rounds: int
) -> dict[str, list[float]]:
    """Run every side once per round, rotating the order; each returns one value."""
    names = list(sides)
    values: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            values[name].append(sides[name]())
    return values


def ratio(values: dict[str, list[float]], side: str, reference: str) -> Stat:
    """``side / reference``, round by round, then the median of those."""
    return Stat.of(
        [a / b for a, b in zip(values[side], values[reference], strict=True)]
    )


def calls_for(per_call: float, target: float, low: int = 50, high: int = 20000) -> int:
    """How many calls make a batch last about ``target`` seconds."""
    return max(low, min(high, int(target / per_call)))
