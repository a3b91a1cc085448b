"""The project's resources, each pointed at the data folder (``$MLOPS_DATA_DIR`` or ./data)."""

from __future__ import annotations

import os

from mlops_pipelines.features.resource import FeatureStoreResource
from mlops_pipelines.ingest.lake import RawLake
from mlops_pipelines.paths import ProjectPaths
from mlops_pipelines.serving.assets import ServingFiles
from mlops_pipelines.training.registry import MLflowRegistry
from mlops_pipelines.warehouse import DuckDBWarehouse


def build_resources(paths: ProjectPaths | None = None) -> dict[str, object]:
    """Resources for a data folder. Paths only: nothing is created or opened here.

    ``MLFLOW_TRACKING_URI``, when set, points tracking and registry at a server instead of the
    SQLite file under the data folder.
    """
    paths = paths or ProjectPaths.from_env()
    return {
        "raw_lake": RawLake(data_dir=str(paths.data_dir)),
        "warehouse": DuckDBWarehouse(database_path=str(paths.warehouse_path)),
        "feature_store": FeatureStoreResource(
            database_path=str(paths.warehouse_path), online_path=str(paths.online_store_path)
        ),
        "mlflow_registry": MLflowRegistry(
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or paths.mlflow_tracking_uri,
            artifact_location=str(paths.mlflow_artifacts_dir),
        ),
        "serving_files": ServingFiles(
            prediction_log_dir=str(paths.prediction_log_dir), deployment_outbox=str(paths.deployment_outbox)
        ),
    }
