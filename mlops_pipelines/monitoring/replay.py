"""Replay 2013 month by month through the real Dagster machinery and record what the loop did.

From an empty data folder: ingest the first months, train the first champion, then for each later
month ingest it, rebuild the features, materialize its ``drift_report``, evaluate a tick of the
drift sensor through the Dagster instance, and execute the runs it requests. The timeline records
per month the drift share, whether a retrain was triggered and why, the champion that month was
scored with, and its ROC AUC on the month next to the first champion, frozen and never retrained.

The sensor's cooldown is 0 here: a replay compresses a year into minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
from dagster import DagsterInstance, build_sensor_context
from sklearn.metrics import roc_auc_score

from mlops_pipelines.features.sql_project import SqlProject
from mlops_pipelines.features.store import FeatureStore
from mlops_pipelines.ingest.assets import monthly_partitions
from mlops_pipelines.lifecycle import QUIET, prepare_dagster_home
from mlops_pipelines.monitoring.sensors import build_drift_sensor
from mlops_pipelines.paths import ProjectPaths
from mlops_pipelines.resources import build_resources
from mlops_pipelines.training.dataset import LABEL, build_training_dataset
from mlops_pipelines.training.registry import CHAMPION

# A first model trained on two months is weaker than the full-year one: gates suited to that.
REPLAY_GATES = {"roc_auc_floor": 0.62, "fold_auc_floor": 0.6, "max_fold_spread": 0.2, "max_regression": 0.005}


def _month_frame(paths: ProjectPaths, month: str) -> pd.DataFrame:
    store = FeatureStore(paths.warehouse_path, SqlProject().feature_views().values())
    with duckdb.connect(str(paths.warehouse_path), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        table, _ = build_training_dataset(connection, store, months=[month])
    return table.to_pandas()


REPLAY_MARKER = ".mlops-replay"  # written into a replay's folder: the only folders a replay empties


def replay_months(start: str, end: str, initial_months: int) -> list[str]:
    """The months ``start``..``end`` of a replay, or a ValueError: the first champion trains on
    ``initial_months`` - 1 of them and is checked on the next, and at least one month follows."""
    keys = monthly_partitions.get_partition_keys()
    if initial_months < 2:
        raise ValueError(f"--initial-months {initial_months}: at least 2 (the first champion trains on all but "
                         "the last of them, its holdout)")
    if start not in keys or end not in keys or keys.index(end) - keys.index(start) < initial_months:
        raise ValueError(f"--start {start} --end {end}: need months in {keys[0]}..{keys[-1]} and more than "
                         f"{initial_months} of them")
    return keys[keys.index(start): keys.index(end) + 1]


def empty_replay_folder(folder: Path, default: Path) -> None:
    """Empty ``folder`` for a replay, and mark it as one. Only a folder a replay made (marked), the
    default one, or an empty one is emptied: ``--data-dir data`` would otherwise delete the demo's
    warehouse and registry."""
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"--data-dir {folder}: a file, not a folder")
        # (the default folder's exemption is for the replay's own folder, not one it links to)
        default_own = folder == default.resolve() and not default.is_symlink()
        ours = (folder / REPLAY_MARKER).exists() or default_own or not any(folder.iterdir())
        if not ours:
            raise ValueError(f"--data-dir {folder}: holds files no replay wrote (no {REPLAY_MARKER}); the replay "
                             "empties its folder, so give a new or empty one")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / REPLAY_MARKER).write_text("a replay's folder (mlops simulate empties it at its next run)\n")


def run_replay(
    paths: ProjectPaths,
    start: str = "2013-01",
    end: str = "2013-12",
    initial_months: int = 3,
    echo: Callable[[str], None] = print,
    instance: DagsterInstance | None = None,
    share_threshold: float = 0.3,
    auc_drop_threshold: float = 0.03,
) -> pd.DataFrame:
    """Run the replay in ``paths`` (which should be empty) and return the timeline."""
    from mlops_pipelines.definitions import build_definitions

    months = replay_months(start, end, initial_months)
    defs = build_definitions(paths)
    if instance is None:
        os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(paths))
        instance = DagsterInstance.get()
    registry = build_resources(paths)["mlflow_registry"]
    sensor = build_drift_sensor(share_threshold=share_threshold, auc_drop_threshold=auc_drop_threshold,
                                cooldown_seconds=0)

    def run(job: str, partition: str | None = None, run_config: dict | None = None, tags: dict | None = None):
        config = {**QUIET, **(run_config or {})}
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance, partition_key=partition, run_config=config, tags=tags, raise_on_error=False)
        if not result.success:
            raise RuntimeError(f"replay: {job} {partition or ''} failed (run {result.run_id})")
        return result

    def training_config(train_end: str, holdout_end: str) -> dict:
        return {"ops": {"trained_model": {"config": {"train_end": train_end, "holdout_end": holdout_end}},
                        "evaluated_model": {"config": REPLAY_GATES}}}

    echo(f"replay {start}..{end} in {paths.data_dir}")
    run("ingest_reference")
    for month in months[:initial_months]:
        run("ingest_flights", month)
    run("build_features")
    first_holdout = months[initial_months - 1]
    run("training", run_config=training_config(first_holdout, months[initial_months]))
    frozen = registry.version_number(CHAMPION)
    if frozen is None:
        raise RuntimeError("replay: the first model did not pass its gates; no champion to monitor")
    frozen_model = registry.load_sklearn(frozen)
    frozen_columns = list(json.loads(registry.version_by_alias(CHAMPION).tags["feature_columns"]))
    echo(f"  first champion v{frozen}: trained on {months[0]}..{months[initial_months - 2]}, "
         f"holdout {first_holdout}")

    rows, cursor = [], None
    for month in months[initial_months:]:
        started = time.perf_counter()
        run("ingest_flights", month)
        run("build_features")
        result = run("monitor_drift", month)
        materialization = result.asset_materializations_for_node("drift_report")[0]
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        frame = _month_frame(paths, month)
        frozen_auc = float(roc_auc_score(frame[LABEL], frozen_model.predict_proba(frame[frozen_columns])[:, 1]))
        tick = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor, definitions=defs))
        cursor = tick.cursor if tick.cursor is not None else cursor
        requests = tick.run_requests or []
        decision = ""
        for request in requests:
            config = training_config(**request.run_config["ops"]["trained_model"]["config"])
            run("training", run_config=config, tags=request.tags)
            with duckdb.connect(str(paths.warehouse_path), read_only=True) as connection:
                decision = connection.execute(
                    "select decision from governance.promotion_ledger order by decided_at desc limit 1"
                ).fetchall()[0][0]
        row = {
            "month": month,
            "drift_share": round(float(metadata["share_drifted"]), 3),
            "top_drifted": metadata.get("top_drifted", ""),
            "champion_version": int(metadata["champion_version"]),
            "champion_roc_auc": round(float(metadata.get("roc_auc", float("nan"))), 4),
            "frozen_roc_auc": round(frozen_auc, 4),
            "retrain_triggered": bool(requests),
            "why": requests[0].tags["mlops/reason"] if requests else (tick.skip_message or ""),
            "promotion": decision,
            "champion_after": registry.version_number(CHAMPION),
        }
        rows.append(row)
        echo(f"  {month}: drift {row['drift_share']:.2f}, champion v{row['champion_version']} "
             f"ROC AUC {row['champion_roc_auc']:.4f} vs frozen {row['frozen_roc_auc']:.4f}"
             + (f"; retrain ({row['why']}) -> {decision}, champion v{row['champion_after']}" if requests else "")
            + f" [{time.perf_counter() - started:.0f} s]")
    return pd.DataFrame(rows)


def write_timeline(timeline: pd.DataFrame, folder: Path) -> dict[str, Path]:
    """The timeline as CSV, a PNG plot and a markdown table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "replay_timeline.csv", "png": folder / "replay_timeline.png",
             "md": folder / "replay_timeline.md"}
    timeline.to_csv(paths["csv"], index=False)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot(timeline["month"], timeline["champion_roc_auc"], marker="o", label="champion (retrained on drift)")
    top.plot(timeline["month"], timeline["frozen_roc_auc"], marker="s", label="frozen first champion")
    for month in timeline.loc[timeline["retrain_triggered"], "month"]:
        top.axvline(month, color="grey", alpha=0.3)
    top.set_ylabel("ROC AUC on the month")
    top.legend()
    bottom.bar(timeline["month"], timeline["drift_share"], color="tab:orange")
    bottom.set_ylabel("share of drifted columns")
    bottom.tick_params(axis="x", rotation=45)
    figure.tight_layout()
    figure.savefig(paths["png"], dpi=110)
    plt.close(figure)
    columns = ["month", "drift_share", "retrain_triggered", "why", "promotion", "champion_version",
               "champion_roc_auc", "frozen_roc_auc", "champion_after", "top_drifted"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in timeline[columns].itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths
