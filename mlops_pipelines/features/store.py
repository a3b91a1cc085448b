"""The offline feature store: feature views in the DuckDB warehouse, joined point-in-time.

Semantics (those of Feast's point-in-time join, without its faults): for each entity row and each
view, the feature row with the greatest event timestamp <= the entity timestamp, within the TTL
(inclusive) when there is one; ties on the event timestamp go to the greatest created timestamp,
then to the smallest values of the view's features in their declared order (all of them,
whatever was asked for, so that every request and the online store pick the same row). Every
entity row comes back exactly once, in the caller's order,
duplicates included, with nulls where nothing matches. Timestamps are compared as UTC instants;
naive timestamps are read as UTC.
"""

from __future__ import annotations

import difflib
import json
import os
import queue
import threading
import uuid
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_pipelines import numpy_sort
from mlops_pipelines.features import point_in_time, prepared
from mlops_pipelines.features.errors import (
    DeclarationNotBuiltWarning,
    FeatureNameCollision,
    FeatureTypeWarning,
    MissingTimestampColumn,
    PreparedCopyStaleWarning,
    outside_stacklevel,
)
from mlops_pipelines.features.online import OnlineStore, from_micros, key_values, stored_values, to_micros
from mlops_pipelines.features.sql_project import default_project_dir
from mlops_pipelines.features.timestamps import to_utc
from mlops_pipelines.features.views import (
    FEATURE_TYPES,
    TIMESTAMP_TYPES,
    FeatureView,
    quoted,
    timestamp_type_problem,
    ttl_text,
    type_matches,
)

REGISTRY_TABLE = "features.registry"
PYTHON_ORIGIN = "python"  # a registry row of a view applied from Python (FeatureStore.apply), not built from SQL
# The watermark of a view materialized while it had no rows at all: before any event, so that the
# next materialization reads every row.
EMPTY_WATERMARK = -(2**62)
FINITE = 2**63 - 2  # DuckDB's largest finite timestamp (µs); +/-infinity are the next integers out
EARLIEST = -9_223_372_022_400_000_000  # DuckDB's earliest finite timestamp (µs): 290309-12-22 (BC)


def watermark_text(micros: int) -> str:
    """A watermark as text: its instant, or that the view had no row of a finite event time yet
    (none at all, or only rows at -infinity, which are served, or +infinity)."""
    return "no finite event yet" if micros == EMPTY_WATERMARK else str(from_micros(micros))


def output_names(features: Iterable[tuple[str, str]], full_feature_names: bool) -> dict[tuple[str, str], str]:
    """``(view, feature) -> output column`` for each feature (each once, in the order given); two
    features that would make one column are an error."""
    outputs: dict[tuple[str, str], str] = {}
    owners: dict[str, str] = {}  # output column -> "view:feature"
    for view_name, name in features:
        if (view_name, name) in outputs:
            continue
        output = f"{view_name}__{name}" if full_feature_names else name
        if output in owners:
            if full_feature_names:
                raise ValueError(f"features {owners[output]!r} and '{view_name}:{name}' both make the column "
                                 f"{output!r}; rename a view or a feature")
            raise FeatureNameCollision(f"feature name {name!r} is in views {owners[output].partition(':')[0]!r} and "
                                       f"{view_name!r}: pass ")
        owners[output] = f"{view_name}:{name}"
        outputs[view_name, name] = output
    return outputs


def references(features: Iterable[str] | str) -> list[str]:
    """Feature references as a list: one reference given alone, or any iterable of them (read
    once: a generator is not used up before the output columns are named)."""
    if isinstance(features, str):
        return [features]
    if isinstance(features, Mapping) or not isinstance(features, Iterable):
        raise TypeError(f"features must be 'view:feature' references (a list of str), not {type(features).__name__}")
    listed = list(features)
    wrong = [r for r in listed if not isinstance(r, str)]
    if wrong:
        raise TypeError(f"feature references must be 'view:feature' text, not {wrong[0]!r}")
    return listed


def _requested(features: Sequence[str]) -> list[tuple[str, str]]:
    """``(view, feature)`` of each reference, in the order asked (after resolve_features checked them)."""
    return [(view_name, name) for view_name, _, name in (r.partition(":") for r in features)]


def _check_entity_columns(columns: Sequence[str], outputs: Sequence[str], full_feature_names: bool) -> None:
    """An entity column named like a feature's output column would come back twice: an error."""
    present = set(columns)
    clash = [c for c in outputs if c in present]
    if clash:
        message = f"entity columns {clash} have the names of requested features' output columns: rename them"
        if full_feature_names:
            raise ValueError(message)
        raise FeatureNameCollision(f"{message} or pass ")


def _arrow_entities(table: pa.Table) -> pd.DataFrame:
    """An Arrow table of entity rows as pandas, UUID columns as their canonical text (as DuckDB
    hands UUID keys over; pandas would get their 16 raw bytes), and dictionary columns whose
    dictionary holds a null, a NaN or a value twice as their values (pandas refuses them as
    categories; a NaN key then matches nothing, as in a plain column)."""
    for index, (name, type_) in enumerate(zip(table.column_names, table.schema.types, strict=True)):
        column = table.column(index)
        if pa.types.is_dictionary(type_) and isinstance(type_.value_type, pa.UuidType):
            # (a pandas category of uuid.UUID objects: Arrow has no kernels for UUIDs inside it)
            column, type_ = column.cast(type_.value_type), type_.value_type
        if isinstance(type_, pa.UuidType):
            table = table.set_column(index, name, point_in_time.uuid_texts_of(column))
        elif pa.types.is_dictionary(type_) and not all(_categories(chunk.dictionary) for chunk in column.chunks):
            table = table.set_column(index, name, column.cast(type_.value_type))
    return point_in_time.entity_pandas(table)


def _categories(values: pa.Array) -> bool:
    """Whether pandas takes a dictionary's values as categories: no null or NaN, none twice."""
    if values.null_count or (pa.types.is_floating(values.type) and pc.any(pc.is_nan(values)).as_py()):
        return False
    return len(pc.unique(values)) == len(values)


def _check_unique_columns(columns: pd.Index) -> None:
    """Entity columns are found by name: a name given twice is an error, not a guess."""
    twice = sorted({str(c) for c in columns[columns.duplicated()]})
    if twice:
        raise ValueError(f"entity columns {twice} appear more than once")


def _entity_rows_frame(entity_rows: Sequence[Mapping] | Mapping[str, Sequence] | pd.DataFrame | pa.Table,
                       keys: Sequence[str]) -> pd.DataFrame:
    """Online entity rows as a frame (index reset); a dict row without one of ``keys`` is an
    error naming the row (give None to look up a missing key)."""
    if isinstance(entity_rows, pa.Table):
        entity_rows = _arrow_entities(entity_rows)
    if isinstance(entity_rows, pd.DataFrame):
        _check_unique_columns(entity_rows.columns)
        return entity_rows.reset_index(drop=True)
    if isinstance(entity_rows, Mapping):  # {key: [values...]}, as Feast also accepts
        scalar = [k for k, v in entity_rows.items() if isinstance(v, str | bytes) or not isinstance(v, Iterable)]
        if scalar:
            raise TypeError(f"entity rows given as a dict need a list of values per key; {scalar[0]!r} has "
                            f"{entity_rows[scalar[0]]!r} (for one row, give [value] or a list of dicts)")
        entity_rows = {k: list(v) for k, v in entity_rows.items()}
        lengths = {k: len(v) for k, v in entity_rows.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"entity rows: the key lists differ in length {lengths}")
        return pd.DataFrame({k: _listed_column(v) for k, v in entity_rows.items()}, columns=list(entity_rows))
    if isinstance(entity_rows, str | bytes) or not isinstance(entity_rows, Iterable):
        raise TypeError(f"entity rows must be a list of dicts, a dict of lists, a DataFrame or an Arrow table, "
                        f"not {type(entity_rows).__name__}")
    rows = list(entity_rows)
    for position, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"entity row {position} is a {type(row).__name__}, not a dict of join keys")
        missing = [k for k in keys if k not in row]
        if missing:
            raise KeyError(f"entity row {position} lacks join keys {missing} (give None for a key that is unknown)")
    columns = list(dict.fromkeys(c for row in rows for c in row)) or list(keys)
    frame = pd.DataFrame(rows, columns=columns)
    for column in columns:
        if frame[column].dtype.kind == "f":  # (see _listed_column)
            frame[column] = _listed_column([row.get(column) for row in rows])
    return frame


def _listed_column(values: list) -> pd.Series:
    """A column of Python values as pandas types it, except integers with a None among them:
    pandas makes them floats, rounded beyond 2**53 onto another entity's key. Those stay objects."""
    column = pd.Series(values)
    if column.dtype.kind == "f" and point_in_time.holds_integers(values):
        return pd.Series(values, dtype=object)
    return column


@dataclass(frozen=True)
class NanosecondTimestamps:
    """Which of a view's timestamp columns hold nanoseconds (see :func:`check_source_types`)."""

    event: bool = False
    created: bool = False


def event_instant_sql(view: FeatureView, ns: NanosecondTimestamps) -> str:
    """The view's event time as a TIMESTAMPTZ in microseconds (naive timestamps read as UTC on the
    store's connections). A nanosecond event (TIMESTAMP_NS or TIMESTAMPTZ_NS) is rounded up to the
    next whole microsecond: DuckDB's cast rounds to the nearest, and a window of rows "at or before
    t" (a whole microsecond) would then take an event 400 ns after it. Rounded up, ``<= t`` and
    ``> t`` are exact for whole microseconds; the join compares the event's nanoseconds
    (:func:`event_nanoseconds_sql`)."""
    column = quoted(view.event_timestamp)
    if not ns.event:
        return f"{column}::timestamptz"
    # (integer division truncates toward zero in DuckDB: + 1 only for a positive remainder;
    # epoch_ns of 'infinity' is NULL, whose own cast is kept)
    return (f"coalesce(make_timestamp(epoch_ns({column}) // 1000 + (epoch_ns({column}) % 1000 > 0)::bigint)"
            f"::timestamptz, {column}::timestamptz)")


def event_nanoseconds_sql(view: FeatureView) -> str:
    """A nanosecond event time as int64 nanoseconds since the epoch (UTC), +/-(2**63 - 1) for
    +/-infinity (whose ``epoch_ns`` is NULL)."""
    column = quoted(view.event_timestamp)
    return (f"coalesce(epoch_ns({column}), case when {column}::timestamptz > '1970-01-01'::timestamptz "
            f"then {2**63 - 1} else {-(2**63 - 1)} end)")


def source_sql(view: FeatureView) -> str:
    """The view's source as SQL to select from: on a line of its own, so that a source ending in
    a comment (``t -- raw rows``) does not comment out the rest of the query."""
    return f"{view.source}\n"


