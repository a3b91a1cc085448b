"""The offline feature store: feature views in the DuckDB warehouse, joined point-in-time.

Semantics (those of Feast's point-in-time join, without its faults): for each entity row and each
view, the feature row with the greatest event timestamp <= the entity timestamp, within the TTL
(inclusive) when there is one; ties on the event timestamp go to the greatest created timestamp,
then deterministically. Every entity row comes back exactly once, in the caller's order,
duplicates included, with nulls where nothing matches. Timestamps are compared as UTC instants;
naive timestamps are read as UTC.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from mlops_pipelines.features.views import FeatureView

REGISTRY_TABLE = "features.registry"
ROW_ID = "__entity_row"


def to_utc(values: pd.Series) -> pd.Series:
    """Timestamps as UTC instants: aware ones converted, naive ones read as UTC."""
    try:
        return pd.to_datetime(values, utc=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"timestamp column {values.name!r}: {exc}") from exc


class FeatureStore:
    """Feature views over tables of a DuckDB file.

    Args:
        database_path: the warehouse file (``data/warehouse.duckdb``).
        views: views to start with (the ones declared in dbt_like_sql/, for instance).
        memory_limit: DuckDB's memory budget for the store's own connections; larger joins spill
            to a temporary folder instead of growing the process.
    """

    def __init__(self, database_path: str | Path, views: Sequence[FeatureView] = (),
                 memory_limit: str = "1GB") -> None:
        self.database_path = str(database_path)
        self.memory_limit = memory_limit
        self.views: dict[str, FeatureView] = {}
        for view in views:
            self.register(view)

    def register(self, view: FeatureView) -> FeatureView:
        """Add (or replace) a view; its source may be a table or ``read_parquet('...')``."""
        self.views[view.name] = view
        return view

    def resolve_features(self, features: Sequence[str]) -> dict[str, list[str]]:
        """``["view:feature", ...]`` grouped by view, in the order asked, validated."""
        wanted: dict[str, list[str]] = {}
        for reference in features:
            view_name, sep, feature = reference.partition(":")
            if not sep or not feature:
                raise ValueError(f"feature reference {reference!r}: expected 'view:feature'")
            view = self.views.get(view_name)
            if view is None:
                raise KeyError(f"feature view {view_name!r} is not registered (known: {sorted(self.views)})")
            if feature not in view.feature_names:
                raise KeyError(f"feature view {view_name!r} has no feature {feature!r} (has: {view.feature_names})")
            wanted.setdefault(view_name, [])
            if feature not in wanted[view_name]:
                wanted[view_name].append(feature)
        return wanted

    def historical_query(self, wanted: dict[str, list[str]], timestamp_column: str,
                         full_feature_names: bool, entities: str = "entities") -> str:
        """The SQL that joins ``entities`` (a relation with ``__entity_row`` and a TIMESTAMPTZ
        ``timestamp_column``) to each view, ordered by ``__entity_row``."""
        joins, selected, seen = [], [], {}
        for index, (view_name, names) in enumerate(wanted.items()):
            view = self.views[view_name]
            alias = f"v{index}"
            order = ([f'"{view.created_timestamp}" desc nulls last'] if view.created_timestamp else []) + [
                f'"{f}" nulls last' for f in names
            ]
            keys = ", ".join(f'"{k}"' for k in view.entities)
            columns = ", ".join(f'"{f}"' for f in names)
            # One row per (entities, event instant): latest created timestamp, then the smallest
            # feature values, so that equal instants never pick a row at random.
            dedup = (
                f'select {keys}, "{view.event_timestamp}"::timestamptz as __ts, {columns} '
                f"from {view.source} where \"{view.event_timestamp}\" is not null "
                f'qualify row_number() over (partition by {keys}, "{view.event_timestamp}" '
                f"order by {', '.join(order)}) = 1"
            )
            on = " and ".join(f'e."{k}" = {alias}."{k}"' for k in view.entities)
            joins.append(
                f"asof left join ({dedup}) {alias} on {on} and e.\"{timestamp_column}\" >= {alias}.__ts"
            )
            ttl = (
                f" and e.\"{timestamp_column}\" - {alias}.__ts <= interval '{int(view.ttl.total_seconds())} seconds'"
                if view.ttl else ""
            )
            for name in names:
                output = f"{view_name}__{name}" if full_feature_names else name
                if output in seen:
                    raise ValueError(
                        f"feature name {name!r} is in views {seen[output]!r} and {view_name!r}: "
                        "pass full_feature_names=True"
                    )
                seen[output] = view_name
                selected.append(f'case when {alias}.__ts is not null{ttl} then {alias}."{name}" end as "{output}"')
        return (
            f"select e.* exclude ({ROW_ID}), {', '.join(selected)} from {entities} e "
            f"{' '.join(joins)} order by e.{ROW_ID}"
        )

    def get_historical_features(
        self,
        entity_df: pd.DataFrame,
        features: Sequence[str],
        full_feature_names: bool = False,
        timestamp_column: str = "event_timestamp",
        connection: duckdb.DuckDBPyConnection | None = None,
    ) -> pd.DataFrame:
        """Join features to ``entity_df`` point-in-time.

        Args:
            entity_df: the entity key columns of every requested view and ``timestamp_column``.
            features: ``"view:feature"`` references.
            full_feature_names: name output columns ``view__feature`` (required when names collide).
            timestamp_column: the entity frame's timestamp; aware or naive (naive read as UTC).
            connection: an open connection to reuse (the lifecycle's own writer); else read-only.

        Returns:
            ``entity_df``'s columns (timestamp as UTC) followed by the features, one row per
            entity row, in the same order.
        """
        wanted = self.resolve_features(features)
        if timestamp_column not in entity_df.columns:
            raise KeyError(f"entity frame has no timestamp column {timestamp_column!r}")
        for view_name in wanted:
            missing = [k for k in self.views[view_name].entities if k not in entity_df.columns]
            if missing:
                raise KeyError(f"entity frame lacks join keys {missing} of view {view_name!r}")
        entities = entity_df.copy()
        entities[timestamp_column] = to_utc(entities[timestamp_column])
        entities[ROW_ID] = range(len(entities))
        sql = self.historical_query(wanted, timestamp_column, full_feature_names)
        own = connection is None
        con = connection or duckdb.connect(self.database_path, read_only=self.database_path != ":memory:")
        try:
            con.execute("SET TimeZone = 'UTC'")
            if own:
                con.execute(f"SET memory_limit = '{self.memory_limit}'")
            con.register("entities", pa.Table.from_pandas(entities, preserve_index=False))
            result = con.sql(sql).to_arrow_table()
            con.unregister("entities")
        finally:
            if own:
                con.close()
        frame = result.to_pandas()
        frame.index = entity_df.index
        return frame

    @staticmethod
    def record_materialization(connection: duckdb.DuckDBPyConnection, view: FeatureView,
                               row_count: int, run_id: str) -> None:
        """Upsert the view's entry in ``features.registry`` (one row per view)."""
        connection.execute("create schema if not exists features")
        connection.execute(
            f"""create table if not exists {REGISTRY_TABLE} (
                name varchar primary key, version varchar, source varchar, entities varchar,
                event_timestamp varchar, created_timestamp varchar, ttl_seconds double,
                features varchar, owner varchar, description varchar, row_count bigint,
                materialized_at timestamptz, dagster_run_id varchar)"""
        )
        connection.execute(
            f"insert or replace into {REGISTRY_TABLE} values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?)",
            [
                view.name, view.version, view.source, json.dumps(list(view.entities)),
                view.event_timestamp, view.created_timestamp,
                view.ttl.total_seconds() if view.ttl else None,
                json.dumps([{"name": f.name, "type": f.type, "description": f.description} for f in view.features]),
                view.owner, view.description, row_count, run_id,
            ],
        )
