"""Dagster side of serving: load the prediction log, join the labels, run progressive delivery.

``prediction_log`` copies new log files (written by ``mlops serve``) into ``serving.predictions``
and rebuilds ``serving.prediction_outcomes``: each prediction with its flight's label once the
flight has arrived. ``deployment_controller`` reads those outcomes for the running deployment,
decides (``controller.decide``), carries the decision out in the registry, and writes it with its
statistics to the promotion ledger. A sensor starts both when the serving process logs new rows.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetSelection,
    Config,
    ConfigurableResource,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)
from pydantic import Field

from mlops_pipelines.monitoring.profile import ReferenceProfile, detect_drift_from_profile
from mlops_pipelines.serving.control import DeploymentControl, import_outbox
from mlops_pipelines.serving.controller import ArmStats, Decision, DeliveryPolicy, decide
from mlops_pipelines.serving.deployment import Deployment
from mlops_pipelines.serving.sequential import ArmOutcomes
from mlops_pipelines.training.dataset import DELAY_THRESHOLD_MINUTES
from mlops_pipelines.training.model import score
from mlops_pipelines.training.registry import CHAMPION, MLflowRegistry
from mlops_pipelines.warehouse import WAREHOUSE_POOL, DuckDBWarehouse, table_exists


class ServingFiles(ConfigurableResource):
    """Files the serving process writes and the pipeline reads."""

    prediction_log_dir: str = Field(description="Folder of the prediction log's parquet files.")
    deployment_outbox: str = Field(description="JSON-lines file of deployment events not yet in the ledger.")


def log_files(folder: str | Path) -> list[Path]:
    """Complete log files (temporary ones are still being written)."""
    return sorted(Path(folder).glob("date=*/*.parquet"))


PREDICTIONS_DDL = """create table if not exists serving.predictions (
    request_id varchar, item integer, logged_at timestamptz, key varchar, flight_id varchar,
    sched_dep_utc timestamptz, deployment_id varchar, strategy varchar, arm varchar, model_alias varchar,
    model_version varchar, probability double, latency_ms double, model_ms double, challenger_version varchar,
    challenger_probability double, challenger_error varchar, features varchar, source_file varchar)"""

OUTCOMES_SQL = f"""
create or replace table serving.prediction_outcomes as
select
    p.*,
    o.arr_delay_minutes,
    -- The label exists once the flight has arrived (or its outcome is otherwise known).
    case when o.arr_delay_minutes is not null and coalesce(o.arr_known_at, o.sched_dep_utc) <= now()
         then cast(o.arr_delay_minutes > {DELAY_THRESHOLD_MINUTES} as integer) end as is_delayed
from serving.predictions p
left join intermediate.int_flight_outcomes o using (flight_id)
"""


@asset(
    group_name="serving",
    deps=["int_flight_outcomes"],
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "parquet"},
    description="The serving process's prediction log in the warehouse (serving.predictions), joined "
    "with the flights' outcomes once known (serving.prediction_outcomes).",
)
def prediction_log(context: AssetExecutionContext, warehouse: DuckDBWarehouse,
                   serving_files: ServingFiles) -> MaterializeResult:
    files = log_files(serving_files.prediction_log_dir)
    with warehouse.connect() as connection:
        connection.execute("create schema if not exists serving")
        connection.execute(PREDICTIONS_DDL)
        connection.execute("alter table serving.predictions add column if not exists model_ms double")
        loaded = {row[0] for row in connection.execute(
            "select distinct source_file from serving.predictions").fetchall()}
        new = [f for f in files if str(f) not in loaded]
        for path in new:  # file by file: a re-run skips what is already in, so loading is idempotent
            connection.execute(
                "insert into serving.predictions by name select *, ? as source_file "
                "from read_parquet(?, hive_partitioning = false)",
                [str(path), str(path)],
            )
        connection.execute(OUTCOMES_SQL)
        total, labelled, by_arm = connection.execute(
            "select count(*), count(is_delayed), "
            "coalesce(string_agg(distinct arm, ', '), '') from serving.prediction_outcomes"
        ).fetchall()[0]
    context.log.info(f"loaded {len(new)} new log files; {total} predictions, {labelled} labelled")
    return MaterializeResult(metadata={
        "new_files": MetadataValue.int(len(new)),
        "predictions": MetadataValue.int(int(total)),
        "labelled": MetadataValue.int(int(labelled)),
        "arms": MetadataValue.text(by_arm),
    })


# Which arm a logged answer counts for: in shadow the champion answered every one; a fallback is
# a challenger attempt the champion answered.
SIDES_SQL = """
select *, case when strategy = 'shadow' then 'champion' when arm = 'challenger' then 'challenger'
               when arm = 'champion_fallback' then 'fallback' else 'champion' end as side
