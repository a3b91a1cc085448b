"""Progressive delivery: what to do next with a running deployment, from its logged outcomes.

Pure decision logic over per-arm statistics; the ``deployment_controller`` asset gathers the
statistics from the warehouse and carries the decision out through the registry.

Order of checks, first match wins:
0. a champion other than the one the experiment started against (a retraining promoted one) ->
   end it (``concluded``): its champion arm would pool two models;
1. errors: the challenger failed on more than ``max_error_rate`` of its attempts -> roll back;
2. latency: its p99 is over ``max_latency_ratio`` x the champion's (and ``latency_slack_ms`` more)
   -> roll back;
3. quality, once both arms have ``min_outcomes`` labelled flights (the first prediction per flight
   and arm): the always-valid mSPRT (``sequential.py``) of "Brier difference == margin" shows the
   challenger worse by more than ``margin`` -> roll back;
4. canary: with ``min_requests`` answered by the challenger at this step, ramp to the next step;
   the step to 100% is a promotion and needs the same test to show the challenger non-inferior
   (difference below ``margin``), else it holds there;
5. ab: when both arms reach the planned ``sample_size`` outcomes, promote if the challenger is
   better, else end the test; shadow: hold (never promoted automatically).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from mlops_pipelines.serving.deployment import Deployment
from mlops_pipelines.serving.sequential import ArmOutcomes, msprt


@dataclass(frozen=True)
class DeliveryPolicy:
    min_requests: int = 200
    """Challenger answers needed at a canary step before the next one."""
    min_error_sample: int = 20
    """Challenger attempts needed before its error rate is read."""
    max_error_rate: float = 0.01
    """Share of challenger attempts that may fail (0.01 = 1%)."""
    max_latency_ratio: float = 2.0
    latency_slack_ms: float = 5.0
    min_outcomes: int = 100
    """Labelled predictions per arm before the quality test is read."""
    alpha: float = 0.05
    """Chance of a wrong quality decision, however often the test is checked."""
    margin: float = 0.005
    """Non-inferiority margin on the Brier score: the challenger may be this much worse."""
    tau: float = 0.02
    """Mixing scale of the mSPRT (the Brier difference it is most sensitive to)."""


@dataclass(frozen=True)
class ArmStats:
    """What the log says about one arm of the running deployment."""

    answered: int = 0
    """Items this arm answered."""
    attempts: int = 0
    """Items routed to this arm (answered or failed)."""
    errors: int = 0
    p99_latency_ms: float = math.nan
    losses: ArmOutcomes = field(default_factory=lambda: ArmOutcomes(0, math.nan, math.nan))
    """Brier loss of its labelled predictions."""
    answered_this_step: int = 0
    """Items answered since the deployment record last changed (the current canary step)."""


@dataclass(frozen=True)
class Decision:
    action: str  # none | hold | ramp | promote | rollback | conclude
    share: float
    reason: str
    statistics: dict


def _statistics(champion: ArmStats, challenger: ArmStats, extra: dict) -> dict:
    def arm(stats: ArmStats) -> dict:
        values = asdict(stats)
        values["losses"] = asdict(stats.losses)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}

    return {"champion": arm(champion), "challenger": arm(challenger), **extra}


def decide(deployment: Deployment, champion: ArmStats, challenger: ArmStats,
           policy: DeliveryPolicy = DeliveryPolicy(), champion_version: str | None = None) -> Decision:
    """The next step for ``deployment`` (see the module docstring for the rules); ``champion_version``:
    the champion's now, which ends an experiment started against another."""
    share = deployment.share
    if deployment.strategy == "single":
        return Decision("none", 0.0, "no experiment is running", {})
    if deployment.champion_version and champion_version and champion_version != deployment.champion_version:
        # (its champion arm would pool two models' answers, and a promotion would replace one
        # the challenger was never compared with)
        return Decision("conclude", 0.0, f"the champion changed from version {deployment.champion_version} to "
                        f"{champion_version} during the experiment: deploy again to test against it", {})
    stats: dict = {}
    if challenger.attempts >= policy.min_error_sample:
        rate = challenger.errors / challenger.attempts
        stats["challenger_error_rate"] = rate
        if rate > policy.max_error_rate:
            return Decision("rollback", 0.0, f"challenger failed {challenger.errors} of {challenger.attempts} "
                            f"attempts ({rate:.1%} > {policy.max_error_rate:.1%})",
                            _statistics(champion, challenger, stats))
    if (challenger.answered >= policy.min_requests and champion.answered >= policy.min_requests
            and math.isfinite(challenger.p99_latency_ms) and math.isfinite(champion.p99_latency_ms)):
        limit = max(policy.max_latency_ratio * champion.p99_latency_ms,
                    champion.p99_latency_ms + policy.latency_slack_ms)
        stats["latency_limit_ms"] = limit
        if challenger.p99_latency_ms > limit:
            return Decision("rollback", 0.0, f"challenger p99 latency {challenger.p99_latency_ms:.1f} ms > "
                            f"{limit:.1f} ms", _statistics(champion, challenger, stats))
    labelled = min(champion.losses.n, challenger.losses.n) >= policy.min_outcomes
    non_inferior = False
    if labelled:
        # One always-valid test of "challenger - champion Brier == margin": rejected above the
        # margin, the challenger is worse than tolerated (roll back); below it, non-inferior.
        test = msprt(champion.losses, challenger.losses, policy.margin, policy.tau)
        stats["quality_test"] = test.to_dict()
        decided = test.p_value < policy.alpha
        if decided and test.difference > policy.margin:
            return Decision("rollback", 0.0, f"challenger Brier score worse by {test.difference:.4f}, beyond the "
                            f"{policy.margin} margin (always-valid p={test.p_value:.2g} < {policy.alpha}; "
                            f"n={challenger.losses.n} vs {champion.losses.n})",
                            _statistics(champion, challenger, stats))
        non_inferior = decided and test.difference < policy.margin
        stats["non_inferior"] = non_inferior
    summary = _statistics(champion, challenger, stats)
    if deployment.strategy == "canary":
        steps = [s for s in deployment.ramp if s > share + 1e-9]
        if not steps:
            steps = [1.0]
        if challenger.answered_this_step < policy.min_requests:
            return Decision("hold", share, f"{challenger.answered_this_step} of {policy.min_requests} challenger "
                            f"answers at share {share:g}", summary)
        if steps[0] < 1.0:
            return Decision("ramp", steps[0], f"{challenger.answered_this_step} answers at share {share:g} "
                            f"without a breach (errors, latency, quality so far)", summary)
        if not labelled:
            return Decision("hold", share, f"ready to promote, waiting for {policy.min_outcomes} labelled "
                            f"outcomes per arm (have {champion.losses.n} and {challenger.losses.n})", summary)
        if non_inferior:
            return Decision("promote", 1.0, f"non-inferior within {policy.margin} Brier "
                            f"(always-valid p={stats['quality_test']['p_value']:.2g})", summary)
        return Decision("hold", share, "not yet shown non-inferior", summary)
    if deployment.strategy == "ab":
        if min(champion.losses.n, challenger.losses.n) < deployment.sample_size:
            return Decision("hold", share, f"{champion.losses.n} and {challenger.losses.n} of "
                            f"{deployment.sample_size} planned outcomes per arm", summary)
        result = msprt(champion.losses, challenger.losses, 0.0, policy.tau)
        summary["ab_test"] = result.to_dict()
        if result.difference < 0 and result.p_value < policy.alpha:
            return Decision("promote", 1.0, f"challenger Brier better by {-result.difference:.4f} "
                            f"(p={result.p_value:.2g})", summary)
        return Decision("conclude", 0.0, f"no significant improvement after {deployment.sample_size} outcomes "
                        f"per arm (difference {result.difference:+.4f}, p={result.p_value:.2g})", summary)
    return Decision("hold", share, "shadow: logged for comparison, never promoted automatically", summary)
