"""Drift between a reference sample and a current one: plain functions, no Dagster inside.

Per column, every statistic is computed; one rule decides the drift flag:

* **Small samples** (the smaller side has at most ``large_sample`` values, 5,000 by default): a
  hypothesis test, Kolmogorov-Smirnov for numeric columns, chi-squared on aligned category
  counts for categorical ones, at ``alpha`` with a Bonferroni correction over the columns tested
  (0.05 / number of columns).
* **Large samples**: p-values shrink with n until any difference "drifts", so a distance decides:
  the Wasserstein distance divided by the reference's standard deviation for numeric columns
  (drift at >= 0.1), the Jensen-Shannon distance for categorical ones (drift at >= 0.1).

Severity follows the Population Stability Index bands: low below 0.1, medium below 0.25, high
from 0.25. PSI and Jensen-Shannon use the same bins: reference deciles for numeric columns (edges
deduplicated, the outer bins open-ended), categories for categorical ones (a category unseen in
the reference gets its own bin with reference share 0). Empty bins: shares are floored at 1e-4
before the logarithm of PSI, so an empty bin costs a bounded, documented amount instead of
infinity. NaN and infinite values are left out of the tests and reported as null shares; a column
with no value left on one side has no test, and drifts when its null share moved by 10 points.
Every threshold can be set per column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class DriftThresholds:
    """How one column's drift is decided (see the module docstring for the rule).

    Attributes:
        alpha: significance of the small-sample tests, before the Bonferroni correction.
        large_sample: above this many values (on the smaller side), distances decide, not p-values.
        wasserstein: normalised Wasserstein distance at which a numeric column drifts (0.1 = a
            tenth of the reference's standard deviation).
        jensen_shannon: Jensen-Shannon distance (base 2, 0..1) at which a categorical column drifts.
        null_share: change in the share of missing values that alone counts as drift (0.1 = 10 points).
        bins: number of reference quantile bins for PSI and Jensen-Shannon on numeric columns.
    """

    alpha: float = 0.05
    large_sample: int = 5000
    wasserstein: float = 0.1
    jensen_shannon: float = 0.1
    null_share: float = 0.1
    bins: int = 10


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # numeric | categorical
    test: str  # ks | chi2 | none
    statistic: float | None
    p_value: float | None
    psi: float | None
    wasserstein_normalised: float | None
    jensen_shannon: float | None
    decided_by: str  # p_value | wasserstein | jensen_shannon | null_share
    drift: bool
    severity: str  # low | medium | high
    reference_count: int
    current_count: int
    reference_null_share: float
    current_null_share: float


@dataclass
class DriftReport:
    columns: list[ColumnDrift] = field(default_factory=list)
    share_threshold: float = 0.5

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drift]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        """True when at least ``share_threshold`` of the columns drifted (0.5 = half)."""
        return bool(self.columns) and self.share_drifted >= self.share_threshold

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(c) for c in self.columns])

    def to_dict(self) -> dict:
        return {
            "share_drifted": self.share_drifted,
            "dataset_drift": self.dataset_drift,
            "drifted_columns": self.drifted_columns,
            "columns": [asdict(c) for c in self.columns],
        }


def _finite(values: pd.Series) -> np.ndarray:
    array = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return array[np.isfinite(array)]


def _null_share(values: pd.Series, kept: int) -> float:
    return 1.0 - kept / len(values) if len(values) else 0.0


def psi(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """Population Stability Index of two share vectors over the same bins (shares floored at 1e-4)."""
    ref = np.maximum(reference_shares, PSI_FLOOR)
    cur = np.maximum(current_shares, PSI_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def jensen_shannon(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in 0..1) of two share vectors over the same bins."""
    if reference_shares.sum() == 0 or current_shares.sum() == 0:
        return float("nan")
    return float(distance.jensenshannon(reference_shares, current_shares, base=2))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges: the reference's quantiles, deduplicated (outer bins are open-ended)."""
    if reference.size == 0:
        return np.array([])
    inner = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(inner)


def ks_and_wasserstein(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> tuple[float, float, float]:
    """KS statistic, its two-sided p-value, and the Wasserstein-1 distance, from sorted samples.

    One merge of the two sorted samples gives both empirical CDFs at every observed value: KS is
    their largest gap, Wasserstein the area between them; the same arithmetic as
    ``scipy.stats.ks_2samp`` and ``scipy.stats.wasserstein_distance``, without sorting each
    sample three times. The p-value is scipy's: exact up to 10,000 values a side (by calling
    ``ks_2samp``), Smirnov's asymptotic distribution above.
    """
    n, m = ref_sorted.size, cur_sorted.size
    merged = np.concatenate([ref_sorted, cur_sorted])
    merged.sort(kind="stable")  # two sorted runs: a merge
    ref_cdf = np.searchsorted(ref_sorted, merged, side="right") / n
    cur_cdf = np.searchsorted(cur_sorted, merged, side="right") / m
    gaps = ref_cdf - cur_cdf
    wasserstein = float(np.sum(np.abs(gaps[:-1]) * np.diff(merged)))
    if max(n, m) <= 10_000:
        test = stats.ks_2samp(ref_sorted, cur_sorted)
        return float(test.statistic), float(test.pvalue), wasserstein
    statistic = float(max(gaps.max(), np.clip(-gaps.min(), 0, 1)))
    big, small = sorted([float(n), float(m)], reverse=True)
    p_value = float(np.clip(stats.kstwo.sf(statistic, np.round(big * small / (big + small))), 0, 1))
    return statistic, p_value, wasserstein


def sorted_binned_shares(values_sorted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """:func:`binned_shares` for sorted values: one binary search per edge instead of per value."""
    cumulative = np.concatenate([[0], np.searchsorted(values_sorted, edges, side="right"), [values_sorted.size]])
    counts = np.diff(cumulative)
    return counts / counts.sum() if counts.sum() else counts.astype("float64")


def binned_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the bins (-inf, e1], (e1, e2], ..., (ek, inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / counts.sum() if counts.sum() else counts.astype("float64")


def decide(rule: DriftThresholds, smaller_side: int, p_value: float, alpha: float, distance_value: float,
           distance_threshold: float, distance_name: str, null_share_change: float) -> tuple[bool, str]:
    """The drift flag and what decided it: the test on small samples, the distance on large ones,
    and a large enough change in missing values in any case."""
    if abs(null_share_change) >= rule.null_share:
        return True, "null_share"
    if smaller_side <= rule.large_sample:
        return bool(p_value < alpha), "p_value"
    return bool(distance_value >= distance_threshold), distance_name


def _severity(value: float | None) -> str:
    if value is None or np.isnan(value) or value < 0.1:
        return "low"
    return "medium" if value < 0.25 else "high"


def numeric_drift(column: str, reference: pd.Series, current: pd.Series,
                  thresholds: DriftThresholds, alpha: float) -> ColumnDrift:
    ref, cur = _finite(reference), _finite(current)
    ref_null, cur_null = _null_share(reference, ref.size), _null_share(current, cur.size)
    if ref.size == 0 or cur.size == 0:
        return _untested(column, "numeric", ref.size, cur.size, ref_null, cur_null, thresholds)
    ref, cur = np.sort(ref), np.sort(cur)
    statistic, p_value, raw_distance = ks_and_wasserstein(ref, cur)
    spread = float(np.std(ref))
    normalised = raw_distance / spread if spread > 0 else (0.0 if raw_distance == 0 else float("inf"))
    edges = quantile_edges(ref, thresholds.bins)
    ref_shares, cur_shares = sorted_binned_shares(ref, edges), sorted_binned_shares(cur, edges)
    psi_value = psi(ref_shares, cur_shares)
    js = jensen_shannon(ref_shares, cur_shares)
    drift, decided = decide(thresholds, min(ref.size, cur.size), p_value, alpha,
                            normalised, thresholds.wasserstein, "wasserstein", cur_null - ref_null)
    return ColumnDrift(column, "numeric", "ks", statistic, p_value, psi_value,
                       normalised, js, decided, drift, _severity(psi_value), int(ref.size), int(cur.size),
                       ref_null, cur_null)


def category_counts(reference: pd.Series, current: pd.Series) -> tuple[list, np.ndarray, np.ndarray]:
    """Counts of every category seen on either side (nulls left out), aligned; reference ones first."""
    ref_counts = reference.dropna().astype(str).value_counts()
    cur_counts = current.dropna().astype(str).value_counts()
    categories = list(ref_counts.index) + sorted(set(cur_counts.index) - set(ref_counts.index))
    return (categories, ref_counts.reindex(categories, fill_value=0).to_numpy(dtype="float64"),
            cur_counts.reindex(categories, fill_value=0).to_numpy(dtype="float64"))


def categorical_drift(column: str, reference: pd.Series, current: pd.Series,
                      thresholds: DriftThresholds, alpha: float) -> ColumnDrift:
    categories, ref_counts, cur_counts = category_counts(reference, current)
    ref_n, cur_n = int(ref_counts.sum()), int(cur_counts.sum())
    ref_null, cur_null = _null_share(reference, ref_n), _null_share(current, cur_n)
    if ref_n == 0 or cur_n == 0:
        return _untested(column, "categorical", ref_n, cur_n, ref_null, cur_null, thresholds)
    if len(categories) < 2:
        statistic, p_value = 0.0, 1.0  # one category on both sides: nothing can differ
    else:
        statistic, p_value, _, _ = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
    ref_shares, cur_shares = ref_counts / ref_n, cur_counts / cur_n
    psi_value = psi(ref_shares, cur_shares)
    js = jensen_shannon(ref_shares, cur_shares)
    drift, decided = decide(thresholds, min(ref_n, cur_n), p_value, alpha,
                            js, thresholds.jensen_shannon, "jensen_shannon", cur_null - ref_null)
    return ColumnDrift(column, "categorical", "chi2", float(statistic), float(p_value), psi_value, None, js,
                       decided, drift, _severity(psi_value), ref_n, cur_n, ref_null, cur_null)


def _untested(column: str, kind: str, ref_n: int, cur_n: int, ref_null: float, cur_null: float,
              thresholds: DriftThresholds) -> ColumnDrift:
    moved = abs(cur_null - ref_null)
    return ColumnDrift(column, kind, "none", None, None, None, None, None, "null_share",
                       bool(moved >= thresholds.null_share), "high" if moved >= thresholds.null_share else "low",
                       ref_n, cur_n, ref_null, cur_null)


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    categorical: Iterable[str] | None = None,
    columns: Iterable[str] | None = None,
    thresholds: DriftThresholds | None = None,
    column_thresholds: Mapping[str, DriftThresholds | Mapping] | None = None,
    share_threshold: float = 0.5,
) -> DriftReport:
    """Drift of every column of ``current`` against ``reference``.

    Args:
        reference, current: frames with the columns to compare.
        categorical: numeric columns to treat as categories too (non-numeric ones always are).
        columns: the columns to compare (default: those in both frames).
        thresholds: the default rule (see :class:`DriftThresholds`).
        column_thresholds: per-column overrides, a DriftThresholds or a dict of its fields.
        share_threshold: share of drifted columns at which the dataset drifted (0.5 = half).

    Returns:
        A :class:`DriftReport`; ``.to_frame()`` has one row per column.
    """
    base = thresholds or DriftThresholds()
    names = list(columns) if columns is not None else [c for c in reference.columns if c in current.columns]
    if not names:
        raise KeyError(f"the reference and the current frame share no column (reference: {list(reference.columns)}, "
                       f"current: {list(current.columns)})")
    missing = [c for c in names if c not in reference.columns or c not in current.columns]
    if missing:
        raise KeyError(f"columns {missing} are not in both the reference and the current frame")
    # Non-numeric columns are categories whatever ``categorical`` says (a KS test cannot read
    # text); ``categorical`` adds numeric ones (codes, ids).
    categorical_set = {
        c for c in names if not pd.api.types.is_numeric_dtype(reference[c]) or pd.api.types.is_bool_dtype(reference[c])
    }
    if categorical is not None:
        categorical = list(categorical)
        unknown = [c for c in categorical if c not in names]
        if unknown:
            raise KeyError(f"categorical columns {unknown} are not compared (columns: {names})")
        categorical_set.update(categorical)
    compared = len(names) or 1  # Bonferroni over the columns compared
    report = DriftReport(share_threshold=share_threshold)
    for name in names:
        override = (column_thresholds or {}).get(name)
        rule = override if isinstance(override, DriftThresholds) else replace(base, **(override or {}))
        alpha = rule.alpha / compared
        compare = categorical_drift if name in categorical_set else numeric_drift
        report.columns.append(compare(name, reference[name], current[name], rule, alpha))
    return report
