"""The feature store as a Dagster resource: the DuckDB offline store and the SQLite online store."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import ConfigurableResource
from pydantic import Field

from mlops_pipelines.features.errors import STORE_WARNINGS
from mlops_pipelines.features.sql_project import SqlProject
from mlops_pipelines.features.store import FeatureStore
from mlops_pipelines.numpy_sort import SlowSortWarning


class FeatureStoreResource(ConfigurableResource):
    """Feature views of dbt_like_sql/ over the warehouse, with the online store beside it."""

    database_path: str = Field(description="The DuckDB warehouse holding the feature views.")
    online_path: str = Field(description="The SQLite file of the online store (WAL mode).")

    def store(self, project: SqlProject | None = None) -> FeatureStore:
        """The store with the feature views of ``project`` (default: dbt_like_sql/)."""
        views = (project or SqlProject()).feature_views().values()
        return FeatureStore(self.database_path, views, online_path=self.online_path)


@contextmanager
def store_warnings_logged(log: logging.Logger | logging.LoggerAdapter) -> Iterator[None]:
    """The project's warnings raised in the block (a view declared otherwise than built, a
    feature's type) as warnings of the run's log (``context.log``): Python's own would reach
    neither the run's events nor its compute logs. Others' warnings go on as they would."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            for category in (*STORE_WARNINGS, SlowSortWarning):
                warnings.simplefilter("always", category)  # (every time: each run's log is read alone)
            yield
    finally:  # (out of catch_warnings: there, showing a warning would record it again)
        for warning in caught:
            if warning.category.__module__.startswith("mlops_pipelines."):
                log.warning(f"{warning.category.__name__}: {warning.message}")
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
