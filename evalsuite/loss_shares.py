"""How a measured group's share of a variant's loss is compared, on a finding of `evalsuite.sensitivity`
(a dict as explain.json stores it): shared by explain, fix and the report, which reads the JSON and imports
no torch."""

from __future__ import annotations


def counted(found: dict) -> float | None:
    """The share beyond the noise in whole percent, as printed: shares that print the same are equal (a
    perplexity whose upper bound misses 100% by 1e-5 gives a share of 0.001%, which must not outrank a
    group that holds 10% at its point but inside the noise: there the KLD decides)."""
    beyond = found.get("beyond_noise")
    return None if beyond is None else round(beyond, 2)


def rank_key(found: dict) -> tuple[float, float]:
    """Sorts groups (descending): the share beyond the noise (`counted`), then the KLD share (the tie-break,
    and the whole ranking when every accuracy share is within the noise)."""
    worst = float("-inf")
    beyond, kld = counted(found), found.get("kld_share")
    return (worst if beyond is None else beyond, worst if kld is None else kld)


def helps(found: dict) -> bool:
    """Measured to matter: a share of the loss beyond the noise, or part of the KLD."""
    return (counted(found) or 0) > 0 or (found.get("kld_share") or 0) > 0


def within_noise(found: dict) -> bool:
    """An accuracy share (basis "recovery") that stays inside the subset's sampling interval."""
    return found.get("basis") == "recovery" and not counted(found)
