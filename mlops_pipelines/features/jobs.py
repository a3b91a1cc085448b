"""Rebuild every SQL model (staging, intermediate, feature views) of dbt_like_sql/."""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    ScheduleDefinition,
    define_asset_job,
)

build_features_job = define_asset_job(
    "build_features",
    selection=AssetSelection.groups("staging", "intermediate", "features"),
    description="Run every SQL model in DuckDB, in ref() order, with its column tests.",
)

features_schedule = ScheduleDefinition(
    name="features_after_ingestion",
    job=build_features_job,
    cron_schedule="0 4 2 * *",
    execution_timezone="America/New_York",
    description="Two hours after the monthly ingestion.",
)

online_features_sensor = AutomationConditionSensorDefinition(
    "online_features_after_feature_views",
    target=AssetSelection.assets("online_features"),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Refreshes the online store when a feature view was materialized outside build_features "
    "(whose runs refresh it themselves), once its blocking checks pass.",
)
