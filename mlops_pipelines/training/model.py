"""The model and its scores: a seeded scikit-learn pipeline, metrics, and time-based splits.

Pure functions over frames; the Dagster assets do the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

LOCAL_TIMEZONE = "America/New_York"


@dataclass(frozen=True)
class TimeSplit:
    """Train on scheduled departures in [train_start, train_end) local months, score on the rest.

    Months are ``YYYY-MM`` in New York local time, as the ingestion partitions are.
    """

    train_start: str = "2013-01"
    train_end: str = "2013-10"
    holdout_end: str = "2014-01"

    def boundary(self, month: str) -> pd.Timestamp:
        return pd.Timestamp(f"{month}-01").tz_localize(LOCAL_TIMEZONE).tz_convert("UTC")

    def split(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Training rows (whose label was known before the holdout began) and holdout rows."""
        start, cut, end = (self.boundary(m) for m in (self.train_start, self.train_end, self.holdout_end))
        departure = frame["sched_dep_utc"]
        train = frame[(departure >= start) & (departure < cut) & (frame["label_known_at"] < cut)]
        holdout = frame[(departure >= cut) & (departure < end)]
        return train, holdout

    @staticmethod
    def month_before(month: str) -> str:
        return (pd.Period(month, freq="M") - 1).strftime("%Y-%m")

    @staticmethod
    def month_after(month: str) -> str:
        return (pd.Period(month, freq="M") + 1).strftime("%Y-%m")

    @property
    def train_window(self) -> str:
        """Inclusive months, e.g. ``2013-01..2013-09``."""
        return f"{self.train_start}..{self.month_before(self.train_end)}"

    @property
    def holdout_window(self) -> str:
        return f"{self.train_end}..{self.month_before(self.holdout_end)}"

    def folds(self, holdout: pd.DataFrame) -> pd.Series:
        """The local month (``YYYY-MM``) of each holdout row: the folds of the stability gate."""
        return holdout["sched_dep_utc"].dt.tz_convert(LOCAL_TIMEZONE).dt.strftime("%Y-%m")


@dataclass(frozen=True)
class ModelParams:
    """Hyper-parameters of the gradient-boosted trees (scikit-learn's HistGradientBoosting)."""

    max_iter: int = 300
    learning_rate: float = 0.08
    max_leaf_nodes: int = 31
    l2_regularization: float = 1.0
    seed: int = 42


def build_pipeline(columns: dict[str, str], params: ModelParams) -> Pipeline:
    """Ordinal-encode categoricals (unknown and missing as -1, which the trees read as missing),
    pass numerics through, and fit gradient-boosted trees with native categorical splits."""
    categorical = [c for c, kind in columns.items() if kind == "str"]
    numeric = [c for c, kind in columns.items() if kind != "str"]
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1,
        dtype=np.float64,
    )
    prepare = ColumnTransformer(
        [("categorical", encoder, categorical), ("numeric", "passthrough", numeric)],
        verbose_feature_names_out=False,
    )
    classifier = HistGradientBoostingClassifier(
        max_iter=params.max_iter,
        learning_rate=params.learning_rate,
        max_leaf_nodes=params.max_leaf_nodes,
        l2_regularization=params.l2_regularization,
        categorical_features=list(range(len(categorical))),
        # Early stopping would draw a random validation split; the number of trees is fixed instead.
        early_stopping=False,
        random_state=params.seed,
    )
    return Pipeline([("prepare", prepare), ("classifier", classifier)])


def score(labels: pd.Series | np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier score, and precision/recall at ``threshold``."""
    labels = np.asarray(labels)
    predicted = (probabilities >= threshold).astype(int)
    both_classes = len(np.unique(labels)) == 2
    return {
        "roc_auc": float(roc_auc_score(labels, probabilities)) if both_classes else float("nan"),
        "pr_auc": float(average_precision_score(labels, probabilities)) if both_classes else float("nan"),
        "log_loss": float(log_loss(labels, probabilities, labels=[0, 1])),
        "brier": float(brier_score_loss(labels, probabilities)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "positive_rate": float(labels.mean()) if len(labels) else float("nan"),
        "rows": float(len(labels)),
    }


def fold_auc(labels: pd.Series, probabilities: np.ndarray, folds: pd.Series) -> dict[str, float]:
    """ROC AUC per fold (fold label -> AUC)."""
    frame = pd.DataFrame({"y": np.asarray(labels), "p": probabilities, "fold": np.asarray(folds)})
    return {
        str(fold): float(roc_auc_score(part["y"], part["p"]))
        for fold, part in frame.groupby("fold", sort=True)
        if part["y"].nunique() == 2
    }
