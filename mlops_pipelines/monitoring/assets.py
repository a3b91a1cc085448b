"""``drift_report``: each month of flights against the champion's reference profile."""

import json

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetSelection,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
)
from pydantic import Field

from mlops_pipelines.features.resource import FeatureStoreResource, store_warnings_logged
from mlops_pipelines.ingest.assets import monthly_partitions
from mlops_pipelines.ingest.lake import RawLake
from mlops_pipelines.monitoring.drift import DriftReport
from mlops_pipelines.monitoring.html_report import render_drift_html
from mlops_pipelines.monitoring.profile import ReferenceProfile, detect_drift_from_profile
from mlops_pipelines.training.dataset import LABEL, build_training_dataset
from mlops_pipelines.training.model import score
from mlops_pipelines.training.registry import CHAMPION, MLflowRegistry
from mlops_pipelines.validation.store import refuse_failed_validations
from mlops_pipelines.warehouse import WAREHOUSE_POOL, DuckDBWarehouse

MONITORING_EXPERIMENT_SUFFIX = "-monitoring"


class DriftReportConfig(Config):
    share_threshold: float = Field(
        default=0.3, description="Share of drifted columns at which the month counts as drifted (0.3 = 30%)."
    )
    min_label_coverage: float = Field(
        default=0.9,
        description="Performance is reported once this share of the month's flights have a known "
        "outcome (arrived, cancelled or diverted).",
    )


def _write_tables(connection, month: str, champion: str, report: DriftReport, summary: dict) -> None:
    connection.execute("create schema if not exists monitoring")
    frame = report.to_frame().assign(partition_key=month, champion_version=champion)  # noqa: F841
    connection.execute(
        "create table if not exists monitoring.column_drift as select * from frame where false"
    )
    connection.execute("delete from monitoring.column_drift where partition_key = ?", [month])
    connection.execute("insert into monitoring.column_drift by name select * from frame")
    row = pd.DataFrame([summary])  # noqa: F841
    connection.execute("create table if not exists monitoring.drift_summary as select * from row where false")
    connection.execute("delete from monitoring.drift_summary where partition_key = ?", [month])
    connection.execute("insert into monitoring.drift_summary by name select * from row")


