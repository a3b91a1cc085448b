"""Errors of the feature store that callers tell apart by their type rather than their text."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlops_pipelines.numpy_sort import SlowSortWarning

_PACKAGE = Path(__file__).resolve().parents[1]  # (mlops_pipelines/)


def outside_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the function calling this that names the
    first line outside this package (the user's), however deep the package's calls go."""
    frame, level = sys._getframe(1), 1
    while frame is not None and Path(frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


class EntityRowError(ValueError):
    """A value in one row of the entity rows breaks a rule: the message names the column, the
    row (by the caller's label: a frame's index) and the rule. ``str()`` calls it "row <label>";
    :meth:`naming_rows` words it otherwise (the CLI names a CSV file's rows by their line)."""

    def __init__(self, before: str, row: object, after: str) -> None:
        # ("{before}row {row}{after}": ``before`` ends with the space or bracket before the word)
        self.before, self.row, self.after = before, row, after
        super().__init__(self.naming_rows("row"))

    def naming_rows(self, word: str) -> str:
        return f"{self.before}{word} {self.row}{self.after}"

    def __reduce__(self) -> tuple:  # (copied and pickled whole: multiprocessing, joblib)
        return type(self), (self.before, self.row, self.after)


class MissingTimestampColumn(KeyError):
    """The entity rows have no column of the timestamp asked for (``column``)."""

    def __init__(self, message: str, column: str) -> None:
        super().__init__(message)
        self.column = column

    def __reduce__(self) -> tuple:
        return type(self), (self.args[0], self.column)


class FeatureNameCollision(ValueError):
    """Requested features would make one output column, or one an entity column has: ``str()``
    advises the Python argument (``full_feature_names=True``); :meth:`advising` another way to
    ask for full names (the CLI's flag)."""

    def __init__(self, before: str, after: str = "") -> None:
        self.before, self.after = before, after
        super().__init__(self.advising("full_feature_names=True"))

    def advising(self, full_names: str) -> str:
        return f"{self.before}{full_names}{self.after}"

    def __reduce__(self) -> tuple:
        return type(self), (self.before, self.after)


class DeclarationNotBuiltWarning(UserWarning):
    """A view of the SQL project was declared otherwise (its YAML or SQL edited) than its table
    was built, as the warehouse's registry records it."""


class FeatureTypeWarning(UserWarning):
    """A feature of a view registered from Python has the type ``float`` (the default) over a
    column that is no number: it is served as its column is (apply() refuses such a view)."""


class PreparedCopyStaleWarning(UserWarning):
    """A view's prepared copy is not of its files, declaration or the connection's DuckDB settings
    (or DuckDB's or Arrow's version) as they are now, or cannot be read: the view was read from
    its source (the same rows, without the copy's speed) until it is prepared again."""


# The store's warnings, shown every time they are raised: as notes by the CLI, in the run's log
# by Dagster assets (see store_warnings_told).
STORE_WARNINGS: tuple[type[Warning], ...] = (DeclarationNotBuiltWarning, FeatureTypeWarning, SlowSortWarning,
                                            PreparedCopyStaleWarning)


@contextmanager
def store_warnings_told(tell: Callable[[warnings.WarningMessage], None]) -> Iterator[None]:
    """Each of the project's warnings raised in the block passed to ``tell`` (every time, as it is
    raised; a CLI's note, a run's log) once the block ends, however it ends; other libraries'
    warnings shown as Python's own filters say."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            for category in STORE_WARNINGS:
                warnings.simplefilter("always", category)
            yield
    finally:  # (out of catch_warnings: there, showing a warning would record it again)
        for warning in caught:
            if warning.category.__module__.startswith("mlops_pipelines."):
                tell(warning)
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
