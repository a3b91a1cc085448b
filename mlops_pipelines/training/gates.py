"""Promotion gates: plain functions from scores to pass/fail decisions with their reasons."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the promotion gates.

    Attributes:
        roc_auc_floor: the challenger's holdout ROC AUC must reach this (0.70 = 70%).
        max_regression: the challenger may trail the champion's ROC AUC by at most this much.
        fold_auc_floor: every holdout fold (month) must reach this ROC AUC.
        max_fold_spread: best fold minus worst fold may be at most this much.
    """

    roc_auc_floor: float = 0.70
    max_regression: float = 0.005
    fold_auc_floor: float = 0.68
    max_fold_spread: float = 0.06


@dataclass(frozen=True)
class GateDecision:
    gate: str
    passed: bool
    value: float | None
    threshold: float | None
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_gates(
    challenger_auc: float,
    challenger_folds: dict[str, float],
    champion_auc: float | None,
    policy: GatePolicy,
    champion_unscorable: str | None = None,
) -> list[GateDecision]:
    """Every gate's decision for a challenger, given the champion's AUC on the same rows (or None).

    ``champion_unscorable`` says why an existing champion could not be scored on these rows: a
    champion we cannot compare against is never silently replaced, so ``no_regression`` fails.
    """
    decisions = [
        GateDecision(
            "absolute_floor",
            challenger_auc >= policy.roc_auc_floor,
            challenger_auc,
            policy.roc_auc_floor,
            f"holdout ROC AUC {challenger_auc:.4f} "
            f"{'>=' if challenger_auc >= policy.roc_auc_floor else '<'} floor {policy.roc_auc_floor:.4f}",
        )
    ]
    if champion_unscorable:
        decisions.append(GateDecision("no_regression", False, None, None, champion_unscorable))
    elif champion_auc is None:
        decisions.append(
            GateDecision("no_regression", True, None, None, "no current champion: nothing to regress against")
        )
    else:
        delta = challenger_auc - champion_auc
        passed = delta >= -policy.max_regression
        decisions.append(
            GateDecision(
                "no_regression",
                passed,
                delta,
                -policy.max_regression,
                f"challenger {challenger_auc:.4f} vs champion {champion_auc:.4f} on the same rows: "
                f"delta {delta:+.4f} {'>=' if passed else '<'} {-policy.max_regression:+.4f}",
            )
        )
    if not challenger_folds:
        decisions.append(GateDecision("fold_stability", False, None, None, "no fold had both classes"))
    else:
        worst_fold = min(challenger_folds, key=challenger_folds.get)
        worst = challenger_folds[worst_fold]
        spread = max(challenger_folds.values()) - worst
        passed = worst >= policy.fold_auc_floor and spread <= policy.max_fold_spread
        folds_text = ", ".join(f"{k}: {v:.4f}" for k, v in sorted(challenger_folds.items()))
        decisions.append(
            GateDecision(
                "fold_stability",
                passed,
                worst,
                policy.fold_auc_floor,
                f"fold ROC AUC {folds_text}; worst {worst_fold} {worst:.4f} (floor "
                f"{policy.fold_auc_floor:.4f}), spread {spread:.4f} (max {policy.max_fold_spread:.4f})",
            )
        )
    return decisions
