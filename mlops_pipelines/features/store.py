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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from mlops_pipelines.features.online import OnlineStore, from_micros, to_micros
from mlops_pipelines.features.views import FeatureView

REGISTRY_TABLE = "features.registry"
ROW_ID = "__entity_row"


def to_utc(values: pd.Series) -> pd.Series:
    """Timestamps as UTC instants: aware ones converted, naive ones read as UTC."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise ValueError(
            f"timestamp column {values.name!r} holds {values.dtype} values, not timestamps "
            "(datetimes or ISO 8601 strings)"
        )
    try:
        return pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0]
        raise ValueError(f"timestamp column {values.name!r}: {reason}") from exc


def _output_name(view_name: str, name: str, full_feature_names: bool, seen: dict[str, str]) -> str:
    """The output column of a feature; a name already taken by another view is an error."""
    output = f"{view_name}__{name}" if full_feature_names else name
    if output in seen:
        raise ValueError(
            f"feature name {name!r} is in views {seen[output]!r} and {view_name!r}: pass full_feature_names=True"
        )
    seen[output] = view_name
    return output


def _native(value):
    """A key value SQLite can bind: numpy scalars become Python ones, NaN/NaT become None."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value.item() if hasattr(value, "item") else value


def event_rows_sql(view: FeatureView, names: Sequence[str], where: str = "") -> str:
    """One row per (entities, event instant) of ``view``: ``keys, __ts, __created, features``.

    Rows sharing an instant are decided by the latest created timestamp, then by the smallest
    feature values, so that equal instants never pick a row at random. ``where`` filters on
    ``__ts`` (e.g. an incremental window).
    """
    order = ([f'"{view.created_timestamp}" desc nulls last'] if view.created_timestamp else []) + [
        f'"{f}" nulls last' for f in names
    ]
    keys = ", ".join(f'"{k}"' for k in view.entities)
    columns = ", ".join(f'"{f}"' for f in names)
    created = f'"{view.created_timestamp}"::timestamptz' if view.created_timestamp else "null::timestamptz"
    return (
        f"select * from (select {keys}, \"{view.event_timestamp}\"::timestamptz as __ts, "
        f"{created} as __created, {columns} from {view.source} "
        f"where \"{view.event_timestamp}\" is not null "
        f'qualify row_number() over (partition by {keys}, "{view.event_timestamp}" '
        f"order by {', '.join(order)}) = 1) {('where ' + where) if where else ''}"
    )


def _micros(expression: str) -> str:
    """An instant as BIGINT microseconds since the epoch; +/-infinity (no epoch value) at the ends."""
    return (
        f"case when {expression} = 'infinity' then 9223372036854775807 "
        f"when {expression} = '-infinity' then -9223372036854775807 else epoch_us({expression}) end"
    )


def feature_rows_sql(view: FeatureView, names: Sequence[str]) -> str:
    """One row per (entities, event instant) of ``view``, for an ASOF join: ``keys, __ts, features``.

    ``__ts`` is the event instant in microseconds (an integer ASOF key is cheaper than a
    TIMESTAMPTZ one). Rows sharing keys and instant are decided as in :func:`event_rows_sql`, but
    only those: a hash aggregate finds the (usually few) tied groups and the window runs on their
    rows alone, instead of sorting every row of the view (that window was ~40% of the time). A
    hash collision only sends an untied group through the window too. Rows with a NULL key or
    event timestamp can match no entity row and are left out.
    """
    keys = ", ".join(f'"{k}"' for k in view.entities)
    names_sql = ", ".join(f'"{f}"' for f in names)
    instant = _micros(f'"{view.event_timestamp}"::timestamptz')
    created = f'"{view.created_timestamp}"' if view.created_timestamp else "null"
    joinable = " and ".join(f'"{c}" is not null' for c in (view.event_timestamp, *view.entities))
    order = ([] if not view.created_timestamp else ["__created desc nulls last"]) + [f'"{f}" nulls last' for f in names]
    return (
        f"with __rows as not materialized (select {keys}, {instant} as __ts, {created} as __created, "
        f"{names_sql}, hash({keys}, {instant}) as __group from {view.source} where {joinable}), "
        f"__tied as (select __group from __rows group by __group having count(*) > 1) "
        f"select {keys}, __ts, {names_sql} from __rows where __group not in (select __group from __tied) "
        f"union all "
        f"select {keys}, __ts, {names_sql} from __rows where __group in (select __group from __tied) "
        f"qualify row_number() over (partition by {keys}, __ts order by {', '.join(order)}) = 1"
    )


