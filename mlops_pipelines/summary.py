"""What a lifecycle run left behind: rows per layer, quarantine by rule, the champion and its scores."""

from __future__ import annotations

import duckdb

from mlops_pipelines.features.sql_project import SqlProject
from mlops_pipelines.paths import ProjectPaths
from mlops_pipelines.resources import build_resources
from mlops_pipelines.training.registry import CHAMPION, MLflowRegistry
from mlops_pipelines.validation.contracts import CONTRACTS
from mlops_pipelines.warehouse import table_exists


def layers() -> list[tuple[str, str]]:
    """(schema, table) of every layer, in lifecycle order: contracts, then the SQL models."""
    models = SqlProject().models.values()
    order = {"staging": 0, "intermediate": 1, "features": 2}
    sql = sorted(((m.schema, m.name) for m in models), key=lambda st: (order.get(st[0], 3), st[1]))
    return [("validated", t) for t in CONTRACTS] + sql + [("training", "training_dataset")]


def collect_summary(paths: ProjectPaths) -> dict:
    """Counts from the warehouse and the champion from the registry (read-only)."""
    summary: dict = {"rows": {}, "quarantine": {}, "status": [], "ledger": [], "champion": None}
    if paths.warehouse_path.exists():
        with duckdb.connect(str(paths.warehouse_path), read_only=True) as connection:
            for schema, table in layers():
                if table_exists(connection, schema, table):
                    count = connection.execute(f"select count(*) from {schema}.{table}").fetchall()[0][0]
                    summary["rows"][f"{schema}.{table}"] = int(count)
            if table_exists(connection, "validated", "validation_status"):
                summary["rows_in"] = {
                    table: int(rows) for table, rows in connection.execute(
                        "select table_name, sum(rows_in) from validated.validation_status group by 1"
                    ).fetchall()
                }
                summary["status"] = connection.execute(
                    "select table_name, partition_key, message from validated.validation_status "
                    "where not passed order by 1, 2"
                ).fetchall()
            if table_exists(connection, "validated", "quarantine"):
                summary["quarantine"] = {
                    f"{t}.{r}": int(n) for t, r, n in connection.execute(
                        "select table_name, rule, count(*) from validated.quarantine group by 1, 2 order by 1, 2"
                    ).fetchall()
                }
            if table_exists(connection, "governance", "promotion_ledger"):
                summary["ledger"] = connection.execute(
                    "select decision, challenger_version, champion_after, reason "
                    "from governance.promotion_ledger order by decided_at"
                ).fetchall()
    registry: MLflowRegistry = build_resources(paths)["mlflow_registry"]  # type: ignore[assignment]
    if paths.mlflow_db_path.exists() or not registry.tracking_uri.startswith("sqlite"):
        champion = registry.version_by_alias(CHAMPION)
        if champion is not None:
            run = registry.client().get_run(champion.run_id)
            summary["champion"] = {
                "model_name": registry.model_name,
                "version": champion.version,
                "uri": f"models:/{registry.model_name}@{CHAMPION}",
                "train_window": champion.tags.get("train_window"),
                "holdout_window": champion.tags.get("holdout_window"),
                "metrics": {k[len("holdout_"):]: v for k, v in run.data.metrics.items()
                            if k.startswith("holdout_")},
            }
        if summary["ledger"] and summary["ledger"][-1][1] is not None:
            # The window of the last challenger decided on, promoted or not (a refused one is the
            # usual end of a run on a month or two, and the champion's window is not its).
            from mlflow.exceptions import MlflowException

            try:
                challenger = registry.client().get_model_version(registry.model_name, summary["ledger"][-1][1])
            except MlflowException:  # (a registry that lost the version: the decision line stays as it is)
                challenger = None
            if challenger is not None:
                summary["last_challenger"] = {"train_window": challenger.tags.get("train_window"),
                                              "holdout_window": challenger.tags.get("holdout_window")}
    return summary


def format_summary(summary: dict) -> str:
    lines = ["", "Rows per layer"]
    for name, count in summary["rows"].items():
        lines.append(f"  {name:<42} {count:>9,}")
    for table, count in summary.get("rows_in", {}).items():
        lines.append(f"  raw rows read for {table:<24} {count:>9,}")
    lines.append("Quarantined rows by rule")
    if summary["quarantine"]:
        lines += [f"  {rule:<42} {n:>9,}" for rule, n in summary["quarantine"].items()]
    else:
        lines.append("  none")
    for table, partition, message in summary["status"]:
        lines.append(f"  BLOCKED {table} {partition}: {message}")
    champion = summary["champion"]
    lines.append("Champion")
    if champion is None:
        lines.append("  none registered")
    else:
        m = champion["metrics"]
        lines.append(f"  {champion['uri']} = version {champion['version']}")
        lines.append(
            f"  trained on {champion['train_window']}, holdout {champion['holdout_window']} (months, New York time)"
        )
        keys = ("roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall")
        lines.append("  holdout " + ", ".join(f"{k} {m[k]:.4f}" for k in keys if k in m))
    if summary["ledger"]:
        decision, challenger, after, _ = summary["ledger"][-1]
        champion_after = f"champion v{after}" if after is not None else "no champion"
        lines.append(f"  last promotion decision: {decision} (challenger v{challenger}, {champion_after})")
        window = summary.get("last_challenger")
        if window and window["train_window"] and challenger != after:  # (a promoted one's is the champion's above)
            lines.append(f"  challenger v{challenger} trained on {window['train_window']}, holdout "
                         f"{window['holdout_window']} (months, New York time)")
    return "\n".join(lines)
