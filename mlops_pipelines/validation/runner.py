"""Run a table contract over a raw table: typed valid rows, quarantined rows, table-level failures.

Pure computation (no files, no warehouse): the Dagster asset does the I/O around it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
import pyarrow as pa

from mlops_pipelines.validation.contracts import Rule, TableContract

QUARANTINE_COLUMNS = [
    "table_name", "partition_key", "source_file", "row_number", "rule", "column_name", "reason",
    "value", "row_json",
]


@dataclass(frozen=True)
class TableFailure:
    """A table-level rule that failed: its name, how many rows or columns it concerns, and why."""

    rule: str
    count: int
    message: str


@dataclass
class ValidationOutcome:
    """The result of one validation: what is published, what is quarantined, what blocks."""

    table: str
    partition: str | None
    rows_in: int
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    table_failures: list[TableFailure]

    @property
    def passed(self) -> bool:
        return not self.table_failures

    @property
    def rows_quarantined(self) -> int:
        return int(self.quarantine["row_number"].nunique()) if len(self.quarantine) else 0

    @property
    def error_rate(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    def quarantined_by_rule(self) -> dict[str, int]:
        if not len(self.quarantine):
            return {}
        return {str(k): int(v) for k, v in self.quarantine.groupby("rule").size().items()}

    def summary(self) -> str:
        where = f"{self.table}" + (f" partition {self.partition}" if self.partition else "")
        if self.passed:
            return f"{where}: {self.rows_in} rows, {self.rows_quarantined} quarantined"
        return "; ".join(f.message for f in self.table_failures)


@lru_cache(maxsize=1)
def _gx_context() -> gx.data_context.AbstractDataContext:
    # Ephemeral: suites live in code, results go to the warehouse and to Dagster metadata.
    context = gx.get_context(mode="ephemeral")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _run_expectations(frame: pd.DataFrame, rules: list[Rule], suite_name: str) -> list[tuple[Rule, dict]]:
    """Validate ``frame`` with ``rules`` in one GX suite; returns each rule with its result dict."""
    if not rules:
        return []
    context = _gx_context()
    suite = gx.ExpectationSuite(name=suite_name)
    by_id: dict[str, Rule] = {}
    for index, rule in enumerate(rules):
        expectation = rule.expectation.copy(deep=True)
        expectation.id = None
        expectation.meta = {"rule_index": index}
        suite.add_expectation(expectation)
        by_id[str(index)] = rule
    batch = context.data_sources.pandas_default.read_dataframe(frame)
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    out = []
    for item in result.results:
        rule = by_id[str(item.expectation_config.meta["rule_index"])]
        error = _raised(item.exception_info)
        if error is not None:
            raise RuntimeError(
                f"{suite_name}: rule {rule.name} on column {rule.column} could not be evaluated: {error}"
            )
        payload = dict(item.result or {})
        payload["success"] = bool(item.success)
        out.append((rule, payload))
    return out


def _raised(info: dict | None) -> str | None:
    """The error message GX recorded for an expectation, or None.

    GX 1.x reports it either at the top level or under one key per metric it computed.
    """
    if not info:
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _cast(raw: pd.Series, kind: str) -> pd.Series:
    if kind == "str":
        return raw.astype("object").where(raw.notna(), None)
    if kind == "timestamp":
        return pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    numbers = pd.to_numeric(raw, errors="coerce")
    if kind == "int":
        numbers = numbers.where(numbers.isna() | (numbers == numbers.round()))
    return numbers.astype("float64")


def validate_table(
    raw: pa.Table,
    contract: TableContract,
    partition: str | None = None,
    source_file: str = "",
    max_error_rate: float | None = None,
) -> ValidationOutcome:
    """Check ``raw`` against ``contract``.

    Args:
        raw: the table as stored in the lake (CSV sources arrive as text).
        contract: the columns and rules of the table.
        partition: the partition key (``YYYY-MM`` for flights), checked by partition rules.
        source_file: the raw file, named in every quarantine record.
        max_error_rate: overrides the contract's largest share of quarantined rows.

    Returns:
        The outcome: ``valid`` holds the contract's columns, typed, plus ``_source_row`` (1-based
        row in the raw file); ``quarantine`` one record per (row, broken rule) with the raw row
        as JSON; ``table_failures`` the table-level rules that failed (empty when it passed).
    """
    threshold = contract.max_error_rate if max_error_rate is None else max_error_rate
    text = raw.to_pandas()
    text.index = pd.RangeIndex(1, len(text) + 1)
    failures: list[TableFailure] = []
    empty_quarantine = pd.DataFrame(columns=QUARANTINE_COLUMNS)

    schema_rules = [
        Rule(
            "schema",
            gxe.ExpectTableColumnsToMatchSet(column_set=contract.column_names, exact_match=True),
            "the columns must be exactly the contract's columns",
            level="table",
        ),
    ]
    for rule, result in _run_expectations(text, schema_rules, f"{contract.table}_schema"):
        if not result["success"]:
            observed = list(result.get("observed_value") or text.columns)
            missing = sorted(set(contract.column_names) - set(observed))
            unexpected = sorted(set(observed) - set(contract.column_names))
            failures.append(
                TableFailure(
                    rule.name,
                    len(missing) + len(unexpected),
                    f"table {contract.table}{_where(partition)}: rule schema failed: "
                    f"missing columns {missing}, unexpected columns {unexpected} in {source_file}",
                )
            )
    if failures:
        return ValidationOutcome(contract.table, partition, len(text), text.iloc[0:0], empty_quarantine, failures)

    records: list[dict] = []
    typed = pd.DataFrame(index=text.index)
    for column in contract.columns:
        typed[column.name] = _cast(text[column.name], column.type)
        bad = text[column.name].notna() & typed[column.name].isna()
        for row in text.index[bad]:
            records.append(_record(contract, partition, source_file, text, row, f"type_{column.name}",
                                   column.name, f"{column.name} must be {column.type}"))
    frame = contract.derive(typed, partition) if contract.derive else typed

    row_count = len(frame)
    suite = f"table {contract.table}{_where(partition)}"
    for rule, result in _run_expectations(frame, list(contract.all_rules(partition)), suite):
        if result["success"]:
            continue
        if rule.level == "table":
            count = int(result.get("unexpected_count") or 0) if rule.column else row_count
            observed = result.get("observed_value")
            failures.append(
                TableFailure(
                    rule.name,
                    count,
                    f"table {contract.table}{_where(partition)}: rule {rule.name} failed"
                    + (f" on column {rule.column}: {count} of {row_count} rows"
                       if rule.column else f": observed {observed}")
                    + f" ({rule.reason})",
                )
            )
            continue
        for row in result.get("unexpected_index_list") or []:
            records.append(_record(contract, partition, source_file, text, row, rule.name,
                                   rule.column, rule.reason))

    quarantine = pd.DataFrame.from_records(records, columns=QUARANTINE_COLUMNS) if records else empty_quarantine
    bad_rows = set(quarantine["row_number"].astype(int)) if records else set()
    valid = typed.loc[~typed.index.isin(list(bad_rows)), contract.column_names].copy()
    valid["_source_row"] = valid.index.astype("int64")
    outcome = ValidationOutcome(
        contract.table, partition, row_count, valid.reset_index(drop=True), quarantine, failures
    )
    if row_count and outcome.error_rate > threshold:
        by_rule = sorted(outcome.quarantined_by_rule().items(), key=lambda kv: -kv[1])
        top = ", ".join(f"{k}: {v}" for k, v in by_rule[:5])
        failures.append(
            TableFailure(
                "error_rate",
                outcome.rows_quarantined,
                f"table {contract.table}{_where(partition)}: rule error_rate failed: "
                f"{outcome.rows_quarantined} of {row_count} rows quarantined "
                f"({outcome.error_rate:.1%} > {threshold:.1%}); by rule: {top}",
            )
        )
    return outcome


def _where(partition: str | None) -> str:
    return f" partition {partition}" if partition else ""


def _record(contract: TableContract, partition: str | None, source_file: str, text: pd.DataFrame,
            row: int, rule: str, column: str | None, reason: str) -> dict:
    raw_row = text.loc[row]
    # A rule on several columns (a compound key) is blamed on all of them, values joined by "|".
    columns = [c for c in (column or "").split(",") if c in raw_row.index]
    value = "|".join("" if pd.isna(raw_row[c]) else str(raw_row[c]) for c in columns) if columns else None
    return {
        "table_name": contract.table,
        "partition_key": partition or "",
        "source_file": source_file,
        "row_number": int(row),
        "rule": rule,
        "column_name": column or "",
        "reason": reason,
        "value": value if value else None,
        "row_json": json.dumps({k: (None if pd.isna(v) else str(v)) for k, v in raw_row.items()}),
    }