@asset(
    group_name="monitoring",
    partitions_def=monthly_partitions,
    deps=["validated_flights", "int_flight_outcomes"],
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "mlflow", "html"},
    description="Feature and prediction drift of one month against the champion's reference "
    "profile, and the champion's performance on the month once its outcomes are known.",
)
def drift_report(
    context: AssetExecutionContext,
    config: DriftReportConfig,
    feature_store: FeatureStoreResource,
    warehouse: DuckDBWarehouse,
    mlflow_registry: MLflowRegistry,
    raw_lake: RawLake,
) -> MaterializeResult:
    month = context.partition_key
    champion = mlflow_registry.version_by_alias(CHAMPION)
    if champion is None:
        raise Failure(description=f"drift_report {month}: no champion to monitor; run the training job first")
    columns = json.loads(champion.tags["feature_columns"])
    profile = ReferenceProfile.from_json(mlflow_registry.download_text(champion.run_id, "reference_profile.json"))
    with warehouse.connect() as connection, store_warnings_logged(context.log):
        refuse_failed_validations(connection, ["flights"], f"drift_report {month}")
        table, counts = build_training_dataset(connection, feature_store.store(), months=[month])
    frame = table.to_pandas()
    if frame.empty:
        raise Failure(description=f"drift_report {month}: no labelled flights for this month in the warehouse")
    model = mlflow_registry.load_sklearn(str(champion.version))
    probabilities = model.predict_proba(frame[list(columns)])[:, 1]
    current = frame[list(columns)].assign(prediction=probabilities)
    report = detect_drift_from_profile(profile, current, share_threshold=config.share_threshold)

    holdout = mlflow_registry.client().get_run(champion.run_id).data.metrics.get("holdout_roc_auc", float("nan"))
    known = counts.rows + counts.cancelled + counts.diverted
    coverage = known / counts.flights if counts.flights else 0.0
    performance = score(frame[LABEL], probabilities, 0.35) if coverage >= config.min_label_coverage else {}
    roc_auc = performance.get("roc_auc", float("nan"))
    summary = {
        "partition_key": month,
        "champion_version": str(champion.version),
        "rows": int(len(frame)),
        "share_drifted": report.share_drifted,
        "drifted": report.dataset_drift,
        "drifted_columns": ", ".join(report.drifted_columns),
        "prediction_psi": next((c.psi for c in report.columns if c.column == "prediction"), None),
        "roc_auc": roc_auc,
        "holdout_roc_auc": holdout,
        "roc_auc_drop": holdout - roc_auc if not np.isnan(roc_auc) else float("nan"),
        "mean_prediction": float(probabilities.mean()),
        "observed_delay_rate": float(frame[LABEL].mean()),
        "label_coverage": coverage,
    }
    with warehouse.connect() as connection:
        _write_tables(connection, month, str(champion.version), report, summary)

    html = render_drift_html(report, profile, current, title=f"Drift report {month}", summary=summary)
    path = raw_lake.paths.data_dir / "reports" / f"drift_{month}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html)
    experiment = mlflow_registry.experiment_name + MONITORING_EXPERIMENT_SUFFIX
    with mlflow_registry.start_run(f"drift_report-{month}-{context.run.run_id}", {
        "dagster_run_id": context.run.run_id, "partition": month, "champion_version": str(champion.version),
    }, experiment_name=experiment) as run:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in summary.items()
                            if isinstance(v, int | float) and not isinstance(v, bool) and not np.isnan(v)})
        mlflow.log_artifact(str(path))
        run_id = run.info.run_id

    top = sorted(report.columns, key=lambda c: (not c.drift, -(c.psi or 0.0)))[:8]
    table_md = "| column | test | drift | decided by | PSI | severity |\n|---|---|---|---|---|---|\n" + "\n".join(
        f"| {c.column} | {c.test} | {'yes' if c.drift else 'no'} | {c.decided_by} | "
        f"{(c.psi or 0.0):.3f} | {c.severity} |" for c in top)
    metadata = {
        "share_drifted": MetadataValue.float(round(report.share_drifted, 6)),
        "drifted_column_count": MetadataValue.int(len(report.drifted_columns)),
        "dataset_drift": MetadataValue.bool(report.dataset_drift),
        "top_drifted": MetadataValue.text(", ".join(report.drifted_columns[:5])),
        "champion_version": MetadataValue.int(int(champion.version)),
        "rows": MetadataValue.int(len(frame)),
        "label_coverage": MetadataValue.float(round(coverage, 4)),
        "most_drifted": MetadataValue.md(table_md),
        "report": MetadataValue.path(str(path)),
        "mlflow_run": MetadataValue.url(mlflow_registry.run_url(run_id)),
    }
    if performance:
        metadata.update({
            "roc_auc": MetadataValue.float(round(roc_auc, 6)),
            "holdout_roc_auc": MetadataValue.float(round(holdout, 6)),
            "roc_auc_drop": MetadataValue.float(round(holdout - roc_auc, 6)),
            "mean_prediction": MetadataValue.float(round(summary["mean_prediction"], 6)),
            "observed_delay_rate": MetadataValue.float(round(summary["observed_delay_rate"], 6)),
        })
    context.log.info(f"{month}: {len(report.drifted_columns)} of {len(report.columns)} columns drifted; "
                     f"champion v{champion.version} ROC AUC {roc_auc:.4f} (holdout {holdout:.4f})")
    return MaterializeResult(metadata=metadata)


monitoring_assets = [drift_report]


drift_report_job = define_asset_job(
    "monitor_drift",
    selection=AssetSelection.assets("drift_report"),
    partitions_def=monthly_partitions,
    description="Compare one month with the champion's reference profile.",
)
