"""The feature store as a Dagster resource: the DuckDB offline store and the SQLite online store."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

from dagster import ConfigurableResource
from pydantic import Field

from mlops_pipelines.features.errors import store_warnings_told
from mlops_pipelines.features.sql_project import SqlProject
from mlops_pipelines.features.store import FeatureStore


class FeatureStoreResource(ConfigurableResource):
    """Feature views of dbt_like_sql/ over the warehouse, with the online store beside it."""

    database_path: str = Field(description="The DuckDB warehouse holding the feature views.")
    online_path: str = Field(description="The SQLite file of the online store (WAL mode).")

    def store(self, project: SqlProject | None = None) -> FeatureStore:
        """The store with the feature views of ``project`` (default: dbt_like_sql/)."""
        views = (project or SqlProject()).feature_views().values()
        return FeatureStore(self.database_path, views, online_path=self.online_path)


def store_warnings_logged(log: logging.Logger | logging.LoggerAdapter) -> AbstractContextManager[None]:
    """The project's warnings raised in the block (a view declared otherwise than built, a
    feature's type) as warnings of the run's log (``context.log``): Python's own would reach
    neither the run's events nor its compute logs. Others' warnings go on as they would."""
    return store_warnings_told(lambda warning: log.warning(f"{warning.category.__name__}: {warning.message}"))
