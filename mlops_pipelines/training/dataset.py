"""The training set: one row per flight, labelled after the fact, with features as of its
scheduled departure instant (UTC), joined point-in-time from the feature views.

Label: ``arr_delay > 15`` minutes. Cancelled flights (no departure) and diverted flights
(departed, no arrival delay) have no observed arrival delay; by default they are left out and
counted (``label_policy="exclude"``); ``"as_delayed"`` labels them 1 instead, for a "will this
flight be disrupted" model. No row is dropped silently: the counts go to the asset metadata.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import duckdb
import pandas as pd

from mlops_pipelines.features.store import FeatureStore

DELAY_THRESHOLD_MINUTES = 15
LABEL = "is_delayed"
TIMESTAMP = "sched_dep_utc"

# Known before departure from the schedule itself: no feature view needed.
SCHEDULE_FEATURES = {
    "carrier": "str", "origin": "str", "dest": "str",
    # No month: a model trained on January..September would only extrapolate it to the holdout.
    "sched_dep_hour_local": "float", "day_of_week": "float", "distance_miles": "float",
}

FEATURE_REFS: tuple[str, ...] = (
    "fv_origin_weather:temp_f", "fv_origin_weather:dewpoint_f", "fv_origin_weather:humidity_pct",
    "fv_origin_weather:wind_speed_mph", "fv_origin_weather:wind_gust_mph",
    "fv_origin_weather:precip_in", "fv_origin_weather:pressure_mb",
    "fv_origin_weather:visibility_miles",
    "fv_plane:plane_age_years", "fv_plane:seats", "fv_plane:engine_type", "fv_plane:manufacturer",
    "fv_carrier_arrival_delays:carrier_arr_delay_mean_24h",
    "fv_carrier_arrival_delays:carrier_delayed_share_24h",
    "fv_carrier_arrival_delays:carrier_arr_delay_mean_7d",
    "fv_carrier_arrival_delays:carrier_delayed_share_7d",
    "fv_route_arrival_delays:route_arr_delay_mean_28d",
    "fv_route_arrival_delays:route_delayed_share_28d",
    "fv_origin_departure_delays:origin_dep_delay_mean_1h",
    "fv_origin_departure_delays:origin_dep_delay_mean_3h",
    "fv_origin_departure_delays:origin_dep_delayed_share_1h",
    "fv_origin_departure_delays:origin_departures_1h",
    "fv_tail_departures:tail_last_dep_delay",
    "fv_tail_departures:tail_departures_24h",
)

ENTITY_SQL = """
select
    o.flight_id,
    o.sched_dep_utc,
    o.carrier,
    o.origin,
    o.dest,
    o.tailnum,
    s.sched_dep_hour_local,
    isodow(make_date(s.year, s.month, s.day)) as day_of_week,
    s.distance_miles,
    s.source_month,
    o.is_cancelled,
    o.is_diverted,
    o.arr_delay_minutes,
    o.arr_known_at
from intermediate.int_flight_outcomes o
join staging.stg_flights s using (flight_id)
order by o.sched_dep_utc, o.flight_id
"""


@dataclass(frozen=True)
class DatasetCounts:
    flights: int
    cancelled: int
    diverted: int
    excluded_unlabelled: int
    rows: int
    positive_rate: float


def feature_columns(feature_refs: tuple[str, ...] = FEATURE_REFS) -> dict[str, str]:
    """Model input columns and their kinds (``str`` categorical, ``float`` numeric)."""
    columns = dict(SCHEDULE_FEATURES)
    string_features = {"engine_type", "manufacturer", "aircraft_type"}
    for reference in feature_refs:
        name = reference.split(":", 1)[1]
        columns[name] = "str" if name in string_features else "float"
    return columns


def build_training_dataset(
    connection: duckdb.DuckDBPyConnection,
    store: FeatureStore,
    label_policy: str = "exclude",
    feature_refs: tuple[str, ...] = FEATURE_REFS,
) -> tuple[pd.DataFrame, DatasetCounts]:
    """Labelled flights with their point-in-time features, ordered by scheduled departure.

    Columns out: ``flight_id``, ``sched_dep_utc``, ``source_month``, ``arr_known_at``, the model
    inputs of :func:`feature_columns`, and ``is_delayed`` (0/1).
    """
    if label_policy not in ("exclude", "as_delayed"):
        raise ValueError(f"label_policy {label_policy!r}: expected 'exclude' or 'as_delayed'")
    flights = connection.execute(ENTITY_SQL).df()
    unlabelled = flights["arr_delay_minutes"].isna()
    counts = {
        "flights": len(flights),
        "cancelled": int(flights["is_cancelled"].sum()),
        "diverted": int(flights["is_diverted"].sum()),
    }
    if label_policy == "exclude":
        flights = flights[~unlabelled].reset_index(drop=True)
        label = flights["arr_delay_minutes"] > DELAY_THRESHOLD_MINUTES
    else:
        label = unlabelled | (flights["arr_delay_minutes"] > DELAY_THRESHOLD_MINUTES)
    flights[LABEL] = label.astype("int64").to_numpy()
    joined = store.get_historical_features(
        flights, list(feature_refs), timestamp_column=TIMESTAMP, connection=connection
    )
    columns = feature_columns(feature_refs)
    for name, kind in columns.items():
        joined[name] = joined[name].astype("object").where(joined[name].notna(), None) if kind == "str" \
            else joined[name].astype("float64")
    dataset = joined[["flight_id", TIMESTAMP, "source_month", "arr_known_at", *columns, LABEL]]
    result = DatasetCounts(
        flights=counts["flights"],
        cancelled=counts["cancelled"],
        diverted=counts["diverted"],
        excluded_unlabelled=int(unlabelled.sum()) if label_policy == "exclude" else 0,
        rows=len(dataset),
        positive_rate=float(dataset[LABEL].mean()) if len(dataset) else 0.0,
    )
    return dataset, result


def dataset_hash(frame: pd.DataFrame) -> str:
    """A content hash of a frame (values and column names), stable across runs."""
    digest = hashlib.sha256(",".join(frame.columns).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
