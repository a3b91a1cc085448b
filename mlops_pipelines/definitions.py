"""The Dagster Definitions: the lifecycle's assets, checks, jobs, schedules and resources."""

from dagster import Definitions

from mlops_pipelines.features.assets import build_sql_assets, online_features_asset
from mlops_pipelines.features.jobs import build_features_job, features_schedule, online_features_sensor
from mlops_pipelines.ingest.assets import raw_assets
from mlops_pipelines.ingest.jobs import (
    ingest_flights_job,
    ingest_reference_job,
    monthly_ingestion_schedule,
)
from mlops_pipelines.monitoring.assets import drift_report_job, monitoring_assets
from mlops_pipelines.monitoring.sensors import drift_sensor
from mlops_pipelines.paths import ProjectPaths
from mlops_pipelines.resources import build_resources
from mlops_pipelines.serving.assets import prediction_log_sensor, progressive_delivery_job, serving_assets
from mlops_pipelines.training.assets import training_assets
from mlops_pipelines.training.jobs import training_job, training_schedule
from mlops_pipelines.validation.assets import validated_assets


def build_definitions(paths: ProjectPaths | None = None) -> Definitions:
    """The whole lifecycle, its resources pointed at ``paths`` (default: $MLOPS_DATA_DIR or ./data)."""
    return Definitions(
        assets=[
            *raw_assets, *validated_assets, *build_sql_assets(), online_features_asset(), *training_assets,
            *monitoring_assets, *serving_assets,
        ],
        jobs=[ingest_flights_job, ingest_reference_job, build_features_job, training_job, drift_report_job,
              progressive_delivery_job],
        schedules=[monthly_ingestion_schedule, features_schedule, training_schedule],
        sensors=[drift_sensor, prediction_log_sensor, online_features_sensor],
        resources=build_resources(paths),
    )


defs = build_definitions()
