"""Append-only records in the warehouse: gate decisions and the promotion ledger.

Both are keyed by the Dagster run that made the decision: re-running a run's step replaces that
run's rows instead of duplicating them; a new run appends.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from mlops_pipelines.training.gates import GateDecision

SCHEMA = "governance"


@dataclass(frozen=True)
class PromotionRecord:
    dagster_run_id: str
    model_name: str
    challenger_version: str
    champion_before: str | None
    champion_after: str | None
    decision: str  # promoted | refused | unchanged | deployed | ramped | rolled_back | concluded
    reason: str
    challenger_roc_auc: float | None
    champion_roc_auc: float | None
    strategy: str | None = None
    """Deployment strategy the step belongs to (single, shadow, canary, ab), when it is one."""
    share: float | None = None
    """Challenger's traffic share after the step."""
    statistics: str | None = None
    """JSON of the numbers behind a deployment decision (counts, rates, test statistics)."""


def _ensure(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(f"create schema if not exists {SCHEMA}")
    connection.execute(
        f"""create table if not exists {SCHEMA}.gate_decisions (
            dagster_run_id varchar, model_name varchar, challenger_version varchar,
            champion_version varchar, gate varchar, passed boolean, value double,
            threshold double, reason varchar, decided_at timestamptz)"""
    )
    connection.execute(
        f"""create table if not exists {SCHEMA}.promotion_ledger (
            dagster_run_id varchar, model_name varchar, challenger_version varchar,
            champion_before varchar, champion_after varchar, decision varchar, reason varchar,
            challenger_roc_auc double, champion_roc_auc double, decided_at timestamptz)"""
    )
    # Deployment steps (serving) share the ledger; older warehouses gain the columns in place.
    for column, kind in (("strategy", "varchar"), ("share", "double"), ("statistics", "varchar")):
        connection.execute(f"alter table {SCHEMA}.promotion_ledger add column if not exists {column} {kind}")


def record_gates(
    connection: duckdb.DuckDBPyConnection,
    run_id: str,
    model_name: str,
    challenger_version: str,
    champion_version: str | None,
    decisions: list[GateDecision],
) -> None:
    _ensure(connection)
    connection.execute(f"delete from {SCHEMA}.gate_decisions where dagster_run_id = ?", [run_id])
    for d in decisions:
        connection.execute(
            f"insert into {SCHEMA}.gate_decisions values (?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [run_id, model_name, challenger_version, champion_version, d.gate, d.passed, d.value,
             d.threshold, d.reason],
        )


def append_promotion(connection: duckdb.DuckDBPyConnection, record: PromotionRecord) -> None:
    _ensure(connection)
    connection.execute(
        f"delete from {SCHEMA}.promotion_ledger where dagster_run_id = ?", [record.dagster_run_id]
    )
    connection.execute(
        f"insert into {SCHEMA}.promotion_ledger (dagster_run_id, model_name, challenger_version, "
        "champion_before, champion_after, decision, reason, challenger_roc_auc, champion_roc_auc, "
        "decided_at, strategy, share, statistics) values (?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?, ?, ?)",
        [record.dagster_run_id, record.model_name, record.challenger_version, record.champion_before,
         record.champion_after, record.decision, record.reason, record.challenger_roc_auc,
         record.champion_roc_auc, record.strategy, record.share, record.statistics],
    )
