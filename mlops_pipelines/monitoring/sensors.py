"""``drift_sensor``: retrain when a new drift report shows drift or a performance drop.

It reads only Dagster's event log (the drift_report materializations and their metadata, and the
latest blocking check of validated_flights), never the DuckDB file. The cursor holds the last
drift_report event read and when the sensor last asked for a run; evidence that arrives during
the cooldown stays unread until the cooldown is over.
"""

import json
import time

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from mlops_pipelines.ingest.assets import monthly_partitions

DRIFT_REPORT = AssetKey("drift_report")
VALIDATION_CHECK = AssetCheckKey(AssetKey("validated_flights"), "table_contract")


def _value(metadata, key: str, default=None):
    entry = metadata.get(key)
    return default if entry is None else entry.value


def build_drift_sensor(
    name: str = "drift_sensor",
    share_threshold: float = 0.3,
    auc_drop_threshold: float = 0.03,
    cooldown_seconds: float = 6 * 3600,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> SensorDefinition:
    """A sensor requesting the ``training`` job on drift.

    Args:
        share_threshold: share of drifted columns that triggers a retrain (0.3 = 30%).
        auc_drop_threshold: holdout ROC AUC minus the month's ROC AUC that triggers a retrain.
        cooldown_seconds: least time between two requested runs.
    """

    @sensor(name=name, job_name="training", minimum_interval_seconds=60, default_status=default_status,
            description=f"Retrain when a month's drift share >= {share_threshold:.0%} or its ROC AUC "
            f"is {auc_drop_threshold} below the champion's holdout, at most once per {cooldown_seconds:.0f} s.")
    def _drift_sensor(context: SensorEvaluationContext):
        cursor = json.loads(context.cursor) if context.cursor else {}
        after = cursor.get("storage_id", 0)
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=DRIFT_REPORT, after_storage_id=after), limit=100, ascending=True
        ).records
        if not records:
            return SkipReason("no new drift report")
        latest_check = context.instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [VALIDATION_CHECK]).get(VALIDATION_CHECK)
        if latest_check is not None and latest_check.status.value == "FAILED":
            return SkipReason("the latest validated_flights table_contract check failed: no retrain on broken data")
        evidence = []
        for record in records:
            materialization = record.asset_materialization
            metadata = materialization.metadata
            share = float(_value(metadata, "share_drifted", 0.0))
            drop = float(_value(metadata, "roc_auc_drop", 0.0))
            if share >= share_threshold or drop >= auc_drop_threshold:
                evidence.append((record.storage_id, materialization.partition, share, drop, metadata))
        last_id = records[-1].storage_id
        if not evidence:
            return SensorResult(skip_reason=f"{len(records)} new drift report(s) below the thresholds",
                                cursor=json.dumps({**cursor, "storage_id": last_id}))
        now = time.time()
        since = now - cursor.get("fired_at", 0.0)
        if since < cooldown_seconds:
            return SkipReason(f"drift seen, but the last retrain was {since:.0f} s ago "
                              f"(cooldown {cooldown_seconds:.0f} s)")
        _, partition, share, drop, metadata = evidence[-1]  # the newest evidence decides
        champion = _value(metadata, "champion_version", "none")
        reasons = []
        if share >= share_threshold:
            reasons.append(f"drift share {share:.2f} >= {share_threshold}")
        if drop >= auc_drop_threshold:
            reasons.append(f"ROC AUC drop {drop:.3f} >= {auc_drop_threshold}")
        keys = monthly_partitions.get_partition_keys()
        holdout_end = keys[keys.index(partition) + 1] if keys.index(partition) + 1 < len(keys) else "2014-01"
        request = RunRequest(
            run_key=f"drift:{partition}:champion-v{champion}",
            run_config={"ops": {"trained_model": {"config": {"train_end": partition, "holdout_end": holdout_end}}}},
            tags={
                "mlops/trigger": "drift",
                "mlops/partition": partition,
                "mlops/champion_version": str(champion),
                "mlops/drift_share": f"{share:.4f}",
                "mlops/roc_auc_drop": f"{drop:.4f}",
                "mlops/top_drifted": str(_value(metadata, "top_drifted", ""))[:200],
                "mlops/reason": "; ".join(reasons),
            },
        )
        return SensorResult(run_requests=[request], cursor=json.dumps({"storage_id": last_id, "fired_at": now}))

    return _drift_sensor


drift_sensor = build_drift_sensor()
