"""The one backoff formula: capped exponential, with the jitter the caller chooses.

`attempt` counts failures so far, 1 for the first: the first wait is `base`, each next one
doubles, never above `cap`. Jitter spreads retries of many clients apart: `equal` waits
uniform(ceiling/2, ceiling), `full` uniform(0, ceiling) (AWS's "full jitter"), `none` the
ceiling itself. `floor` (a server's Retry-After) is never cut.
"""

from __future__ import annotations

from typing import Literal, Protocol

Jitter = Literal["none", "equal", "full"]


class UniformSource(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


def delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: Jitter = "none",
    rng: UniformSource | None = None,
    floor: float | None = None,
) -> float:
    ceiling = min(cap, base * 2 ** min(max(0, attempt - 1), 64))  # the exponent is bounded: no overflow
    if jitter == "none":
        wait = ceiling
    else:
        if rng is None:
            raise ValueError(f"{jitter} jitter needs a random source")
        wait = rng.uniform(ceiling / 2 if jitter == "equal" else 0.0, ceiling)
    if floor is not None and floor > wait:
        wait = floor
    return wait
