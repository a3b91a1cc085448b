"""A reference profile: what drift detection needs of the training data, small enough to keep
beside the model, so monitoring never rescans the training set.

Numeric column: counts, the reference's standard deviation, its decile bin edges and bin counts
(PSI and Jensen-Shannon from the profile equal those from the raw data exactly), and a quantile
sketch at ``resolution`` evenly spaced levels (KS and Wasserstein from the profile are within
about 1/resolution of the raw figures; 1/1000 by default). Categorical column: counts per category.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from mlops_pipelines.monitoring.drift import (
    ColumnDrift,
    DriftReport,
    DriftThresholds,
    _finite,
    _severity,
    _untested,
    binned_shares,
    categorical_drift,
    decide,
    jensen_shannon,
    psi,
    quantile_edges,
)


@dataclass
class NumericProfile:
    count: int
    null_count: int
    std: float
    edges: list[float]
    bin_counts: list[int]
    quantiles: list[float]


@dataclass
class CategoricalProfile:
    count: int
    null_count: int
    counts: dict[str, int]


@dataclass
class ReferenceProfile:
    """Per column a :class:`NumericProfile` or :class:`CategoricalProfile`."""

    numeric: dict[str, NumericProfile] = field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = field(default_factory=dict)
    resolution: int = 1000
    bins: int = 10

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        raw = json.loads(text)
        return cls(
            numeric={k: NumericProfile(**v) for k, v in raw["numeric"].items()},
            categorical={k: CategoricalProfile(**v) for k, v in raw["categorical"].items()},
            resolution=raw["resolution"], bins=raw["bins"],
        )


def build_profile(frame: pd.DataFrame, categorical: Iterable[str] = (), bins: int = 10,
                  resolution: int = 1000) -> ReferenceProfile:
    """Profile every column of ``frame`` (``categorical`` ones by category counts)."""
    categorical = set(categorical)
    profile = ReferenceProfile(resolution=resolution, bins=bins)
    levels = np.linspace(0, 1, resolution + 1)
    for name in frame.columns:
        values = frame[name]
        if name in categorical:
            counts = values.dropna().astype(str).value_counts()
            profile.categorical[name] = CategoricalProfile(
                int(counts.sum()), int(len(values) - counts.sum()), {str(k): int(v) for k, v in counts.items()})
            continue
        finite = _finite(values)
        edges = quantile_edges(finite, bins)
        counts = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=len(edges) + 1)
        profile.numeric[name] = NumericProfile(
            count=int(finite.size),
            null_count=int(len(values) - finite.size),
            std=float(np.std(finite)) if finite.size else 0.0,
            edges=edges.tolist(),
            bin_counts=counts.astype(int).tolist(),
            quantiles=np.quantile(finite, levels).tolist() if finite.size else [],
        )
    return profile


def _numeric_from_profile(name: str, ref: NumericProfile, current: pd.Series, rule: DriftThresholds,
                          alpha: float, resolution: int) -> ColumnDrift:
    cur = _finite(current)
    ref_total = ref.count + ref.null_count
    ref_null = ref.null_count / ref_total if ref_total else 0.0
    cur_null = 1.0 - cur.size / len(current) if len(current) else 0.0
    if ref.count == 0 or cur.size == 0:
        return _untested(name, "numeric", ref.count, int(cur.size), ref_null, cur_null, rule)
    levels = np.linspace(0, 1, resolution + 1)
    ref_q = np.asarray(ref.quantiles)
    # KS: the largest gap between the two CDFs, the reference's read off its quantile sketch.
    points = np.unique(np.concatenate([ref_q, np.quantile(cur, levels)]))
    ref_cdf = np.interp(points, ref_q, levels, left=0.0, right=1.0)
    cur_cdf = np.searchsorted(np.sort(cur), points, side="right") / cur.size
    statistic = float(np.max(np.abs(ref_cdf - cur_cdf)))
    n, m = ref.count, cur.size
    p_value = float(stats.kstwobign.sf(statistic * np.sqrt(n * m / (n + m))))
    # Wasserstein-1: the mean gap between the quantile functions.
    raw_distance = float(np.mean(np.abs(ref_q - np.quantile(cur, levels))))
    normalised = raw_distance / ref.std if ref.std > 0 else (0.0 if raw_distance == 0 else float("inf"))
    edges = np.asarray(ref.edges)
    ref_counts = np.asarray(ref.bin_counts, dtype="float64")
    ref_shares, cur_shares = ref_counts / ref_counts.sum(), binned_shares(cur, edges)
    psi_value, js = psi(ref_shares, cur_shares), jensen_shannon(ref_shares, cur_shares)
    drift, decided = decide(rule, min(n, m), p_value, alpha, normalised, rule.wasserstein, "wasserstein",
                            cur_null - ref_null)
    return ColumnDrift(name, "numeric", "ks", statistic, p_value, psi_value, normalised, js, decided, drift,
                       _severity(psi_value), n, int(m), ref_null, cur_null)


def detect_drift_from_profile(profile: ReferenceProfile, current: pd.DataFrame,
                              thresholds: DriftThresholds | None = None,
                              share_threshold: float = 0.5) -> DriftReport:
    """:func:`~mlops_pipelines.monitoring.drift.detect_drift` with the reference read from a profile."""
    rule = thresholds or DriftThresholds()
    names = [c for c in [*profile.numeric, *profile.categorical] if c in current.columns]
    alpha = rule.alpha / (len(names) or 1)
    report = DriftReport(share_threshold=share_threshold)
    for name in names:
        if name in profile.numeric:
            report.columns.append(_numeric_from_profile(name, profile.numeric[name], current[name], rule, alpha,
                                                        profile.resolution))
        else:
            ref = profile.categorical[name]
            # Category counts are the reference itself: rebuild it and reuse the raw computation.
            rebuilt = pd.Series(np.repeat(list(ref.counts), list(ref.counts.values())).tolist()
                                + [None] * ref.null_count, dtype="object")
            report.columns.append(categorical_drift(name, rebuilt, current[name], rule, alpha))
    return report
