"""Capacity: the highest offered rate a route serves with p99 under a limit.

A fixed-rate p99 on a shared machine moves with whatever else runs; the rate at which a route
stops keeping up moves much less, and two routes searched side by side in one run give a ratio
that reproduces. The search grows the rate geometrically until a probe fails, then bisects
between the last pass and the first failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.loadgen import Outcome, open_loop


@dataclass
class Probe:
    rate: float
    outcome: Outcome
    passed: bool


@dataclass
class Capacity:
    """The highest passing rate (requests/s) and every probe that found it."""

    rate: float
    probes: list[Probe] = field(default_factory=list)

    @property
    def tried(self) -> str:
        return ", ".join(f"{p.rate:.0f}{'' if p.passed else '✗'}" for p in self.probes)


def passes(outcome: Outcome, p99_limit: float) -> bool:
    """No errors, every request answered, p99 under the limit, and the rate actually offered."""
    return (
        outcome.error_count == 0
        and len(outcome.latencies) == outcome.sent
        and outcome.p(99) < p99_limit
    )


async def find_capacity(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    *,
    p99_limit: float = 0.025,
    start: float = 100.0,
    growth: float = 1.6,
    bisections: int = 3,
    duration: float = 3.0,
    ceiling: float = 20_000.0,
) -> Capacity:
    """Search the offered rate at which p99 latency stays under `p99_limit` seconds."""
    capacity = Capacity(rate=0.0)

    async def probe(rate: float) -> bool:
        await asyncio.sleep(0.5)  # stragglers of the last probe must not count against this one
        outcome = await open_loop(host, port, make_request, rate=rate, duration=duration)
        ok = passes(outcome, p99_limit)
        capacity.probes.append(Probe(rate, outcome, ok))
        if ok:
            capacity.rate = max(capacity.rate, rate)
        return ok

    low, high = 0.0, 0.0
    rate = start
    while rate <= ceiling:
        if not await probe(rate):
            high = rate
            break
        low = rate
        rate *= growth
    if not high:
        return capacity
    for _ in range(bisections):
        middle = (low + high) / 2
        if await probe(middle):
            low = middle
        else:
            high = middle
    return capacity
