"""Rebuild every SQL model (staging, intermediate, feature views) of dbt_like_sql/."""

from dagster import AssetSelection, ScheduleDefinition, define_asset_job

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