def feature_table_sql(view: FeatureView, names: Sequence[str], where: str,
                      ns: NanosecondTimestamps) -> str:
    """The rows of ``view`` a point-in-time join can use: ``keys, __ts, [__created], features,
    [__ts_ns]``.

    ``__ts`` is :func:`event_instant_sql`; ``__ts_ns``, only for a nanosecond event column, is
    :func:`event_nanoseconds_sql`; ``__created`` a TIMESTAMPTZ in microseconds too,
    except that of a nanosecond column, which stays as it is (``ns``, from
    :func:`check_source_types`): created timestamps only break ties, and two a few
    nanoseconds apart would tie in microseconds. Rows with a NULL key or event timestamp can
    match no entity row and are left out. ``where`` is one more condition (e.g. an incremental
    window).
    """
    keys = ", ".join(quoted(k) for k in view.entities)
    cast = "" if ns.created else "::timestamptz"
    created = f", {quoted(view.created_timestamp)}{cast} as {point_in_time.CREATED}" \
        if view.created_timestamp else ""
    features = "".join(f", {quoted(f)}" for f in names)
    nanoseconds = f", {event_nanoseconds_sql(view)} as {point_in_time.TS_NS}" if ns.event else ""
    joinable = " and ".join(f'{quoted(c)} is not null' for c in (view.event_timestamp, *view.entities))
    return (
        f'select {keys}, {event_instant_sql(view, ns)} as {point_in_time.TS}{created}{features}{nanoseconds} '
        f"from {source_sql(view)} where {joinable}{' and ' + where if where else ''}"
    )


def _window(view: FeatureView, since: int | None, until: int, ns: NanosecondTimestamps) -> str:
    """The rows a materialization reads: event times after ``since`` (if any) up to ``until`` (µs)."""
    event = event_instant_sql(view, ns)
    window = f"{event} <= make_timestamp({until}::bigint)::timestamptz"
    return window if since is None else f"{window} and {event} > make_timestamp({since}::bigint)::timestamptz"


def check_source_types(connection: duckdb.DuckDBPyConnection, view: FeatureView,
                       told: list[str] | None = None) -> NanosecondTimestamps:
    """Refuse a view whose event or created timestamp column is not a TIMESTAMP (a DATE, text,
    epoch numbers): the join's cast would read a date as its midnight, hours before the day's
    rows were known, and text in whatever format DuckDB guesses. Refuse a feature of a declared
    type other than the default ``float`` that its column does not have (``int`` over text), and
    warn of a ``float`` one over a column that is no number: :meth:`FeatureStore.apply` and the
    SQL project's tests check those, views only registered would not be. (Binding only: no row
    is read.) Returns which timestamps hold nanoseconds (see :func:`feature_table_sql`)."""
    columns = [c for c in (view.event_timestamp, view.created_timestamp) if c]
    with _reading(view):  # (one bind of the source: its columns' names and types)
        source_columns = _source_columns(connection, view)
        found = {name.lower(): str(type_) for name, type_ in source_columns}
        if any(c.lower() not in found for c in columns):  # (DuckDB's own error, naming the column)
            connection.sql(f"select {', '.join(quoted(c) for c in columns)} from {source_sql(view)} limit 0")
    absent = [f.name for f in view.features if f.name.lower() not in found]
    if absent:  # (DuckDB's error would name one column, maybe not one asked for, and not why)
        raise ViewReadError(
            f"feature view {view.name!r}: {'features' if len(absent) > 1 else 'feature'} "
            f"{', '.join(map(repr, absent))} {'are' if len(absent) > 1 else 'is'} declared but not a column of "
            f"{view.source} (its columns: {[name for name, _ in source_columns]})")
    types = [found[c.lower()] for c in columns]
    for role, column, type_ in zip(("event timestamp", "created timestamp"), columns, types, strict=False):
        if str(type_) not in TIMESTAMP_TYPES:
            raise ViewReadError(f"feature view {view.name!r}: {role} column {column!r} "
                                f"{timestamp_type_problem(str(type_))}; the view reads {view.source}")
    for feature in view.features:
        type_ = found.get(feature.name.lower())
        if type_ is None or type_matches(feature.type, type_):
            continue
        if feature.type != "float":
            raise ViewReadError(f"feature view {view.name!r}: feature {feature.name!r} is declared {feature.type}, "
                                f"but {view.source} gives {type_}")
        # float is also the type of a feature declared without one: served as its column is,
        # with a word (apply() and the SQL project's column tests refuse it).
        fits = next((t for t in FEATURE_TYPES if t not in ("float", "any") and type_matches(t, type_)), "any")
        text = (f"feature view {view.name!r}: feature {feature.name!r} has the type float (the default), but "
                f"{view.source} gives {type_}: it is served as {type_}; declare its type, Feature({feature.name!r}, "
                f"{fits!r}), as apply() requires")
        warnings.warn(FeatureTypeWarning(text), stacklevel=outside_stacklevel())
        if told is not None:  # (a prepared copy keeps them, to warn again on each use)
            told.append(text)
    nanoseconds = ("TIMESTAMP_NS", "TIMESTAMPTZ_NS")  # (pandas' datetime64[ns, UTC] in parquet: the second)
    return NanosecondTimestamps(str(types[0]) in nanoseconds,
                                view.created_timestamp is not None and str(types[-1]) in nanoseconds)


class ViewReadError(ValueError):
    """A view's source could not be read (a missing file or column) or holds other than the view
    declares (a timestamp that is text, a feature of another type): the view's fault, not the
    entity rows'."""


@contextmanager
def _reading(view: FeatureView) -> Iterator[None]:
    """DuckDB's errors while reading a view's rows, as a :class:`ViewReadError` naming the view
    and its source."""
    try:
        yield
    except duckdb.Error as exc:
        raise ViewReadError(f"feature view {view.name!r}: reading {view.source}: {str(exc).splitlines()[0]}") from exc


# Types whose values DuckDB's hash tells apart exactly. The others are hashed as their text:
# DuckDB hashes an empty list like NULL, an all-NULL struct like a NULL struct, an ENUM by its
# index (a relabelled ENUM keeps its indexes) and 1 day like 24 hours. Hashing every row's text
# took 1.5 s on 2,000,000 rows of 8 columns; their values, 0.06 s.
_HASHED_BY_VALUE = {"boolean", "tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint",
                    "uinteger", "ubigint", "uhugeint", "decimal", "varchar", "blob", "uuid", "date", "time",
                    "timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns", "timestamp with time zone"}


def _hashable(column: str, type_id: str) -> str:
    """What the fingerprint hashes of a column: its values, with a float's sign (DuckDB hashes
    -0.0 like 0.0), or its text."""
    if type_id in ("float", "double"):
        return f"{column}, signbit({column})"
    return column if type_id in _HASHED_BY_VALUE else f"{column}::varchar"


def _fingerprints(connection: duckdb.DuckDBPyConnection, view: FeatureView, since: int | None,
                  until: int, ns: NanosecondTimestamps) -> tuple[str | None, str]:
    """Fingerprints (row count and sum of row hashes, whatever the order) of the view's rows with
    an event time at or before ``since`` (None without one) and at or before ``until`` (µs), in one
    scan: a run records the second; the next compares the first with it."""
    names = (*view.entities, point_in_time.TS, *([point_in_time.CREATED] if view.created_timestamp else []),
             *view.feature_names, *([point_in_time.TS_NS] if ns.event else []))  # (nanoseconds order events)
    bounds = [until] if since is None else [until, since]
    with _reading(view):
        rows = feature_table_sql(view, view.feature_names, "", ns)
        types = connection.sql(rows).types
        columns = ", ".join(_hashable(quoted(name), type_.id) for name, type_ in zip(names, types, strict=True))

        def upto(micros: int) -> str:
            within = f"filter (where {point_in_time.TS} <= make_timestamp({micros}::bigint)::timestamptz)"
            return f"count(*) {within}, sum(hash({columns})::hugeint) {within}"

        row = connection.sql(f"select {', '.join(upto(b) for b in bounds)} from ({rows})").fetchall()[0]
    return (None if since is None else f"{row[2]}:{row[3]}"), f"{row[0]}:{row[1]}"


# DuckDB types pandas has no place for (and Arrow hands over as raw bytes or cannot convert).
_UNSERVED_TYPES = {
    "bignum": "a BIGNUM (VARINT), which the store does not serve: cast it to HUGEINT, DOUBLE or VARCHAR in the view",
    "varint": "a VARINT, which the store does not serve: cast it to HUGEINT, DOUBLE or VARCHAR in the view",
    "union": "a UNION, which the store does not serve: cast it to one of its types in the view",
    "bit": "a BIT, which the store does not serve (Arrow hands over DuckDB's bytes): cast it to VARCHAR in the view",
}


# Key types the join cannot compare as DuckDB does: Arrow has no hash for them, hands over
# DuckDB's bytes, drops a TIME WITH TIME ZONE's offset (10:00+01 and 10:00+05 would be one key),
# or tells INTERVALs DuckDB finds equal apart (1 day and 24 hours; SQLite could not store them either).
_UNJOINABLE_TYPES = {"list", "array", "struct", "map", "union", "bignum", "varint", "bit", "time with time zone",
                     "interval"}


def _unserved(type_) -> str | None:  # (a DuckDBPyType, whose module moved between DuckDB versions)
    """Why a column of ``type_`` (or holding one, in a list, struct, map or array) cannot be
    served, or None."""
    if type_.id in _UNSERVED_TYPES:
        return _UNSERVED_TYPES[type_.id]
    if type_.id in ("list", "array", "struct", "map"):
        for _, child in type_.children:
            if not isinstance(child, int) and (problem := _unserved(child)):  # (an ARRAY's size is an int)
                return f"{type_} holding {problem}"
    return None


def _misread(type_, inside: bool = False) -> str | None:
    """Why DuckDB's Arrow would hand over other values than a column of ``type_`` holds, on every
    path (the Arrow one of training sets too), or None: a TIME WITH TIME ZONE loses its offset; a
    UHUGEINT inside a list, struct, map or array comes as a signed 128-bit DECIMAL, 2**128 - 1 as
    -1 (a column of them is mended when read, by ``point_in_time.wide_integers``)."""
    if type_.id == "time with time zone":
        return ("a TIME WITH TIME ZONE, which the store does not serve (DuckDB hands it over without its offset): "
                "cast it to VARCHAR, or to TIME in one zone, in the view")
    if inside and type_.id == "uhugeint":
        return ("a UHUGEINT, which the store does not serve inside a value: cast it to HUGEINT, DOUBLE or VARCHAR "
                "in the view")
    if type_.id in ("list", "array", "struct", "map", "union"):
        for _, child in type_.children:
            if not isinstance(child, int) and (problem := _misread(child, inside=True)):  # (an ARRAY's size is an int)
                return f"{type_} holding {problem}"
    return None


def refuse_type_problems(view: FeatureView, names: Sequence[str], unserved: Mapping[str, str],
                         misread: Mapping[str, str], served: Collection[str], asked: Collection[str]) -> None:
    """Refuse a feature of ``names`` whose type pandas cannot hold (``unserved``, when it goes
    to pandas: ``served``) or that DuckDB hands over as other values (``misread``, when it goes
    out by any path: ``served`` or ``asked``). The others only break ties."""
    for name in names:
        problem = (unserved.get(name) if name in served else None) or \
            (misread.get(name) if name in served or name in asked else None)
        if problem:
            raise ViewReadError(f"feature view {view.name!r}: feature {name!r} is {problem}")