from serving.prediction_outcomes where deployment_id = ?
"""

ARM_SQL = f"""
with rows as ({SIDES_SQL})
select
    -- champion: every answer it gave (in shadow: all of them)
    count(*) filter (where side in ('champion', 'fallback')) as champion_answered,
    -- Each arm's own predict time (logs written before it existed: the request's latency).
    quantile_cont(coalesce(model_ms, latency_ms), 0.99) filter (where side = 'champion') as champion_p99,
    -- challenger: answers, attempts (answers + failures), in shadow its own scores
    count(*) filter (where side = 'challenger'
                     or (strategy = 'shadow' and challenger_probability is not null)) as challenger_answered,
    count(*) filter (where side in ('challenger', 'fallback')
                     or (strategy = 'shadow' and (challenger_probability is not null
                                                  or challenger_error is not null))) as challenger_attempts,
    count(*) filter (where challenger_error is not null) as challenger_errors,
    quantile_cont(coalesce(model_ms, latency_ms), 0.99) filter (where side = 'challenger') as challenger_p99,
    count(*) filter (where side = 'challenger' and logged_at >= ?::timestamptz) as challenger_this_step
from rows
"""

LOSS_SQL = f"""
-- The unit is the flight (the routing key), not the request: a flight asked about many times is one
-- outcome per arm, its first prediction, or repeated questions would shrink the variance.
with firsts as (
    select * from ({SIDES_SQL}) where is_delayed is not null
    qualify row_number() over (partition by key, side order by logged_at, request_id, item) = 1
)
select
    list(power(probability - is_delayed, 2)) filter (where side = 'champion'),
    list(power(coalesce(case when strategy = 'shadow' then challenger_probability end, probability)
               - is_delayed, 2))
        filter (where side = 'challenger' or (strategy = 'shadow' and challenger_probability is not null))
from firsts
"""


def arm_statistics(connection, deployment: Deployment) -> tuple[ArmStats, ArmStats]:
    """Champion and challenger statistics of the running deployment, from prediction_outcomes."""
    (champion_answered, champion_p99, challenger_answered, attempts, errors, challenger_p99,
     this_step) = connection.execute(
        ARM_SQL, [deployment.deployment_id, deployment.updated_at or "1970-01-01"]).fetchall()[0]
    champion_losses, challenger_losses = connection.execute(LOSS_SQL, [deployment.deployment_id]).fetchall()[0]
    champion = ArmStats(
        answered=int(champion_answered), attempts=int(champion_answered), errors=0,
        p99_latency_ms=float(champion_p99) if champion_p99 is not None else math.nan,
        losses=ArmOutcomes.of(list(champion_losses or [])),
    )
    challenger = ArmStats(
        answered=int(challenger_answered), attempts=int(attempts), errors=int(errors),
        p99_latency_ms=float(challenger_p99) if challenger_p99 is not None else math.nan,
        losses=ArmOutcomes.of(list(challenger_losses or [])),
        answered_this_step=int(this_step),
    )
    return champion, challenger


class DeliveryPolicyConfig(Config):
    """The controller's thresholds (see ``controller.DeliveryPolicy``)."""

    min_requests: int = Field(default=200, description="Challenger answers per canary step before ramping.")
    min_error_sample: int = Field(default=20, description="Challenger attempts before its error rate is read.")
    max_error_rate: float = Field(default=0.01, description="Share of challenger attempts that may fail.")
    max_latency_ratio: float = Field(default=2.0, description="Challenger p99 / champion p99 allowed.")
    min_outcomes: int = Field(default=100, description="Labelled outcomes per arm before the quality test.")
    alpha: float = Field(default=0.05, description="Error rate of the sequential quality test.")
    margin: float = Field(default=0.005, description="Non-inferiority margin on the Brier score.")


