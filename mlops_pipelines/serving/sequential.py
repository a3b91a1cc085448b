"""An always-valid test for "is the challenger's loss different from the champion's", safe to
check after every batch of outcomes.

Mixture sequential probability ratio test (mSPRT; Robbins 1970, Johari et al., "Always valid
inference", 2017/2022) on the difference of mean per-prediction losses between two arms. With
the estimated difference ``d`` and its variance ``s2 = var_a/n_a + var_b/n_b``, and a normal
mixing distribution of variance ``tau2`` over the true difference around ``theta0``:

    Lambda = sqrt(s2 / (s2 + tau2)) * exp(tau2 * (d - theta0)^2 / (2 * s2 * (s2 + tau2)))

``Lambda`` is a (near) martingale under ``theta0``, so by Ville's inequality the chance that it
ever exceeds ``1/alpha`` is at most ``alpha``: looking every minute does not inflate false
decisions, unlike repeating a fixed-sample z-test. ``1/Lambda`` is the always-valid p-value.
The normal approximation of the mean losses needs a few dozen outcomes per arm; the controller
waits for ``min_outcomes`` before it reads the test.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ArmOutcomes:
    """Per-prediction losses of one arm: count, mean and (unbiased) variance."""

    n: int
    mean: float
    variance: float

    @classmethod
    def of(cls, losses: list[float]) -> ArmOutcomes:
        n = len(losses)
        if n == 0:
            return cls(0, math.nan, math.nan)
        mean = math.fsum(losses) / n
        variance = math.fsum((x - mean) ** 2 for x in losses) / (n - 1) if n > 1 else math.nan
        return cls(n, mean, variance)


@dataclass(frozen=True)
class SequentialResult:
    difference: float
    """challenger mean loss - champion mean loss (positive: the challenger is worse)."""
    theta0: float
    likelihood_ratio: float
    p_value: float
    """Always-valid p-value for H0: difference == theta0."""
    n_champion: int
    n_challenger: int

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def msprt(champion: ArmOutcomes, challenger: ArmOutcomes, theta0: float = 0.0, tau: float = 0.02) -> SequentialResult:
    """The mixture SPRT of ``challenger.mean - champion.mean == theta0``.

    Args:
        tau: standard deviation of the mixing distribution: the size of difference the test is most
            sensitive to (0.02 = two points of Brier score).
    """
    difference = challenger.mean - champion.mean
    if min(champion.n, challenger.n) < 2:
        return SequentialResult(difference, theta0, 1.0, 1.0, champion.n, challenger.n)
    # A floor on the variance keeps a perfect (zero-variance) arm from dividing by zero.
    s2 = max(champion.variance / champion.n + challenger.variance / challenger.n, 1e-12)
    tau2 = tau * tau
    exponent = tau2 * (difference - theta0) ** 2 / (2.0 * s2 * (s2 + tau2))
    log_ratio = 0.5 * math.log(s2 / (s2 + tau2)) + exponent
    ratio = math.exp(min(log_ratio, 700.0))
    return SequentialResult(difference, theta0, ratio, min(1.0, 1.0 / ratio), champion.n, challenger.n)