def read_view_rows(connection: duckdb.DuckDBPyConnection, view: FeatureView, names: Sequence[str],
                   where: str = "", served: Collection[str] = (), asked: Collection[str] = (),
                   entities: point_in_time.EntityRows | None = None,
                   problems: dict | None = None) -> pa.Table:
    """The rows of ``view`` for a point-in-time join (see :func:`feature_table_sql`), as Arrow.

    ``served``: the features that will go to pandas (or the online store), refused if pandas
    cannot hold their type; ``asked``: the features that will go out by any path, refused if
    DuckDB hands them over as other values (:func:`_misread`). The others only break ties.
    ``entities``: the entity rows the join is for; rows none of them can match are left in
    DuckDB (see :func:`_reachable_rows`). ``problems``: filled with every feature's type
    problems, ``{"unserved": {...}, "misread": {...}}`` (see :func:`refuse_type_problems`), and
    the texts of the type warnings given (``"warnings"``).

    DuckDB reads them, whatever the source (a table, ``read_parquet(...)``): tried against
    reading a parquet file with Arrow directly, DuckDB was faster end to end (0.89 s against
    1.2 s, median of 8 alternating runs of the benchmark).
    """
    ns = check_source_types(connection, view, None if problems is None else problems.setdefault("warnings", []))
    created = [point_in_time.CREATED] if view.created_timestamp else []
    nanoseconds = [point_in_time.TS_NS] if ns.event else []
    with _reading(view):
        relation = connection.sql(feature_table_sql(view, names, where, ns))
        types = relation.types
        for key, type_ in zip(view.entities, types, strict=False):
            if type_.id in _UNJOINABLE_TYPES:
                raise ViewReadError(f"feature view {view.name!r}: join key {key!r} is {type_}, which cannot be a key "
                                    "in a join (cast it in the view: a number, text, boolean, date, TIME, "
                                    "timestamp, UUID or blob can be one)")
        first = len(view.entities) + 1 + len(created)
        feature_types = list(zip(names, types[first:first + len(names)], strict=True))
        unserved = {name: problem for name, type_ in feature_types if (problem := _unserved(type_))}
        misread = {name: problem for name, type_ in feature_types if (problem := _misread(type_))}
        refuse_type_problems(view, names, unserved, misread, served, asked)
        if problems is not None:
            problems.update(unserved=unserved, misread=misread)
        with _reachable_rows(connection, view, types, entities, ns) as reachable:
            if reachable:
                relation = connection.sql(feature_table_sql(view, names, " and ".join(filter(None, (where, reachable))),
                                                            ns))
            # One record batch per DuckDB thread: fewer chunks for the join to walk (reading took
            # as long with batches of 1 Mi or 2 Mi rows).
            table = relation.to_arrow_table(batch_size=1 << 40)
    # Named as declared: DuckDB finds a column whatever the case of its name, and names it as the source does.
    table = table.rename_columns([*view.entities, point_in_time.TS, *created, *names, *nanoseconds])
    for i, type_ in enumerate(types):
        if type_.id in ("hugeint", "uhugeint"):
            # (a UHUGEINT key marked, so that entity keys DuckDB hands over as it did are mended too)
            metadata = point_in_time.UHUGEINT_FIELD if type_.id == "uhugeint" else None
            field = pa.field(table.field(i).name, point_in_time.WIDE_INTEGER, metadata=metadata)
            table = table.set_column(i, field, point_in_time.wide_integers(table.column(i), type_.id == "uhugeint"))
    uuids = [i for i, type_ in enumerate(types) if str(type_) == "UUID"]
    if not uuids:
        return table
    schema = table.schema
    for i in uuids:  # (text in Arrow: marked, so that entity keys are read as UUIDs, any case)
        schema = schema.set(i, schema.field(i).with_metadata(point_in_time.UUID_FIELD))
    return pa.Table.from_arrays(table.columns, schema=schema)


# Entity frames of up to this many rows have the view's rows narrowed to their keys in DuckDB
# before the join reads them (see _reachable_rows).
FEW_ENTITY_ROWS = 100_000
# Key types whose equality in DuckDB is the join's: a value of another type is only narrowed by time.
_NARROWED_KEY_TYPES = {
    "tinyint": pa.int8(), "smallint": pa.int16(), "integer": pa.int32(), "bigint": pa.int64(),
    "utinyint": pa.uint8(), "usmallint": pa.uint16(), "uinteger": pa.uint32(), "ubigint": pa.uint64(),
    "varchar": pa.string(),
}


@contextmanager
def _reachable_rows(connection: duckdb.DuckDBPyConnection, view: FeatureView, types: Sequence,
                    entities: point_in_time.EntityRows | None, ns: NanosecondTimestamps) -> Iterator[str]:
    """A condition on the view's rows that keeps every row the join of ``entities`` can use
    (empty: keep them all), so that a small entity frame does not read, sort and search a whole
    view (10 entity rows against 3 views of 2,000,000 rows took ~0.6 s).

    Time, always: no event after the latest entity timestamp, and with a TTL none older than the
    earliest one minus the TTL (true instants, so a row beyond DuckDB's range widens it). Keys,
    for frames of up to :data:`FEW_ENTITY_ROWS` rows and integer or text key columns: the
    distinct entity keys, converted to the key's type as the join converts them, registered on
    ``connection`` while the view is read. Leaving out rows of other keys or times cannot change
    a tie-break: rows that tie share a key and an event time."""
    if entities is None:
        yield ""
        return
    if not entities.valid.any():
        yield "false"
        return
    event = event_instant_sql(view, ns)
    given = entities.micros[entities.valid]
    # (an event rounded up to the next microsecond may lie before an entity time with nanoseconds)
    latest = int(given.max()) + (1 if ns.event and entities.nanos_past is not None else 0)
    # (DuckDB has no instant before its earliest finite one: there, only -infinity is as early)
    conditions = [f"{event} <= make_timestamp({latest}::bigint)::timestamptz" if latest >= EARLIEST
                  else f"{event} = '-infinity'::timestamptz"]
    if view.ttl_micros is not None:
        earliest = min([int(given.min()), *(entities.beyond or {}).values()]) - view.ttl_micros
        if earliest > EARLIEST:  # (else no finite event is too old for every entity row)
            conditions.append(f"{event} >= make_timestamp({earliest}::bigint)::timestamptz")
    registered = []
    try:
        if len(entities) <= FEW_ENTITY_ROWS:
            for key, type_ in zip(view.entities, types, strict=False):
                wanted = _NARROWED_KEY_TYPES.get(type_.id)
                if wanted is None:
                    continue
                values = point_in_time.entity_keys_as(entities.keys[key], wanted, key, labels=entities.labels)
                name = f"__entity_keys_{uuid.uuid4().hex}"
                connection.register(name, pa.table({"key": pc.unique(values.drop_null())}))
                registered.append(name)
                conditions.append(f"{quoted(key)} in (select key from {name})")
        yield " and ".join(conditions)
    finally:
        for name in registered:
            # (in a transaction the read aborted this fails; the caller's ROLLBACK drops the name)
            with suppress(duckdb.Error):
                connection.unregister(name)


def _rows_to_serve(connection: duckdb.DuckDBPyConnection, view: FeatureView, since: int | None, until: int,
                   ns: NanosecondTimestamps) -> pa.Table:
    """The view's rows with an event time in (``since``, ``until``] (all up to ``until`` when
    ``since`` is None), every feature, for the online store."""
    return read_view_rows(connection, view, view.feature_names, _window(view, since, until, ns),
                          served=view.feature_names)


def entity_rows(keys: Mapping[str, pd.Series | pa.ChunkedArray], timestamps: pd.Series) -> point_in_time.EntityRows:
    """The entity side of a join: its key columns and its UTC timestamps (from :func:`to_utc`).

    Timestamps become microseconds by flooring (an event at or before the entity's instant stays
    so), and nanoseconds past them are noted (so that a TTL is measured from the true instant, and
    nanosecond events are compared exactly); null ones match nothing.
    """
    given = np.asarray(timestamps.dt.tz_convert(None))
    valid = ~np.isnat(given)
    unit, _ = np.datetime_data(given.dtype)
    raw = given.view(np.int64)
    nanos_past = beyond = None
    # Integer arithmetic rather than numpy's casts, which wrap around near the ends of int64.
    if unit == "ns":
        micros = raw // 1000
        past = raw % 1000
        past[~valid] = 0
        if past.any():
            nanos_past = past
    else:
        per = point_in_time.MICROS_PER_UNIT[unit]
        edge = FINITE // per
        micros = np.clip(raw, -edge, edge) * per
        far = (np.abs(raw) > edge) & valid
        if far.any():
            # Beyond DuckDB's finite timestamps (about +/-292,000 years): put at their ends, still
            # after (before) every finite event but one at that very end; how much further they
            # lie is kept for the TTL.
            rows = np.flatnonzero(far)
            beyond = {int(r): int(raw[r]) * per for r in rows}
            micros[rows] = np.where(raw[rows] > 0, FINITE, -FINITE)
    if not valid.all():
        micros[~valid] = 0
    keys_ = {k: point_in_time.entity_key_array(v) for k, v in keys.items()}
    return point_in_time.EntityRows(keys=keys_, micros=micros, valid=valid, nanos_past=nanos_past,
                                    beyond=beyond, labels=timestamps.index)


def without_tie_losers(table: pa.Table, view: FeatureView) -> pa.Table:
    """``table`` (a view's rows as :func:`read_view_rows` reads them, every feature) without the
    rows that lose a tie: another row of the same keys and event time is picked before them by
    the join's own rule (which is how they are found: each row asks the join for its own keys at
    its own event time). No retrieval can answer with such a row, and a copy without them spares
    every join the ranking of tied rows (~25 ms a view of 2,000,000 rows with 3% tied). A row
    the join answers with no row of its own event time is kept (an unmatchable key); so are
    nanosecond views' rows. (Ties at +/-infinity are left out too: the join picks the same row
    at -infinity, and serves none at +infinity.)"""
    if table.num_rows < 2 or point_in_time.TS_NS in table.column_names:
        return table
    micros = pc.cast(table.column(point_in_time.TS), pa.int64()).to_numpy()
    try:
        entities = point_in_time.EntityRows(
            keys={k: point_in_time.entity_key_array(table.column(k)) for k in view.entities}, micros=micros,
            valid=np.ones(table.num_rows, dtype=bool))
        chosen = point_in_time.match_rows(table, entities, view.entities, view.feature_names, None,
                                          point_in_time.CREATED in table.column_names)
    except (pa.ArrowException, ValueError, TypeError):  # (keys the join cannot ask for as entities: keep every row)
        return table
    losers = chosen >= 0
    losers &= chosen != np.arange(table.num_rows)
    losers &= micros[np.maximum(chosen, 0)] == micros
    return table.filter(pa.array(~losers)) if losers.any() else table


def _prefetch_parquet(connection: duckdb.DuckDBPyConnection, remote: bool) -> None:
    """Whether DuckDB reads ahead the whole row group's columns of a parquet file (``remote``:
    a view reads s3://, https://...) or its pages as it needs them (local files only).

    Prefetching saves round trips to remote files; on local files it only holds more fresh
    memory, which costs more than it saves here: on the benchmark (benchmarks/RESULTS.md),
    190,000 page faults against 240,000 and a median of 0.72 s against 0.89 s (8 alternating
    runs). A session setting: only this connection's (an in-memory store's cursor's).
    """
    try:
        connection.execute(f"SET disable_parquet_prefetching = {str(not remote).lower()}")
    except duckdb.Error:  # (a DuckDB without the setting)
        pass


