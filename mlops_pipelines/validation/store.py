"""Publishing validation outcomes to the warehouse, idempotently per (table, partition).

``validated.<table>``: the rows that kept every rule, typed, with where they came from.
``validated.quarantine``: one record per (row, broken rule), with the raw row as JSON.
``validated.validation_status``: the latest outcome per (table, partition); downstream models read
it and refuse to run on a table whose latest delivery failed a table-level rule.
"""

from __future__ import annotations

import duckdb
import pandas as pd
from dagster import Failure

from mlops_pipelines.validation.contracts import DUCKDB_TYPES, TableContract
from mlops_pipelines.validation.runner import ValidationOutcome
from mlops_pipelines.warehouse import table_exists

SCHEMA = "validated"


def ensure_tables(connection: duckdb.DuckDBPyConnection, contract: TableContract) -> None:
    connection.execute(f"create schema if not exists {SCHEMA}")
    columns = ", ".join(f'"{c.name}" {DUCKDB_TYPES[c.type]}' for c in contract.columns)
    connection.execute(
        f"create table if not exists {SCHEMA}.{contract.table} ({columns}, "
        "_partition varchar not null, _source_file varchar not null, _source_row bigint not null)"
    )
    connection.execute(
        f"""create table if not exists {SCHEMA}.quarantine (
            table_name varchar, partition_key varchar, source_file varchar, row_number bigint,
            rule varchar, column_name varchar, reason varchar, value varchar, row_json varchar,
            dagster_run_id varchar)"""
    )
    connection.execute(
        f"""create table if not exists {SCHEMA}.validation_status (
            table_name varchar, partition_key varchar, passed boolean, rows_in bigint,
            rows_valid bigint, rows_quarantined bigint, failed_rules varchar, message varchar,
            source_file varchar, dagster_run_id varchar, validated_at timestamptz,
            primary key (table_name, partition_key))"""
    )


def publish(
    connection: duckdb.DuckDBPyConnection,
    contract: TableContract,
    outcome: ValidationOutcome,
    source_file: str,
    run_id: str,
) -> None:
    """Replace the partition's valid rows and quarantine when it passed; always record the status.

    A partition that failed a table-level rule publishes nothing: the rows of its last good
    delivery stay, and its status says it failed, which blocks every model built on it.
    """
    ensure_tables(connection, contract)
    partition = outcome.partition or ""
    connection.execute("begin transaction")
    try:
        if outcome.passed:
            valid = outcome.valid  # noqa: F841  (read by DuckDB's replacement scan)
            casts = ", ".join(
                f'cast(valid."{c.name}" as {DUCKDB_TYPES[c.type]})' for c in contract.columns
            )
            connection.execute(f"delete from {SCHEMA}.{contract.table} where _partition = ?", [partition])
            connection.execute(
                f"insert into {SCHEMA}.{contract.table} select {casts}, ?, ?, _source_row from valid",
                [partition, source_file],
            )
            connection.execute(
                f"delete from {SCHEMA}.quarantine where table_name = ? and partition_key = ?",
                [contract.table, partition],
            )
            if len(outcome.quarantine):
                quarantine = outcome.quarantine.assign(dagster_run_id=run_id)  # noqa: F841
                connection.execute(f"insert into {SCHEMA}.quarantine select * from quarantine")
        failed = ", ".join(f.rule for f in outcome.table_failures)
        connection.execute(
            f"insert or replace into {SCHEMA}.validation_status values "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [
                contract.table, partition, outcome.passed, outcome.rows_in,
                len(outcome.valid) if outcome.passed else 0, outcome.rows_quarantined, failed,
                outcome.summary(), source_file, run_id,
            ],
        )
        connection.execute("commit")
    except Exception:
        connection.execute("rollback")
        raise


def failing_partitions(connection: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame:
    """Partitions of ``table`` whose latest delivery failed a table-level rule (empty if none)."""
    if not table_exists(connection, SCHEMA, "validation_status"):
        return pd.DataFrame(columns=["partition_key", "failed_rules", "message"])
    return connection.execute(
        f"select partition_key, failed_rules, message from {SCHEMA}.validation_status "
        "where table_name = ? and not passed order by partition_key",
        [table],
    ).df()


def refuse_failed_validations(connection: duckdb.DuckDBPyConnection, tables: list[str], what: str) -> None:
    """Stop before building on a validated table whose latest delivery failed its contract."""
    for table in tables:
        failed = failing_partitions(connection, table)
        if len(failed):
            lines = "; ".join(failed["message"].tolist())
            raise Failure(
                description=f"{what} not built: validated.{table} has partitions that failed "
                f"their blocking check ({', '.join(failed['partition_key'].astype(str))}): {lines}",
            )
