"""The promotion gate: does the challenger replace the champion? Pure; no I/O.

For now a simple margin on one metric of the frozen suite. Both models are scored on the same
items with the same sampling seed, so the comparison is paired by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    metric: str
    champion: float
    challenger: float
    delta: float
    margin: float
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def metric_key(metric: str, k: int) -> str:
    """Config names pass@k / maj@k generically; reports carry the actual k."""
    return metric.replace("@k", f"@{k}")


def decide(
    champion: dict[str, float], challenger: dict[str, float], metric: str, margin: float, k: int
) -> GateDecision:
    key = metric_key(metric, k)
    for name, rep in (("champion", champion), ("challenger", challenger)):
        if key not in rep:
            raise KeyError(f"{name} report has no {key!r}; it has {sorted(rep)}")
    a, b = champion[key], challenger[key]
    delta = b - a
    promote = delta > margin
    reason = (
        f"{key} {b:.4f} beats champion {a:.4f} by {delta:+.4f} > margin {margin:.4f}"
        if promote
        else f"{key} {b:.4f} vs champion {a:.4f}: {delta:+.4f} is not above margin {margin:.4f}"
    )
    return GateDecision(promote, key, a, b, delta, margin, reason)