@asset(
    group_name="serving",
    deps=[prediction_log],
    pool=WAREHOUSE_POOL,
    kinds={"mlflow", "duckdb"},
    description="Progressive delivery: ramps a canary while it is no worse than the champion, promotes it "
    "when shown non-inferior, rolls it back on errors, latency or worse quality; every step to the ledger.",
)
def deployment_controller(
    context: AssetExecutionContext,
    config: DeliveryPolicyConfig,
    warehouse: DuckDBWarehouse,
    mlflow_registry: MLflowRegistry,
    serving_files: ServingFiles,
) -> MaterializeResult:
    policy = DeliveryPolicy(**config.model_dump())
    control = DeploymentControl(mlflow_registry.tracking_uri, mlflow_registry.model_name,
                                serving_files.deployment_outbox)
    if mlflow_registry.version_by_alias(CHAMPION) is None:  # nothing trained yet: nothing to control
        return MaterializeResult(metadata={"decision": MetadataValue.text("none: no champion yet")})
    deployment = control.deployment()
    with warehouse.connect() as connection:
        if deployment.strategy == "single" or not table_exists(connection, "serving", "prediction_outcomes"):
            champion, challenger = ArmStats(), ArmStats()
        else:
            champion, challenger = arm_statistics(connection, deployment)
    decision = decide(deployment, champion, challenger, policy, mlflow_registry.version_number(CHAMPION))
    event_id = f"dagster-{context.run.run_id}"
    by, expected = "deployment_controller", deployment.deployment_id
    try:
        if decision.action in ("rollback", "conclude"):
            control.end_experiment(decision.reason, decision.statistics, by, event_id, expected_id=expected,
                                   decision="rolled_back" if decision.action == "rollback" else "concluded")
        elif decision.action == "promote":
            control.promote(reason=decision.reason, statistics=decision.statistics, by=by, event_id=event_id,
                            version=deployment.challenger_version, expected_id=expected)
        elif decision.action == "ramp":
            control.set_share(decision.share, decision.reason, decision.statistics, by, event_id, expected_id=expected)
    except ValueError as error:
        # e.g. retraining already made the tested version champion: the experiment has nothing left to do.
        control.end_experiment(f"{decision.action} not possible: {error}", decision.statistics, by, event_id,
                               decision="concluded", expected_id=expected)
    except LookupError as error:  # the deployment changed while it was being judged: leave it alone
        context.log.warning(str(error))
        decision = Decision("none", deployment.share, str(error), decision.statistics)
    with warehouse.connect() as connection:
        imported = import_outbox(connection, serving_files.deployment_outbox)
    context.log.info(f"{deployment.describe()}: {decision.action} ({decision.reason})")
    return MaterializeResult(metadata={
        "deployment": MetadataValue.text(deployment.describe()),
        "deployment_id": MetadataValue.text(deployment.deployment_id),
        "decision": MetadataValue.text(decision.action),
        "reason": MetadataValue.text(decision.reason),
        "share_after": MetadataValue.float(float(decision.share)),
        "challenger_answered": MetadataValue.int(challenger.answered),
        "challenger_errors": MetadataValue.int(challenger.errors),
        "labelled_champion": MetadataValue.int(champion.losses.n),
        "labelled_challenger": MetadataValue.int(challenger.losses.n),
        "statistics": MetadataValue.json(json.loads(json.dumps(decision.statistics, default=str))),
        "ledger_events_imported": MetadataValue.int(imported),
    })


