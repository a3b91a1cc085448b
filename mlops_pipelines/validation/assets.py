"""Validated assets: each raw table through its Great Expectations contract into the warehouse.

Every validated asset carries two checks: ``table_contract`` (blocking, ERROR) fails when a
table-level rule breaks, which fails the run and stops everything downstream; ``row_rules``
(WARN) reports the rows sent to quarantine without stopping anything.
"""


from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from mlops_pipelines.ingest.assets import monthly_partitions
from mlops_pipelines.ingest.lake import RawLake
from mlops_pipelines.ingest.sources import REFERENCE_TABLES
from mlops_pipelines.validation.contracts import CONTRACTS
from mlops_pipelines.validation.runner import ValidationOutcome, validate_table
from mlops_pipelines.validation.store import publish
from mlops_pipelines.warehouse import WAREHOUSE_POOL, DuckDBWarehouse


class ValidationConfig(Config):
    max_error_rate: float | None = Field(
        default=None,
        description="Largest share of rows that may be quarantined before the partition is "
        "refused (0.05 = 5%). Unset: the table contract's own threshold.",
    )


def _markdown_counts(counts: dict[str, int]) -> str:
    if not counts:
        return "No row was quarantined."
    rows = "\n".join(f"| {rule} | {count} |" for rule, count in sorted(counts.items()))
    return f"| rule | rows |\n|---|---|\n{rows}"


def _results(outcome: ValidationOutcome, table: str, published: bool) -> MaterializeResult:
    by_rule = outcome.quarantined_by_rule()
    failures_md = "\n".join(f"- **{f.rule}** ({f.count}): {f.message}" for f in outcome.table_failures)
    metadata = {
        "dagster/row_count": MetadataValue.int(len(outcome.valid) if published else 0),
        "rows_in": MetadataValue.int(outcome.rows_in),
        "rows_quarantined": MetadataValue.int(outcome.rows_quarantined),
        "error_rate": MetadataValue.float(round(outcome.error_rate, 6)),
        "published": MetadataValue.bool(published),
        "quarantined_by_rule": MetadataValue.md(_markdown_counts(by_rule)),
    }
    contract_check = AssetCheckResult(
        check_name="table_contract",
        passed=outcome.passed,
        severity=AssetCheckSeverity.ERROR,
        description=outcome.summary(),
        metadata={
            "failed_rules": MetadataValue.text(", ".join(f.rule for f in outcome.table_failures) or "none"),
            "failures": MetadataValue.md(failures_md or "All table-level rules held."),
        },
    )
    row_check = AssetCheckResult(
        check_name="row_rules",
        passed=outcome.rows_quarantined == 0,
        severity=AssetCheckSeverity.WARN,
        description=f"{outcome.rows_quarantined} of {outcome.rows_in} rows of {table} quarantined",
        metadata={
            "rows_quarantined": MetadataValue.int(outcome.rows_quarantined),
            **{f"quarantined/{rule}": MetadataValue.int(n) for rule, n in by_rule.items()},
        },
    )
    return MaterializeResult(metadata=metadata, check_results=[contract_check, row_check])


def _check_specs(asset_name: str) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            "table_contract",
            asset=asset_name,
            blocking=True,
            description="Schema, emptiness, null shares and the quarantine rate are within the contract.",
        ),
        AssetCheckSpec(
            "row_rules", asset=asset_name, description="No row broke a row-level rule."
        ),
    ]


def _validate_and_publish(
    context: AssetExecutionContext,
    table: str,
    partition: str | None,
    config: ValidationConfig,
    raw_lake: RawLake,
    warehouse: DuckDBWarehouse,
) -> MaterializeResult:
    contract = CONTRACTS[table]
    raw, path = raw_lake.read(table, partition)
    outcome = validate_table(raw, contract, partition, str(path), config.max_error_rate)
    with warehouse.connect() as connection:
        publish(connection, contract, outcome, str(path), context.run.run_id)
    if outcome.passed:
        context.log.info(outcome.summary())
    else:
        context.log.error(outcome.summary())
    return _results(outcome, table, published=outcome.passed)


@asset(
    group_name="validated",
    partitions_def=monthly_partitions,
    deps=["raw_flights"],
    check_specs=_check_specs("validated_flights"),
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "great_expectations"},
    description="Flights of one month that kept every rule, in validated.flights; the rest in "
    "validated.quarantine with the rule and the reason.",
)
def validated_flights(
    context: AssetExecutionContext,
    config: ValidationConfig,
    raw_lake: RawLake,
    warehouse: DuckDBWarehouse,
) -> MaterializeResult:
    return _validate_and_publish(context, "flights", context.partition_key, config, raw_lake, warehouse)


def _validated_reference(table: str) -> AssetsDefinition:
    name = f"validated_{table}"

    @asset(
        name=name,
        group_name="validated",
        deps=[f"raw_{table}"],
        check_specs=_check_specs(name),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "great_expectations"},
        description=f"The {table} rows that kept every rule, in validated.{table}.",
    )
    def _validated(
        context: AssetExecutionContext,
        config: ValidationConfig,
        raw_lake: RawLake,
        warehouse: DuckDBWarehouse,
    ) -> MaterializeResult:
        return _validate_and_publish(context, table, None, config, raw_lake, warehouse)

    return _validated


validated_assets = [validated_flights, *(_validated_reference(t) for t in REFERENCE_TABLES)]