class FeatureStore:
    """Feature views over tables of a DuckDB file.

    Args:
        database_path: the warehouse file (``data/warehouse.duckdb``).
        views: views to start with (the ones declared in dbt_like_sql/, for instance).
        memory_limit: DuckDB's memory budget for the store's own connections; larger joins spill
            to a temporary folder instead of growing the process.
    """

    def __init__(self, database_path: str | Path, views: Sequence[FeatureView] = (),
                 memory_limit: str = "1GB", online_path: str | Path | None = None) -> None:
        self.database_path = str(database_path)
        self.memory_limit = memory_limit
        self.online = OnlineStore(online_path) if online_path else None
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

    def _view_join(self, view_name: str, names: Sequence[str], timestamp_column: str,
                   full_feature_names: bool, seen: dict[str, str], alias: str) -> tuple[str, list[str]]:
        """The ASOF join of one view onto ``e``, and its feature columns."""
        view = self.views[view_name]
        micros = f'epoch_us(e."{timestamp_column}")'
        on = " and ".join(f'e."{k}" = {alias}."{k}"' for k in view.entities)
        join = f"asof left join ({feature_rows_sql(view, names)}) {alias} on {on} and {micros} >= {alias}.__ts"
        matched = f"{alias}.__ts is not null"
        if view.ttl:
            # "event >= entity time - TTL" in integers: subtracting instants per row and comparing
            # intervals costs several times more in DuckDB. An unmatched row (NULL __ts) fails
            # too. A TTL beyond 2**62 µs (146,000 years) is as good as none, and cannot overflow.
            ttl = min(round(view.ttl / timedelta(microseconds=1)), 2**62)
            matched = f"{alias}.__ts >= {micros} - {ttl}"
        selected = []
        for name in names:
            output = _output_name(view_name, name, full_feature_names, seen)
            selected.append(f'case when {matched} then {alias}."{name}" end as "{output}"')
        return join, selected

    def historical_query(self, wanted: dict[str, list[str]], timestamp_column: str,
                         full_feature_names: bool, entities: str = "entities") -> str:
        """The SQL that joins ``entities`` (a relation with ``__entity_row`` and a TIMESTAMPTZ
        ``timestamp_column``) to each view, ordered by ``__entity_row``."""
        joins, selected, seen = [], [], {}
        for index, (view_name, names) in enumerate(wanted.items()):
            join, columns = self._view_join(view_name, names, timestamp_column, full_feature_names, seen, f"v{index}")
            joins.append(join)
            selected += columns
        return (
            f"select e.* exclude ({ROW_ID}), {', '.join(selected)} from {entities} e "
            f"{' '.join(joins)} order by e.{ROW_ID}"
        )

    def view_queries(self, wanted: dict[str, list[str]], timestamp_column: str,
                     full_feature_names: bool, entities: str = "entities") -> list[str]:
        """One query per view: ``__entity_row`` and the view's features, in no particular order.

        Each joins only the columns it needs (row number, keys, timestamp) rather than carrying
        the entity columns and the previous views' features through every ASOF join's sort, as
        :meth:`historical_query` does.
        """
        queries, seen = [], {}
        for view_name, names in wanted.items():
            join, selected = self._view_join(view_name, names, timestamp_column, full_feature_names, seen, "v")
            # The cast turns nanosecond timestamps (TIMESTAMPTZ_NS in DuckDB) into microseconds.
            timestamp = f'"{timestamp_column}"::timestamptz as "{timestamp_column}"'
            needed = ", ".join([ROW_ID, *(f'"{k}"' for k in self.views[view_name].entities), timestamp])
            queries.append(f"select e.{ROW_ID}, {', '.join(selected)} from (select {needed} from {entities}) e {join}")
        return queries

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
        entities[ROW_ID] = np.arange(len(entities), dtype=np.int64)
        queries = self.view_queries(wanted, timestamp_column, full_feature_names)
        with self._connection(connection) as con:
            con.register("entities", pa.Table.from_pandas(entities, preserve_index=False))
            # The entity columns as DuckDB returns them (same types as the joined columns had).
            parts = [con.sql(f"select * exclude ({ROW_ID}) from entities").to_arrow_table().to_pandas()]
            for sql in queries:
                part = con.sql(sql).to_arrow_table().to_pandas()
                # Rows come back in the join's order, each row number once: gather them back into
                # the caller's order (cheaper than an ORDER BY in DuckDB).
                where = np.empty(len(part), dtype=np.int64)
                where[part[ROW_ID].to_numpy()] = np.arange(len(part), dtype=np.int64)
                parts.append(part.drop(columns=ROW_ID).take(where).reset_index(drop=True))
            con.unregister("entities")
        frame = pd.concat(parts, axis=1)
        frame.index = entity_df.index
        return frame

    @contextmanager
    def _connection(self, connection: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
        """The caller's connection, or a read-only one of the store's own (closed afterwards)."""
        if connection is not None:
            connection.execute("SET TimeZone = 'UTC'")
            yield connection
            return
        own = duckdb.connect(self.database_path, read_only=self.database_path != ":memory:")
        try:
            own.execute("SET TimeZone = 'UTC'")
            own.execute(f"SET memory_limit = '{self.memory_limit}'")
            yield own
        finally:
            own.close()

    def _online(self) -> OnlineStore:
        if self.online is None:
            raise ValueError("this FeatureStore has no online store: pass online_path=...")
        return self.online

    def materialize_online(
        self,
        views: Sequence[str] | None = None,
        end_ts: datetime | pd.Timestamp | str | None = None,
        connection: duckdb.DuckDBPyConnection | None = None,
    ) -> dict[str, int]:
        """Write the latest row per entity of each view, as of ``end_ts``, to the online store.

        Incremental: a view already materialized (same version) only reads rows with an event
        timestamp after its previous ``end_ts`` and up to the new one; a new version of a view
        starts over. ``end_ts`` defaults to the latest event timestamp of each view (the data's
        own "now"); naive values are read as UTC. Returns the rows read per view.
        """
        online = self._online()
        names = list(views) if views is not None else list(self.views)
        unknown = [n for n in names if n not in self.views]
        if unknown:
            raise KeyError(f"feature views {unknown} are not registered (known: {sorted(self.views)})")
        processed: dict[str, int] = {}
        with self._connection(connection) as con, online.connect() as lite:
            for name in names:
                view = self.views[name]
                if end_ts is None:
                    latest = con.sql(
                        f'select max("{view.event_timestamp}")::timestamptz from {view.source}'
                    ).fetchall()[0][0]
                    if latest is None:
                        processed[name] = 0
                        continue
                    until = to_micros(latest)
                else:
                    until = to_micros(to_utc(pd.Series([end_ts], name="end_ts")).iloc[0])
                since = online.watermark(lite, view)
                if since is None:
                    online.reset(lite, view)
                elif until < since:
                    raise ValueError(
                        f"feature view {name!r} is materialized up to {from_micros(since)}; "
                        f"end_ts {from_micros(until)} would go back in time"
                    )
                window = f"__ts <= make_timestamp({until}::bigint)::timestamptz"
                if since is not None:
                    window += f" and __ts > make_timestamp({since}::bigint)::timestamptz"
                keys = ", ".join(f'"{k}"' for k in view.entities)
                order = ", ".join(f'"{f}" nulls last' for f in view.feature_names)
                columns = ", ".join(f'"{f}"' for f in view.feature_names)
                latest_sql = (
                    f"select {keys}, epoch_us(__ts), epoch_us(__created), {columns} "
                    f"from ({event_rows_sql(view, view.feature_names, window)}) "
                    f"where {' and '.join(f'{k} is not null' for k in view.entities)} "
                    f"qualify row_number() over (partition by {keys} order by __ts desc, "
                    f"__created desc nulls last, {order}) = 1"
                )
                rows = con.sql(latest_sql).fetchall()
                lite.execute("begin")
                online.upsert(lite, view, rows)
                online.record(lite, view, until, len(rows))
                lite.execute("commit")
                processed[name] = len(rows)
        return processed

    def get_online_features(
        self,
        entity_rows: Sequence[dict] | pd.DataFrame,
        features: Sequence[str],
        full_feature_names: bool = False,
    ) -> pd.DataFrame:
        """Feature values for each entity row from the online store, in the rows' order.

        Args:
            entity_rows: dicts (or a frame) holding the join keys of every requested view.
            features: ``"view:feature"`` references.
            full_feature_names: name output columns ``view__feature``.

        Returns:
            The entity rows followed by the features; nulls where the online store has no row
            for the entity, or only one older than the TTL at the view's materialization instant.
        """
        wanted = self.resolve_features(features)
        frame = pd.DataFrame(list(entity_rows)) if not isinstance(entity_rows, pd.DataFrame) \
            else entity_rows.reset_index(drop=True)
        out = frame.copy()
        seen: dict[str, str] = {}
        for view_name, names in wanted.items():
            view = self.views[view_name]
            missing = [k for k in view.entities if k not in frame.columns]
            if missing:
                raise KeyError(f"entity rows lack join keys {missing} of view {view_name!r}")
            keys = [tuple(_native(v) for v in row) for row in frame[list(view.entities)].itertuples(index=False)]
            found = self._online().read(view, names, keys)
            for position, name in enumerate(names):
                output = _output_name(view_name, name, full_feature_names, seen)
                out[output] = [found[k][position] if k in found else None for k in keys]
        out.index = entity_rows.index if isinstance(entity_rows, pd.DataFrame) else out.index
        return out

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
