"""Promotion gates as plain functions: each case says why it passes or fails."""

from __future__ import annotations

import pytest

from mlops_pipelines.training.gates import GatePolicy, evaluate_gates

POLICY = GatePolicy(roc_auc_floor=0.70, max_regression=0.005, fold_auc_floor=0.68, max_fold_spread=0.06)
STABLE = {"2013-10": 0.74, "2013-11": 0.73, "2013-12": 0.75}


@pytest.mark.parametrize(
    ("auc", "folds", "champion", "failed"),
    [
        (0.75, STABLE, None, []),                           # first model, good: promoted
        (0.75, STABLE, 0.74, []),                           # better than the champion
        (0.745, STABLE, 0.749, []),                         # 0.004 worse: within the margin
        (0.74, STABLE, 0.75, ["no_regression"]),            # 0.01 worse than the champion: refused
        (0.69, STABLE, None, ["absolute_floor"]),           # under the floor
        (0.75, {"a": 0.80, "b": 0.70}, None, ["fold_stability"]),  # spread 0.10 > 0.06
        (0.75, {"a": 0.70, "b": 0.67}, None, ["fold_stability"]),  # a month under 0.68
        (0.60, {}, 0.80, ["absolute_floor", "no_regression", "fold_stability"]),
    ],
)
def test_gate_decisions(auc, folds, champion, failed):
    decisions = evaluate_gates(auc, folds, champion, POLICY)
    assert [d.gate for d in decisions] == ["absolute_floor", "no_regression", "fold_stability"]
    assert [d.gate for d in decisions if not d.passed] == failed
    assert all(d.reason for d in decisions)


def test_a_champion_that_cannot_be_scored_is_never_replaced():
    decisions = evaluate_gates(0.80, STABLE, None, POLICY, champion_unscorable="champion v3: missing ['seats']")
    assert [(d.gate, d.passed) for d in decisions] == [
        ("absolute_floor", True), ("no_regression", False), ("fold_stability", True)]
    assert decisions[1].reason == "champion v3: missing ['seats']"


def test_refusal_reason_names_both_scores():
    decision = evaluate_gates(0.74, STABLE, 0.75, POLICY)[1]
    assert not decision.passed
    assert "challenger 0.7400 vs champion 0.7500" in decision.reason
    assert decision.value == pytest.approx(-0.01)
