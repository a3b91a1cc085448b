"""The online store: the latest feature values per entity, in a SQLite file in WAL mode.

WAL lets the serving process read while a materialization writes. Each view is one table keyed by
its entities; ``_materializations`` keeps, per view, its version and the instant it is current
as of (the watermark). Values are served as of that watermark: a row older than the view's TTL at
the watermark reads as null, exactly as the offline store would answer at that instant.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from time import monotonic, sleep

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_pipelines.features import point_in_time
from mlops_pipelines.features.views import FeatureView, quoted

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime | pd.Timestamp | None) -> int | None:
    """A UTC instant as microseconds since the epoch, floored (naive values are read as UTC;
    any year a datetime holds, not only pandas' nanosecond range)."""
    if value is None or pd.isna(value):
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp if stamp.tzinfo is None else stamp.tz_convert("UTC").tz_localize(None)
    # From the integer in the stamp's own unit: a datetime ends in year 9999, pandas' do not.
    raw = stamp.asm8
    return point_in_time.micros_of(int(raw.astype(np.int64)), np.datetime_data(raw.dtype)[0])


def from_micros(value: int | None) -> pd.Timestamp | str | None:
    """The instant of :func:`to_micros`, or its text beyond what pandas holds (for messages)."""
    if value is None:
        return None
    try:
        return pd.Timestamp(value, unit="us", tz="UTC")
    except (OverflowError, ValueError):
        return f"{value} µs after 1970-01-01 UTC"


def key_value(value: object) -> object:
    """A join key value as the online store keeps it, and looks it up.

    SQLite holds 64-bit integers, doubles and text. Keys are first cast to the view's key type
    (see ``FeatureStore.get_online_features``), so both sides hand over the same Python objects;
    this maps them to SQLite values without losing what tells two keys apart: instants become
    UTC microseconds (naive ones read as UTC; any year; nanoseconds beyond them as text), dates
    ISO text, UUIDs their canonical text, integral Decimals integers and other Decimals their
    exact text, integers beyond int64 decimal text. NaN/NaT/None become None (they match nothing).
    """
    if isinstance(value, Decimal):  # before pd.isna: a signalling NaN raises on comparison
        if value.is_nan():
            return None
        if not value.is_finite():
            return str(value)
        value = int(value) if value == value.to_integral_value() else str(value.normalize())
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, np.datetime64):
        value = value.astype("datetime64[us]").item()
    if isinstance(value, datetime):
        # Plain datetime arithmetic: pandas' nanosecond range ends in 2262, sentinel keys do not.
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        nanos = value.nanosecond if isinstance(value, pd.Timestamp) else 0
        return _instant_key((aware - EPOCH) // timedelta(microseconds=1), nanos)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, time):  # (a TIME key: SQLite binds no time of day)
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def key_values(column: pa.Array | pa.ChunkedArray | Sequence) -> list:
    """:func:`key_value` of every value of a key column. Arrow integers within int64, text and
    bytes are already what SQLite keeps: taken as they are, without a Python call per value."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, pa.Array):
        type_ = column.type
        if (pa.types.is_integer(type_) and not pa.types.is_uint64(type_)) or pa.types.is_string(type_) \
                or pa.types.is_large_string(type_) or pa.types.is_binary(type_) or pa.types.is_large_binary(type_):
            return column.to_pylist()
        if pa.types.is_timestamp(type_):
            # From the integers: Python's datetime ends in year 9999, DuckDB's timestamps (and
            # their +/-infinity) do not. The same values key_value gives a datetime.
            return _instant_keys(column)
        if pa.types.is_date32(type_):
            return _date_keys(column)
        column = column.to_pylist()
    return [key_value(v) for v in column]


def _instant_keys(column: pa.Array) -> list:
    """Timestamp keys as :func:`key_value` keeps instants: UTC microseconds, and the text
    ``"<µs>+<n>ns"`` for one with nanoseconds past its microsecond."""
    unit = column.type.unit
    values = column.cast(pa.int64()).to_numpy(zero_copy_only=False)  # (NULLs: NaN)
    present = column.is_valid().to_numpy(zero_copy_only=False)
    if unit != "ns":
        return [point_in_time.micros_of(int(v), unit) if ok else None
                for v, ok in zip(values.tolist(), present, strict=True)]
    return [_instant_key(*divmod(int(v), 1000)) if ok else None for v, ok in zip(values.tolist(), present, strict=True)]


_PYTHON_DAYS = ((date.min - date(1970, 1, 1)).days, (date.max - date(1970, 1, 1)).days)


def _date_keys(column: pa.Array) -> list:
    """DATE keys as :func:`key_value` keeps a date, its ISO text; beyond Python's years 1 to 9999
    (DuckDB's 'infinity', year 12000), which no ``date`` can hold, ``"<days> days after 1970-01-01"``."""
    days = column.cast(pa.int32()).to_numpy(zero_copy_only=False)  # (NULLs: NaN)
    present = column.is_valid().to_numpy(zero_copy_only=False)
    epoch = date(1970, 1, 1)
    return [None if not ok else (epoch + timedelta(days=d)).isoformat() if _PYTHON_DAYS[0] <= d <= _PYTHON_DAYS[1]
            else f"{d} days after 1970-01-01" for d, ok in zip(days.tolist(), present, strict=True)]


def _instant_key(micros: int, nanos: int) -> int | str:
    """An instant as the online store keys it: its UTC microseconds; with nanoseconds past them
    (a TIMESTAMP_NS key off the microsecond grid), text, which no integer key equals."""
    return micros if not nanos else f"{micros}+{nanos}ns"


def _temporal(type_: pa.DataType) -> bool:
    """Fixed-width times (timestamps, dates, times of day, durations): stored as their integers."""
    return any(check(type_) for check in (pa.types.is_timestamp, pa.types.is_date, pa.types.is_time,
                                          pa.types.is_duration))


def _integers(type_: pa.DataType) -> pa.DataType:
    """The integer type a fixed-width time type is stored as (:func:`_temporal`)."""
    return pa.int32() if type_.bit_width == 32 else pa.int64()


def _native(type_: pa.DataType) -> bool:
    """Types whose Python values SQLite stores as they are (integers, doubles, text, bytes)."""
    return (pa.types.is_null(type_) or pa.types.is_boolean(type_) or pa.types.is_integer(type_)
            or pa.types.is_float32(type_) or pa.types.is_float64(type_) or pa.types.is_string(type_)
            or pa.types.is_large_string(type_) or pa.types.is_binary(type_) or pa.types.is_large_binary(type_)
            or pa.types.is_fixed_size_binary(type_))


def stored_values(column: pa.ChunkedArray, where: str) -> list:
    """A feature column (of its served type, see ``point_in_time.served_type``) as SQLite values.

    Integers, doubles, text and bytes are kept as they are (booleans as 0/1); timestamps, dates,
    times and durations as the integers of their unit; anything else (lists, structs, maps,
    intervals...) as one Arrow IPC record batch per value, so that :func:`loaded_array` gives
    back exactly the values the offline store serves. ``where`` names the column in errors.
    """
    type_ = column.type
    array = column.combine_chunks()
    if pa.types.is_uint64(type_) and (largest := pc.max(array).as_py() or 0) >= 2**63:
        raise ValueError(f"{where}: value {largest} does not fit the online store's integers (SQLite's are "
                         "signed 64-bit); cast it in the view's SQL (to DOUBLE or VARCHAR)")
    if _native(type_):
        return array.to_pylist()
    if _temporal(type_):
        return array.view(_integers(type_)).to_pylist()
    schema = pa.schema([pa.field("value", type_)])
    return [pa.RecordBatch.from_arrays([array.slice(i, 1)], schema=schema).serialize().to_pybytes()
            if array[i].is_valid else None for i in range(len(array))]


def loaded_array(values: Sequence, type_: pa.DataType) -> pa.Array:
    """Values read from SQLite (None: no value) back as an Arrow array of ``type_``; the
    inverse of :func:`stored_values`."""
    if pa.types.is_boolean(type_):
        return pa.array(values, pa.int8()).cast(pa.bool_())
    if _native(type_):
        return pa.array(values, type_)
    if _temporal(type_):
        return pa.array(values, _integers(type_)).view(type_)
    schema = pa.schema([pa.field("value", type_)])
    return pa.concat_arrays([
        pa.nulls(1, type_) if v is None else pa.ipc.read_record_batch(pa.py_buffer(v), schema).column(0)
        for v in values]) if len(values) else pa.array([], type_)


# Bumped when the store would serve other values for the same rows and declaration (2: DECIMAL
# features as the double nearest their value, 128-bit integers whole): rows written by earlier
# rules are rebuilt by the next materialization rather than served as they were.
SERVING_RULES = "2"
# The recorded schema's mark of a view whose event times are kept in nanoseconds (else µs). A
# view whose rows were written before (in µs, rounded up) lacks it: the next materialization
# rebuilds it, and until then it is served as it was; the other views are not touched.
_NANOSECOND_EVENTS = {b"event_unit": b"ns"}


def stored_version(view: FeatureView) -> str:
    """The version the online store records for a view's rows: its declaration's (without its
    documentation: :attr:`FeatureView.serving_version`) and the rules'."""
    return f"{view.serving_version}.{SERVING_RULES}"


def _declared_version(stored: str) -> str:
    """The declaration's version within a :func:`stored_version`."""
    return stored.partition(".")[0]


def _current(stored: str, view: FeatureView) -> bool:
    """Whether rows recorded under ``stored`` are the view's, by the current rules: under its
    :func:`stored_version`, or under its whole version (as stores recorded them before the serving
    version: the same rows, served without a rebuild)."""
    return stored in (stored_version(view), f"{view.version}.{SERVING_RULES}")


def _same_declaration(stored: str, view: FeatureView) -> bool:
    """Whether rows recorded under ``stored`` are of the view's declaration: its serving version,
    or (stores written before the serving version) its whole version."""
    return _declared_version(stored) in (view.serving_version, view.version)


def table_name(view: FeatureView) -> str:
    """The name of the view's table. SQLite's names ignore case: a name with capitals gets a hash
    of itself too, so that views whose names differ only in case keep their own tables."""
    name = view.name if view.name == view.name.lower() else \
        f"{view.name}__{hashlib.sha256(view.name.encode()).hexdigest()[:8]}"
    return f"fv__{name}"


def view_table(view: FeatureView) -> str:
    """:func:`table_name`, quoted for SQL."""
    return quoted(table_name(view))


_BUSY_SECONDS = 30  # (how long a connection waits for another's lock)


def _in_wal_mode(connection: sqlite3.Connection) -> None:
    """Put the store's file in WAL mode (kept in the file: done once, by its first connection).
    Two connections switching a new file at once deadlock, and SQLite fails one at once with
    "database is locked" rather than wait its busy timeout (the first materialization beside a
    serving process that is already polling, say): it tries again until the timeout."""
    deadline = monotonic() + _BUSY_SECONDS
    while True:
        try:
            if connection.execute("pragma journal_mode").fetchall()[0][0] != "wal":
                connection.execute("pragma journal_mode=wal")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or monotonic() > deadline:
                raise
            sleep(0.005)


class OnlineStore:
    """A SQLite file holding the latest row per entity of each materialized view."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir():
            raise ValueError(f"{self.path}: the online store is a SQLite file (e.g. data/online_store.sqlite), "
                             "not a folder")
        connection = sqlite3.connect(self.path, timeout=_BUSY_SECONDS)
        try:
            try:
                _in_wal_mode(connection)
            except sqlite3.DatabaseError as exc:  # (the warehouse's DuckDB file, say; not "database is locked")
                if "not a database" not in str(exc):
                    raise
                raise ValueError(f"{self.path}: not a SQLite database, so it cannot be the online store "
                                 f"({exc}); give a new file or the online store's own") from None
            connection.execute("pragma synchronous=normal")
            connection.execute(
                "create table if not exists _materializations (view text primary key, version text, "
                "watermark_us integer, materialized_at text, rows_processed integer)"
            )
            # Each view's key and feature types (an Arrow schema): lookups cast keys as the offline
            # join does, and give back feature values of the types the offline store serves.
            connection.execute("create table if not exists _schemas (view text primary key, version text, "
                               "schema blob)")
            # Each view's rows as of its watermark, summarized (count and sum of row hashes): an
            # incremental run finds rows at or before the watermark that changed since.
            connection.execute("create table if not exists _fingerprints (view text primary key, version text, "
                               "fingerprint text)")
            # How the last run refreshed each view (incrementally, or rebuilt and why): the asset's metadata.
            connection.execute("create table if not exists _refreshes (view text primary key, version text, "
                               "refresh text)")
            yield connection
        finally:
            connection.close()

    @staticmethod
    def _of_version(connection: sqlite3.Connection, table: str, column: str, view: FeatureView) -> object:
        """``column`` of the view's row in one of the store's own tables, if recorded for its
        current version; else None."""
        found = connection.execute(f"select version, {column} from {table} where view = ?", [view.name]).fetchall()
        return found[0][1] if found and _current(found[0][0], view) else None

    def written_before_serving_versions(self, connection: sqlite3.Connection, view: FeatureView) -> bool:
        """Whether the view's current rows were recorded under its whole version, by a store of an
        earlier version (which kept nanosecond events rounded up to the microsecond)."""
        stored = self.recorded_version(connection, view)
        return stored is not None and stored != stored_version(view) and _current(stored, view)

    def holds_this_declaration(self, connection: sqlite3.Connection, view: FeatureView) -> bool:
        """Whether the store holds rows of the view's declaration (served or not: rows an earlier
        version of the store wrote are not, until the next run rebuilds them)."""
        stored = self.recorded_version(connection, view)
        return stored is not None and _same_declaration(stored, view)

    @staticmethod
    def recorded_version(connection: sqlite3.Connection, view: FeatureView) -> str | None:
        """The version the view's rows were last materialized under (any version), or None."""
        found = connection.execute("select version from _materializations where view = ?", [view.name]).fetchall()
        return found[0][0] if found else None

    @staticmethod
    def nanosecond_events(schema: pa.Schema) -> bool:
        """Whether a recorded :meth:`lookup_schema` is of rows whose event times are nanoseconds."""
        return (schema.metadata or {}).get(b"event_unit") == b"ns"

    def watermark_of_earlier_rules(self, connection: sqlite3.Connection, view: FeatureView) -> int | None:
        """The instant (µs) the view's rows are current as of when an earlier version of the store
        wrote them under the same declaration (other :data:`SERVING_RULES`), else None."""
        found = connection.execute("select version, watermark_us from _materializations where view = ?",
                                   [view.name]).fetchall()
        if found and not _current(found[0][0], view) and _same_declaration(found[0][0], view):
            return found[0][1]
        return None

    def watermark(self, connection: sqlite3.Connection, view: FeatureView) -> int | None:
        """The instant (µs) the view is current as of, or None when its version was never materialized."""
        watermark = self._of_version(connection, "_materializations", "watermark_us", view)
        if watermark is None:
            return None
        # A store written before tables were named apart by case keeps a view with capitals in
        # its name under another table: as if never materialized (the next run rebuilds it).
        if not connection.execute("select 1 from sqlite_master where type = 'table' and name = ? collate nocase",
                                  [table_name(view)]).fetchall():
            return None
        return watermark

    def reset(self, connection: sqlite3.Connection, view: FeatureView) -> None:
        """Drop the view's table (a new version is materialized from scratch)."""
        columns = len(view.entities) + 2 + len(view.features)  # (keys, __ts, __created, features)
        limit = connection.getlimit(sqlite3.SQLITE_LIMIT_COLUMN)
        if columns > limit:
            room = limit - columns + len(view.features)
            raise ValueError(f"feature view {view.name!r}: {len(view.features)} features do not fit in the online "
                             f"store, a SQLite table of at most {limit} columns ({room} features with its keys and "
                             "timestamps); leave it out of materialize_online")
        connection.execute(f"drop table if exists {view_table(view)}")
        keys = ", ".join(quoted(k) for k in view.entities)
        features = ", ".join(quoted(f) for f in view.feature_names)
        connection.execute(
            f"create table {view_table(view)} ({keys}, __ts integer not null, __created integer, "
            f"{features}, primary key ({keys}))"
        )

    def upsert(self, connection: sqlite3.Connection, view: FeatureView, rows: Sequence[tuple]) -> None:
        """Insert rows ``(keys..., event time, created, features...)``; an existing entity is
        replaced only by a later event, or the same event created later (the offline tie-break)."""
        if not rows:
            return
        names = [*view.entities, "__ts", "__created", *view.feature_names]
        columns = ", ".join(quoted(n) for n in names)
        keys = ", ".join(quoted(k) for k in view.entities)
        updates = ", ".join(f'{quoted(n)} = excluded.{quoted(n)}' for n in names if n not in view.entities)
        newer = (
            f"excluded.__ts > {view_table(view)}.__ts or (excluded.__ts = {view_table(view)}.__ts and "
            f"coalesce(excluded.__created, -1) > coalesce({view_table(view)}.__created, -1))"
        )
        connection.executemany(
            f"insert into {view_table(view)} ({columns}) values ({', '.join('?' * len(names))}) "
            f"on conflict ({keys}) do update set {updates} where {newer}",
            rows,
        )

    def record(self, connection: sqlite3.Connection, view: FeatureView, watermark_us: int, rows: int) -> None:
        connection.execute(
            "insert or replace into _materializations values (?, ?, ?, ?, ?)",
            [view.name, stored_version(view), watermark_us, datetime.now(UTC).isoformat(), rows],
        )

    @staticmethod
    def lookup_schema(view: FeatureView, rows: pa.Schema) -> pa.Schema:
        """The view's key types and its features' served types, from the schema of rows read for it
        (marked when its event times are nanoseconds: so they are kept)."""
        return pa.schema(
            [pa.field(k, point_in_time.key_type(rows.field(k).type), metadata=rows.field(k).metadata)
             for k in view.entities]
            + [pa.field(f, point_in_time.served_type(rows.field(f).type)) for f in view.feature_names],
            metadata=_NANOSECOND_EVENTS if point_in_time.TS_NS in rows.names else None)

    def record_schema(self, connection: sqlite3.Connection, view: FeatureView, schema: pa.Schema) -> None:
        """Keep the view's :meth:`lookup_schema` for lookups."""
        connection.execute("insert or replace into _schemas values (?, ?, ?)",
                           [view.name, stored_version(view), schema.serialize().to_pybytes()])

    def recorded_schema(self, connection: sqlite3.Connection, view: FeatureView) -> pa.Schema | None:
        """The schema recorded for the view's current version, or None (every materialization
        records it: only a store whose ``_schemas`` row was deleted lacks it)."""
        schema = self._of_version(connection, "_schemas", "schema", view)
        return None if schema is None else pa.ipc.read_schema(pa.py_buffer(schema))

    def record_fingerprint(self, connection: sqlite3.Connection, view: FeatureView, fingerprint: str) -> None:
        connection.execute("insert or replace into _fingerprints values (?, ?, ?)",
                           [view.name, stored_version(view), fingerprint])

    def recorded_fingerprint(self, connection: sqlite3.Connection, view: FeatureView) -> str | None:
        """The fingerprint of the view's rows as of its watermark at the last run (this version), or None."""
        return self._of_version(connection, "_fingerprints", "fingerprint", view)

    def record_refresh(self, connection: sqlite3.Connection, view: FeatureView, refresh: str) -> None:
        connection.execute("insert or replace into _refreshes values (?, ?, ?)",
                           [view.name, stored_version(view), refresh])

    def last_refresh(self, connection: sqlite3.Connection, view: FeatureView) -> str | None:
        """How the last run refreshed the view (this version): incrementally, or rebuilt and why; or None."""
        return self._of_version(connection, "_refreshes", "refresh", view)

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A connection whose reads all see one committed state of the store (one read
        transaction): a materialization that commits meanwhile is seen whole or not at all, in
        every view read through it."""
        if not self.path.exists():
            raise FileNotFoundError(f"online store {self.path} does not exist: run materialize_online first")
        with self.connect() as connection:
            connection.execute("begin")
            try:
                yield connection
            finally:
                connection.execute("rollback")  # (nothing was written)

    def lookup(self, connection: sqlite3.Connection, view: FeatureView, names: Sequence[str],
               key_columns: Sequence, labels: pd.Index | None = None) -> dict[str, pa.Array | list]:
        """``names`` for each entity row (``key_columns``: one column per join key, rows aligned),
        null where the store has no row for it as of the view's watermark (expired rows left out).
        ``connection``: from :meth:`snapshot`; ``labels``: the rows' names in errors (else positions).

        Keys are cast to the view's key types as the offline join casts them (a timestamp given as
        text, an id as a float...), then stored values are matched by :func:`key_value`. Each
        feature comes back as an Arrow array of the type the offline store serves.
        """
        watermark = self.watermark(connection, view)
        if watermark is None:
            since, held = "", self.recorded_version(connection, view)
            if held and self.holds_this_declaration(connection, view):
                since = ": its rows were written by an earlier version of the store (materialize_online() rebuilds " \
                        "them)"
            elif held:
                since = (": the online store holds rows of another declaration of the view, which changed since "
                         "(materialize_online() rebuilds it)")
            raise LookupError(f"feature view {view.name!r} (version {view.version}) is not materialized online{since}")
        types = self.recorded_schema(connection, view)
        if types is None:
            raise LookupError(f"feature view {view.name!r} (version {view.version}): the online store {self.path} "
                              "has no record of its rows' types, so keys cannot be cast as the offline join casts "
                              "them (materialize_online() rebuilds the view)")
        key_columns = [
            point_in_time.entity_keys_as(point_in_time.entity_key_array(values), types.field(k).type, k,
                                         uuids=point_in_time.is_uuid(types.field(k)), labels=labels,
                                         unsigned=point_in_time.is_uhugeint(types.field(k)))
            for k, values in zip(view.entities, key_columns, strict=True)]
        keys = list(zip(*(key_values(c) for c in key_columns), strict=True))
        rows = read_rows(connection, view, names, keys, watermark, nanoseconds=self.nanosecond_events(types))
        answers = [rows.get(k) for k in keys]
        columns = {n: [None if a is None else a[i] for a in answers] for i, n in enumerate(names)}
        return {n: loaded_array(values, types.field(n).type) for n, values in columns.items()}


def read_rows(connection: sqlite3.Connection, view: FeatureView, names: Sequence[str], keys: Sequence[tuple],
              watermark: int, nanoseconds: bool = False) -> dict[tuple, tuple]:
    """Feature values by entity key from an open connection, as of ``watermark`` (µs): rows older
    than the view's TTL at the watermark are left out, null keys match nothing. ``nanoseconds``:
    the view's event times are kept in nanoseconds (so its TTL is measured in them)."""
    unique = list(dict.fromkeys(k for k in keys if all(v is not None for v in k)))
    if not unique:
        return {}
    width = len(view.entities)
    # -infinity is older than any TTL, even one reaching past it (more than 2**63 µs).
    per = 1000 if nanoseconds else 1
    floor = max((watermark - view.ttl_micros) * per, point_in_time.NEGATIVE_INFINITY + 1) if view.ttl else None
    key_list = ", ".join(quoted(k) for k in view.entities)
    columns = ", ".join(quoted(n) for n in names)
    found: dict[tuple, tuple] = {}
    # SQLite caps bound parameters per statement; 900 values is safe on every build.
    step = max(1, 900 // width)
    for start in range(0, len(unique), step):
        chunk = unique[start:start + step]
        if width == 1:
            where = f'{quoted(view.entities[0])} in ({", ".join("?" * len(chunk))})'
        else:
            where = f"({key_list}) in (values {', '.join('(' + ', '.join('?' * width) + ')' for _ in chunk)})"
        sql = f"select {key_list}, __ts, {columns} from {view_table(view)} where {where}"
        for row in connection.execute(sql, [v for k in chunk for v in k]):
            if floor is not None and row[width] < floor:
                continue
            found[tuple(row[:width])] = tuple(row[width + 1:])
    return found
