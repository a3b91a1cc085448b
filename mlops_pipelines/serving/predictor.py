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


def _finite_number(value: Any) -> bool:
    """A number a numeric input can take (NaN, missing, is checked before): not text, a boolean,
    an infinity or an integer beyond a double."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


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
    """All trees of a fitted binary HistGradientBoostingClassifier as flat arrays, walked together.

    Each step moves every tree one level down with a handful of numpy operations:
    - numeric splits read the row through ``x2 = [x with NaN -> +inf, x with NaN -> -inf]`` at a
      per-node column (``+inf`` for nodes sending missing values right, ``-inf`` for left), so
      ``value <= threshold`` alone sends a missing value the way scikit-learn does;
    - categorical splits look up a per-node table of 257 directions (256 category codes, then
      "missing, negative or out of range"), built from the node's bitset, the known categories and
      its missing-value direction;
    - leaves point at themselves, so a tree that has arrived stays put.
    """

    MISSING_CODE = 256

    def __init__(self, classifier: HistGradientBoostingClassifier) -> None:
        trees = [iteration[0] for iteration in classifier._predictors]
        sizes = [len(t.nodes) for t in trees]
        offsets = np.cumsum([0] + sizes[:-1]).astype(np.intp)
        bitset_offsets = np.cumsum([0] + [len(t.raw_left_cat_bitsets) for t in trees[:-1]]).astype(np.intp)
        nodes = np.concatenate([t.nodes for t in trees])
        owner = np.repeat(np.arange(len(trees)), sizes)
        index = np.arange(len(nodes), dtype=np.intp)
        leaf = nodes["is_leaf"].astype(bool)
        left = np.where(leaf, index, nodes["left"].astype(np.intp) + offsets[owner])
        right = np.where(leaf, index, nodes["right"].astype(np.intp) + offsets[owner])
        # children[node, go_left]: row 0 = right child, row 1 = left child.
        self.children = np.stack([right, left], axis=1)
        self.children_flat = self.children.ravel()  # [2 * node + go_left]
        self.is_leaf = leaf
        self.n_features = int(classifier._bin_mapper.n_bins_non_missing_.shape[0])
        feature = nodes["feature_idx"].astype(np.intp)
        missing_left = nodes["missing_go_to_left"].astype(bool)
        self.feature = feature
        self.numeric_column = feature + missing_left * self.n_features
        self.threshold = np.where(leaf, np.inf, nodes["num_threshold"].astype(np.float64))
        self.roots = offsets
        self.value = nodes["value"].astype(np.float64)
        categorical = nodes["is_categorical"].astype(bool) & ~leaf
        self.categorical = categorical
        self.has_categorical = bool(categorical.any())
        # One direction table per categorical node (row 0 unused, for numeric nodes).
        self.table_row = np.zeros(len(nodes), dtype=np.intp)
        rows = np.flatnonzero(categorical)
        self.table_row[rows] = np.arange(1, len(rows) + 1)
        table = np.zeros((len(rows) + 1, self.MISSING_CODE + 1), dtype=bool)
        if len(rows):
            raw = np.concatenate([t.raw_left_cat_bitsets for t in trees if len(t.raw_left_cat_bitsets)])
            known, f_idx_map = classifier._bin_mapper.make_known_categories_bitsets()
            codes = np.arange(self.MISSING_CODE)
            bit = lambda bits: ((bits[:, codes >> 5] >> (codes & 31)) & 1).astype(bool)  # noqa: E731
            in_left = bit(raw.astype(np.int64)[nodes["bitset_idx"][rows].astype(np.intp) + bitset_offsets[owner[rows]]])
            is_known = bit(known.astype(np.int64)[f_idx_map.astype(np.intp)[feature[rows]]])
            missing = missing_left[rows][:, None]
            # scikit-learn: in the left bitset -> left; else known -> right; else (unknown) as missing.
            table[1:, :self.MISSING_CODE] = np.where(in_left, True, np.where(is_known, False, missing))
            table[1:, self.MISSING_CODE] = missing_left[rows]
        self.table = table
        # For the one-row walk: categorical nodes never pass the numeric test (threshold -inf on
        # the NaN -> +inf column), numeric nodes read row 0 of the table (all False), so one
        # expression "numeric test OR table lookup" decides every node without a branch.
        self.table_flat = table.ravel()
        self.table_base = self.table_row * (self.MISSING_CODE + 1)
        self.one_row_column = np.where(categorical, feature, self.numeric_column)
        self.one_row_threshold = np.where(categorical, -np.inf, self.threshold)
        self.baseline = float(classifier._baseline_prediction.ravel()[0])
        self.max_depth = max(t.get_max_depth() for t in trees)

    @staticmethod
    def supports(classifier: Any) -> bool:
        return (isinstance(classifier, HistGradientBoostingClassifier) and len(classifier.classes_) == 2
                and classifier.n_trees_per_iteration_ == 1)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The summed leaf values plus baseline for each row of ``x`` (rows x features, float64)."""
        n = x.shape[0]
        if x.shape[1] != self.n_features:
            raise ValueError(f"the trees read {self.n_features} columns, the row has {x.shape[1]}")
        missing = np.isnan(x)
        x2 = np.concatenate([x, x], axis=1)
        x2[:, :self.n_features][missing] = np.inf
        x2[:, self.n_features:][missing] = -np.inf
        rows = np.arange(n)[:, None]
        if self.has_categorical:
            # scikit-learn casts a category value to uint8; NaN and negatives read as missing.
            usable = np.isfinite(x) & (x >= 0)
            codes = np.where(usable, np.where(usable, x, 0).astype(np.int64) & 0xFF, self.MISSING_CODE)
        if n == 1:
            node = self._walk_one(x2[0], codes[0] if self.has_categorical else None)[None, :]
        else:
            node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
            for _ in range(self.max_depth):
                go_left = x2[rows, self.numeric_column[node]] <= self.threshold[node]
                if self.has_categorical:
                    table_row = self.table_row[node]
                    on_categorical = table_row > 0
                    if on_categorical.any():
                        split = self.table[table_row, codes[rows, self.feature[node]]]
                        go_left = np.where(on_categorical, split, go_left)
                node = self.children[node, go_left.astype(np.intp)]
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

    def _walk_one(self, x2: np.ndarray, codes: np.ndarray | None) -> np.ndarray:
        """The leaf of every tree for one row: the same rules with 1-D ``take`` (the serving case,
        where numpy's per-call overhead is most of the cost)."""
        node = self.roots
        for step in range(self.max_depth):
            go_left = x2.take(self.one_row_column.take(node)) <= self.one_row_threshold.take(node)
            if codes is not None:
                go_left |= self.table_flat.take(self.table_base.take(node) + codes.take(self.feature.take(node)))
            node = self.children_flat.take(2 * node + go_left)
            if step % 4 == 3 and self.is_leaf.take(node).all():
                break
        return node

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

    def check_rows(self, rows: Sequence[Mapping[str, Any]], strict: bool = False) -> None:
        """Raise ``KeyError`` naming the row and the column when a required input is absent;
        ``strict`` (rows a caller built): also for a value of the wrong kind (text or a boolean for
        a number, an infinite one, a number for a category), which the model would read otherwise
        or fail on. NaN is a missing value, as JSON writers give one; keys that are no input are
        the caller's own and ignored."""
        known = set(self.columns)
        numeric = set(self._encoding.numeric) if self._encoding is not None else set()
        categorical = {c for c, _, _ in self._encoding.categorical} if self._encoding is not None else set()
        for index, row in enumerate(rows):
            missing = [c for c in self.required if _is_missing(row.get(c))]
            if missing:
                raise KeyError(f"row {index}: required model input {missing} is missing")
            if not strict:
                continue
            for column, value in row.items():
                if _is_missing(value) or column not in known:  # (other keys are the caller's own: ignored)
                    continue
                if column in numeric and not _finite_number(value):
                    raise KeyError(f"row {index}: model input {column!r} is a finite number or null, not {value!r}")
                if column in categorical and not isinstance(value, str):
                    raise KeyError(f"row {index}: model input {column!r} is text or null, not {value!r}")

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
