"""The training set: one row per flight, labelled after the fact, with features as of its
scheduled departure instant (UTC), joined point-in-time from the feature views.

Label: ``arr_delay > 15`` minutes. Cancelled flights (no departure) and diverted flights
(departed, no arrival delay) have no observed arrival delay; by default they are left out and
counted (``label_policy="exclude"``); ``"as_delayed"`` labels them 1 instead, for a "will this
flight be disrupted" model. No row is dropped silently: the counts go to the asset metadata.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mlops_pipelines.features.store import FeatureStore, entity_rows, to_utc

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
    -- When the label is known; cancelled or diverted flights (labelled only under "as_delayed")
    -- are taken as known one day after their scheduled departure.
    coalesce(o.arr_known_at, o.sched_dep_utc + interval 1 day) as label_known_at
from intermediate.int_flight_outcomes o
join staging.stg_flights s using (flight_id)
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
    months: Sequence[str] | None = None,
) -> tuple[pa.Table, DatasetCounts]:
    """Labelled flights with their point-in-time features, ordered by scheduled departure.

    The labelled flights stay Arrow and DuckDB tables: only their timestamps go through pandas
    (read as UTC instants), and the point-in-time join is the feature store's own
    (:meth:`FeatureStore.join_features`, as ``get_historical_features`` runs it).

    ``months`` (``YYYY-MM`` ingestion partitions) limits the rows, e.g. to one month for monitoring.

    Columns out: ``flight_id``, ``sched_dep_utc``, ``source_month``, ``label_known_at``, the model
    inputs of :func:`feature_columns` (VARCHAR or DOUBLE), and ``is_delayed`` (0/1).
    """
    if label_policy not in ("exclude", "as_delayed"):
        raise ValueError(f"label_policy {label_policy!r}: expected 'exclude' or 'as_delayed'")
    delayed = f"coalesce(arr_delay_minutes > {DELAY_THRESHOLD_MINUTES}, true)"
    keep = "arr_delay_minutes is not null" if label_policy == "exclude" else "true"
    in_months = "true"
    if months is not None:
        if not all(re.fullmatch(r"\d{4}-\d{2}", m) for m in months):
            raise ValueError(f"months {list(months)}: expected YYYY-MM")
        in_months = "source_month in (" + ", ".join(f"'{m}'" for m in months) + ")" if months else "false"
    connection.execute(
        f"create or replace temp table training_entities as "
        f"select *, cast({delayed} as bigint) as {LABEL} "
        f"from ({ENTITY_SQL}) where {keep} and {in_months}"
    )
    flights, cancelled, diverted, unlabelled = connection.execute(
        "select count(*), count(*) filter (where is_cancelled), count(*) filter (where is_diverted), "
        f"count(*) filter (where arr_delay_minutes is null) from ({ENTITY_SQL}) where {in_months}"
    ).fetchall()[0]
    # The same point-in-time join as FeatureStore.get_historical_features, on Arrow columns.
    wanted = store.resolve_features(feature_refs)
    entities = connection.sql(f"select * from training_entities order by {TIMESTAMP}, flight_id").to_arrow_table()
    points = entity_rows({k: entities.column(k) for k in store.entity_keys(wanted)},
                         to_utc(entities.column(TIMESTAMP).to_pandas().rename(TIMESTAMP)))
    features = store.join_features(connection, points, wanted, full_feature_names=False)
    joined = pa.Table.from_arrays([*entities.columns, *features.columns],
                                  names=[*entities.column_names, *features.column_names])
    columns = feature_columns(feature_refs)
    casts = ", ".join(
        f'cast("{name}" as {"varchar" if kind == "str" else "double"}) as "{name}"'
        for name, kind in columns.items()
    )
    connection.register("__training_joined", joined)
    dataset = connection.sql(
        f"select flight_id, {TIMESTAMP}, source_month, label_known_at, {casts}, {LABEL} from __training_joined"
    ).to_arrow_table()
    connection.unregister("__training_joined")
    connection.execute("drop table training_entities")
    rows = dataset.num_rows
    result = DatasetCounts(
        flights=int(flights),
        cancelled=int(cancelled),
        diverted=int(diverted),
        excluded_unlabelled=int(unlabelled) if label_policy == "exclude" else 0,
        rows=rows,
        positive_rate=float(pc.mean(dataset[LABEL]).as_py() or 0.0) if rows else 0.0,
    )
    return dataset, result