def _processors() -> int:
    """The processors this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (not Linux)
        return os.cpu_count() or 1


def _fatal(failure: BaseException) -> bool:
    """Whether ``failure``, or an error it was raised from, is one after which DuckDB refuses
    every query of the database (``FatalException``, ``InternalException``)."""
    seen: set[int] = set()
    while failure is not None and id(failure) not in seen:
        if isinstance(failure, (duckdb.FatalException, duckdb.InternalException)):
            return True
        seen.add(id(failure))
        failure = failure.__cause__ or failure.__context__
    return False


def _own_memory_database(memory_limit: str) -> duckdb.DuckDBPyConnection:
    """A store's in-memory warehouse, kept for the store's life. DuckDB's cache of files read is
    off: a fresh database each call (as before) kept no file's blocks from one call to the next,
    and a store kept for a process's life should not either."""
    connection = duckdb.connect(":memory:")
    connection.execute("SET TimeZone = 'UTC'")  # (as every call's cursor: its settings are read here)
    connection.execute(f"SET memory_limit = '{memory_limit}'")
    with suppress(duckdb.Error):  # (a DuckDB without the setting)
        connection.execute("SET enable_external_file_cache = false")
    return connection


# DuckDB's table functions (and its extensions') whose first argument is a file: those whose rows
# are the files' alone (prepared.FILE_READERS) and others (a table macro of the warehouse named
# read_something is not one of them). And the suffixes of a table named as a data file.
_FILE_READERS = prepared.FILE_READERS | {"read_duckdb", "read_xlsx", "sniff_csv", "glob", "iceberg_scan",
                                         "delta_scan", "sqlite_scan"}
_FILE_SUFFIXES = (*prepared.FILE_SUFFIXES, ".arrow")


def _files_named(source: str) -> list[str]:
    """The files a view's SQL ``source`` names, as DuckDB's own parser reads it: the first
    argument of each table function reading files (``read_parquet``, ``read_csv``, ...: a text, a
    list or array of texts, a cast text) and each table named as a data file (``"x.parquet"``,
    ``x.parquet``) that is no CTE of the source. Comments, other literals and named options are
    not files. Not found: paths computed (``'dir/' || 'x'``), read through ``query()`` or in a
    source DuckDB cannot serialize (a PIVOT), nor very deep expressions."""
    tree = prepared.serialized_select(source)
    if tree is None:
        return []  # (binding the source says what is wrong; a PIVOT is not serialized)

    files: list[str] = []
    ctes: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        if not isinstance(node, dict):
            return
        for entry in (node.get("cte_map") or {}).get("map") or []:
            ctes.add(str(entry.get("key", "")).lower())
        if node.get("type") == "TABLE_FUNCTION":
            function = node.get("function") or {}
            name = str(function.get("function_name", "")).lower()
            arguments = function.get("arguments") or function.get("children") or []
            if arguments and name in _FILE_READERS:
                files.extend(prepared.literal_texts(arguments[0].get("expression", arguments[0]), partial=True))
        elif node.get("type") == "BASE_TABLE" and not node.get("catalog_name"):
            # (unquoted, x.parquet reads as schema x, table parquet: DuckDB reads the file)
            schema, table = node.get("schema_name"), str(node.get("table_name", ""))
            name = f"{schema}.{table}" if schema else table
            if name.lower().endswith(_FILE_SUFFIXES) or (not schema and "/" in table):
                files.append(name)
        for value in node.values():
            walk(value)

    try:
        walk(tree)
    except RecursionError:  # (an expression thousands of terms deep)
        return []
    return [f for f in files if f.lower() not in ctes]


def _refuse_files_read_per_process(connection: duckdb.DuckDBPyConnection, view: FeatureView) -> None:
    """Refuse a view whose source reads a file each process would find elsewhere: by a relative
    path (from its working folder) or a ~ path (from its home folder). The registry keeps the
    source as written. (A table or view of the warehouse named like a file is no file.)"""
    for path in _files_named(view.source):
        if "://" in path or Path(path).is_absolute():  # (a ~ path is not absolute)
            continue
        # ("trips.csv" in the current schema, or raw."trips.csv" / warehouse."trips.csv": a table)
        relations = connection.execute(
            "select count(*) from (select database_name, schema_name, table_name as name from duckdb_tables() "
            "union all select database_name, schema_name, view_name from duckdb_views()) "
            "where (lower(name) = lower(?) and schema_name = current_schema() and database_name = current_database()) "
            "or lower(schema_name || '.' || name) = lower(?) or lower(database_name || '.' || name) = lower(?)",
            [path, path, path]).fetchall()[0][0]
        if relations:
            continue
        if path.startswith("~/"):
            whole = str(Path.home() / path[2:])
        elif path.startswith("~"):  # (~user: DuckDB would not read that user's home)
            whole = "its absolute path"
        else:
            whole = str(Path(path).absolute())
        raise ValueError(f"feature view {view.name!r}: its source reads {path!r}, which each process would find "
                         f"from its own working (or home) folder; give the path whole ({whole!r})")


def _source_columns(connection: duckdb.DuckDBPyConnection, view: FeatureView) -> list[tuple[str, object]]:
    """The names and DuckDB types of the columns of ``view``'s source (bound, no row read)."""
    relation = connection.sql(f"select * from {source_sql(view)} limit 0")
    return list(zip(relation.columns, relation.types, strict=True))


def _check_against_source(connection: duckdb.DuckDBPyConnection, view: FeatureView) -> None:
    """Refuse a view whose source lacks its declared columns or types (DuckDB binds it: no row
    is read), naming the view and each column."""
    with _reading(view):
        columns = _source_columns(connection, view)
    problems = view.schema_problems({name.lower(): str(type_) for name, type_ in columns})
    if problems:
        raise ViewReadError(f"feature view {view.name!r} over {view.source}: " + "; ".join(problems))
    # The join's own checks of types, of every feature as served (a type pandas cannot hold, or
    # one DuckDB hands over misread, would fail every use, and every materialization with it)
    read_view_rows(connection, view, view.feature_names, where="false", served=view.feature_names)


def _create_registry(connection: duckdb.DuckDBPyConnection) -> None:
    """``features.registry`` (one row per view) if it is not there, with every column later
    versions added (``retired_at``; ``origin``, ``declaration``, ``applied_at`` for views applied
    from Python; ``serving_version``: the declaration's hash without its documentation)."""
    connection.execute("create schema if not exists features")
    connection.execute(
        f"""create table if not exists {REGISTRY_TABLE} (
            name varchar primary key, version varchar, source varchar, entities varchar,
            event_timestamp varchar, created_timestamp varchar, ttl_seconds double,
            features varchar, owner varchar, description varchar, row_count bigint,
            materialized_at timestamptz, dagster_run_id varchar, retired_at timestamptz,
            origin varchar, declaration varchar, applied_at timestamptz, serving_version varchar)"""
    )
    added = (("retired_at", "timestamptz"), ("origin", "varchar"), ("declaration", "varchar"),
             ("applied_at", "timestamptz"), ("serving_version", "varchar"))
    for column, type_ in added:  # (registries written by earlier versions)
        connection.execute(f"alter table {REGISTRY_TABLE} add column if not exists {column} {type_}")


def _registry_columns(connection: duckdb.DuckDBPyConnection) -> set[str]:
    """The columns of ``features.registry`` (none when there is no registry)."""
    schema, table = REGISTRY_TABLE.split(".")
    # (duckdb_columns(), not information_schema.columns: ~1.5 ms against ~24 ms on a new connection)
    return {row[0] for row in connection.execute(
        "select column_name from duckdb_columns() where schema_name = ? and table_name = ?",
        [schema, table]).fetchall()}


def views_not_built_as_declared(connection: duckdb.DuckDBPyConnection,
                                views: Sequence[FeatureView]) -> list[tuple[FeatureView, str]]:
    """Each of ``views`` that the registry records as built from the SQL project with another
    declaration (its YAML or SQL edited since the table was built), with the version it was
    built with. An edit of the documentation alone (descriptions, owners) changes no answer: not
    listed, once the registry records the hash without it (every build from now on)."""
    present = _registry_columns(connection)
    if not present or not views:
        return []
    built_from_sql = "".join(f" and {condition}" for column, condition in (
        ("origin", f"origin is distinct from '{PYTHON_ORIGIN}'"), ("retired_at", "retired_at is null"))
        if column in present)
    serving = "serving_version" if "serving_version" in present else "null"
    recorded = {name: (version, serving_version) for name, version, serving_version in connection.execute(
        f"select name, version, {serving} from {REGISTRY_TABLE} where list_contains(?::varchar[], name)"
        f"{built_from_sql}", [[view.name for view in views]]).fetchall()}
    edited = []
    for view in views:
        version, serving_version = recorded.get(view.name, (view.version, None))
        if (version != view.version if serving_version is None else serving_version != view.serving_version):
            edited.append((view, version))
    return edited


def warn_of_views_not_built_as_declared(connection: duckdb.DuckDBPyConnection, views: Sequence[FeatureView]) -> None:
    """A :class:`DeclarationNotBuiltWarning` for each of ``views`` declared otherwise than built
    (:func:`views_not_built_as_declared`): answers follow the edited declaration over the table
    as it was built."""
    for view, version in views_not_built_as_declared(connection, views):
        warnings.warn(DeclarationNotBuiltWarning(  # (naming the user's line)
            f"feature view {view.name!r}: its declaration (version {view.version}) is not the one its table "
            f"was built with (version {version}, in the registry): the answers follow this "
            f"declaration (its TTL, timestamps and keys) over the table as it was built. Materialize "
            f"{view.name} again to build it as declared, and the online store with it (the build_features job "
            f"in `make ui`, or `dagster asset materialize -m mlops_pipelines.definitions --select "
            f"{view.name},online_features`)"),
            stacklevel=outside_stacklevel())


def built_versions(connection: duckdb.DuckDBPyConnection, names: Sequence[str]) -> dict[str, str]:
    """The version the registry records for each of ``names`` that it holds: the declaration
    its table was built (or its view applied) with."""
    if not _registry_columns(connection):
        return {}
    return dict(connection.execute(f"select name, version from {REGISTRY_TABLE} where list_contains(?::varchar[], "
                                   "name)", [list(names)]).fetchall())


REGISTRY_HEADER = ("view", "version", "entities", "event ts", "created ts", "ttl", "owner", "rows",
                   "materialized (UTC)", "online as of (UTC)")


def registry_listing(connection: duckdb.DuckDBPyConnection,
                     online: Mapping[str, str] | None = None) -> list[tuple[str, ...]] | None:
    """``features.registry`` as text, a row per view (views built from SQL and applied from
    Python, retired ones marked) in the columns of :data:`REGISTRY_HEADER`, as `mlops features
    list` prints it and the ``online_features`` asset shows it; None when there is no registry.
    ``online``: by view, the instant the online store serves it as of (see
    :meth:`FeatureStore.online_as_of`; "-" for the others), or None when not known ("?")."""
    present = _registry_columns(connection)
    if not present:
        return None

    # Times in UTC whatever the connection's zone; NULL for a column a registry of an earlier version lacks.
    def utc(column: str) -> str:
        return f"timezone('UTC', {column})" if column in present else "null"

    cursor = connection.execute(
        "select name, version, entities, event_timestamp, created_timestamp, ttl_seconds, owner, row_count, "
        f"{utc('materialized_at')} as materialized, {'origin' if 'origin' in present else 'null'} as origin, "
        f"{utc('applied_at')} as applied, {utc('retired_at')} as retired from {REGISTRY_TABLE} order by name")
    columns = [c[0] for c in cursor.description]
    listed = []
    for row in (dict(zip(columns, values, strict=True)) for values in cursor.fetchall()):
        if row["origin"] == PYTHON_ORIGIN:  # (applied from Python: never built by a run)
            rows, when = "-", f"never (applied from Python {row['applied']:%Y-%m-%d %H:%M})"
        else:
            rows, when = f"{row['row_count']:,}", f"{row['materialized']:%Y-%m-%d %H:%M}"
        if row["retired"] is not None:
            when += f", retired {row['retired']:%Y-%m-%d %H:%M}"
        listed.append((row["name"], row["version"], ", ".join(json.loads(row["entities"])), row["event_timestamp"],
                       row["created_timestamp"] or "-", ttl_text(row["ttl_seconds"]), row["owner"] or "-", rows, when,
                       "?" if online is None else online.get(row["name"], "-")))
    return listed


