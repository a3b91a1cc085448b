"""get_historical_features against a brute-force reference, on random cases (hypothesis).

The cases mix: ties on event time with and without created timestamps, TTL boundaries, entity
rows before any feature row and in the future, duplicate entity rows, a two-column key, null
keys, entity timestamps naive, in UTC or in New York time across the 2013 DST change, two views in
one call, and colliding feature names with full_feature_names.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_pipelines.features.store import FeatureStore
from mlops_pipelines.features.views import Feature, FeatureView

# Around the spring-forward change in New York (2013-03-10 07:00 UTC).
BASE = pd.Timestamp("2013-03-10 00:00", tz="UTC")
INSTANTS = [BASE + pd.Timedelta(minutes=30 * i) for i in range(24)]  # few instants: many ties


def _instant(draw) -> pd.Timestamp:
    return draw(st.sampled_from(INSTANTS)) + pd.Timedelta(minutes=draw(st.sampled_from([0, 0, 1])))


@st.composite
def feature_rows(draw, keys: tuple[str, ...], with_created: bool) -> pd.DataFrame:
    rows = []
    for _ in range(draw(st.integers(0, 25))):
        row = {k: draw(st.sampled_from([1, 2, 3])) for k in keys}
        row["ts"] = _instant(draw)
        row["created"] = (row["ts"] + pd.Timedelta(minutes=draw(st.integers(0, 3)))) if with_created else None
        row["x"] = float(draw(st.integers(-5, 5)))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*keys, "ts", "created", "x"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["created"] = pd.to_datetime(frame["created"], utc=True)
    return frame


def brute_force(features: pd.DataFrame, keys: tuple[str, ...], ttl: timedelta | None,
                entity: dict, at: pd.Timestamp):
    """The spec, read literally: latest event <= at, within TTL, then latest created, then smallest."""
    if any(entity[k] is None or pd.isna(entity[k]) for k in keys):
        return None
    best = None
    for row in features.itertuples(index=False):
        row = row._asdict()
        if any(row[k] != entity[k] for k in keys) or row["ts"] > at:
            continue
        if ttl is not None and at - row["ts"] > ttl:
            continue
        created = row["created"] if not pd.isna(row["created"]) else pd.Timestamp.min.tz_localize("UTC")
        rank = (row["ts"], created, -row["x"])
        if best is None or rank > best[0]:
            best = (rank, row["x"])
    return None if best is None else best[1]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_matches_brute_force(data):
    with_created = data.draw(st.booleans(), label="created timestamps")
    single = data.draw(feature_rows(("k1",), with_created), label="single-key view")
    pair = data.draw(feature_rows(("k1", "k2"), with_created), label="two-key view")
    ttl_single = data.draw(st.sampled_from([None, timedelta(minutes=30), timedelta(hours=2)]), label="ttl a")
    ttl_pair = data.draw(st.sampled_from([None, timedelta(minutes=61), timedelta(hours=3)]), label="ttl b")
    zone = data.draw(st.sampled_from(["UTC", "America/New_York", None]), label="entity zone")
    full_names = data.draw(st.booleans(), label="full_feature_names")

    entities = []
    for _ in range(data.draw(st.integers(1, 12), label="entity rows")):
        at = _instant(data.draw) + pd.Timedelta(hours=data.draw(st.sampled_from([-13, 0, 0, 0, 13])))
        entities.append({
            "k1": data.draw(st.sampled_from([1, 2, 3, 4, None])),
            "k2": data.draw(st.sampled_from([1, 2, 3, None])),
            "at": at,
        })
    if data.draw(st.booleans(), label="duplicate rows"):
        entities = entities + entities[: max(1, len(entities) // 2)]
    frame = pd.DataFrame(entities)
    frame["k1"] = frame["k1"].astype("Int64")
    frame["k2"] = frame["k2"].astype("Int64")
    stamps = pd.to_datetime(frame["at"], utc=True)
    frame["event_timestamp"] = (stamps.dt.tz_convert(zone) if zone else stamps.dt.tz_localize(None))

    con = duckdb.connect()
    con.execute("set TimeZone='UTC'")
    con.execute("create table a as select * from single")
    con.execute("create table b as select * from pair")
    store = FeatureStore(":memory:")
    created = "created" if with_created else None
    store.register(FeatureView("a", "a", ("k1",), "ts", (Feature("x"),), ttl=ttl_single, created_timestamp=created))
    store.register(FeatureView("b", "b", ("k1", "k2"), "ts", (Feature("x"),), ttl=ttl_pair, created_timestamp=created))
    request = frame.drop(columns=["at"])
    if not full_names:
        try:
            store.get_historical_features(request, ["a:x", "b:x"], connection=con)
        except ValueError as error:
            assert "full_feature_names=True" in str(error)
        else:
            raise AssertionError("colliding feature names must be refused")
        out = store.get_historical_features(request, ["a:x"], connection=con)
        columns = {"a": "x"}
    else:
        out = store.get_historical_features(request, ["a:x", "b:x"], full_feature_names=True, connection=con)
        columns = {"a": "a__x", "b": "b__x"}

    assert len(out) == len(frame)
    assert list(out.index) == list(frame.index)
    def plain(values):
        return [None if pd.isna(v) else int(v) for v in values]

    assert plain(out["k1"]) == plain(frame["k1"])  # caller's order, duplicates kept
    assert plain(out["k2"]) == plain(frame["k2"])
    for i, entity in enumerate(frame.to_dict("records")):
        at = entity["at"]
        expect = {"a": brute_force(single, ("k1",), ttl_single, entity, at)}
        if "b" in columns:
            expect["b"] = brute_force(pair, ("k1", "k2"), ttl_pair, entity, at)
        for view, column in columns.items():
            got = out[column].iloc[i]
            if expect[view] is None:
                assert pd.isna(got), (view, entity, got)
            else:
                assert got == expect[view], (view, entity, got, expect[view])


# Key and time encodings: the join numbers keys and instants before it sorts (offsets of small
# integer keys, dictionary codes for others, numbered pairs when two columns' ranges multiply
# past 2**32; steps of the data's own time grid, or ranks when the span is too wide, as with
# +/-infinity). Every path must give the same answers.
MICROS = 1_000_000
BASE_MICROS = int(BASE.value // 1000)
KEY_KINDS = {
    "int": (("k1",), lambda k: (k,), "bigint"),
    "wide int": (("k1",), lambda k: (k * 2**40 + 7,), "bigint"),
    "string": (("k1",), lambda k: (f"key {k}",), "varchar"),
    "wide pair": (("k1", "k2"), lambda k: (k * 2**30, -k * 2**30), "bigint"),
    # Two ranges of ~2**30 each: their product fits in 62 bits but leaves no room for times.
    "mid pair": (("k1", "k2"), lambda k: (k * 2**29, 5 - k * 2**29), "bigint"),
    # Parts that vary on their own (keys share a first column), ranges multiplying past 2**32.
    "independent pair": (("k1", "k2"), lambda k: ((k & 1) << 20, (k >> 1) << 20), "bigint"),
}
INFINITY = float("inf")


def _micros_sql(value) -> str:
    if value in (INFINITY, -INFINITY):
        return f"'{'-' if value < 0 else ''}infinity'::timestamptz"
    return f"make_timestamp({value}::bigint)::timestamptz"


def _reference(rows, key, at: int, ttl: int | None):
    """The spec over integer microseconds (+/-inf for infinite instants)."""
    if key is None:
        return None
    best = None
    for row_key, ts, created, x in rows:
        if row_key != key or ts > at or (ttl is not None and at - ts > ttl):
            continue
        rank = (ts, -INFINITY if created is None else created, -x)
        if best is None or rank > best[0]:
            best = (rank, x)
    return None if best is None else best[1]


def _assert_reference_answers(got: pd.Series, rows, asked, ttl: int | None, case) -> None:
    """Each of ``got`` (one per ``asked`` (key, at)) is what :func:`_reference` answers."""
    for i, (key, at) in enumerate(asked):
        expected = _reference(rows, key, at, ttl)
        if expected is None:
            assert pd.isna(got.iloc[i]), (case, key, at, got.iloc[i])
        else:
            assert got.iloc[i] == expected, (case, key, at, got.iloc[i], expected)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_key_and_time_encodings_match_brute_force(data, tmp_path_factory):
    key_kind = data.draw(st.sampled_from(sorted(KEY_KINDS)), label="keys")
    time_kind = data.draw(st.sampled_from(["minutes", "microseconds", "far apart", "infinity", "+infinity",
                                           "-infinity"]), label="times")
    from_parquet = data.draw(st.booleans(), label="parquet source")
    ttl_minutes = data.draw(st.sampled_from([None, 30, 90]), label="ttl minutes")
    key_columns, encode, sql_type = KEY_KINDS[key_kind]

    def instant() -> int:
        minutes = data.draw(st.integers(0, 12)) * 15
        extra = data.draw(st.integers(0, 3)) if time_kind != "minutes" else 0
        return BASE_MICROS + minutes * 60 * MICROS + extra

    rows = []
    for _ in range(data.draw(st.integers(0, 20), label="feature rows")):
        created = data.draw(st.one_of(st.none(), st.integers(0, 2)))
        ts = instant()
        rows.append((encode(data.draw(st.sampled_from([1, 2, 3]))), ts,
                     None if created is None else ts + created * MICROS, float(data.draw(st.integers(-3, 3)))))
    if time_kind == "far apart":  # a span of ~146,000 years in microseconds
        rows += [(encode(1), 2**62 + 1, None, 9.0), (encode(2), BASE_MICROS - 2**55, None, 8.0)]
    # (one infinity only: entity rows before the first event, or after the last, rank apart)
    if time_kind in ("infinity", "+infinity"):
        rows.append((encode(1), INFINITY, None, 9.0))
    if time_kind in ("infinity", "-infinity"):
        rows.append((encode(2), -INFINITY, None, 8.0))

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    key_sql = ", ".join(f"{k} {sql_type}" for k in key_columns)
    con.execute(f"create table f ({key_sql}, ts timestamptz, created timestamptz, x double)")
    for key, ts, created, x in rows:
        values = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in key)
        created_sql = "null" if created is None else _micros_sql(created)
        con.execute(f"insert into f values ({values}, {_micros_sql(ts)}, {created_sql}, {x})")
    source = "f"
    if from_parquet:
        path = tmp_path_factory.mktemp("parquet") / "f.parquet"
        con.execute(f"copy f to '{path}' (format parquet)")
        source = f"read_parquet('{path}')"
    ttl = timedelta(minutes=ttl_minutes) if ttl_minutes else None
    store = FeatureStore(":memory:")
    store.register(FeatureView("f", source, key_columns, "ts", (Feature("x"),), ttl=ttl, created_timestamp="created"))

    asked = []
    for _ in range(data.draw(st.integers(1, 10), label="entity rows")):
        number = data.draw(st.sampled_from([1, 2, 3, 4, None]))
        at = instant() + data.draw(st.sampled_from([-2 * 60, 0, 0, 7, 24 * 60])) * 60 * MICROS
        asked.append((None if number is None else encode(number), at))
    frame = pd.DataFrame({
        column: pd.array([None if key is None else key[i] for key, _ in asked],
                         dtype="string" if sql_type == "varchar" else "Int64")
        for i, column in enumerate(key_columns)
    })
    frame["event_timestamp"] = pd.to_datetime([at for _, at in asked], unit="us", utc=True)
    out = store.get_historical_features(frame, ["f:x"], connection=con)

    ttl_micros = ttl_minutes * 60 * MICROS if ttl_minutes else None
    _assert_reference_answers(out["x"], rows, asked, ttl_micros, (key_kind, time_kind))


@pytest.mark.parametrize("span", [2**10, 2**20, 2**31, 2**32 - 2])
def test_two_integer_keys_whose_ranges_multiply_past_2_to_the_32_match_brute_force(span):
    """Pairs of two integer key columns are numbered three ways: their product when it fits in 32
    bits, one int64 a pair hashed when it fits in 63, pairs of a MultiIndex beyond. Every key
    pair of the corners of a square ``span`` wide, asked with keys unknown in one part or both
    and a NULL part."""
    corners = [0, span // 2, span]
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute("create table f (k1 bigint, k2 bigint, ts timestamptz, x double)")
    rows = []
    for i, (a, b) in enumerate((a, b) for a in corners for b in corners):
        for hours, value in ((0, 10.0 * i), (2, 10.0 * i + 1)):
            ts = BASE_MICROS + hours * 3600 * MICROS
            con.execute(f"insert into f values ({a}, {-b}, {_micros_sql(ts)}, {value})")
            rows.append(((a, -b), ts, None, value))
    store = FeatureStore(":memory:")
    store.register(FeatureView("f", "f", ("k1", "k2"), "ts", (Feature("x"),)))
    asked = [((a, None if b is None else -b), BASE_MICROS + hours * 3600 * MICROS)
             for a in [*corners, 1, None] for b in [*corners, 1, None] for hours in (-1, 1, 3)]
    frame = pd.DataFrame({"k1": pd.array([k[0] for k, _ in asked], dtype="Int64"),
                          "k2": pd.array([k[1] for k, _ in asked], dtype="Int64")})
    frame["event_timestamp"] = pd.to_datetime([at for _, at in asked], unit="us", utc=True)
    out = store.get_historical_features(frame, ["f:x"], connection=con)
    # (a NULL part is asked as a key no row has)
    expected = [((None if None in key else key), at) for key, at in asked]
    _assert_reference_answers(out["x"], rows, expected, None, span)
    assert out["x"].notna().sum() == 9 * 2  # 9 pairs known, each asked 1 h and 3 h after its first row


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_ttl_on_a_coarse_time_grid_matches_brute_force(data):
    """On a time grid, the join decides most TTL checks on grid steps alone and the rest on the
    instants: an event exactly ``ttl // step`` steps older than the entity's step, and entity
    times after the last event (capped to its step). Entity times between steps by less, as
    much as, or more than the TTL's remainder below a step; TTLs shorter than a step."""
    step = data.draw(st.sampled_from([60, 3_600]), label="grid step (s)") * MICROS
    steps = data.draw(st.integers(0, 4), label="ttl steps")
    below = data.draw(st.sampled_from([0, 1, step // 2, step - 1]), label="ttl remainder (us)")
    ttl_micros = steps * step + below
    if ttl_micros == 0:
        ttl_micros = 1
    rows = []
    for _ in range(data.draw(st.integers(1, 12), label="feature rows")):
        ts = BASE_MICROS + data.draw(st.integers(0, 8)) * step
        rows.append(((data.draw(st.sampled_from([1, 2])),), ts, None, float(data.draw(st.integers(-3, 3)))))
    last = max(ts for _, ts, _, _ in rows)
    asked = []
    for _ in range(data.draw(st.integers(1, 12), label="entity rows")):
        grid = data.draw(st.integers(0, 12), label="entity step")
        within = data.draw(st.sampled_from([0, 1, below, below + 1, step - 1]), label="entity remainder")
        asked.append((data.draw(st.sampled_from([1, 2, 3])), BASE_MICROS + grid * step + min(within, step - 1)))
    newest = max(rows, key=lambda row: row[1])[0][0]
    asked.append((newest, last + ttl_micros))  # after the last event: exactly at the TTL,
    asked.append((newest, last + ttl_micros + 1))  # and just beyond it

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute("create table f (k bigint, ts timestamptz, x double)")
    for (key,), ts, _, x in rows:
        con.execute(f"insert into f values ({key}, {_micros_sql(ts)}, {x})")
    store = FeatureStore(":memory:")
    store.register(FeatureView("f", "f", ("k",), "ts", (Feature("x"),), ttl=timedelta(microseconds=ttl_micros)))
    frame = pd.DataFrame({"k": [key for key, _ in asked],
                          "event_timestamp": pd.to_datetime([at for _, at in asked], unit="us", utc=True)})
    out = store.get_historical_features(frame, ["f:x"], connection=con)
    _assert_reference_answers(out["x"], rows, [((key,), at) for key, at in asked], ttl_micros, (step, ttl_micros))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_feature_rows_in_several_chunks_give_what_one_chunk_gives(data):
    """DuckDB hands a view's rows over in several chunks (one per thread, at least): codes,
    tie-breaks and takes work chunk by chunk. The same rows in one chunk or in several, joined
    with a new workspace or with one used before by a larger join, give the same answers."""
    from mlops_pipelines.features import point_in_time as pit
    from mlops_pipelines.features.store import entity_rows

    size = data.draw(st.integers(1, 40), label="feature rows")

    minutes = [data.draw(st.integers(0, 5)) for _ in range(size)]
    table = pa.table({
        "k": pa.array([data.draw(st.integers(1, 4)) for _ in range(size)], pa.int64()),
        pit.TS: pa.array([BASE_MICROS + m * 60 * MICROS for m in minutes], pa.timestamp("us", tz="UTC")),
        pit.CREATED: pa.array([None if c is None else BASE_MICROS + c * MICROS
                               for c in (data.draw(st.one_of(st.none(), st.integers(0, 2))) for _ in range(size))],
                              pa.timestamp("us", tz="UTC")),
        "x": pa.array([data.draw(st.one_of(st.none(), st.integers(-2, 2).map(float))) for _ in range(size)],
                      pa.float64()),
        "s": pa.array([data.draw(st.sampled_from([None, "a", "b"])) for _ in range(size)], pa.string()),
        # DECIMAL is served as DOUBLE, by a cast that joins the chunks; ENUMs arrive dictionary-encoded.
        "d": pa.array([data.draw(st.sampled_from([None, Decimal("1.5"), Decimal("-2")])) for _ in range(size)],
                      pa.decimal128(12, 2)),
        "e": pa.array([data.draw(st.sampled_from([None, "low", "high"])) for _ in range(size)],
                      pa.string()).dictionary_encode(),
        "g": pa.array([data.draw(st.one_of(st.none(), st.integers(-2, 2).map(float))) for _ in range(size)],
                      pa.float32()),  # (served as float32)
    })
    cuts = sorted(data.draw(st.lists(st.integers(1, size - 1), max_size=4, unique=True), label="cuts")) \
        if size > 1 else []
    bounds = [0, *cuts, size]
    chunked = pa.Table.from_batches([table.slice(a, b - a).combine_chunks().to_batches()[0]
                                     for a, b in zip(bounds, bounds[1:], strict=False)])
    assert chunked.column("x").num_chunks == len(bounds) - 1

    count = data.draw(st.integers(1, 15), label="entity rows")
    keys = pd.Series([data.draw(st.sampled_from([1, 2, 3, 4, 5, None])) for _ in range(count)], dtype="Int64")
    stamps = pd.Series(pd.to_datetime(
        [BASE_MICROS + data.draw(st.integers(-1, 7)) * 60 * MICROS + data.draw(st.sampled_from([0, 1, 30 * MICROS]))
         for _ in range(count)], unit="us", utc=True))
    entities = entity_rows({"k": keys}, stamps)
    ttl = data.draw(st.sampled_from([None, 90 * MICROS, 10 * 60 * MICROS]), label="ttl")
    used = pit.Workspace()
    # A workspace used before by a larger join: its arrays are longer than this join needs.
    names = ["x", "s", "d", "e", "g"]
    pit.join_view(chunked, entity_rows({"k": pd.concat([keys] * 3, ignore_index=True)},
                                       pd.concat([stamps] * 3, ignore_index=True)),
                  ["k"], names, names, ttl, True, as_pandas=True, workspace=used)
    # A join told it is the workspace's last use takes its output columns from the workspace's
    # arrays: the joins after it (which get new arrays) must leave those columns alone.
    last = data.draw(st.booleans(), label="last use")
    given = pit.join_view(chunked, entities, ["k"], names, names, ttl, True, as_pandas=True, workspace=used, last=last)
    copies = {name: pd.Series(values).copy() for name, values in given.items()}
    expected_pandas = pit.join_view(table, entities, ["k"], names, names, ttl, True, as_pandas=True)
    for as_pandas in (True, False):
        expected = pit.join_view(table, entities, ["k"], names, names, ttl, True, as_pandas=as_pandas)
        got = pit.join_view(chunked, entities, ["k"], names, names, ttl, True, as_pandas=as_pandas, workspace=used)
        for name in names:
            if as_pandas:
                pd.testing.assert_series_equal(pd.Series(got[name]), pd.Series(expected[name]))
            else:
                assert got[name].to_pylist() == expected[name].to_pylist(), name
    for name in names:
        pd.testing.assert_series_equal(pd.Series(given[name]), copies[name])
        pd.testing.assert_series_equal(pd.Series(given[name]), pd.Series(expected_pandas[name]))


def test_a_workspace_gives_up_its_arrays_as_float_columns_but_the_kept_ones_and_forgets_them():
    import numpy as np

    from mlops_pipelines.features import point_in_time as pit

    workspace = pit.Workspace()
    found = workspace.array("found", 4, np.int64)  # (a join's answer, still read while its columns are filled)
    a, b = workspace.array("a", 8, np.int64), workspace.array("b", 12, np.uint64)
    flags, short = workspace.array("flags", 40, bool), workspace.array("short", 3, np.int64)
    given = workspace.give_up(10, 4, keep=("found",))
    assert [(len(g), g.dtype) for g in given] == [(4, np.float64)] * 5  # a in two, b in three
    assert not any(np.shares_memory(g, kept) for g in given for kept in (found, flags, short))
    assert not np.shares_memory(workspace.array("a", 8, np.int64), a)  # forgotten: new memory
    assert not np.shares_memory(workspace.array("b", 12, np.uint64), b)
    assert np.shares_memory(workspace.array("found", 4, np.int64), found)
    # An array of more pieces than wanted stays: a slice handed out would keep all of it alive.
    large = pit.Workspace()
    large.array("rows", 100, np.int64)
    large.array("twelve", 12, np.int64)
    assert large.give_up(2, 4, keep=()) == []
    # ... and exactly as many as wanted are given; only 8-byte arrays, whatever their length
    exact = pit.Workspace()
    exact.array("a", 8, np.int64), exact.array("b", 12, np.int64), exact.array("flags", 40, bool)
    assert [len(g) for g in exact.give_up(5, 4, keep=())] == [4] * 5
    flags = pit.Workspace()
    flags.array("flags", 40, bool)
    assert flags.give_up(20, 4, keep=()) == []


def test_a_last_use_never_writes_a_column_over_the_rows_it_takes():
    """The rows chosen (the workspace's "found") are read again for the columns taken after the
    floats: they are not given up as a float column."""
    import numpy as np

    from mlops_pipelines.features import point_in_time as pit

    table = pa.table({"x": [0.5, 1.5, 2.5], "s": ["a", "b", "c"], "y": [10.0, 11.0, 12.0]})
    workspace = pit.Workspace()
    chosen = workspace.array("found", 4, np.int64)
    chosen[:] = [2, -1, 0, 2]
    out = pit.take_pandas(table, ["x", "s", "y"], chosen, workspace, last=True)
    assert pd.Series(out["x"]).fillna(-1).tolist() == [2.5, -1, 0.5, 2.5]
    assert pd.Series(out["y"]).fillna(-1).tolist() == [12.0, -1, 10.0, 12.0]
    assert pd.Series(out["s"]).fillna("-").tolist() == ["c", "-", "a", "c"]


def test_a_last_use_gives_no_array_that_float32_columns_would_leave_mostly_unused():
    """FLOAT (float32) columns take no given-up array: counting them cut a large array into
    slices of which one was used, and that one kept the whole array alive with the frame."""
    import numpy as np

    from mlops_pipelines.features import point_in_time as pit

    table = pa.table({"d": [0.5, 1.5], "f1": pa.array([1, 2], pa.float32()), "f2": pa.array([3, 4], pa.float32())})
    workspace = pit.Workspace()
    large = workspace.array("feature keys", 12, np.int64)  # three columns' worth
    chosen = workspace.array("found", 4, np.int64)
    chosen[:] = [1, 0, -1, 1]
    out = pit.take_pandas(table, ["d", "f1", "f2"], chosen, workspace, last=True)
    assert pd.Series(out["d"]).fillna(-1).tolist() == [1.5, 0.5, -1, 1.5]
    assert pd.Series(out["f2"]).fillna(-1).tolist() == [4.0, 3.0, -1, 4.0]
    assert not np.shares_memory(out["d"], large)


def test_a_last_use_takes_its_float64_columns_from_the_workspace_and_no_more():
    import numpy as np

    from mlops_pipelines.features import point_in_time as pit

    table = pa.table({"k": [1, 1], pit.TS: pa.array([0, 5], pa.timestamp("us", "UTC")), "x": [0.5, 1.5]})
    entities = pit.EntityRows(keys={"k": pa.array([1, 1, 2, 1])}, micros=np.array([0, 9, 9, -1]),
                              valid=np.ones(4, dtype=bool))
    for last in (True, False):
        workspace = pit.Workspace()
        spare = workspace.array("spare", 4, np.int64)
        out = pit.join_view(table, entities, ["k"], ["x"], ["x"], None, False, as_pandas=True,
                            workspace=workspace, last=last)
        assert pd.Series(out["x"]).fillna(-1).tolist() == [0.5, 1.5, -1, -1]
        assert np.shares_memory(out["x"], spare) == last
    # a two-column array for a one-column output stays whole: one slice would keep both alive
    workspace = pit.Workspace()
    pair = workspace.array("pair", 8, np.int64)
    out = pit.join_view(table, entities, ["k"], ["x"], ["x"], None, False, as_pandas=True,
                        workspace=workspace, last=True)
    assert not np.shares_memory(out["x"], pair)


def test_keys_times_and_positions_past_64_bits_sort_by_argsort_and_match_an_asof_join(monkeypatch):
    """A key spanning 2**32 values, event times on no grid (ranked) and ~140,000 rows need more
    than 64 bits for key, time and position together: the feature rows are then sorted by a
    stable argsort instead of one word per row. Its answers against DuckDB's ASOF join."""
    from mlops_pipelines.features import point_in_time

    widths = []
    sort = point_in_time._sorted_with_positions

    def spied(values, value_bits, scratch=None, **options):
        widths.append(value_bits + point_in_time._bits(len(values)))
        return sort(values, value_bits, scratch, **options)

    monkeypatch.setattr(point_in_time, "_sorted_with_positions", spied)
    rng = np.random.default_rng(11)
    n, year = 140_000, 366 * 86_400 * MICROS
    keys = np.concatenate([[0, 2**32 - 2], rng.integers(0, 2**32 - 1, 998)])
    step = year // n
    times = BASE_MICROS + np.arange(n) * step + rng.integers(0, step, n)  # distinct, to the microsecond
    order = rng.permutation(n)
    features = pa.table({"k": keys[rng.integers(0, len(keys), n)], "ts": pa.array(times[order]).cast(
        pa.timestamp("us", tz="UTC")), "x": np.arange(n, dtype=np.float64)})
    asked = 2_000
    entities = pd.DataFrame({
        "k": np.where(rng.random(asked) < 0.05, 7, keys[rng.integers(0, len(keys), asked)]),  # 7: no such key
        "event_timestamp": pd.to_datetime(BASE_MICROS + rng.integers(-step, year + step, asked), unit="us", utc=True),
    })
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.register("features_arrow", features)
    con.execute("create table f as select * from features_arrow")
    store = FeatureStore(":memory:")
    store.register(FeatureView("f", "f", ("k",), "ts", (Feature("x"),), ttl=timedelta(days=30)))
    out = store.get_historical_features(entities, ["f:x"], connection=con)
    assert max(widths) > 64  # (the feature rows' sort took the argsort)

    con.register("entities_frame", entities.assign(position=np.arange(asked)))
    expected = con.sql("""
        select e.position, case when e.event_timestamp - f.ts <= interval 30 days then f.x end as x
        from entities_frame e asof left join f on e.k = f.k and e.event_timestamp >= f.ts order by e.position
    """).df()["x"]
    assert expected.notna().sum() > 1_000  # (most rows match: the comparison is not of NULLs)
    assert out["x"].fillna(-1).tolist() == expected.fillna(-1).tolist()


# Key values of many kinds, for object columns Arrow cannot type alone (integers beyond int64
# beside floats, Decimals beside floats, text beside numbers, Timestamps with nanoseconds beside
# naive ones), and key types they may or may not find.
_MIXED_KEYS = [1, 7, -1, 1.5, 7.0, 7.9, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 10**19, 2**70, np.int64(7),
               np.uint64(2**64 - 1), Decimal("7"), Decimal("1.5"), True, "7", "1.5", "a", None, float("nan"),
               pd.Timestamp("2021-06-01 12:00:00.000000001", tz="UTC"), pd.Timestamp("2021-06-01 13:00"),
               uuid.UUID(int=5), str(uuid.UUID(int=5)), b"a", date(2021, 6, 1), datetime(2021, 6, 1, 12),
               pd.Timestamp("2021-06-01 08:00", tz="America/New_York")]
_MIXED_KEY_TYPES = {
    "BIGINT": ["1", "7", "-1", str(2**53 + 1), str(2**63 - 1)],
    "UBIGINT": ["1", "7", str(2**63), str(2**64 - 1)],
    "HUGEINT": ["1", "7", "-1", str(10**19), str(2**70)],
    "DOUBLE": ["1.0", "1.5", "7", "7.9"],
    "VARCHAR": ["'7'", "'1.5'", "'a'", "'1'"],
    "TIMESTAMP": ["'2021-06-01 12:00:00'", "'2021-06-01 13:00:00'"],
    "UUID": [f"'{uuid.UUID(int=5)}'", f"'{uuid.UUID(int=6)}'"],
    "DATE": ["'2021-06-01'", "'2021-06-02'"],
}
_MIXED_STORES: dict[str, tuple[FeatureStore, duckdb.DuckDBPyConnection]] = {}


def _store_keyed_by(key_type: str) -> tuple[FeatureStore, duckdb.DuckDBPyConnection]:
    if key_type not in _MIXED_STORES:
        con = duckdb.connect()
        con.execute("set TimeZone = 'UTC'")
        rows = ", ".join(f"({k}::{key_type}, timestamp '2021-06-01', {i})" for i, k in
                         enumerate(_MIXED_KEY_TYPES[key_type]))
        con.execute(f"create table src (k {key_type}, ts timestamp, f bigint); insert into src values {rows}")
        store = FeatureStore(":memory:")
        store.register(FeatureView("v", "src", ("k",), "ts", (Feature("f", "int"),)))
        _MIXED_STORES[key_type] = store, con
    return _MIXED_STORES[key_type]


def _answers(key_type: str, keys: list) -> list:
    store, con = _store_keyed_by(key_type)
    frame = pd.DataFrame({"k": pd.Series(keys, dtype=object), "event_timestamp": ["2021-06-02T00:00Z"] * len(keys)})
    try:
        return [None if pd.isna(v) else int(v) for v in store.get_historical_features(frame, ["v:f"],
                                                                                     connection=con)["f"]]
    except ValueError as exc:  # (a value refused is refused among others too)
        return [f"error: {exc.__class__.__name__}"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_key_in_a_column_of_mixed_objects_finds_what_it_finds_alone(data):
    """Reading mixed objects as the key type at once truncated 1.5 to 1 and dropped nanoseconds
    (1.5 found key 1 beside a 64-bit id), and integers from 2**63 to 2**64 - 1 found nothing."""
    key_type = data.draw(st.sampled_from(sorted(_MIXED_KEY_TYPES)), label="key type")
    keys = data.draw(st.lists(st.sampled_from(_MIXED_KEYS), min_size=2, max_size=4), label="keys")
    alone = [_answers(key_type, [key]) for key in keys]
    if any(isinstance(a[0], str) for a in alone):
        assert isinstance(_answers(key_type, keys)[0], str)
    else:
        assert _answers(key_type, keys) == [a[0] for a in alone]


def test_mixed_objects_find_their_own_rows():
    """The cases found by hand, with the rows they find."""
    assert _answers("BIGINT", [2**53 + 1, 1.5, 7.9, Decimal("7")]) == [3, None, None, 1]
    assert _answers("UBIGINT", [2**64 - 1, 2**63, "7", -1]) == [3, 2, 1, None]
    assert _answers("HUGEINT", [10**19, 7, 2**70, 1.5]) == [3, 1, 4, None]
    assert _answers("TIMESTAMP", [pd.Timestamp("2021-06-01 12:00:00.000000001", tz="UTC"),
                                  pd.Timestamp("2021-06-01 13:00")]) == [None, 1]
    # (bytes beside text for a UUID key were read as text; alone, they are refused)
    text = str(uuid.UUID(int=5))
    assert _answers("UUID", [text.encode(), text]) == _answers("UUID", [text.encode()]) == ["error: ValueError"]
    assert _answers("UUID", [uuid.UUID(int=6), text, None]) == [1, 0, None]
    # (dates beside datetimes: a datetime finds its day's key only at midnight UTC)
    assert _answers("DATE", [date(2021, 6, 2), datetime(2021, 6, 1, 12), datetime(2021, 6, 1)]) == [1, None, 0]
    # (an integer beside Timestamps was read as an instant 1 µs after 1970; alone, it is refused)
    assert _answers("TIMESTAMP", [pd.Timestamp("2021-06-01 13:00"), 1]) == _answers("TIMESTAMP", [1]) == [
        "error: ValueError"]


def _view_v_over(rows: str) -> tuple[FeatureStore, duckdb.DuckDBPyConnection]:
    """A store with the view ``v`` (k, ts, x) over the ``rows`` given (SQL values)."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute(f"create table src (k bigint, ts timestamp, x double); insert into src values {rows}")
    store = FeatureStore(":memory:")
    store.register(FeatureView("v", "src", ("k",), "ts", (Feature("x"),)))
    return store, con


def test_entity_times_before_duckdbs_earliest_instant_find_only_minus_infinity():
    """DuckDB has no instant before 290309 BC: an entity time there failed the view's read (its
    rows were narrowed with DuckDB's make_timestamp). It comes before every finite event."""
    store, con = _view_v_over("(1, '-infinity', 0.5), (1, '2021-06-01', 1.0)")
    store.register(FeatureView("w", "src", ("k",), "ts", (Feature("x"),), ttl=timedelta(hours=1)))
    far = pd.DataFrame({"k": [1], "event_timestamp": np.array(["-1000000-01-01T00:00:00"], dtype="datetime64[s]")})
    assert store.get_historical_features(far, ["v:x"], connection=con)["x"].tolist() == [0.5]
    both = pd.DataFrame({"k": [1, 1], "event_timestamp": np.array([-9_223_372_030_000_000_000, 1_622_505_600_000_000],
                                                                  dtype="datetime64[us]")})
    assert store.get_historical_features(both, ["v:x"], connection=con)["x"].tolist() == [0.5, 1.0]
    out = store.get_historical_features(both, ["w:x"], connection=con)["x"].tolist()  # (-infinity: beyond any TTL)
    assert np.isnan(out[0]) and out[1] == 1.0


def test_nanosecond_timestamps_beside_an_instant_beyond_2262_are_read_in_microseconds():
    """As documented for text and datetimes: a column with an instant beyond pandas' nanosecond
    range is read in microseconds. A Timestamp or datetime64 with nanoseconds beside it failed
    ("Out of bounds nanosecond timestamp"), naming the far row."""
    store, con = _view_v_over("(1, '2021-06-01', 1.0), (1, '3000-01-01', 2.0)")
    near = pd.Timestamp("2021-06-02 12:00:00.000000123")
    for far in (datetime(9999, 12, 31), "2500-01-01T00:00:00Z", np.datetime64("3000-01-01T00:00:00", "s")):
        frame = pd.DataFrame({"k": [1, 1], "event_timestamp": pd.Series([near, far], dtype=object)})
        expected = [1.0, 1.0] if far == "2500-01-01T00:00:00Z" else [1.0, 2.0]
        assert store.get_historical_features(frame, ["v:x"], connection=con)["x"].tolist() == expected
    frame = pd.DataFrame({"k": [1, 1], "event_timestamp": pd.Series(
        [np.datetime64("2021-06-02T12:00:00.000000123", "ns"), np.datetime64("3000-01-01T00:00:00", "s")],
        dtype=object)})
    assert store.get_historical_features(frame, ["v:x"], connection=con)["x"].tolist() == [1.0, 2.0]
    for missing in (np.datetime64("NaT"), np.datetime64("NaT", "ns")):  # (numpy's NaT: read in ns again, it failed)
        stamps = pd.Series([missing, "3000-01-01T00:00:00Z"], dtype=object)
        frame = pd.DataFrame({"k": [1, 1], "event_timestamp": stamps})
        out = store.get_historical_features(frame, ["v:x"], connection=con)["x"].tolist()
        assert np.isnan(out[0]) and out[1] == 2.0


def test_arrow_entity_columns_pandas_cannot_hold_are_kept_as_arrow(tmp_path):
    """A TIME key with nanoseconds, or a date before year 1, in an Arrow entity table: pandas
    refused them (a raw ArrowInvalid, offline and online). They stay Arrow's, exactly, and a TIME
    past the microsecond finds nothing, as any value the key type cannot hold."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create table src (k time, ts timestamp, f bigint); "
                "insert into src values ('12:00:00', '2021-06-01', 1)")
    con.close()
    store = FeatureStore(tmp_path / "w.duckdb", [FeatureView("v", "src", ("k",), "ts", (Feature("f", "int"),))],
                         online_path=tmp_path / "online.sqlite")
    at = pd.Timestamp("2021-06-02", tz="UTC")
    store.materialize_online("v", at)
    keys = pa.array([12 * 3600 * 10**9, 12 * 3600 * 10**9 + 1], pa.int64()).cast(pa.time64("ns"))
    before_year_one = pa.array([-1_000_000, 0], pa.int32()).cast(pa.date32())
    entities = pa.table({"k": keys, "event_timestamp": pa.array([at, at], pa.timestamp("us", tz="UTC")),
                         "note": before_year_one})
    offline = store.get_historical_features(entities, ["v:f"])
    assert offline["f"].tolist() == [1, pd.NA]
    assert pa.array(offline["k"]).equals(keys) and pa.array(offline["note"]).equals(before_year_one)
    assert store.get_online_features(pa.table({"k": keys}), ["v:f"])["f"].tolist() == [1, pd.NA]


def test_half_float_keys_are_compared_as_the_floats_they_are():
    """Arrow compares no half floats: a float16 key column was an error ("no kernel")."""
    store, con = _store_keyed_by("DOUBLE")
    frame = pd.DataFrame({"k": np.array([1.5, 7.0, 2.0], dtype=np.float16),
                          "event_timestamp": ["2021-06-02T00:00Z"] * 3})
    assert store.get_historical_features(frame, ["v:f"], connection=con)["f"].tolist() == [1, 2, pd.NA]


def test_decimals_of_several_exponents_each_find_what_they_find_alone():
    """Arrow reads Decimals at one scale: 7 beside 1.5 became 7.0, whose text is no key '7'."""
    from decimal import Decimal

    keys = [Decimal("7"), Decimal("1.5"), Decimal("7.00")]
    assert _answers("VARCHAR", keys) == [_answers("VARCHAR", [key])[0] for key in keys]
    assert _answers("VARCHAR", keys[:2])[0] == 0  # ('7' is the key of row 0)
