"""Where everything the pipeline generates lives: one data folder, resolved at call time.

Nothing here touches the disk: callers create folders when they first write into them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "MLOPS_DATA_DIR"


def default_data_dir() -> Path:
    """The data folder: ``$MLOPS_DATA_DIR`` if set, else ``./data`` under the working directory."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.cwd() / "data").resolve()


@dataclass(frozen=True)
class ProjectPaths:
    """The layout of a data folder (see README, "What lands where")."""

    data_dir: Path

    @classmethod
    def from_env(cls) -> ProjectPaths:
        return cls(default_data_dir())

    @property
    def landing_dir(self) -> Path:
        """Files a user drops in to replace the bundled source (e.g. ``flights/2013-05.csv``)."""
        return self.data_dir / "landing"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "lake" / "raw"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def online_store_path(self) -> Path:
        return self.data_dir / "online_store.sqlite"

    @property
    def mlflow_db_path(self) -> Path:
        return self.data_dir / "mlflow.db"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db_path}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.data_dir / "mlartifacts"

    @property
    def prediction_log_dir(self) -> Path:
        """Parquet files of every answer ``mlops serve`` gave (written by the serving process)."""
        return self.data_dir / "prediction_log"

    @property
    def deployment_outbox(self) -> Path:
        """Deployment events waiting to be copied into the promotion ledger."""
        return self.data_dir / "serving" / "deployment_events.jsonl"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"
