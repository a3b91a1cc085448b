"""Ingestion jobs: flights month by month (partitioned), reference tables as a whole."""

from dagster import AssetSelection, build_schedule_from_partitioned_job, define_asset_job

from mlops_pipelines.ingest.assets import monthly_partitions
from mlops_pipelines.ingest.sources import REFERENCE_TABLES

ingest_flights_job = define_asset_job(
    "ingest_flights",
    selection=AssetSelection.assets("raw_flights", "validated_flights"),
    partitions_def=monthly_partitions,
    description="Store one month of flights in the raw lake and validate it.",
)

ingest_reference_job = define_asset_job(
    "ingest_reference",
    selection=AssetSelection.assets(
        *(f"raw_{t}" for t in REFERENCE_TABLES), *(f"validated_{t}" for t in REFERENCE_TABLES)
    ),
    description="Store and validate weather, planes, airports and airlines.",
)

# On the 2nd of each month at 02:00 New York time, ingest the month that just ended.
monthly_ingestion_schedule = build_schedule_from_partitioned_job(
    ingest_flights_job, day_of_month=2, hour_of_day=2, name="monthly_ingestion"
)
