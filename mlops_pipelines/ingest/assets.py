"""Raw assets: ``raw_flights`` by month and the four reference tables, written once to the lake."""


from pathlib import Path

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    MonthlyPartitionsDefinition,
    asset,
)

from mlops_pipelines.ingest.lake import LakeFile, RawLake
from mlops_pipelines.ingest.sources import (
    REFERENCE_TABLES,
    read_flights_month,
    read_reference_table,
)

monthly_partitions = MonthlyPartitionsDefinition(
    start_date="2013-01", end_date="2014-01", fmt="%Y-%m"
)


def _raw_metadata(stored: LakeFile, source: Path, data: pa.Table) -> dict[str, MetadataValue]:
    return {
        "dagster/row_count": MetadataValue.int(stored.num_rows),
        "content_sha256": MetadataValue.text(stored.sha256),
        "path": MetadataValue.path(str(stored.path)),
        "source_file": MetadataValue.path(str(source)),
        "newly_written": MetadataValue.bool(stored.written),
        "columns": MetadataValue.text(", ".join(data.column_names)),
    }


@asset(
    group_name="raw",
    partitions_def=monthly_partitions,
    kinds={"parquet"},
    description="One month of flights as delivered (every column as text), stored once, read-only.",
)
def raw_flights(context: AssetExecutionContext, raw_lake: RawLake) -> MaterializeResult:
    month = context.partition_key
    data, source = read_flights_month(raw_lake.landing_dir, month)
    stored = raw_lake.write("flights", data, partition=month)
    context.log.info(
        f"raw flights {month}: {stored.num_rows} rows from {source} -> {stored.path}"
        f" ({'written' if stored.written else 'unchanged, already in the lake'})"
    )
    return MaterializeResult(metadata=_raw_metadata(stored, source, data))


def _reference_asset(table: str) -> AssetsDefinition:
    @asset(
        name=f"raw_{table}",
        group_name="raw",
        kinds={"parquet"},
        description=f"The {table} table as delivered (every column as text), stored once, read-only.",
    )
    def _raw(context: AssetExecutionContext, raw_lake: RawLake) -> MaterializeResult:
        data, source = read_reference_table(raw_lake.landing_dir, table)
        stored = raw_lake.write(table, data)
        context.log.info(f"raw {table}: {stored.num_rows} rows from {source} -> {stored.path}")
        return MaterializeResult(metadata=_raw_metadata(stored, source, data))

    return _raw


raw_reference_assets: list[AssetsDefinition] = [_reference_asset(t) for t in REFERENCE_TABLES]
raw_assets = [raw_flights, *raw_reference_assets]