def _upsert_registry(connection: duckdb.DuckDBPyConnection, view: FeatureView, row_count: int | None,
                     run_id: str | None, origin: str) -> None:
    """Write the view's row of ``features.registry``: materialized now (``origin`` "sql") or
    applied now, never materialized (``origin`` "python", with its whole declaration)."""
    applied = origin == PYTHON_ORIGIN
    connection.execute(
        f"""insert or replace into {REGISTRY_TABLE} (name, version, source, entities, event_timestamp,
                created_timestamp, ttl_seconds, features, owner, description, row_count, materialized_at,
                dagster_run_id, retired_at, origin, declaration, applied_at, serving_version)
            values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {'null' if applied else 'now()'}, ?, null, ?, ?,
                    {'now()' if applied else 'null'}, ?)""",
        [
            view.name, view.version, view.source, json.dumps(list(view.entities)),
            view.event_timestamp, view.created_timestamp,
            view.ttl.total_seconds() if view.ttl else None,
            json.dumps([{"name": f.name, "type": f.type, "description": f.description,
                         "owner": f.owner or view.owner} for f in view.features]),
            view.owner, view.description, row_count, run_id, origin, view.to_json() if applied else None,
            view.serving_version,
        ],
    )


def _iterable(value: object, what: str) -> Iterable:
    if not isinstance(value, Iterable) or isinstance(value, str | bytes):
        raise TypeError(f"{what}: a list, not {type(value).__name__} {value!r}")
    return value


def _views_given(views: object) -> Iterator[FeatureView]:
    """Feature views given one by one, as a list (or lists), or as a mapping of them (the values
    of ``SqlProject().feature_views()``)."""
    if isinstance(views, FeatureView):
        yield views
        return
    for view in (views.values() if isinstance(views, Mapping) else _iterable(views, "views")):
        if isinstance(view, list | tuple):
            yield from _views_given(view)
        elif isinstance(view, FeatureView):
            yield view
        else:
            raise TypeError(f"views: FeatureView objects, not {type(view).__name__} {view!r}")


