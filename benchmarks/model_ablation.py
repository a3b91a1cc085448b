"""What moves the holdout ROC AUC: the model refit on growing groups of features.

Reads the training set snapshot the demo wrote (run `make demo` first) and prints, for each group
added, the holdout ROC AUC (2013-10..2013-12) of the same seeded model trained on 2013-01..2013-09.

    .venv/bin/python benchmarks/model_ablation.py [--data-dir data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from mlops_pipelines.training.dataset import LABEL, feature_columns
from mlops_pipelines.training.model import ModelParams, TimeSplit, build_pipeline

GROUPS = [
    ("schedule (carrier, origin, dest, hour, weekday, distance)",
     ["carrier", "origin", "dest", "sched_dep_hour_local", "day_of_week", "distance_miles"]),
    ("+ origin weather", ["temp_f", "dewpoint_f", "humidity_pct", "wind_speed_mph", "wind_gust_mph",
                          "precip_in", "pressure_mb", "visibility_miles"]),
    ("+ plane attributes", ["plane_age_years", "seats", "engine_type", "manufacturer"]),
    ("+ carrier and route arrival delays", [
        "carrier_arr_delay_mean_24h", "carrier_delayed_share_24h", "carrier_arr_delay_mean_7d",
        "carrier_delayed_share_7d", "route_arr_delay_mean_28d", "route_delayed_share_28d"]),
    ("+ origin departure congestion", ["origin_dep_delay_mean_1h", "origin_dep_delay_mean_3h",
                                       "origin_dep_delayed_share_1h", "origin_departures_1h"]),
    ("+ aircraft's previous departure", ["tail_last_dep_delay", "tail_departures_24h"]),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    folder = Path(args.data_dir) / "lake" / "snapshots" / "training_dataset"
    frame = pd.read_parquet(folder / (folder / "_CURRENT").read_text().strip())
    train, holdout = TimeSplit().split(frame)
    kinds = feature_columns()
    print(f"train rows {len(train):,}, holdout rows {len(holdout):,}")
    used: list[str] = []
    previous = None
    for label, columns in GROUPS:
        used += columns
        started = time.perf_counter()
        pipeline = build_pipeline({c: kinds[c] for c in used}, ModelParams())
        pipeline.fit(train[used], train[LABEL])
        auc = roc_auc_score(holdout[LABEL], pipeline.predict_proba(holdout[used])[:, 1])
        delta = "" if previous is None else f"{auc - previous:+.4f}"
        print(f"{label:<62} ROC AUC {auc:.4f} {delta:>8}   ({time.perf_counter() - started:.1f} s)")
        previous = auc


if __name__ == "__main__":
    main()
