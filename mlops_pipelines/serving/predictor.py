"""A registry model version, loaded once and scored row by row without pandas.

The training pipeline is ``ColumnTransformer(OrdinalEncoder on categoricals, passthrough on
numerics) -> HistGradientBoostingClassifier``. Scoring one row through it costs about 10 ms: a
one-row DataFrame through the ColumnTransformer, then one Python call (and one OpenMP region) per
tree, 300 trees. For that shape, serving instead (1) encodes the row with dictionaries into the
very float64 vector the ColumnTransformer builds and (2) walks all trees at once with numpy,
following the rules of scikit-learn's ``_predict_from_raw_data`` (missing values, categorical
bitsets, unknown categories as missing), then adds the leaf values to the baseline in tree order,
as scikit-learn does, so the probability is the same float (tested to equality). Any other model
shape is scored through its own ``predict_proba`` on a DataFrame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer


@dataclass
class _Encoding:
    """How the fitted pipeline turns one input row into the trees' float64 input vector.

    ``categorical``: (column, value -> code, code for missing or unknown values);
    ``numeric``: columns passed through. The vector is the categorical codes, then the numerics.
    """

    categorical: list[tuple[str, dict[Any, float], float]]
    numeric: list[str]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _inner_codes(classifier: Any, width: int) -> list[dict[float, float]] | None:
    """The classifier's own re-encoding of categorical codes (scikit-learn >= 1.6 keeps one when
    ``categorical_features`` is given): outer code -> inner code, unknown -> NaN. ``[]`` when the
    classifier has none; None when it is of a shape not handled here."""
    inner = getattr(classifier, "_preprocessor", None)
    if inner is None:
        return []
    (first, encoder, first_mask), (second, numeric, second_mask) = inner.transformers_[:2]
    mask = np.asarray(first_mask)
    # The re-encoded categoricals must be our leading columns, so the order stays as it is.
    if (first, second) != ("encoder", "numerical") or not mask[:width].all() or mask[width:].any():
        return None
    if not (np.isnan(encoder.unknown_value) and np.isnan(encoder.encoded_missing_value)):
        return None
    return [{float(value): float(i) for i, value in enumerate(categories)} for categories in encoder.categories_]


def _compile(pipeline: Any) -> _Encoding | None:
    """The encoding of a fitted tree pipeline, or None when the model is of another shape."""
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    prepare = pipeline.steps[0][1]
    transformers = getattr(prepare, "transformers_", None)
    if transformers is None:
        return None
    outer: list[tuple[str, dict[Any, float]]] = []
    numeric: list[str] = []
    for name, transformer, columns in transformers:
        if name == "remainder" and transformer == "drop":
            continue
        if name == "categorical" and not numeric:
            if (getattr(transformer, "unknown_value", None) != -1
                    or getattr(transformer, "encoded_missing_value", None) != -1):
                return None
            for column, categories in zip(columns, transformer.categories_, strict=True):
                codes = {value: float(i) for i, value in enumerate(categories) if not _is_missing(value)}
                outer.append((column, codes))
        elif name == "numeric" and (
            transformer == "passthrough"
            # A fitted "passthrough" is an identity FunctionTransformer.
            or (isinstance(transformer, FunctionTransformer) and transformer.func is None)
        ):
            numeric.extend(columns)
        else:
            return None
    inner = _inner_codes(pipeline.steps[-1][1], len(outer))
    if inner is None:
        return None
    categorical: list[tuple[str, dict[Any, float], float]] = []
    for position, (column, codes) in enumerate(outer):
        if not inner:
            categorical.append((column, codes, -1.0))
            continue
        remap = inner[position]
        categorical.append((
            column,
            {value: remap.get(code, math.nan) for value, code in codes.items()},
            remap.get(-1.0, math.nan),
        ))
    return _Encoding(categorical, numeric)


class _Forest:
    """All trees of a fitted binary HistGradientBoostingClassifier as flat arrays."""

    def __init__(self, classifier: HistGradientBoostingClassifier) -> None:
        trees = [iteration[0] for iteration in classifier._predictors]
        offsets = np.cumsum([0] + [len(t.nodes) for t in trees[:-1]])
        bitset_offsets = np.cumsum([0] + [len(t.raw_left_cat_bitsets) for t in trees[:-1]])
        nodes = np.concatenate([t.nodes for t in trees])
        repeat = np.repeat(np.arange(len(trees)), [len(t.nodes) for t in trees])
        self.roots = offsets.astype(np.intp)
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"].astype(np.float64)
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.left = (nodes["left"].astype(np.intp) + offsets[repeat]).astype(np.intp)
        self.right = (nodes["right"].astype(np.intp) + offsets[repeat]).astype(np.intp)
        self.leaf = nodes["is_leaf"].astype(bool)
        self.value = nodes["value"].astype(np.float64)
        self.categorical = nodes["is_categorical"].astype(bool)
        self.bitset = (nodes["bitset_idx"].astype(np.intp) + bitset_offsets[repeat]).astype(np.intp)
        raw = [t.raw_left_cat_bitsets for t in trees if len(t.raw_left_cat_bitsets)]
        self.left_bits = np.concatenate(raw).astype(np.int64) if raw else np.zeros((1, 8), np.int64)
        known, f_idx_map = classifier._bin_mapper.make_known_categories_bitsets()
        self.known_bits = known.astype(np.int64) if len(known) else np.zeros((1, 8), np.int64)
        self.f_idx_map = f_idx_map.astype(np.intp)
        self.baseline = float(classifier._baseline_prediction.ravel()[0])
        self.max_depth = max(t.get_max_depth() for t in trees)

    @staticmethod
    def supports(classifier: Any) -> bool:
        return (isinstance(classifier, HistGradientBoostingClassifier) and len(classifier.classes_) == 2
                and classifier.n_trees_per_iteration_ == 1)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The summed leaf values plus baseline for each row of ``x`` (rows x features, float64)."""
        rows = np.arange(x.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (x.shape[0], len(self.roots))).copy()
        for _ in range(self.max_depth + 1):
            leaf = self.leaf[node]
            if leaf.all():
                break
            value = x[rows, self.feature[node]]
            missing = np.isnan(value)
            missing_left = self.missing_left[node]
            go_left = value <= self.threshold[node]
            categorical = self.categorical[node] & ~missing
            if categorical.any():
                # scikit-learn casts the value to uint8 and looks it up in 8 x 32-bit bitsets.
                code = np.where(categorical & (value >= 0), value, 0).astype(np.int64) & 0xFF
                word, bit = code >> 5, code & 31
                in_left = (self.left_bits[self.bitset[node], word] >> bit) & 1
                known = (self.known_bits[self.f_idx_map[self.feature[node]], word] >> bit) & 1
                categorical_left = np.where(
                    value < 0, missing_left, np.where(in_left == 1, True, np.where(known == 1, False, missing_left))
                )
                go_left = np.where(categorical, categorical_left, go_left)
            go_left = np.where(missing, missing_left, go_left)
            node = np.where(leaf, node, np.where(go_left, self.left[node], self.right[node]))
        values = self.value[node]
        # Tree by tree from the baseline, as scikit-learn adds them: the same float in the end.
        if x.shape[0] > 16:
            out = np.full(x.shape[0], self.baseline)
            for tree in range(values.shape[1]):
                out += values[:, tree]
            return out
        out = np.empty(x.shape[0], dtype=np.float64)
        for r in range(x.shape[0]):
            total = self.baseline
            for v in values[r].tolist():
                total += v
            out[r] = total
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return expit(self.raw(x))


@dataclass
class LoadedModel:
    """One model version and what serving needs to know about it."""

    alias: str
    version: str
    run_id: str | None
    columns: list[str]
    required: list[str]
    model: Any
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    _encoding: _Encoding | None = None

    _forest: _Forest | None = None

    def __post_init__(self) -> None:
        encoding = _compile(self.model)
        if encoding is not None and _Forest.supports(self.model.steps[-1][1]):
            self._encoding, self._forest = encoding, _Forest(self.model.steps[-1][1])

    def check_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Raise ``KeyError`` naming the row and the column when a required input is absent."""
        for index, row in enumerate(rows):
            missing = [c for c in self.required if _is_missing(row.get(c))]
            if missing:
                raise KeyError(f"row {index}: required model input {missing} is missing")

    def vector(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The classifier's float64 input, exactly as the fitted ColumnTransformer builds it."""
        encoding = self._encoding
        assert encoding is not None
        width = len(encoding.categorical) + len(encoding.numeric)
        out = np.empty((len(rows), width), dtype=np.float64)
        for r, row in enumerate(rows):
            for c, (column, codes, missing) in enumerate(encoding.categorical):
                value = row.get(column)
                out[r, c] = missing if _is_missing(value) else codes.get(value, missing)
            offset = len(encoding.categorical)
            for c, column in enumerate(encoding.numeric):
                value = row.get(column)
                out[r, offset + c] = np.nan if value is None else float(value)
        return out

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Probability of the positive class for each row (model input dicts)."""
        self.check_rows(rows)
        if self._forest is not None:
            return self._forest.predict_proba(self.vector(rows))
        frame = pd.DataFrame([{c: row.get(c) for c in self.columns} for row in rows], columns=self.columns)
        return np.asarray(self.model.predict_proba(frame))[:, 1]