def _flag(value: object, name: str) -> bool:
    """A True/False argument (also 0, 1 or None): text (``'no'``, which Python reads as true) and
    anything else is refused."""
    if value is None or isinstance(value, bool | np.bool_) or (isinstance(value, int | np.integer) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, not {value!r}")


def _warehouse_file(path: str | Path) -> str:
    """``path`` if it can be the warehouse: a DuckDB file, one to create, or ``:memory:``.
    DuckDB opens an existing parquet or CSV file as a database of its own, in memory, so views
    applied there would be lost when the store closes."""
    text = str(path)
    if Path(text).is_dir():
        raise ValueError(f"{text}: the warehouse is a DuckDB file (e.g. data/warehouse.duckdb), not a folder")
    if text != ":memory:" and Path(text).is_file():
        with open(text, "rb") as file:
            head = file.read(12)
        if len(head) == 12 and head[8:] != b"DUCK":  # (DuckDB's magic bytes; an empty file DuckDB names itself)
            raise ValueError(f"{text}: not a DuckDB database file, so it cannot be the warehouse (e.g. "
                             "data/warehouse.duckdb); a parquet or CSV file is a view's source: "
                             "read_parquet('...') or read_csv('...') in FeatureView.source")
    return text


def closest_name(name: str, known: Sequence[str]) -> str | None:
    """The one of ``known`` that ``name`` most likely misspells (the same ignoring case first),
    or None."""
    same = [k for k in known if k.lower() == name.lower()]
    if same:
        return same[0]
    found = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
    return next(k for k in known if k.lower() == found[0]) if found else None


class FeatureStore:
    """Feature views over tables of a DuckDB file.

    Args:
        database_path: the warehouse file (``data/warehouse.duckdb``).
        views: views to start with (the ones declared in dbt_like_sql/, for instance).
        memory_limit: DuckDB's memory budget for the store's own connections (reading views,
            materializing); larger queries spill to a temporary folder instead of growing the process.
        online_path: the online store's SQLite file (none: no online store).
        prepared_dir: where :meth:`prepare` keeps prepared copies of views over files, and
            retrievals look for them; by default the folder ``<warehouse file>.prepared`` beside
            the warehouse (none for an in-memory warehouse).
    """

    def __init__(self, database_path: str | Path, views: Sequence[FeatureView] = (),
                 memory_limit: str = "1GB", online_path: str | Path | None = None,
                 prepared_dir: str | Path | None = None) -> None:
        self.database_path = _warehouse_file(database_path)
        self.memory_limit = memory_limit
        if prepared_dir is not None:
            self.prepared_dir: Path | None = Path(prepared_dir)
        else:
            self.prepared_dir = None if self.database_path == ":memory:" else Path(f"{self.database_path}.prepared")
        self.online = OnlineStore(online_path) if online_path else None
        self.views: dict[str, FeatureView] = {}
        # An in-memory warehouse is opened once, by the first call that needs it, and each call
        # reads through a cursor of it: opening DuckDB takes 17-35 ms, a cursor ~0.3 ms. Its
        # settings that prepared copies depend on are read then too: nothing else has this
        # database to change them.
        self._memory: duckdb.DuckDBPyConnection | None = None
        self._memory_settings: dict[str, str] = {}
        self._memory_lock = threading.Lock()
        for view in _views_given(views):
            self.register(view)

    def register(self, view: FeatureView) -> FeatureView:
        """Add (or replace) a view in this store object only; its source may be a table or
        ``read_parquet('...')``. :meth:`apply` also records it in the warehouse."""
        if not isinstance(view, FeatureView):
            raise TypeError(f"register() takes one FeatureView, not {type(view).__name__} (for several: "
                            "FeatureStore(path, views), or apply(*views))")
        self.views[view.name] = view
        return view

    def __getstate__(self) -> dict:
        # (a copy or an unpickled store opens an in-memory database of its own when it needs one)
        return {**self.__dict__, "_memory": None, "_memory_settings": {}, "_memory_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _memory_lock=threading.Lock())

    def close(self) -> None:
        """Close the in-memory database of an in-memory store (a later call opens a new one; a
        call running meanwhile in another thread finishes on the old one, which DuckDB then
        closes when its last cursor is)."""
        with self._memory_lock:
            database, self._memory = self._memory, None
        if database is not None:
            with suppress(duckdb.Error):  # (a cursor of another thread's call still open)
                database.close()

    def _own_memory(self) -> duckdb.DuckDBPyConnection:
        """The in-memory store's database, opened (and its settings read) on first need."""
        with self._memory_lock:
            if self._memory is None:
                database = _own_memory_database(self.memory_limit)
                self._memory_settings = prepared.ConnectionFacts(database).settings
                self._memory = database
            return self._memory

    def _forget_memory(self, database: duckdb.DuckDBPyConnection) -> None:
        """After a fatal error, which leaves a DuckDB database refusing every query: the next
        call opens a new one."""
        with self._memory_lock:
            if self._memory is database:
                self._memory = None
        with suppress(duckdb.Error):
            database.close()

    def _name_of(self, view: str | FeatureView) -> str:
        """A view named by its name or given as itself (the one registered under its name)."""
        if isinstance(view, str):
            return view
        if isinstance(view, FeatureView):
            # (versions, not ==: a view's SQL is left out of its equality, not of its version,
            # which hashes every field)
            if self.views.get(view.name, view).version != view.version:
                raise ValueError(f"feature view {view.name!r}: not the view registered under that name "
                                 "(register() it first, or give its name)")
            self.views.setdefault(view.name, view)
            return view.name
        raise TypeError(f"views: names of feature views (text), not {type(view).__name__} {view!r}")

    def apply(self, *views: FeatureView, connection: duckdb.DuckDBPyConnection | None = None) -> list[FeatureView]:
        """Register ``views`` and record them in the warehouse's registry (Feast's ``apply``): every
        store over this warehouse then finds them by name, and so do ``mlops features list`` and
        ``mlops features historical``.

        Each view is checked against its source first (no row is read): its join keys and
        timestamps exist, the timestamps are TIMESTAMPs, each feature has its declared type, and
        DuckDB can read it. One that fails is a ValueError naming the view and the column, and
        none of ``views`` is recorded. A view applied again is replaced (its version changes with
        its declaration); a name declared in (or built from) dbt_like_sql/ is refused, and so is a
        source reading files by relative or ~ paths. ``connection``: a writable
        connection to the warehouse (else one of the store's own; the file is created if missing).
        """
        views = tuple(_views_given(views))  # (a list too, as Feast's apply takes them)
        if connection is None and self.database_path == ":memory:":
            raise ValueError("an in-memory store keeps no registry: register() the views, or give the "
                             "path of a DuckDB file")
        # (the models' file names only: an unfinished YAML elsewhere in the project is not this call's)
        project = default_project_dir()
        declared = {p.stem.lower(): p.stem for p in project.rglob("*.sql")} if project.is_dir() else {}
        for view in views:
            if view.name.lower() in declared:
                raise ValueError(f"feature view {view.name!r}: {declared[view.name.lower()]!r} is a model of "
                                 "dbt_like_sql/; apply the view under another name")
        own = self._writer() if connection is None else None
        try:
            with self._connection(connection or own) as con:
                for view in views:
                    _refuse_files_read_per_process(con, view)
                    _check_against_source(con, view)
                if own is not None:
                    con.execute("begin transaction")  # (all the views or none)
                _create_registry(con)
                # (retired ones too: their tables stay, and the name comes back if declared again)
                built = {name.lower(): name for (name,) in con.execute(
                    f"select name from {REGISTRY_TABLE} where origin is distinct from '{PYTHON_ORIGIN}'").fetchall()}
                for view in views:
                    if view.name.lower() in built:
                        raise ValueError(f"feature view {view.name!r}: {built[view.name.lower()]!r} is built from "
                                         "dbt_like_sql/ in this warehouse; apply the view under another name")
                for view in views:
                    _upsert_registry(con, view, None, None, origin=PYTHON_ORIGIN)
                if own is not None:
                    con.execute("commit")
        finally:
            if own is not None:
                own.close()
        return [self.register(view) for view in views]

    def retire(self, name: str, connection: duckdb.DuckDBPyConnection | None = None) -> None:
        """Mark a view applied from Python retired in the registry (its row is kept, with when)
        and drop it from this store: stores made afterwards no longer find it."""
        if connection is None and not Path(self.database_path).is_file():
            raise KeyError(f"no feature view {name!r} applied from Python: no warehouse at {self.database_path}")
        own = self._writer() if connection is None else None
        try:
            con = connection or own
            retired = []
            if "declaration" in _registry_columns(con):
                retired = con.execute(
                    f"update {REGISTRY_TABLE} set retired_at = now() where name = ? and origin = '{PYTHON_ORIGIN}' "
                    "and retired_at is null returning name", [name]).fetchall()
        finally:
            if own is not None:
                own.close()
        if not retired:
            raise KeyError(f"no feature view {name!r} applied from Python in {self.database_path} (a view of "
                           "dbt_like_sql/ is retired by removing its YAML)")
        self.views.pop(name, None)

    def _writer(self) -> duckdb.DuckDBPyConnection:
        """A writable connection to the warehouse (the file is created if missing)."""
        try:
            return duckdb.connect(self.database_path)
        except duckdb.ConnectionException as exc:  # (DuckDB: "... with a different configuration ...")
            raise ValueError(f"this process holds {self.database_path} open with another configuration (read-only, "
                             "or other settings), beside which DuckDB opens no connection of its own: close it, or "
                             "pass a writable one (connection=...)") from exc

    def applied_views(self, connection: duckdb.DuckDBPyConnection | None = None) -> dict[str, FeatureView]:
        """The views applied from Python to this warehouse and not retired, by name (none
        without a warehouse file or a registry), read through ``connection`` if given."""
        rows = self._registry_rows(f"select declaration from {REGISTRY_TABLE} where origin = '{PYTHON_ORIGIN}' "
                                   "and retired_at is null order by name", connection)
        return {view.name: view for view in (FeatureView.from_json(text) for (text,) in rows)}

    def _registry_rows(self, query: str, connection: duckdb.DuckDBPyConnection | None = None) -> list[tuple]:
        """Rows of ``query`` over the warehouse's registry (none without a warehouse file or a
        registry that records applied views), read through ``connection`` if given."""
        if connection is None:
            if self.database_path == ":memory:" or not Path(self.database_path).is_file():
                return []
            try:
                own = duckdb.connect(self.database_path, read_only=True)
            except duckdb.ConnectionException:
                # This process holds the file open for writing (a Dagster run's warehouse): DuckDB
                # refuses a read-only connection beside it, and shares that one's database instead.
                own = duckdb.connect(self.database_path)
            with own:
                return self._registry_rows(query, own)
        if "declaration" not in _registry_columns(connection):
            return []
        return connection.execute(query).fetchall()

    def _not_registered(self, names: Sequence[str], connection: duckdb.DuckDBPyConnection | None = None) -> KeyError:
        """The error for views of ``names`` this store does not know, with the known name each
        is closest to, and a word for views built from the SQL project: the registry lists them,
        but their declarations are their YAML files, which this store was not given."""
        known = sorted(self.views)
        try:
            in_registry = [name for (name,) in self._registry_rows(
                f"select name from {REGISTRY_TABLE} where origin is distinct from '{PYTHON_ORIGIN}' "
                "and retired_at is null order by name", connection) if name not in self.views]
        except duckdb.Error:  # (the warehouse locked by a writer: the error stands without the word)
            in_registry = []
        what = f"feature view {names[0]!r} is" if len(names) == 1 else f"feature views {list(names)} are"
        message, meant = f"{what} not registered (known: {known})", []
        for name in names:
            if (close := closest_name(name, known + in_registry)) and close != name:
                message += f"; {name!r}: did you mean {close!r}?"
            meant.append(close)
        built = sorted({name for name in meant if name in in_registry})
        if built:
            message += (f"; {built[0] if len(built) == 1 else built} {'is a view' if len(built) == 1 else 'are views'} "
                        "of the SQL project (dbt_like_sql/), which this store was not given: FeatureStore(path, "
                        "SqlProject().feature_views().values())")
        return KeyError(message)

    def _know(self, names: Iterable[str] | None, connection: duckdb.DuckDBPyConnection | None = None) -> None:
        """Views of ``names`` (None: every view) this store lacks, from those applied to its
        warehouse. (DuckDB's error if the registry cannot be read: another process writing the
        file holds its lock, which the CLI reports as "in use, try again".)"""
        if names is not None and all(name in self.views for name in names):
            return
        for name, view in self.applied_views(connection).items():
            self.views.setdefault(name, view)

    def resolve_features(self, features: Sequence[str] | str,
                         connection: duckdb.DuckDBPyConnection | None = None) -> dict[str, list[str]]:
        """``["view:feature", ...]`` (or one reference) grouped by view, in the order asked, validated
        (an unknown view or feature, or one asked for twice, is an error).
        A view this store lacks is looked for among those applied to its warehouse (through
        ``connection``, if given)."""
        features = references(features)
        if not features:
            raise ValueError("no features requested: pass 'view:feature' references")
        self._know([reference.partition(":")[0] for reference in features], connection)
        wanted: dict[str, list[str]] = {}
        for reference in features:
            view_name, sep, feature = reference.partition(":")
            if not sep or not feature:
                raise ValueError(f"feature reference {reference!r}: expected 'view:feature'")
            view = self.views.get(view_name)
            if view is None:
                raise self._not_registered([view_name], connection)
            if feature not in view.feature_names:
                close = closest_name(feature, view.feature_names)
                raise KeyError(f"feature view {view_name!r} has no feature {feature!r} (has: {view.feature_names})"
                               + (f"; did you mean {close!r}?" if close else ""))
            asked = wanted.setdefault(view_name, [])
            if feature in asked:
                # (one column would come back for two asked: a caller counting columns is misled)
                raise ValueError(f"feature {reference!r} is asked for twice: ask for each feature once")
            asked.append(feature)
        return wanted

    def entity_keys(self, wanted: dict[str, list[str]]) -> list[str]:
        """The join key columns the views of ``wanted`` need, each once."""
        return list(dict.fromkeys(k for view_name in wanted for k in self.views[view_name].entities))

    def join_features(self, connection: duckdb.DuckDBPyConnection, entities: point_in_time.EntityRows,
                      wanted: dict[str, list[str]], full_feature_names: bool,
                      as_pandas: bool = False,
                      facts: prepared.ConnectionFacts | None = None) -> pa.Table | pd.DataFrame:
        """The features of ``wanted`` (from :meth:`resolve_features`) for each entity row, in order:
        an Arrow table (nulls where nothing matches) or a pandas frame (NaN/None). ``facts``: what
        prepared copies depend on of ``connection``, when known (else read as needed).

        Views are joined in worker threads (the sorts and searches release the GIL), as many at a
        time as there are processors, from two up to four. A view is read only once a worker is
        free: reading all of them ahead overlaps more but holds every view in memory, and on the
        benchmark that was slower (~1.0 s against ~0.75 s, alternating runs), first touches of
        new memory being what costs most there.
        """
        outputs = output_names(((v, n) for v, names in wanted.items() for n in names), full_feature_names)
        if facts is None:
            facts = prepared.ConnectionFacts(connection)  # (read once for every view)
        if not facts.empty:  # (the store's own in-memory database holds no registry)
            warn_of_views_not_built_as_declared(connection, [self.views[name] for name in wanted])
        # (Each worker keeps scratch arrays, ~80 MB for a view of the benchmark's: four at most.)
        workers = max(1, min(len(wanted), 4, max(2, _processors())))
        # One workspace a worker: a view joined after another reuses its scratch arrays.
        spare = queue.SimpleQueue()
        for _ in range(workers):
            spare.put(point_in_time.Workspace())

        def join(view_name: str, *args, last: bool) -> dict:
            workspace = spare.get()
            try:
                return point_in_time.join_view(*args, workspace=workspace, last=last)
            except point_in_time.UnservableValues as exc:
                raise ViewReadError(f"feature view {view_name!r}: {exc}") from exc
            finally:
                spare.put(workspace)

        with point_in_time.small_pages(), ThreadPoolExecutor(max_workers=workers) as pool:
            pending = []
            for index, (view_name, names) in enumerate(wanted.items()):
                running = [f for f in pending if not f.done()]
                if len(running) >= workers:
                    wait(running, return_when=FIRST_COMPLETED)
                view = self.views[view_name]
                # Every declared feature is read, asked for or not: ties are decided on all of them.
                table = self._prepared_rows(facts, view, served=names if as_pandas else (), asked=names)
                sorted_rows = 0  # (a prepared copy's rows are in order: the join sorts only the entity rows)
                if table is None:
                    table = read_view_rows(connection, view, view.feature_names, served=names if as_pandas else (),
                                           asked=names, entities=entities)
                    sorted_rows = table.num_rows
                numpy_sort.warn_if_sorting_slowly(sorted_rows + len(entities))
                pending.append(pool.submit(join, view_name, table, entities, view.entities, view.feature_names, names,
                                           view.ttl_micros, view.created_timestamp is not None, as_pandas,
                                           # No view after it can take this workspace (usually):
                                           # its scratch arrays may become output columns. (One
                                           # that does gets new arrays.)
                                           last=index >= len(wanted) - workers))
                del table
            columns = {}
            for (view_name, names), future in zip(wanted.items(), pending, strict=True):
                joined = future.result()
                for name in names:
                    columns[outputs[view_name, name]] = joined[name]
        if as_pandas:
            return pd.DataFrame(columns, copy=False) if columns else pd.DataFrame(index=range(len(entities)))
        return pa.table(columns) if columns else pa.table({})

    def prepare(self, views: Sequence[str | FeatureView] | None = None,
                connection: duckdb.DuckDBPyConnection | None = None) -> dict[str, str]:
        """Write a prepared copy of each view of ``views`` (None: every view this store knows,
        including those applied to its warehouse) whose source reads local files: the rows a
        point-in-time join reads, as an uncompressed Arrow file in :attr:`prepared_dir`, which
        later retrievals memory-map instead of reading the source (on the benchmark, a call of
        0.58–0.77 s against 0.91–1.14 s; benchmarks/RESULTS.md). A copy is used only while its
        files (their size, times and inode), the view's declaration and the DuckDB settings that
        change values read are as they were when it was written; else the view is read from its
        source, with a :class:`PreparedCopyStaleWarning`. Prepare again after the files change.
        A view over a table, a URL, or SQL calling ``now()``, ``random()`` or a macro is not
        prepared (see ``features/prepared.py``).

        Rows that lose a tie (another row of the same keys and event time wins by the join's
        rule) are left out of the copy: no retrieval can answer with them.

        Returns, for each view, what was done: ``"prepared: N rows (M that lose a tie left
        out), S MB"``, or
        ``"not prepared: <reason>"`` (also when its source cannot be read: the error's text).
        """
        if self.prepared_dir is None:
            raise ValueError("an in-memory store has no folder for prepared copies: pass prepared_dir=...")
        if views is None:
            self._know(None, connection)
            names = list(self.views)
        else:
            names = [self._name_of(view) for view in _iterable(views, "views")]
            self._know(names, connection)
            unknown = [name for name in names if name not in self.views]
            if unknown:
                raise self._not_registered(unknown, connection)
        done: dict[str, str] = {}
        with self._connection(connection) as con:
            facts = self._facts(con, connection)
            for name in names:
                view = self.views[name]
                files = prepared.source_files(view.source, facts)
                if files.reason:
                    done[name] = f"not prepared: {files.reason}"
                    continue
                before = prepared.stamp(facts, view.serving_version, files.patterns)
                if before is None:
                    done[name] = f"not prepared: {prepared.why_no_stamp(con, files.patterns)}"
                    continue
                problems: dict = {}
                try:
                    table = read_view_rows(con, view, view.feature_names, problems=problems)
                except ViewReadError as exc:  # (rows no retrieval has reached yet, say: the other views go on)
                    done[name] = f"not prepared: {exc}"
                    continue
                if prepared.stamp(facts, view.serving_version, files.patterns) != before:
                    done[name] = "not prepared: its files changed while they were read (prepare it again)"
                    continue
                read = table.num_rows
                table = point_in_time.laid_out_for_joins(without_tie_losers(table, view), view.entities,
                                                         view.feature_names)
                path = prepared.write_copy(self.prepared_dir, name, table, before, problems["unserved"],
                                           problems["misread"], problems["warnings"])
                left_out = f" ({read - table.num_rows:,} that lose a tie left out)" if read > table.num_rows else ""
                done[name] = f"prepared: {read:,} rows{left_out}, {path.stat().st_size / 1e6:,.1f} MB"
        return done

    def _facts(self, con: duckdb.DuckDBPyConnection,
               given: duckdb.DuckDBPyConnection | None) -> prepared.ConnectionFacts:
        """What prepared copies depend on of ``con``: the caller's connection (``given``) or the
        store's own, whose in-memory database has no macros to look for (and whose settings
        were read when it was opened)."""
        if given is None and self.database_path == ":memory:":
            return prepared.ConnectionFacts(con, empty=True, settings=dict(self._memory_settings))
        return prepared.ConnectionFacts(con)

    def _prepared_rows(self, facts: prepared.ConnectionFacts, view: FeatureView,
                       served: Collection[str], asked: Collection[str]) -> pa.Table | None:
        """The rows :func:`read_view_rows` would read of ``view`` (every feature) through the
        connection of ``facts``, from its prepared copy when there is one of its files,
        declaration and settings as they are now; else None (with a
        :class:`PreparedCopyStaleWarning` when the copy is stale)."""
        if self.prepared_dir is None:
            return None
        try:
            if not (self.prepared_dir / prepared.file_name(view.name)).is_file():
                return None
        except OSError:  # (a folder this user may not search: as if there were no copy)
            return None
        files = prepared.source_files(view.source, facts)
        if files.reason:
            return None
        expected = prepared.stamp(facts, view.serving_version, files.patterns)
        if expected is None:
            return None  # (a file gone: reading the source says which)
        copy = prepared.open_copy(self.prepared_dir, view.name, expected)
        if copy is None:
            return None
        if isinstance(copy, str):
            warnings.warn(PreparedCopyStaleWarning(
                f"feature view {view.name!r}: its prepared copy ({self.prepared_dir / prepared.file_name(view.name)}) "
                f"{copy}: read from its source; prepare it again (FeatureStore.prepare, `mlops features prepare`)"),
                stacklevel=outside_stacklevel())
            return None
        for text in copy.warnings:  # (as a read of the source warns: every time, before its refusals)
            warnings.warn(FeatureTypeWarning(text), stacklevel=outside_stacklevel())
        refuse_type_problems(view, view.feature_names, copy.unserved, copy.misread, served, asked)
        return copy.table

    def registry(self, connection: duckdb.DuckDBPyConnection | None = None) -> list[tuple[str, ...]] | None:
        """The warehouse's registry of views as text (see :func:`registry_listing`), or None when
        no view was built or applied yet."""
        with self._connection(connection) as con:
            return registry_listing(con, self.online_as_of(con))

    def online_as_of(self, connection: duckdb.DuckDBPyConnection | None = None) -> dict[str, str]:
        """By view (this store's and those applied to its warehouse), the instant its online rows
        are current as of ("no finite event yet" for a view recorded without one), or why they are not served
        (a lookup refuses them until the next run rebuilds them): rows of another declaration of
        it, or rows an earlier version of the store wrote. A view never materialized online is
        left out, and so is every view without an online store."""
        online, marks = self.online, {}
        if online is None or not online.path.is_file():
            return {}
        with self._connection(connection) as con:  # (one read of the warehouse)
            self._know(None, con)
            # (a declaration edited and not built yet: the online rows are those of the table as built)
            unbuilt = {view.name for view, _ in views_not_built_as_declared(con, list(self.views.values()))}
        with online.snapshot() as lite:
            recorded = {name for (name,) in lite.execute("select view from _materializations").fetchall()}
            for name, view in self.views.items():
                if name in recorded:
                    mark = online.watermark(lite, view)
                    marks[name] = (watermark_text(mark) if mark is not None else
                                   "stale: an earlier version of the store wrote it"
                                   if online.holds_this_declaration(lite, view) else
                                   "stale: declared otherwise than built (materialize the view)" if name in unbuilt
                                   else "stale: another declaration")
        return marks

    def get_historical_features(
        self,
        entity_df: pd.DataFrame | pa.Table,
        features: Sequence[str] | str,
        full_feature_names: bool = False,
        timestamp_column: str = "event_timestamp",
        connection: duckdb.DuckDBPyConnection | None = None,
    ) -> pd.DataFrame:
        """Join features to ``entity_df`` point-in-time.

        Args:
            entity_df: the entity key columns of every requested view and ``timestamp_column``
                (a pandas frame, or an Arrow table read as one).
            features: ``"view:feature"`` references.
            full_feature_names: name output columns ``view__feature`` (required when names collide).
            timestamp_column: the entity frame's timestamp; aware or naive (naive read as UTC).
            connection: an open connection to reuse (the lifecycle's own writer); else read-only.
                Its TimeZone setting is UTC while the store reads, and restored afterwards.

        Returns:
            ``entity_df``'s columns (timestamp as UTC) followed by the features in the order
            asked, one row per entity row, in the same order.
        """
        if isinstance(entity_df, pa.Table):
            entity_df = _arrow_entities(entity_df)
        if not isinstance(entity_df, pd.DataFrame):
            raise TypeError(f"entity_df must be a pandas DataFrame or an Arrow table, not {type(entity_df).__name__}")
        features = references(features)
        full_feature_names = _flag(full_feature_names, "full_feature_names")
        wanted = self.resolve_features(features, connection)
        outputs = list(output_names(_requested(features), full_feature_names).values())
        _check_unique_columns(entity_df.columns)
        _check_entity_columns(entity_df.columns, outputs, full_feature_names)
        if timestamp_column not in entity_df.columns:
            raise MissingTimestampColumn(f"entity frame has no timestamp column {timestamp_column!r} "
                                         f"(its columns: {list(entity_df.columns)})", timestamp_column)
        for view_name in wanted:
            missing = [k for k in self.views[view_name].entities if k not in entity_df.columns]
            if missing:
                self._refuse_keys_not_in_source(self.views[view_name], missing, connection)
                raise KeyError(f"entity frame lacks join keys {missing} of view {view_name!r} "
                               f"(its columns: {list(entity_df.columns)})")
        with point_in_time.small_pages():  # (for the entity side's arrays too, not only the join's)
            frame = entity_df.copy(deep=False)  # (copy on write: the caller's frame is not changed)
            frame[timestamp_column] = to_utc(frame[timestamp_column])
            entities = entity_rows({k: frame[k] for k in self.entity_keys(wanted)}, frame[timestamp_column])
            with self._connection(connection) as con:
                joined = self.join_features(con, entities, wanted, full_feature_names, as_pandas=True,
                                            facts=self._facts(con, connection))
            joined = joined[outputs]
            joined.index = frame.index
            return pd.concat([frame, joined], axis=1)

    def _refuse_keys_not_in_source(self, view: FeatureView, keys: Sequence[str],
                                   connection: duckdb.DuckDBPyConnection | None) -> None:
        """A join key the entity frame lacks may be the view's misspelling (a view registered
        from Python is not checked against its source): if its source lacks the key too, the
        error is the view's, with the source's closest column."""
        try:
            with self._connection(connection) as con, _reading(view):
                found = [name for name, _ in _source_columns(con, view)]
        except (duckdb.Error, ValueError, FileNotFoundError):
            return  # (the source cannot be read either: the entity frame's error stands, and the read says why)
        lower = {name.lower() for name in found}
        absent = [key for key in keys if key.lower() not in lower]
        if absent:
            close = closest_name(absent[0], found)
            raise ViewReadError(f"feature view {view.name!r}: join key {absent[0]!r} is not a column of its source "
                                f"{view.source} (its columns: {found})"
                                + (f"; did you mean {close!r}?" if close else ""))

    @contextmanager
    def _connection(self, connection: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
        """The caller's connection; else a cursor of an in-memory store's own database, or a
        read-only connection to the store's warehouse file (either closed afterwards)."""
        if connection is not None:
            zone = connection.execute("select current_setting('TimeZone')").fetchall()[0][0]
            connection.execute("SET TimeZone = 'UTC'")
            try:
                yield connection
            except BaseException as failure:
                try:
                    connection.execute("SET TimeZone = ?", [zone])
                except duckdb.Error:
                    # A transaction of the caller's that the failure aborted refuses every
                    # statement: the failure is what the caller needs to see, not this one.
                    failure.add_note(f"The connection's TimeZone is still 'UTC' (it was {zone!r}): its "
                                     "transaction is aborted, so it could not be set back.")
                raise
            connection.execute("SET TimeZone = ?", [zone])
            return
        if self.database_path == ":memory:":
            database = self._own_memory()
            own = database.cursor()
            try:
                self._set_up(own)
                yield own
            except BaseException as failure:
                if _fatal(failure):  # (as it is, or under the ViewReadError that names the view)
                    self._forget_memory(database)
                raise
            finally:
                own.close()
            return
        if not Path(self.database_path).is_file():
            # (DuckDB's own read-only error: 'IO Error: Cannot open database ... does not exist')
            raise FileNotFoundError(f"no warehouse at {self.database_path}: run `mlops demo` (or build the "
                                    "feature views) first, or give the path of a DuckDB file")
        try:
            own = duckdb.connect(self.database_path, read_only=True)
        except duckdb.ConnectionException as exc:  # (DuckDB: "... with a different configuration ...")
            raise ValueError(f"this process holds {self.database_path} open for writing, beside which DuckDB "
                             "opens no read-only connection: pass that connection (connection=...)") from exc
        try:
            self._set_up(own)
            yield own
        finally:
            own.close()

    def _set_up(self, own: duckdb.DuckDBPyConnection) -> None:
        """A connection of the store's own as every call reads through it: UTC, the store's
        memory budget, parquet prefetched only for remote files."""
        own.execute("SET TimeZone = 'UTC'")
        own.execute(f"SET memory_limit = '{self.memory_limit}'")
        _prefetch_parquet(own, any("://" in view.source for view in list(self.views.values())))

    def _online(self) -> OnlineStore:
        if self.online is None:
            raise ValueError("this FeatureStore has no online store: pass online_path=...")
        return self.online

    def materialize_online(
        self,
        views: Sequence[str] | str | None = None,
        end_ts: datetime | pd.Timestamp | str | None = None,
        connection: duckdb.DuckDBPyConnection | None = None,
        full_refresh: bool = False,
    ) -> dict[str, int]:
        """Write the latest row per entity of each view, as of ``end_ts``, to the online store.

        Incremental: a view already materialized (same version) only reads rows with an event
        timestamp after its previous ``end_ts`` and up to the new one, unless its rows at or
        before that ``end_ts`` changed since (late, corrected or deleted rows, found by a
        fingerprint of those rows) or its source's types did; then, as for a new version of the
        view, it starts over. ``end_ts`` defaults to the latest finite event timestamp of each view
        (the data's own "now"; a view with no rows yet is recorded as empty); naive values are
        read as UTC. All the views change in one transaction: all or none. ``full_refresh``
        rebuilds the views from all their rows up to ``end_ts``, which may then be earlier than
        the last one (to go back).
        Returns the entities written per view (new or changed latest rows).
        """
        online = self._online()
        if views is None:  # (every view: the applied ones too, whatever this store looked up before)
            self._know(None, connection)
            names = list(self.views)
        else:
            names = [views] if isinstance(views, str | FeatureView) else list(_iterable(views, "views"))
            names = [self._name_of(view) for view in names]
            self._know(names, connection)
        unknown = [n for n in names if n not in self.views]
        if unknown:
            raise self._not_registered(unknown, connection)
        if end_ts is not None:
            reason = "a datetime or ISO 8601 text"
            try:
                stamp = to_utc(pd.Series([end_ts], name="end_ts")).iloc[0]
            except ValueError as exc:
                stamp, reason = None, str(exc).partition("): ")[2] or reason  # (the rule, without the row)
            if stamp is None or pd.isna(stamp):
                raise ValueError(f"end_ts {end_ts!r} is not an instant ({reason})")
            if stamp.nanosecond:
                # The store keeps instants in microseconds; one a few nanoseconds on would be
                # served with another TTL boundary than get_historical_features draws.
                raise ValueError(f"end_ts {end_ts!r} has nanoseconds: give it to the microsecond")
            end = to_micros(stamp)
        processed: dict[str, int] = {}
        with self._connection(connection) as con, online.connect() as lite:
            # One write transaction for all the views: every instant is checked before anything is
            # written, readers (the serving process) see the old rows or the new, never a mix, and
            # a failure leaves the store as it was.
            lite.execute("begin immediate")
            try:
                warn_of_views_not_built_as_declared(con, [self.views[name] for name in names])
                plans = []
                for name in names:
                    view = self.views[name]
                    ns = check_source_types(con, view)
                    since = None if full_refresh else online.watermark(lite, view)
                    # As of when rows an earlier version of the store wrote are current: rebuilt
                    # from all rows, but as of that instant still (not back to the latest event).
                    held = None if full_refresh or since is not None else online.watermark_of_earlier_rules(lite, view)
                    current_as_of = since if since is not None else held
                    if end_ts is None:
                        # The latest finite event (+infinity is no instant to be current as of),
                        # as an integer: Python's datetime ends in year 9999, DuckDB's do not.
                        event = event_instant_sql(view, ns)
                        latest = con.sql(
                            f"select epoch_us(max({event}) filter (where isfinite({event}))) from {source_sql(view)}"
                        ).fetchall()[0][0]
                        until = EMPTY_WATERMARK if latest is None else latest
                        if current_as_of is not None:
                            # Nothing newer than the store holds (it may be as of a later instant
                            # given explicitly) is no step back: it stays as of that instant.
                            until = max(until, current_as_of)
                    else:
                        until = end
                    if current_as_of is not None and until < current_as_of:
                        raise ValueError(
                            f"feature view {name!r} is materialized up to {from_micros(current_as_of)}; "
                            f"end_ts {from_micros(until)} would go back in time (full_refresh=True rebuilds "
                            "it as of an earlier instant)"
                        )
                    if full_refresh:
                        refresh = "rebuilt: full refresh asked"
                    elif since is not None:
                        refresh = f"incremental: rows after {watermark_text(since)}"
                    elif held is not None:
                        refresh = "rebuilt: its rows were written by an earlier version of the store"
                    else:
                        refresh = "rebuilt: this version of the view was not materialized before"
                    plans.append((view, since, until, ns, refresh))
                for view, since, until, ns, refresh in plans:
                    recorded = online.recorded_schema(lite, view)
                    if since is not None and recorded is not None and online.nanosecond_events(recorded) != ns.event:
                        # Event times kept in another unit (their fingerprint differs too): start over.
                        since = None
                        refresh = "rebuilt: " + (
                            "its event times are kept in nanoseconds now (rows written before held them rounded up "
                            "to the microsecond)" if ns.event and online.written_before_serving_versions(lite, view)
                            else "the source's column types changed")
                    past, fingerprint = _fingerprints(con, view, since, until, ns)
                    if since is not None and past != online.recorded_fingerprint(lite, view):
                        # Rows at or before the last end_ts changed since (late rows, corrected or
                        # deleted ones): reading only newer rows would miss them. Start over.
                        refresh = f"rebuilt: rows at or before {watermark_text(since)} changed (late, corrected or " \
                                  "deleted rows)"
                        since = None
                    table = _rows_to_serve(con, view, since, until, ns)
                    schema = online.lookup_schema(view, table.schema)
                    if since is not None and (recorded is None or not schema.equals(recorded, check_metadata=True)):
                        # The source's types changed under the same declaration: the rows kept
                        # from earlier runs hold values of the old types. Start over (also when
                        # their types were not kept: lookups could not cast keys to them).
                        since = None
                        refresh = "rebuilt: " + ("the types of its rows were not recorded" if recorded is None
                                                 else "the source's column types changed")
                        table = _rows_to_serve(con, view, since, until, ns)
                    if since is None:
                        online.reset(lite, view)
                    rows = self._latest_rows(table, view, until)
                    online.record_schema(lite, view, schema)
                    online.record_fingerprint(lite, view, fingerprint)
                    online.record_refresh(lite, view, refresh)
                    online.upsert(lite, view, rows)
                    online.record(lite, view, until, len(rows))
                    processed[view.name] = len(rows)
            except BaseException:
                lite.execute("rollback")
                raise
            lite.execute("commit")
        return processed

    @staticmethod
    def _latest_rows(table: pa.Table, view: FeatureView, until: int) -> list[tuple]:
        """The row of each entity in ``table`` that the point-in-time join picks at ``until``
        (the same rule, ties included, as get_historical_features), as online-store tuples
        ``(keys..., event time (µs, or ns of a nanosecond event column), created (µs, or ns of a
        nanosecond column), features...)``."""
        keys = list(view.entities)
        distinct = table.select(keys).group_by(keys).aggregate([])
        for key in keys:  # a NaN key matches nothing (SQLite would store it as NULL, a new row every run)
            if pa.types.is_floating(distinct.schema.field(key).type):
                distinct = distinct.filter(pc.invert(pc.fill_null(pc.is_nan(distinct.column(key)), False)))
        count = distinct.num_rows
        entities = point_in_time.EntityRows(
            keys={k: distinct.column(k).combine_chunks() for k in keys},
            micros=np.full(count, until, dtype=np.int64), valid=np.ones(count, dtype=bool),
        )
        chosen = point_in_time.match_rows(table, entities, keys, view.feature_names, None,
                                          view.created_timestamp is not None)
        latest = table.take(pa.array(chosen))
        columns = [key_values(latest.column(k)) for k in keys]
        event = point_in_time.TS_NS if point_in_time.TS_NS in latest.column_names else point_in_time.TS
        columns.append(latest.column(event).cast(pa.int64()).to_pylist())
        created = latest.column(point_in_time.CREATED).cast(pa.int64()) if view.created_timestamp \
            else pa.nulls(count, pa.int64())
        columns.append(created.to_pylist())
        for name in view.feature_names:
            column = latest.column(name)
            column = point_in_time.served(column)
            columns.append(stored_values(column, f"feature view {view.name!r}, feature {name!r}"))
        return list(zip(*columns, strict=True))

    def get_online_features(
        self,
        entity_rows: Sequence[Mapping] | Mapping[str, Sequence] | pd.DataFrame,
        features: Sequence[str] | str,
        full_feature_names: bool = False,
    ) -> pd.DataFrame:
        """Feature values for each entity row from the online store, in the rows' order.

        Args:
            entity_rows: the join keys of every requested view, as a list of dicts (one per
                row), a dict of equal-length lists (one per key) or a frame.
            features: ``"view:feature"`` references.
            full_feature_names: name output columns ``view__feature``.

        Returns:
            The entity rows followed by the features in the order asked, with the values and
            dtypes :meth:`get_historical_features` gives at the materialization instant; nulls
            where the online store has no row for the entity, or only one older than the TTL at
            that instant.
        """
        features = references(features)
        full_feature_names = _flag(full_feature_names, "full_feature_names")
        wanted = self.resolve_features(features)
        outputs = output_names(_requested(features), full_feature_names)
        frame = _entity_rows_frame(entity_rows, self.entity_keys(wanted))
        _check_entity_columns(frame.columns, list(outputs.values()), full_feature_names)
        out = frame.copy()
        for view_name in wanted:
            missing = [k for k in self.views[view_name].entities if k not in frame.columns]
            if missing:
                raise KeyError(f"entity rows lack join keys {missing} of view {view_name!r}")
        online = self._online()
        labels = entity_rows.index if isinstance(entity_rows, pd.DataFrame) else None  # (errors name the caller's rows)
        with online.snapshot() as connection:  # (every view as of one state of the store)
            for view_name, names in wanted.items():
                view = self.views[view_name]
                found = online.lookup(connection, view, names, [frame[k] for k in view.entities], labels)
                for name, values in found.items():
                    # Converted to pandas as the offline store converts (point_in_time.take_pandas),
                    # dtype included when every value is null.
                    try:
                        served = point_in_time.served_pandas(values, name) if isinstance(values, pa.Array) else values
                    except point_in_time.UnservableValues as exc:
                        raise ViewReadError(f"feature view {view_name!r}: {exc}") from exc
                    out[outputs[view_name, name]] = served
        out = out[[*frame.columns, *outputs.values()]]
        if labels is not None:
            out.index = labels
        return out

    @staticmethod
    def refuse_if_applied(connection: duckdb.DuckDBPyConnection, view: FeatureView) -> None:
        """Refuse to build ``view`` from SQL where a live view of its name (ignoring case) was
        applied from Python: its registry row would be replaced, the applied declaration lost
        without a word. The SQL model's asset asks before it builds anything."""
        if "declaration" not in _registry_columns(connection):
            return
        applied = connection.execute(
            f"select name, applied_at from {REGISTRY_TABLE} where lower(name) = lower(?) and origin = "
            f"'{PYTHON_ORIGIN}' and retired_at is null", [view.name]).fetchall()
        if applied:
            name, when = applied[0]
            raise ValueError(f"feature view {view.name!r}: {name!r} was applied to this warehouse from Python on "
                             f"{when.astimezone(UTC):%Y-%m-%d %H:%M} (UTC); retire it "
                             f"(FeatureStore.retire({name!r})) or name the SQL model otherwise")

    @staticmethod
    def record_materialization(connection: duckdb.DuckDBPyConnection, view: FeatureView,
                               row_count: int, run_id: str, declared: Collection[str] | None = None) -> None:
        """Upsert the view's entry in ``features.registry`` (one row per view). ``declared``: the
        names of every view the project declares now; the entries of others (views applied from
        Python aside) are marked retired (kept, with when: their tables stay in the warehouse,
        and a model may have used them)."""
        FeatureStore.refuse_if_applied(connection, view)
        _create_registry(connection)
        _upsert_registry(connection, view, row_count, run_id, origin="sql")
        if declared is not None:
            connection.execute(
                f"update {REGISTRY_TABLE} set retired_at = now() where retired_at is null "
                f"and origin is distinct from '{PYTHON_ORIGIN}' and not list_contains(?::varchar[], name)",
                [sorted(declared)])