def _rounded(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


class LiveMonitoringConfig(Config):
    window_hours: float = Field(default=24.0, description="Served answers logged in the last N hours are checked.")
    min_rows: int = Field(default=200, description="Fewest answers worth a drift test.")
    share_threshold: float = Field(default=0.3, description="Share of drifted columns that counts as drift.")
    decision_threshold: float = Field(default=0.35, description="Probability above which a delay is predicted.")


PERFORMANCE_SQL = """
select model_version, arm, count(*) as answered, count(is_delayed) as labelled,
       list(probability) filter (where is_delayed is not null) as probabilities,
       list(is_delayed) filter (where is_delayed is not null) as labels
from serving.prediction_outcomes
where logged_at >= now() - to_milliseconds(cast(? * 3600000 as bigint))
group by all order by model_version, arm
"""


@asset(
    group_name="serving",
    deps=[prediction_log],
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    description="What serving saw lately: live quality per model version and arm once labels arrive "
    "(serving.live_performance), and drift of the served inputs and predictions against the champion's "
    "reference profile (serving.live_drift).",
)
def live_monitoring(context: AssetExecutionContext, config: LiveMonitoringConfig, warehouse: DuckDBWarehouse,
                    mlflow_registry: MLflowRegistry) -> MaterializeResult:
    with warehouse.connect() as connection:
        if not table_exists(connection, "serving", "prediction_outcomes"):
            return MaterializeResult(metadata={"answers": MetadataValue.int(0)})
        groups = connection.execute(PERFORMANCE_SQL, [config.window_hours]).fetchall()
        champion = mlflow_registry.version_by_alias(CHAMPION)
        served = connection.execute(
            "select features, probability from serving.prediction_outcomes where model_version = ? "
            "and arm in ('champion', 'champion_fallback') "
            "and logged_at >= now() - to_milliseconds(cast(? * 3600000 as bigint))",
            [str(champion.version) if champion else "", config.window_hours],
        ).fetchall()
    performance = []
    for version, arm, answered, labelled, probabilities, labels in groups:
        scores = score(np.asarray(labels), np.asarray(probabilities), config.decision_threshold) if labelled else {}
        performance.append({"model_version": version, "arm": arm, "answered": answered, "labelled": labelled,
                            "brier": scores.get("brier"), "roc_auc": scores.get("roc_auc"),
                            "positive_rate": scores.get("positive_rate"),
                            "mean_prediction": float(sum(probabilities) / labelled) if labelled else None})
    metadata: dict = {"answers": MetadataValue.int(sum(p["answered"] for p in performance))}
    if performance:
        lines = [f"| {p['model_version']} | {p['arm']} | {p['answered']} | {p['labelled']} | "
                 f"{_rounded(p['brier'])} | {_rounded(p['roc_auc'])} |" for p in performance]
        metadata["performance"] = MetadataValue.md(
            "| version | arm | answered | labelled | Brier | ROC AUC |\n|---|---|---|---|---|---|\n" + "\n".join(lines))
    drift_rows: list[dict] = []
    if champion is not None and len(served) >= config.min_rows:
        profile = ReferenceProfile.from_json(mlflow_registry.download_text(champion.run_id, "reference_profile.json"))
        current = pd.DataFrame([json.loads(f) for f, _ in served])
        current["prediction"] = [p for _, p in served]
        report = detect_drift_from_profile(profile, current, share_threshold=config.share_threshold)
        drift_rows = report.to_frame().assign(champion_version=str(champion.version)).to_dict("records")
        metadata.update({
            "share_drifted": MetadataValue.float(round(report.share_drifted, 6)),
            "dataset_drift": MetadataValue.bool(report.dataset_drift),
            "drifted_columns": MetadataValue.text(", ".join(report.drifted_columns)),
            "drift_rows": MetadataValue.int(len(served)),
        })
    with warehouse.connect() as connection:
        connection.execute("create schema if not exists serving")
        connection.register("performance_frame", pd.DataFrame(performance, columns=[
            "model_version", "arm", "answered", "labelled", "brier", "roc_auc", "positive_rate", "mean_prediction"]))
        connection.execute("create or replace table serving.live_performance as "
                           "select *, now() as checked_at from performance_frame")
        if drift_rows:
            connection.register("drift_frame", pd.DataFrame(drift_rows))
            connection.execute("create or replace table serving.live_drift as "
                               "select *, now() as checked_at from drift_frame")
    context.log.info(f"live monitoring: {len(served)} champion answers in {config.window_hours} h")
    return MaterializeResult(metadata=metadata)


serving_assets = [prediction_log, deployment_controller, live_monitoring]

progressive_delivery_job = define_asset_job(
    "progressive_delivery",
    selection=AssetSelection.assets(prediction_log, deployment_controller, live_monitoring),
    description="Load the prediction log, join labels, take the next deployment step, check live quality "
    "and drift.",
)


@sensor(job=progressive_delivery_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def prediction_log_sensor(context: SensorEvaluationContext, serving_files: ServingFiles) -> RunRequest | SkipReason:
    """Runs progressive delivery when the serving process has logged new predictions.

    Reads only the log folder (never the warehouse); the cursor is the newest file's mtime (ns),
    so files of every serving process count, whatever their names.
    """
    files = log_files(serving_files.prediction_log_dir)
    newest = max((f.stat().st_mtime_ns for f in files), default=0)
    if newest <= int(context.cursor or 0):
        return SkipReason("no new prediction log files")
    context.update_cursor(str(newest))
    return RunRequest(run_key=f"prediction-log:{newest}")
