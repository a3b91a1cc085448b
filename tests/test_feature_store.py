"""Point-in-time join semantics of FeatureStore.get_historical_features, on tiny frames."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_pipelines.features.sql_project import SqlProject, default_project_dir
from mlops_pipelines.features.store import FeatureStore, ViewReadError
from mlops_pipelines.features.views import Feature, FeatureView, parse_ttl

T = pd.Timestamp


@pytest.fixture()
def store(tmp_path) -> FeatureStore:
    path = tmp_path / "fs.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("set TimeZone='UTC'")
        con.execute("create table stats (carrier varchar, ts timestamptz, created timestamptz, delay double)")
        con.execute("""insert into stats values
            ('AA', '2013-01-01 10:00:00+00', '2013-01-01 10:00:00+00', 1.0),
            ('AA', '2013-01-01 12:00:00+00', '2013-01-01 12:00:00+00', 2.0),
            -- the same event instant twice: the later created row wins
            ('AA', '2013-01-01 12:00:00+00', '2013-01-01 12:30:00+00', 3.0),
            ('UA', '2013-01-01 09:00:00+00', '2013-01-01 09:00:00+00', 7.0)""")
        con.execute("create table weather (origin varchar, ts timestamptz, delay double)")
        con.execute("insert into weather values ('JFK', '2013-01-01 11:00:00+00', 9.0)")
    fs = FeatureStore(path)
    fs.register(FeatureView("carrier_stats", "stats", ("carrier",), "ts",
                            (Feature("delay", "float"),), ttl=timedelta(hours=2), created_timestamp="created"))
    fs.register(FeatureView("weather", "weather", ("origin",), "ts", (Feature("delay", "float"),)))
    return fs


@pytest.mark.parametrize(
    ("carrier", "at", "expected"),
    [
        ("AA", T("2013-01-01 09:59:59", tz="UTC"), None),   # before any row: null, row kept
        ("AA", T("2013-01-01 10:00:00", tz="UTC"), 1.0),    # equal instant counts (<=)
        ("AA", T("2013-01-01 11:59:00", tz="UTC"), 1.0),    # latest row at or before
        ("AA", T("2013-01-01 12:00:00", tz="UTC"), 3.0),    # tie on event time: latest created
        ("AA", T("2013-01-01 14:00:00", tz="UTC"), 3.0),    # TTL of 2 h is inclusive
        ("AA", T("2013-01-01 14:00:01", tz="UTC"), None),   # just past the TTL: null
        ("UA", T("2013-01-01 04:00:00-05:00"), 7.0),        # New York time = 09:00 UTC
        ("UA", T("2013-01-01 09:00:00"), 7.0),              # naive is read as UTC
        ("DL", T("2013-01-01 12:00:00", tz="UTC"), None),   # unknown entity: null, row kept
        (None, T("2013-01-01 12:00:00", tz="UTC"), None),   # null key: null, row kept
    ],
)
def test_point_in_time_cases(store, carrier, at, expected):
    entities = pd.DataFrame({"carrier": [carrier], "event_timestamp": [at]})
    out = store.get_historical_features(entities, ["carrier_stats:delay"])
    assert len(out) == 1
    value = out["delay"].iloc[0]
    assert (pd.isna(value) and expected is None) or value == expected


def test_nanosecond_entity_times_are_compared_exactly(store):
    """Events are whole microseconds; an entity time with nanoseconds is neither moved before an
    event nor pulled back inside a TTL."""
    at = pd.to_datetime(["2013-01-01 14:00:00.000000001", "2013-01-01 14:00:00",
                         "2013-01-01 11:59:59.999999999", "2013-01-01 09:59:59.999999999"], utc=True,
                        format="ISO8601")
    assert at.dtype == "datetime64[ns, UTC]"
    out = store.get_historical_features(pd.DataFrame({"carrier": ["AA"] * 4, "event_timestamp": at}),
                                        ["carrier_stats:delay"])
    # 1 ns past the 2 h TTL of the 12:00 row; exactly at it; the 10:00 row 1 ns inside its TTL;
    # 1 ns before the first event.
    assert [None if pd.isna(v) else v for v in out["delay"]] == [None, 3.0, 1.0, None]


def test_rows_come_back_once_each_in_caller_order_with_duplicates(store):
    entities = pd.DataFrame({
        "carrier": ["UA", "AA", "AA", "DL", "AA"],
        "event_timestamp": pd.to_datetime(
            ["2013-01-01 10:00", "2013-01-01 12:30", "2013-01-01 10:30", "2013-01-01 10:00", "2013-01-01 12:30"],
            utc=True),
        "tag": ["a", "b", "c", "d", "e"],
    }, index=[50, 40, 30, 20, 10])
    out = store.get_historical_features(entities, ["carrier_stats:delay"])
    assert list(out["tag"]) == ["a", "b", "c", "d", "e"]
    assert list(out.index) == [50, 40, 30, 20, 10]
    assert out["delay"].tolist()[:3] == [7.0, 3.0, 1.0]
    assert pd.isna(out["delay"].iloc[3]) and out["delay"].iloc[4] == 3.0


def test_colliding_feature_names_need_full_names(store):
    entities = pd.DataFrame({"carrier": ["AA"], "origin": ["JFK"],
                             "event_timestamp": [T("2013-01-01 12:00", tz="UTC")]})
    with pytest.raises(ValueError, match="full_feature_names=True"):
        store.get_historical_features(entities, ["carrier_stats:delay", "weather:delay"])
    out = store.get_historical_features(entities, ["carrier_stats:delay", "weather:delay"],
                                        full_feature_names=True)
    assert out[["carrier_stats__delay", "weather__delay"]].iloc[0].tolist() == [3.0, 9.0]


@pytest.mark.parametrize(
    ("reference", "error"),
    [("nope:delay", "not registered"), ("carrier_stats:nope", "has no feature"), ("delay", "view:feature")],
)
def test_bad_feature_references_are_named(store, reference, error):
    entities = pd.DataFrame({"carrier": ["AA"], "event_timestamp": [T("2013-01-01", tz="UTC")]})
    with pytest.raises((KeyError, ValueError), match=error):
        store.get_historical_features(entities, [reference])


def test_a_feature_asked_for_twice_is_refused_offline_and_online(store):
    """Feast refuses it too; one column for two asked would mislead a caller counting columns."""
    entities = pd.DataFrame({"carrier": ["AA"], "origin": ["JFK"], "event_timestamp": [T("2013-01-02", tz="UTC")]})
    refs = ["carrier_stats:delay", "weather:delay", "carrier_stats:delay"]
    with pytest.raises(ValueError, match=r"feature 'carrier_stats:delay' is asked for twice"):
        store.get_historical_features(entities, refs, full_feature_names=True)
    with pytest.raises(ValueError, match=r"feature 'weather:delay' is asked for twice"):
        store.get_online_features([{"origin": "JFK"}], ["weather:delay", "weather:delay"])
    out = store.get_historical_features(entities, refs[:2], full_feature_names=True)
    assert out.columns.tolist()[-2:] == ["carrier_stats__delay", "weather__delay"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3 hours", timedelta(hours=3)), ("2 days", timedelta(days=2)), ("1 day", timedelta(days=1)),
     ("90 minutes", timedelta(minutes=90)), (3600, timedelta(hours=1)), (None, None)],
)
def test_ttl_parsing(text, expected):
    assert parse_ttl(text) == expected


def test_bad_ttl_is_an_error():
    with pytest.raises(ValueError, match="ttl 'soon'"):
        parse_ttl("soon")


@pytest.mark.parametrize(("text", "expected"), [
    # A number of seconds, as text as as a number (YAML's ttl: '30' and ttl: 30 mean the same).
    ("30", timedelta(seconds=30)), (" 1.5 ", timedelta(seconds=1.5)),
    # Several amounts with units, in words or short.
    ("1 day 12 hours", timedelta(hours=36)), ("1 day, 12 hours", timedelta(hours=36)),
    ("1 Day and 12 HOURS", timedelta(hours=36)), ("1d12h", timedelta(hours=36)), ("1h 30m", timedelta(minutes=90)),
    ("2 hrs 5 mins 10 secs", timedelta(hours=2, minutes=5, seconds=10)), ("2 weeks", timedelta(days=14)),
    ("3 milliseconds 7 microseconds", timedelta(microseconds=3007)),
    # ISO 8601 durations: weeks, days and time; a fraction with a point or a comma.
    ("P30D", timedelta(days=30)), ("PT36H", timedelta(hours=36)), ("P1DT12H", timedelta(hours=36)),
    ("P2W", timedelta(days=14)), ("PT1M", timedelta(minutes=1)), ("pt1.5h", timedelta(minutes=90)),
    ("PT0,5S", timedelta(milliseconds=500)), ("P0Y0M1D", timedelta(days=1)),
    ("P1DT2H3M4.000005S", timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=5)),
    # Durations as Python and pandas print them.
    (str(timedelta(days=1, hours=2)), timedelta(days=1, hours=2)),
    (str(pd.Timedelta(days=1, hours=2)), timedelta(days=1, hours=2)),
    (str(pd.Timedelta(microseconds=1)), timedelta(microseconds=1)), ("2:00:00", timedelta(hours=2)),
    ("-0", None), ("0 hours", None),  # (zero, signed or not: no TTL)
])
def test_ttl_text_forms(text, expected):
    assert parse_ttl(text) == expected


@pytest.mark.parametrize(("text", "error"), [
    ("P1M", r"ttl 'P1M' is not a fixed duration \(months and years vary\)"),
    ("P1Y2D", "is not a fixed duration"),
    ("1h 1h", "ttl '1h 1h' gives hours twice"), ("1 hour 60 minutes 1 hr", "gives hours twice"),
    ("-1 hour", "ttl '-1 hour' is negative"), ("-P1D", "is negative"), ("-30", "is negative"),
    (str(pd.Timedelta(hours=-1)), r"ttl '-1 days \+23:00:00' is negative"), (str(timedelta(hours=-1)), "is negative"),
    # '3M' could be months, '3H' a typo of it: short units are lower case only.
    ("3M", "ttl '3M': expected a duration"), ("3H", "expected a duration"),
    ("P", "expected a duration"), ("PT", "expected a duration"), ("P1DT", "expected a duration"),
    ("1 day 12", "expected a duration"), ("12 1h", "expected a duration"), ("3:00", "expected a duration"),
    ("1 fortnight", "expected a duration"), ("PT0.0000001S", "is shorter than a microsecond"),
])
def test_ttl_text_that_is_not_a_duration(text, error):
    with pytest.raises(ValueError, match=error):
        parse_ttl(text)


@pytest.mark.parametrize(("ttl", "expected"), [
    ("2 hours", timedelta(hours=2)), (7200, timedelta(hours=2)), (pd.Timedelta("2h"), timedelta(hours=2)),
    (0, None), (timedelta(0), None), (None, None), (np.int64(3600), timedelta(hours=1)),
    (np.timedelta64(90, "s"), timedelta(seconds=90)), ("1.5 days", timedelta(hours=36)),
    # Read exactly: numpy durations finer than a microsecond, pandas' nanoseconds, decimal text.
    (np.timedelta64(2000, "ns"), timedelta(microseconds=2)), (pd.Timedelta(3, "us"), timedelta(microseconds=3)),
    ("0.000002 seconds", timedelta(microseconds=2)), (0.1, timedelta(milliseconds=100)),
])
def test_a_view_takes_its_ttl_as_a_duration_text_or_seconds(ttl, expected):
    assert FeatureView("v", "t", ("k",), "ts", (Feature("x"),), ttl=ttl).ttl == expected


@pytest.mark.parametrize(("ttl", "error"), [
    ("soon", r"feature view 'v': ttl 'soon': expected"),
    ([1], r"feature view 'v': ttl \[1\] is not a duration"),
    (True, "ttl True is not a duration"),
    (timedelta(hours=-1), "feature view 'v': ttl -1 day, 23:00:00 is negative"),
    (float("inf"), "feature view 'v': ttl inf is too long"),
    (1e20, "feature view 'v': ttl 1e\\+20 is too long"),
    (float("nan"), "feature view 'v': ttl nan is not a duration"),
    (np.timedelta64("NaT"), "feature view 'v': ttl NaT is not a duration"),
    ("0.0000001 seconds", "feature view 'v': ttl '0.0000001 seconds' is shorter than a microsecond"),
    # numpy's own cast truncated these to 0 (no TTL), or wrapped them around to a second.
    (np.timedelta64(999, "ns"), r"ttl np.timedelta64\(999,'ns'\) is shorter than a microsecond"),
    (np.timedelta64(2**58 + 1, "s"), "is too long"),
    (np.timedelta64(1, "M"), "is not a fixed duration"),
    # pandas' nanoseconds were rounded (1.5 µs became 2 µs) or dropped.
    (pd.Timedelta(1500, "ns"), "is not a whole number of microseconds"),
    (pd.Timedelta(500, "ns"), "is shorter than a microsecond"),
    ("0.0000015 seconds", "is not a whole number of microseconds"),
])
def test_a_view_refuses_a_ttl_that_is_not_a_duration(ttl, error):
    with pytest.raises(ValueError, match=error):
        FeatureView("v", "t", ("k",), "ts", (Feature("x"),), ttl=ttl)


def test_a_declared_ttl_that_is_not_a_duration_names_its_file_and_view(tmp_path):
    project = tmp_path / "sql"
    shutil.copytree(default_project_dir(), project)
    declaration = project / "features" / "fv_plane.yml"
    text = declaration.read_text()
    assert "ttl:" not in text  # planes never expire: the test adds one
    declaration.write_text(text.replace("feature_view:\n", "feature_view:\n  ttl: soon\n", 1))
    with pytest.raises(ValueError, match=r"fv_plane\.yml: feature view 'fv_plane': ttl 'soon': expected"):
        SqlProject(project).feature_views()


@pytest.mark.parametrize(("declared", "expected"), [
    ("'30'", timedelta(seconds=30)), ("30", timedelta(seconds=30)), ("P1DT12H", timedelta(hours=36)),
    ("1 day 12 hours", timedelta(hours=36)), ("36h", timedelta(hours=36)),
])
def test_a_declared_ttl_in_any_duration_form(tmp_path, declared, expected):
    project = tmp_path / "sql"
    shutil.copytree(default_project_dir(), project)
    declaration = project / "features" / "fv_plane.yml"
    declaration.write_text(declaration.read_text().replace("feature_view:\n", f"feature_view:\n  ttl: {declared}\n", 1))
    assert SqlProject(project).feature_views()["fv_plane"].ttl == expected


@pytest.mark.parametrize(
    ("entities", "error"),
    [
        (pd.DataFrame({"carrier": ["AA"], "event_timestamp": [1357000000]}), "holds int64 values, not timestamps"),
        (pd.DataFrame({"carrier": ["AA", "AA"], "event_timestamp": ["2013-01-01", "yesterday"]}),
         r"timestamp column 'event_timestamp' row 1 \('yesterday'\): .*ISO 8601"),
        (pd.DataFrame({"carrier": ["AA"], "when": [T("2013-01-01", tz="UTC")]}),
         "no timestamp column 'event_timestamp'"),
        (pd.DataFrame({"airline": ["AA"], "event_timestamp": [T("2013-01-01", tz="UTC")]}),
         r"lacks join keys \['carrier'\] of view 'carrier_stats'"),
        (pd.DataFrame({"carrier": ["AA", "AA"], "event_timestamp": ["2013-01-01", " Now"]}),
         r"timestamp column 'event_timestamp' row 1 \(' Now'\): give an instant, not a time relative to the clock"),
        (pd.DataFrame([["AA", T("2013-01-01", tz="UTC"), "UA"]], columns=["carrier", "event_timestamp", "carrier"]),
         r"entity columns \['carrier'\] appear more than once"),
    ],
    ids=["epoch-integers", "not-a-date", "no-timestamp-column", "missing-join-key", "clock-time", "column-twice"],
)
def test_bad_entity_frames_are_named(store, entities, error):
    with pytest.raises((KeyError, ValueError), match=error):
        store.get_historical_features(entities, ["carrier_stats:delay"])


def test_ties_are_decided_only_where_they_occur():
    """Rows tied on (keys, event instant) give the spec's row (latest created, then the smallest
    value, NULLs last) and untied rows are untouched by that. Also: -infinity event timestamps
    (matched only without a TTL), nanosecond entity timestamps, and a NULL entity timestamp (no
    match, row kept)."""
    con = duckdb.connect()
    con.execute("set TimeZone='UTC'")
    con.execute("create table f (k varchar, k2 int, ts timestamptz, created timestamptz, x double)")
    con.execute("""insert into f values
        ('a', 1, '2020-01-01 10:00+00', '2020-01-01 10:00+00', 1.0),  -- untied
        ('a', 1, '2020-01-01 12:00+00', '2020-01-01 12:00+00', 2.0),  -- tie: later created wins
        ('a', 1, '2020-01-01 12:00+00', '2020-01-01 12:05+00', 3.0),
        ('a', 2, '2020-01-01 12:00+00', '2020-01-01 12:05+00', 6.0),  -- tie on created too: smallest
        ('a', 2, '2020-01-01 12:00+00', '2020-01-01 12:05+00', 5.0),
        ('a', 2, '2020-01-01 12:00+00', '2020-01-01 12:05+00', NULL),
        ('a', 2, '2020-01-01 12:00+00', NULL, 4.0),                   -- NULL created loses
        ('b', 1, '-infinity', NULL, 8.0),
        ('b', 1, 'infinity', NULL, 9.0),                              -- never at or before
        (NULL, 1, '2020-01-01 00:00+00', NULL, 7.0)                   -- NULL key: matches nothing
    """)
    entities = pd.DataFrame({
        "k": ["a", "a", "a", "b", "a", None, "a"],
        "k2": [1, 1, 2, 1, 1, 1, 1],
        "event_timestamp": pd.to_datetime(
            ["2020-01-01 11:00", "2020-01-01 12:00", "2020-01-01 13:00", "2020-01-01 13:00",
             "2020-01-01 09:00", "2020-01-01 13:00", None], utc=True).as_unit("ns"),
    }, index=list("ABCDEFG"))
    for ttl, expected in ((None, [1.0, 3.0, 5.0, 8.0, None, None, None]),
                          (timedelta(hours=2), [1.0, 3.0, 5.0, None, None, None, None])):
        store = FeatureStore(":memory:")
        store.register(FeatureView("f", "f", ("k", "k2"), "ts", (Feature("x"),), ttl=ttl, created_timestamp="created"))
        out = store.get_historical_features(entities, ["f:x"], connection=con)
        assert list(out.index) == list("ABCDEFG")
        assert [None if pd.isna(v) else v for v in out["x"]] == expected, ttl


def test_parquet_and_table_sources_agree(tmp_path):
    """The same rows in a table and in a parquet file give the same answers, whatever the
    timestamp types (naive nanoseconds read as UTC) and feature types (string, integer,
    timestamp; NULL where nothing matches). A DATE event timestamp is refused from either: read
    as its midnight, it would show a day's rows to every entity row of that day."""
    con = duckdb.connect()
    con.execute("set TimeZone='UTC'")
    con.execute("""create table f as select * from (values
        (1, '2020-01-01 10:00:00.000000999'::timestamp_ns, '2020-01-01'::date, 'x', 5, '2019-05-01 00:00'::timestamp),
        (1, '2020-01-01 12:00:00'::timestamp_ns, '2020-01-02'::date, NULL, 6, NULL),
        (2, '2020-01-01 11:00:00'::timestamp_ns, '2020-01-01'::date, 'z', NULL, '2019-05-03 00:00'::timestamp),
        (NULL, '2020-01-01 09:00:00'::timestamp_ns, '2020-01-01'::date, 'w', 7, NULL)
    ) v(k, ts, day, label, count, seen)""")
    path = tmp_path / "f.parquet"
    con.execute(f"copy f to '{path}' (format parquet)")
    entities = pd.DataFrame({
        "k": pd.array([1, 1, 1, 2, 3, None], dtype="Int64"),
        "event_timestamp": pd.to_datetime(["2020-01-01 10:00:00.000001", "2020-01-01 10:00", "2020-01-01 13:00",
                                           "2020-01-01 11:00-05:00", "2020-01-01 13:00", "2020-01-01 13:00"],
                                          utc=True, format="ISO8601"),
    })
    features = (Feature("label", "str"), Feature("count", "int"), Feature("seen"))
    answers = {}
    for source in ("f", f"read_parquet('{path}')"):
        store = FeatureStore(":memory:")
        store.register(FeatureView("f", source, ("k",), "ts", features, ttl=timedelta(days=1)))
        out = store.get_historical_features(entities, ["f:label", "f:count", "f:seen"], connection=con)
        answers[source, "ts"] = [[None if pd.isna(v) else v for v in out[c]] for c in ("label", "count", "seen")]
        store.register(FeatureView("f", source, ("k",), "day", features, ttl=timedelta(days=1)))
        with pytest.raises(ValueError, match="feature view 'f': event timestamp column 'day' is DATE, not a TIMESTAMP"):
            store.get_historical_features(entities, ["f:label"], connection=con)
    first, third = pd.Timestamp("2019-05-01"), pd.Timestamp("2019-05-03")
    # The first row's event is 999 ns past 10:00: it counts from 10:00:00.000001, so an entity row
    # at 10:00:00 sees nothing yet.
    assert answers["f", "ts"] == [["x", None, None, "z", None, None], [5, None, 6, None, None, None],
                                  [first, None, None, third, None, None]]
    assert answers[f"read_parquet('{path}')", "ts"] == answers["f", "ts"]


def test_parquet_source_missing_a_column_is_named(tmp_path):
    path = tmp_path / "f.parquet"
    pd.DataFrame({"k": [1], "ts": pd.to_datetime(["2020-01-01"], utc=True)}).to_parquet(path)
    store = FeatureStore(":memory:")
    store.register(FeatureView("f", f"read_parquet('{path}')", ("k",), "ts", (Feature("x"),)))
    entities = pd.DataFrame({"k": [1], "event_timestamp": pd.to_datetime(["2020-01-02"], utc=True)})
    with pytest.raises(ViewReadError, match=r"feature view 'f': feature 'x' is declared but not a column of "
                                            r"read_parquet\('.*f.parquet'\) \(its columns: \['k', 'ts'\]\)"):
        store.get_historical_features(entities, ["f:x"])


def test_entity_keys_of_another_type_are_cast_or_refused():
    con = duckdb.connect()
    con.execute("set TimeZone='UTC'")
    con.execute("create table f as select 7::bigint as k, '2020-01-01'::timestamptz as ts, 1.5 as x")
    store = FeatureStore(":memory:")
    store.register(FeatureView("f", "f", ("k",), "ts", (Feature("x"),)))
    at = pd.to_datetime(["2020-01-02"] * 2, utc=True)
    # Cast to the view's BIGINT; a value BIGINT cannot hold (7.5, 2**70) matches nothing, not its neighbour 7.
    for keys in (pd.array([7, 8], dtype="int32"), [7.0, None], ["7", "8"], [7.0, 7.5], [7, 2**70]):
        out = store.get_historical_features(pd.DataFrame({"k": keys, "event_timestamp": at}), ["f:x"], connection=con)
        assert [None if pd.isna(v) else v for v in out["x"]] == [1.5, None], keys
    for keys, kind in ((["7", "seven"], "(large_)?string"),):
        with pytest.raises(ValueError, match=f"join key 'k': entity values of type {kind} cannot be compared "
                                             r"with the view's int64 \(row 1: .*'seven'"):
            store.get_historical_features(pd.DataFrame({"k": keys, "event_timestamp": at}), ["f:x"], connection=con)


def test_arrow_and_pandas_outputs_agree():
    """The training set takes the Arrow output of the join (nulls), get_historical_features the
    pandas one (floats gathered straight into numpy): the same rows, the same values."""
    from mlops_pipelines.features.store import entity_rows, to_utc

    con = duckdb.connect()
    con.execute("set TimeZone='UTC'")
    con.execute("""create table f as select k, '2020-01-01'::timestamptz + to_hours(i) as ts,
        case when i % 7 = 0 then null else i * 0.5 end as x, i::int as n, 'v' || i as s
        from range(200) t(i), (values (1), (2), (3)) v(k)""")
    store = FeatureStore(":memory:")
    store.register(FeatureView("f", "f", ("k",), "ts", (Feature("x"), Feature("n"), Feature("s")),
                               ttl=timedelta(hours=5)))
    entities = pd.DataFrame({
        "k": pd.array([1, 2, 3, 4, None, 1, 2] * 20, dtype="Int64"),
        "event_timestamp": pd.Timestamp("2019-12-31 22:00", tz="UTC") + pd.to_timedelta(range(140), unit="h") * 1.7,
    })
    refs = ["f:x", "f:n", "f:s"]
    expected = store.get_historical_features(entities, refs, connection=con)
    points = entity_rows({"k": entities["k"]}, to_utc(entities["event_timestamp"]))
    arrow = store.join_features(con, points, store.resolve_features(refs), False).to_pandas()
    for column in ("x", "n", "s"):
        assert [None if pd.isna(v) else v for v in arrow[column]] == \
            [None if pd.isna(v) else v for v in expected[column]], column
    assert expected["x"].notna().sum() > 50 and expected["x"].isna().sum() > 20  # both kinds present


def test_a_view_declaration_is_checked_where_it_is_written():
    # One join key given as a bare name is that key, not its letters.
    assert FeatureView("v", "t", "origin", "ts", [Feature("x")]).entities == ("origin",)
    with pytest.raises(ValueError, match=r"feature view 'v': features \['origin'\] are also its join keys"):
        FeatureView("v", "t", ("origin",), "ts", (Feature("origin"), Feature("x")))
    with pytest.raises(ValueError, match=r"feature view 'v': features \['ts'\] are also its join keys or timestamp"):
        FeatureView("v", "t", ("origin",), "ts", (Feature("ts"),))
    with pytest.raises(ValueError, match=r"feature view 'v': features \['x'\] are declared more than once"):
        FeatureView("v", "t", ("origin",), "ts", (Feature("x"), Feature("x")))


def test_output_columns_follow_the_request_and_never_shadow_entity_columns(store):
    entities = pd.DataFrame({"carrier": ["AA"], "origin": ["JFK"],
                             "event_timestamp": [T("2013-01-01 13:00", tz="UTC")]})
    out = store.get_historical_features(entities, ["weather:delay", "carrier_stats:delay"], full_feature_names=True)
    assert list(out.columns) == ["carrier", "origin", "event_timestamp", "weather__delay", "carrier_stats__delay"]
    assert out.iloc[0, 3:].tolist() == [9.0, 3.0]
    # A single reference is one feature, not its letters; an Arrow table is read as a frame.
    table = pa.table({"carrier": ["AA"], "origin": ["JFK"],
                      "event_timestamp": pa.array([T("2013-01-01 13:00")], pa.timestamp("us", tz="UTC"))})
    alone = store.get_historical_features(table, "weather:delay")
    assert list(alone.columns) == ["carrier", "origin", "event_timestamp", "delay"] and alone["delay"][0] == 9.0
    with pytest.raises(ValueError, match=r"entity columns \['delay'\] have the names of requested features"):
        store.get_historical_features(entities.assign(delay=1.0), ["weather:delay"])
    with pytest.raises(ValueError, match="no features requested"):
        store.get_historical_features(entities, [])
    empty = store.get_historical_features(pd.DataFrame({"carrier": [], "event_timestamp": []}), ["carrier_stats:delay"])
    assert len(empty) == 0 and list(empty.columns) == ["carrier", "event_timestamp", "delay"]


def test_full_names_that_still_collide_are_named(tmp_path):
    path = tmp_path / "names.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table t as select 1 as k, timestamp '2024-01-01' as ts, 1.0 as w__x, 2.0 as x")
    fs = FeatureStore(path, [FeatureView("v", "t", "k", "ts", [Feature("w__x")]),
                             FeatureView("v__w", "t", "k", "ts", [Feature("x")])])
    entities = pd.DataFrame({"k": [1], "event_timestamp": [T("2024-01-02")]})
    with pytest.raises(ValueError, match="features 'v:w__x' and 'v__w:x' both make the column 'v__w__x'"):
        fs.get_historical_features(entities, ["v:w__x", "v__w:x"], full_feature_names=True)


def test_a_callers_connection_keeps_its_time_zone(store, tmp_path):
    with duckdb.connect(store.database_path) as con:
        con.execute("set TimeZone = 'America/New_York'")
        entities = pd.DataFrame({"carrier": ["AA"], "event_timestamp": [T("2013-01-01 13:00", tz="UTC")]})
        out = store.get_historical_features(entities, ["carrier_stats:delay"], connection=con)
        assert out["delay"].tolist() == [3.0]
        assert con.execute("select current_setting('TimeZone')").fetchall()[0][0] == "America/New_York"


def test_ties_on_views_with_list_struct_and_map_features(tmp_path):
    """Tied rows are ranked on every feature, also those Arrow cannot sort (by their text)."""
    path = tmp_path / "nested.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table a (k bigint, ts timestamp, x double, tags varchar[], st struct(a int), "
                    "m map(varchar, int))")
        con.execute("insert into a values (1, '2024-01-01', 2.0, ['b'], {'a': 1}, map {'z': 1}), "
                    "(1, '2024-01-01', 1.0, ['a'], {'a': 2}, map {'y': 2}), "
                    "(2, '2024-01-01', 5.0, ['b'], {'a': 1}, map {'z': 1}), "
                    "(2, '2024-01-01', 5.0, ['a'], {'a': 2}, map {'y': 2})")
    entities = pd.DataFrame({"k": [1, 2], "event_timestamp": [T("2024-01-02")] * 2})
    for nested in ("tags", "st", "m"):
        fs = FeatureStore(path, [FeatureView("a", "a", ("k",), "ts", (Feature("x"), Feature(nested)))])
        out = fs.get_historical_features(entities, ["a:x", f"a:{nested}"])
        assert out["x"].tolist() == [1.0, 5.0], nested
        # Key 2 ties on x too: its winner is decided by the nested feature's text, the same every time.
        second = out[nested].iloc[1]
        assert {"tags": lambda v: list(v) == ["a"], "st": lambda v: v == {"a": 1},
                "m": lambda v: list(v) == [("y", 2)]}[nested](second), (nested, second)


def test_ties_decided_on_an_enum_feature():
    """An ENUM feature arrives dictionary-encoded: tied rows are ranked on its values too."""
    con = duckdb.connect()
    con.execute("set TimeZone='UTC'")
    con.execute("create type mood as enum ('sad', 'ok', 'happy')")
    con.execute("create table f (k bigint, ts timestamptz, m mood, x double)")
    con.execute("insert into f values (1, '2024-01-01', 'ok', 1.0), (1, '2024-01-01', 'happy', 1.0)")
    fs = FeatureStore(":memory:", [FeatureView("f", "f", ("k",), "ts", (Feature("m"), Feature("x")))])
    out = fs.get_historical_features(pd.DataFrame({"k": [1], "event_timestamp": [T("2024-01-02", tz="UTC")]}),
                                     ["f:m", "f:x"], connection=con)
    assert out["m"].tolist() == ["happy"]  # the smaller text ('happy' < 'ok'), as every read ranks it


def test_float_columns_chunked_differently_are_each_taken_right():
    """Arrow tables may chunk columns differently (casting DECIMAL to DOUBLE joins the chunks):
    every float column is taken by its own chunks."""
    from decimal import Decimal

    from mlops_pipelines.features import point_in_time

    table = pa.table({
        "a": pa.chunked_array([[1.0, 2.0], [3.0, 4.0, 5.0]]),
        "b": pa.chunked_array([[10.0, 20.0, 30.0], [40.0, 50.0]]),
        "d": pa.chunked_array([pa.array([Decimal("1.5"), Decimal("2.5")], pa.decimal128(12, 2)),
                               pa.array([Decimal("3.5"), None, Decimal("5.5")], pa.decimal128(12, 2))]),
    })
    chosen = np.array([4, 0, 2, -1, 3], dtype=np.int64)
    out = point_in_time.take_pandas(table, ["a", "b", "d"], chosen, point_in_time.Workspace())
    np.testing.assert_array_equal(out["a"], [5.0, 1.0, 3.0, np.nan, 4.0])
    np.testing.assert_array_equal(out["b"], [50.0, 10.0, 30.0, np.nan, 40.0])
    np.testing.assert_array_equal(out["d"], [5.5, 1.5, 3.5, np.nan, np.nan])


def test_overlapping_joins_restore_numpys_huge_page_setting():
    """Joins in threads overlap: numpy's setting comes back when the last one ends, not before."""
    from numpy._core.multiarray import _set_madvise_hugepage

    from mlops_pipelines.features.point_in_time import small_pages

    previous = _set_madvise_hugepage(True)
    try:
        first, second = small_pages(), small_pages()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert _set_madvise_hugepage(False) is False  # still off while the second runs
        second.__exit__(None, None, None)
        assert _set_madvise_hugepage(True) is True  # back on after the last
    finally:
        _set_madvise_hugepage(previous)


def test_the_cli_reads_entity_csv_cells_as_written(tmp_path):
    """Keys like NA or 00123 stay themselves (pandas would read null and 123); only empty cells are missing."""
    from mlops_pipelines.cli import _read_frame

    path = tmp_path / "entities.csv"
    path.write_text("carrier,tailnum,event_timestamp\nNA,00123,2013-01-01 02:00\nUA,,2013-01-01 03:00\n")
    frame = _read_frame(str(path))
    assert frame["carrier"].tolist() == ["NA", "UA"] and frame["tailnum"].iloc[0] == "00123"
    assert pd.isna(frame["tailnum"].iloc[1]) and frame.index.tolist() == [2, 3]  # rows named by file line


def test_the_callers_entity_frame_and_numpys_setting_are_left_as_they_were(store):
    """The output's timestamps are UTC, the caller's stay in their zone (the frame is copied
    shallowly: pandas copies on write); numpy's huge-page request, switched off while joining,
    is switched back on."""
    from numpy._core.multiarray import _set_madvise_hugepage

    entities = pd.DataFrame({"carrier": ["AA", "UA"],
                             "event_timestamp": [T("2013-01-01 07:00", tz="America/New_York")] * 2})
    before = entities.copy(deep=True)
    previous = _set_madvise_hugepage(True)
    try:
        out = store.get_historical_features(entities, ["carrier_stats:delay"])
        assert _set_madvise_hugepage(True) is True  # (returns the setting it replaces)
    finally:
        _set_madvise_hugepage(previous)
    pd.testing.assert_frame_equal(entities, before)
    assert str(out["event_timestamp"].dt.tz) == "UTC"
    assert out["delay"].iloc[0] == 3.0  # 12:00 UTC: the later created of the tie
    assert pd.isna(out["delay"].iloc[1])  # UA's 09:00 row is older than the 2 h TTL


def test_integer_keys_beyond_the_key_type_match_nothing(tmp_path):
    """An entity key the view's integer type cannot hold matches nothing: signed and unsigned
    values of one width (-1 and 2**64 - 1) used to survive the cast back and match each other."""
    path = tmp_path / "ints.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table s as select -1::integer as k, '2020-01-01'::timestamp as ts, 1.0 as x")
        con.execute("create table u as select 18446744073709551615::ubigint as k, '2020-01-01'::timestamp as ts, "
                    "2.0 as x")
    fs = FeatureStore(path, [FeatureView("s", "s", "k", "ts", (Feature("x"),)),
                             FeatureView("u", "u", "k", "ts", (Feature("x"),))])
    at = T("2021-01-01")
    for view, keys, expected in (("s", np.array([2**64 - 1, 5], dtype=np.uint64), [None, None]),
                                 ("s", np.array([2**32 - 1], dtype=np.uint32), [None]),
                                 ("s", np.array([-1], dtype=np.int8), [1.0]),
                                 ("u", np.array([-1, 7], dtype=np.int64), [None, None]),
                                 ("u", np.array([2**64 - 1], dtype=np.uint64), [2.0])):
        out = fs.get_historical_features(pd.DataFrame({"k": keys, "event_timestamp": at}), [f"{view}:x"])
        assert [None if pd.isna(v) else v for v in out["x"]] == expected, (view, keys)


def test_entity_times_far_from_1970_compare_as_instants(tmp_path):
    """Whole-second entity times beyond int64 microseconds (numpy's cast wrapped them around) and
    beyond the old clamp at 2**60 µs (about year 38,500) against events of 2013 and year 50,000."""
    path = tmp_path / "far.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table f as select * from (values (1, '2013-01-01'::timestamp, 1.0), "
                    "(2, '50000-01-01'::timestamp, 2.0)) v(k, ts, x)")
    fs = FeatureStore(path, [FeatureView("f", "f", "k", "ts", (Feature("x"),)),
                             FeatureView("f_ttl", "f", "k", "ts", (Feature("x"),), ttl=timedelta(days=365))])
    when = np.array(["-300000-01-01", "300000-01-01", "100000-01-01", "49999-12-31", "2013-06-01"],
                    dtype="datetime64[s]")
    entities = pd.DataFrame({"k": [1, 1, 2, 2, 1], "event_timestamp": when})
    out = fs.get_historical_features(entities, ["f:x", "f_ttl:x"], full_feature_names=True)
    assert [None if pd.isna(v) else v for v in out["f__x"]] == [None, 1.0, 2.0, None, 1.0]
    assert [None if pd.isna(v) else v for v in out["f_ttl__x"]] == [None, None, None, None, 1.0]


def test_entity_times_at_the_ends_of_int64_against_infinite_and_last_finite_events(tmp_path):
    """An entity at int64's largest microsecond is still before a +infinity event; one past
    DuckDB's range is measured from its true instant for the TTL (it used to count as 0 µs old
    against an event at DuckDB's last finite instant); one near pandas' earliest nanosecond
    instant stays in 1677 (numpy's ns-to-µs cast wrapped it around to 2262)."""
    path = tmp_path / "ends.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table e as select * from (values (1, 'infinity'::timestamp, 1.0), "
                    "(2, '-infinity'::timestamp, 2.0), (3, make_timestamp(9223372036854775806), 3.0), "
                    "(4, '1970-01-01'::timestamp, 4.0)) v(k, ts, x)")
    fs = FeatureStore(path, [FeatureView("e", "e", "k", "ts", (Feature("x"),)),
                             FeatureView("e_ttl", "e", "k", "ts", (Feature("x"),), ttl=timedelta(days=2))])
    refs = ["e:x", "e_ttl:x"]
    micros = pd.DataFrame({"k": [1, 3], "event_timestamp": np.array([2**63 - 1, 2**63 - 1], dtype="datetime64[us]")})
    out = fs.get_historical_features(micros, refs, full_feature_names=True)
    assert out["e__x"].fillna(-1).tolist() == [-1, 3.0] and out["e_ttl__x"].fillna(-1).tolist() == [-1, 3.0]
    seconds = pd.DataFrame({"k": [3, 3], "event_timestamp": np.array(["299999-01-01", "294247-01-11"],
                                                                      dtype="datetime64[s]")})
    out = fs.get_historical_features(seconds, refs, full_feature_names=True)
    assert out["e__x"].tolist() == [3.0, 3.0] and out["e_ttl__x"].fillna(-1).tolist() == [-1, 3.0]
    early = pd.DataFrame({"k": [2, 4], "event_timestamp": pd.to_datetime([-9223372036854775000] * 2, unit="ns")})
    assert fs.get_historical_features(early, ["e:x"])["x"].fillna(-1).tolist() == [2.0, -1]


@pytest.mark.parametrize("make", [lambda r: (x for x in r), lambda r: map(str, r), pd.Series, tuple, np.array],
                         ids=["generator", "map", "series", "tuple", "array"])
def test_feature_references_may_be_any_iterable_read_once(store, make):
    """A generator was used up naming the views, and the output came back without features."""
    entities = pd.DataFrame({"carrier": ["AA"], "origin": ["JFK"],
                             "event_timestamp": [T("2013-01-01 12:00", tz="UTC")]})
    out = store.get_historical_features(entities, make(["carrier_stats:delay", "weather:delay"]),
                                        full_feature_names=True)
    assert out[["carrier_stats__delay", "weather__delay"]].iloc[0].tolist() == [3.0, 9.0]


def test_feature_references_that_are_not_text_are_refused(store):
    entities = pd.DataFrame({"carrier": ["AA"], "event_timestamp": [T("2013-01-01", tz="UTC")]})
    with pytest.raises(TypeError, match="feature references must be 'view:feature' text, not 3"):
        store.get_historical_features(entities, ["carrier_stats:delay", 3])
    with pytest.raises(TypeError, match="not dict"):
        store.get_historical_features(entities, {"carrier_stats": "delay"})


def test_names_the_store_reserves_or_cannot_refer_to_are_refused():
    for features, entities, error in (((Feature("__ts"),), ("k",), r"columns \['__ts'\] have names the store reserves"),
                                      ((Feature("x"),), ("__created",), r"columns \['__created'\]")):
        with pytest.raises(ValueError, match=error):
            FeatureView("v", "t", entities, "ts", features)
    with pytest.raises(ValueError, match="a view name cannot contain ':'"):
        FeatureView("a:b", "t", ("k",), "ts", (Feature("x"),))
    # Names are compared ignoring case, as DuckDB and SQLite resolve columns.
    for features, entities, error in (((Feature("__TS"),), ("k",), "names the store reserves"),
                                      ((Feature("x"), Feature("X")), ("k",), r"features \['X', 'x'\] are declared "
                                                                               "more than once"),
                                      ((Feature("x"),), ("k", "K"), "join keys .* name a column more than once"),
                                      ((Feature("TS"),), ("k",), r"features \['TS'\] are also its join keys")):
        with pytest.raises(ValueError, match=error):
            FeatureView("v", "t", entities, "ts", features)


def test_quoted_and_differently_cased_names_are_found(tmp_path):
    """A view over a column named ``kk`` may declare it ``KK`` (DuckDB finds it, and the rows are
    named as declared); names with double quotes work offline and online."""
    path = tmp_path / "names.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute('create table t as select 1 as kk, \'2020-01-01\'::timestamp as "the ""ts""", 1.5 as "x ""y"""')
    fs = FeatureStore(path, [FeatureView('v "1"', "t", "KK", 'the "ts"', (Feature('x "y"'),))],
                      online_path=tmp_path / "online.sqlite")
    out = fs.get_historical_features(pd.DataFrame({"KK": [1], "event_timestamp": [T("2021-01-01")]}), ['v "1":x "y"'])
    assert out['x "y"'].tolist() == [1.5]
    fs.materialize_online()
    assert fs.get_online_features({"KK": [1, 2]}, ['v "1":x "y"'])['x "y"'].tolist()[:1] == [1.5]


def test_text_keys_of_timestamp_and_time_views_are_read_as_instants_and_times():
    """Entity keys given as text (as the CLI reads every CSV cell) against TIMESTAMP, TIMESTAMPTZ and
    TIME keys: ISO 8601 with or without an offset, naive read as UTC. Arrow's casts refused an
    offset for a naive key, naive text for an aware one, and any text for a TIME key."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute("create table k as select '2020-01-01 05:00'::timestamp as naive, "
                "'2020-01-01 05:00+00'::timestamptz as aware, '05:00'::time as tod, "
                "'2019-01-01'::timestamp as ts, 1.0 as x")
    store = FeatureStore(":memory:", [FeatureView(key, "k", key, "ts", (Feature("x"),))
                                      for key in ("naive", "aware", "tod")])
    text = ["2020-01-01T00:00:00-05:00", "2020-01-01 05:00:00", "2020-01-01 05:00:01", None]
    clock = ["05:00:00", "05:00", "05:00:01", None]
    entities = pd.DataFrame({"naive": text, "aware": text, "tod": clock, "event_timestamp": T("2021-01-01")})
    out = store.get_historical_features(entities, ["naive:x", "aware:x", "tod:x"], full_feature_names=True,
                                        connection=con)
    for view in ("naive", "aware", "tod"):
        assert out[f"{view}__x"].fillna(-1).tolist() == [1.0, 1.0, -1, -1], view
    with pytest.raises(ValueError, match=r"join key 'tod' row 2 \('25:00'\): not an ISO 8601 time of day"):
        store.get_historical_features(entities.assign(tod=["05:00", None, "25:00", "05:00"]), ["tod:x"], connection=con)


@pytest.mark.parametrize(("text", "rule"), [
    ("2020", "a number, not an instant"),                          # read as 2020-01-01 00:00: matched that row
    ("2020.1", "a number, not an instant"),                        # the same, as a year and month
    ("now", "give an instant, not a time relative to the clock"),  # the clock's time
    ("NaT", "not an instant"),                                     # no time: matched nothing
    # Seconds or milliseconds since 1970: pandas said "is not ISO8601 format", and of 13 digits
    # Python's reader (which names days that do not exist) "day is out of range for month".
    ("1370073600", r"a number, not an instant \(if they count seconds or milliseconds since 1970"),
    ("1370073600000", r"a number, not an instant \(if they count seconds or milliseconds since 1970"),
    ("20130601120000", r"not an instant: a date and time without ISO 8601's 'T'\? \(write 20130601T120000\)"),
    ("2013-02-29T10:00", r"no such date \(day is out of range for month\)"),
])
def test_text_of_timestamp_keys_follows_the_rules_of_entity_timestamps(tmp_path, text, rule):
    """Text given for a TIMESTAMP join key (as the CLI reads every CSV cell) went through a laxer
    parser than entity timestamps: '2020' found the row of 2020-01-01 00:00, offline and online,
    and 'now' or 'NaT' quietly matched nothing. It is now refused by key, row and value."""
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table k as select '2020-01-01 00:00'::timestamp as started, "
                    "'2019-01-01'::timestamp as ts, 1.0 as x")
    fs = FeatureStore(path, [FeatureView("v", "k", "started", "ts", (Feature("x"),))],
                      online_path=tmp_path / "online.sqlite")
    good = pd.DataFrame({"started": ["2020-01-01T00:00:00Z", "2020-01-01 00:00"], "event_timestamp": T("2021-01-01")},
                        index=[5, 6])
    assert fs.get_historical_features(good, ["v:x"])["x"].tolist() == [1.0, 1.0]
    fs.materialize_online()
    assert fs.get_online_features(good[["started"]], ["v:x"])["x"].tolist() == [1.0, 1.0]
    bad = good.assign(started=["2020-01-01 00:00", text])
    expected = rf"join key 'started' row 6 \({re.escape(repr(text))}\): {rule}"
    with pytest.raises(ValueError, match=expected):
        fs.get_historical_features(bad, ["v:x"])
    with pytest.raises(ValueError, match=expected):
        fs.get_online_features(bad[["started"]], ["v:x"])


@pytest.mark.parametrize(("name", "text", "error"), [
    ("ragged.csv", "origin,event_timestamp\nJFK,2013-06-01T12:00Z,extra\n", r"ragged.csv: line 2 has 3 fields"),
    ("short.csv", "origin,carrier,event_timestamp\nJFK,B6,2013-06-01\n\nLGA,AA\n", r"short.csv: line 4 has 2 fields"),
    ("twice.csv", "origin,origin,event_timestamp\nJFK,LGA,2013-06-01\n", r"columns \['origin'\] appear more than once"),
    ("empty.csv", "", r"empty.csv: no header line"),
    # (a spreadsheet's trailing empty columns: were "columns [''] appear more than once")
    ("trailing.csv", "origin,event_timestamp,,\nJFK,2013-06-01,,\n",
     r"trailing.csv: columns 3, 4 of the header have no name \(trailing commas"),
    ("unnamed.csv", ",origin,,event_timestamp\n0,JFK,x,2013-06-01\n", r"unnamed.csv: columns 1, 3 of the header"),
])
def test_the_cli_refuses_malformed_csv_by_file_and_line(tmp_path, name, text, error):
    """pandas made the first column the index of a row with an extra field (then crashed), padded
    short rows, renamed a repeated column to origin.1 and numbered lines wrongly past blank lines."""
    from mlops_pipelines.cli import _read_frame

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        _read_frame(str(path))


@pytest.mark.parametrize("suffix", [".csv.gz", ".CSV.BZ2", ".csv.xz"])
def test_the_cli_reads_compressed_csv_as_csv(tmp_path, suffix):
    """An entity file compressed as exported (x.csv.gz) was refused ("expected a .parquet or .csv
    file"); it is read as the same CSV, lines named alike; one that is not what its suffix says is
    an error naming it."""
    import bz2
    import gzip
    import lzma

    from mlops_pipelines.cli import _is_csv, _read_frame

    text = "origin,event_timestamp\n\nJFK,2013-06-01\nLGA,\n"
    plain, packed = tmp_path / "e.csv", tmp_path / f"e{suffix}"
    plain.write_text(text)
    packed.write_bytes({".gz": gzip, ".bz2": bz2, ".xz": lzma}[Path(suffix).suffix.lower()].compress(text.encode()))
    pd.testing.assert_frame_equal(_read_frame(str(packed)), _read_frame(str(plain)))
    assert _read_frame(str(packed)).index.tolist() == [3, 4]
    assert _is_csv(str(packed)) and not _is_csv(str(tmp_path / "e.gz"))  # (CSV rules: lines named, numbers for drift)
    (tmp_path / f"bad{suffix}").write_text(text)
    with pytest.raises(ValueError, match=rf"bad{re.escape(suffix)}: not a readable CSV file"):
        _read_frame(str(tmp_path / f"bad{suffix}"))


def test_the_cli_reads_a_csv_written_by_pandas_with_its_index(tmp_path, monkeypatch, capsys):
    """pandas' to_csv writes its index as a first column without a name: read as a column (as
    before; refusing every unnamed column refused it), and a compressed CSV's rows are named by
    their line, as a plain one's."""
    from mlops_pipelines.cli import _read_frame, main

    path = tmp_path / "indexed.csv"
    pd.DataFrame({"origin": ["JFK"], "event_timestamp": ["2013-06-01"]}).to_csv(path)
    assert _read_frame(str(path)).columns.tolist() == ["", "origin", "event_timestamp"]
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    duckdb.connect(str(tmp_path / "warehouse.duckdb")).close()
    packed = tmp_path / "e.csv.gz"
    packed.write_bytes(__import__("gzip").compress(b"origin,event_timestamp\nJFK,2013-06-01T00:00Z\n\nLGA,13:30\n"))
    FeatureStore(tmp_path / "warehouse.duckdb").apply(FeatureView(
        "v", f"read_parquet('{_tiny_parquet(tmp_path)}')", "origin", "ts", (Feature("x"),)))
    assert main(["features", "historical", "--entities", str(packed), "--features", "v:x", "--out",
                 str(tmp_path / "o.csv")]) == 2
    assert "e.csv.gz: timestamp column 'event_timestamp' line 4 ('13:30')" in capsys.readouterr().err


def _tiny_parquet(tmp_path) -> Path:
    path = tmp_path / "tiny.parquet"
    pd.DataFrame({"origin": ["JFK"], "ts": pd.to_datetime(["2013-01-01"], utc=True), "x": [1.0]}).to_parquet(path)
    return path


def test_the_cli_numbers_csv_rows_by_line_past_blank_lines_and_keeps_a_parquet_index(tmp_path):
    from mlops_pipelines.cli import _read_frame

    path = tmp_path / "blank.csv"
    path.write_text("origin,event_timestamp\n\nJFK,2013-06-01\n\n\nLGA,\"2013-06-02\"\n")
    frame = _read_frame(str(path))
    assert frame.index.tolist() == [3, 6] and frame["origin"].tolist() == ["JFK", "LGA"]
    indexed = tmp_path / "indexed.parquet"
    pd.DataFrame({"flight_id": ["f1", "f2"], "origin": ["JFK", "LGA"]}).set_index("flight_id").to_parquet(indexed)
    assert _read_frame(str(indexed), keep_index=True).columns.tolist() == ["flight_id", "origin"]  # (was dropped)
    # An index named like a column: pandas' "cannot insert origin, already exists", naming no file.
    clash = tmp_path / "clash.parquet"
    pd.DataFrame({"origin": ["JFK"]}, index=pd.Index(["LGA"], name="origin")).to_parquet(clash)
    with pytest.raises(ValueError, match=r"clash\.parquet: its index 'origin' \(stored by pandas\) has the name "
                                         "of a column"):
        _read_frame(str(clash), keep_index=True)
    assert _read_frame(str(clash))["origin"].tolist() == ["JFK"]


def test_the_cli_reads_excel_csv_parquet_folders_and_keeps_only_a_named_index(tmp_path):
    """Excel's byte-order mark stays out of the first column's name; a folder of parquet files
    (as Spark and Arrow write them) is read; an unnamed index of a filtered frame is not a column
    (it would enter `mlops drift` as a drifted column), a named one is for an entity file."""
    import pyarrow.parquet as pq

    from mlops_pipelines.cli import _read_frame

    bom = tmp_path / "excel.csv"
    bom.write_bytes("\ufeffcarrier,event_timestamp\nAA,2013-06-01\n".encode())
    assert _read_frame(str(bom)).columns.tolist() == ["carrier", "event_timestamp"]
    folder = tmp_path / "rows.parquet"
    pq.write_to_dataset(pa.table({"carrier": ["UA", "AA"]}), str(folder))
    assert sorted(_read_frame(str(folder))["carrier"]) == ["AA", "UA"]
    frame = pd.DataFrame({"carrier": ["AA", "UA", "AA"], "delay": [1.0, 2.0, 3.0]})
    frame[frame["carrier"] == "AA"].to_parquet(tmp_path / "filtered.parquet")
    frame.set_index("carrier").to_parquet(tmp_path / "named.parquet")
    assert _read_frame(str(tmp_path / "filtered.parquet"), keep_index=True).columns.tolist() == ["carrier", "delay"]
    assert _read_frame(str(tmp_path / "named.parquet")).columns.tolist() == ["delay"]
    assert _read_frame(str(tmp_path / "named.parquet"), keep_index=True).columns.tolist() == ["carrier", "delay"]


def test_a_key_that_does_not_parse_is_named_by_the_callers_row_label():
    con = duckdb.connect()
    con.execute("create table f as select 7::bigint as k, '2020-01-01'::timestamp as ts, 1.5 as x")
    store = FeatureStore(":memory:", [FeatureView("f", "f", ("k",), "ts", (Feature("x"),))])
    entities = pd.DataFrame({"k": ["7", "8", "x9"], "event_timestamp": T("2021-01-01")}, index=[2, 4, 6])
    with pytest.raises(ValueError, match=r"join key 'k': .*\(row 6: .*'x9'"):
        store.get_historical_features(entities, ["f:x"], connection=con)


def test_entity_timestamps_as_text_after_2262_are_read(tmp_path):
    """pandas parses text in nanoseconds, which end in 2262: '2500-01-01T00:00:00Z' (as the CLI
    reads a CSV cell) was refused as out of bounds."""
    path = tmp_path / "later.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table f as select * from (values (1, '2400-01-01'::timestamp, 1.0), "
                    "(1, '3000-01-01'::timestamp, 2.0)) v(k, ts, x)")
    fs = FeatureStore(path, [FeatureView("f", "f", "k", "ts", (Feature("x"),))])
    # (A value with nanoseconds makes pandas parse them all in nanoseconds.)
    text = ["2500-01-01T00:00:00Z", "2013-01-01 05:00:00.000000001", "9999-12-31T23:00:00+01:00"]
    entities = pd.DataFrame({"k": [1, 1, 1], "event_timestamp": pd.array(text, dtype="str")})
    out = fs.get_historical_features(entities, ["f:x"])
    assert out["x"].fillna(-1).tolist() == [1.0, -1, 2.0]


def key_store(tmp_path, rows: str, key_type: str = "bigint") -> FeatureStore:
    """A view ``f`` over ``f(k <key_type>, ts, x)`` with an online store materialized at 12:00."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(f"create table f (k {key_type}, ts timestamptz, x double)")
        con.execute(f"insert into f values {rows}")
    store = FeatureStore(path, online_path=tmp_path / "o.sqlite")
    store.register(FeatureView("f", "f", ("k",), "ts", (Feature("x"),)))
    store.materialize_online(end_ts=NOON)
    return store


NOON = T("2024-01-01 12:00", tz="UTC")


def test_integer_keys_beside_a_none_are_not_rounded_onto_another_entity(tmp_path):
    """pandas makes [2**53 + 1, None] floats, and 2**53 + 1 rounds to 2**53: another entity's key."""
    store = key_store(tmp_path, "(9007199254740992, '2024-01-01 11:00+00', 1.0), (5, '2024-01-01 11:00+00', 5.0)")
    other = 2**53 + 1  # has no row
    for rows in ([{"k": other}, {"k": None}, {"k": 5}], {"k": [other, None, 5]}):
        served = store.get_online_features(rows, "f:x")["x"]
        assert served.isna().tolist() == [True, True, False] and served[2] == 5.0
    entities = pd.DataFrame({"k": pd.Series([other, None, 5], dtype=object), "event_timestamp": NOON})
    out = store.get_historical_features(entities, "f:x")
    assert out["x"].isna().tolist() == [True, True, False]
    assert out["k"].tolist() == [other, None, 5]  # the caller's column as given


def test_a_nan_key_matches_nothing_whatever_the_dtype_online_and_offline(tmp_path):
    """DuckDB's NaN equals NaN, so a view may hold a NaN key; an entity's NaN is missing, as
    pandas reads it, in a numpy column, an Arrow-backed one or an Arrow table alike."""
    store = key_store(tmp_path, "('NaN'::double, '2024-01-01 11:00+00', 99.0), (1.0, '2024-01-01 11:00+00', 1.0)",
                      "double")
    for keys in (pd.Series([np.nan, 1.0]), pd.Series(pa.array([np.nan, 1.0]), dtype=pd.ArrowDtype(pa.float64()))):
        entities = pd.DataFrame({"k": keys, "event_timestamp": NOON})
        assert store.get_historical_features(entities, "f:x")["x"].isna().tolist() == [True, False]
        assert store.get_online_features(entities[["k"]], "f:x")["x"].isna().tolist() == [True, False]
    table = pa.table({"k": pa.array([float("nan"), 1.0]), "event_timestamp": pa.array([NOON, NOON])})
    assert store.get_historical_features(table, "f:x")["x"].isna().tolist() == [True, False]


def test_instants_and_durations_are_not_compared_with_number_keys(tmp_path):
    """Arrow would cast an instant to its raw count of its own units: 12:00 as datetime64[s]
    matched id 1704110400 and as [us] id 1704110400000000. DuckDB refuses the comparison too."""
    store = key_store(tmp_path, "(1704110400, '2024-01-01 11:00+00', 7.0), "
                                "(1704110400000000, '2024-01-01 11:00+00', 8.0)")
    instant = pd.Series([T("2024-01-01 12:00")])
    for keys in [*(instant.astype(f"datetime64[{unit}]") for unit in ("s", "ms", "us", "ns")),
                 pd.Series(pd.to_timedelta([1704110400], unit="s"))]:
        with pytest.raises(ValueError, match=r"join key 'k': entity values of type (timestamp|duration)\[\w+\] "
                                             r"cannot be compared with the view's int64"):
            store.get_historical_features(pd.DataFrame({"k": keys, "event_timestamp": NOON}), "f:x")


def test_decimal_keys_match_integer_keys_of_equal_value(tmp_path):
    """As in DuckDB (1::bigint = 1.00::decimal): 1.00 finds key 1 and 2.5 nothing (it was an
    Arrow precision error)."""
    store = key_store(tmp_path, "(1, '2024-01-01 11:00+00', 1.0), (2, '2024-01-01 11:00+00', 2.0)")
    for keys in (pd.Series([Decimal("1"), Decimal("2.5")], dtype=object),
                 pd.Series([Decimal("1.00"), Decimal("2.50")], dtype=pd.ArrowDtype(pa.decimal128(10, 2)))):
        out = store.get_historical_features(pd.DataFrame({"k": keys, "event_timestamp": NOON}), "f:x")
        assert out["x"].isna().tolist() == [False, True] and out["x"][0] == 1.0


def test_a_key_that_does_not_parse_is_named_by_its_own_row_and_value(tmp_path):
    store = key_store(tmp_path, "(1, '2024-01-01 11:00+00', 1.0)")
    cases = [(pd.Series(["1", "x", "y"]), r"\(row 1: Failed to parse string: 'x'"),
             (pd.Series([1, 2, "x"], dtype=object), r"\(row 2: Failed to parse string: 'x'")]
    for keys, error in cases:
        with pytest.raises(ValueError, match=error):
            store.get_historical_features(pd.DataFrame({"k": keys, "event_timestamp": NOON}), "f:x")


@pytest.mark.parametrize("dtype", [pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string())),
                                   pd.ArrowDtype(pa.string_view()), "category", "str"])
def test_timestamp_text_of_any_dtype_is_read_and_now_refused(tmp_path, dtype):
    """Arrow dictionaries and string views lack some of pandas' text methods: "now" slipped
    through the first (read as the clock's time) and the second raised a bare NotImplementedError."""
    store = key_store(tmp_path, "(1, '2024-01-01 11:00+00', 1.0)")
    stamps = pd.Series(pa.array(["2024-01-01 12:00", "2024-01-01 10:00"]).cast(pa.string()))
    good = pd.DataFrame({"k": [1, 1], "event_timestamp": stamps.astype(dtype) if isinstance(dtype, str)
                         else pd.Series(pa.array(stamps.tolist()).cast(dtype.pyarrow_dtype), dtype=dtype)})
    assert store.get_historical_features(good, "f:x")["x"].isna().tolist() == [False, True]
    texts = ["2024-01-01 12:00", "now"]
    bad = pd.DataFrame({"k": [1, 1], "event_timestamp": pd.Series(texts).astype(dtype) if isinstance(dtype, str)
                        else pd.Series(pa.array(texts).cast(dtype.pyarrow_dtype), dtype=dtype)})
    bad.index = [5, 6]
    with pytest.raises(ValueError, match=r"timestamp column 'event_timestamp' row 6 \('now'\): give an instant"):
        store.get_historical_features(bad, "f:x")


@pytest.mark.parametrize("dtype", [object, "str", "string[pyarrow]", pd.ArrowDtype(pa.large_string()),
                                   pd.ArrowDtype(pa.string_view())])
def test_rfc_3339_lower_case_t_and_z_are_read_and_other_faults_still_named_by_row(tmp_path, dtype):
    """RFC 3339 allows "t" and "z" in lower case ('2024-01-01t12:00:00z'); pandas' ISO 8601 parser
    refused them, so such a column was an error. They are read as upper case, also past 2262;
    a row wrong for another reason is still the one named."""
    store = key_store(tmp_path, "(1, '2024-01-01 11:00+00', 1.0)")
    texts = ["2024-01-01t12:00:00z", "2024-01-01t10:00:00z", "2024-01-01t12:00:00+00:00",
             "2024-01-01T11:00:00.000001z", "2024-01-01 12:00:00Z", None]
    entities = pd.DataFrame({"k": [1] * len(texts), "event_timestamp": pd.Series(texts, dtype=dtype)})
    out = store.get_historical_features(entities, "f:x")
    assert out["x"].fillna(-1).tolist() == [1.0, -1, 1.0, 1.0, 1.0, -1]
    later = pd.DataFrame({"k": [1, 1], "event_timestamp": pd.Series(["3000-01-01t00:00:00z", texts[0]], dtype=dtype)})
    assert store.get_historical_features(later, "f:x")["x"].tolist() == [1.0, 1.0]
    for bad, reason in (("2024-13-01t12:00:00z", r"no such date \(month must be in 1..12\)"),
                        ("nan", "not an instant")):
        wrong = pd.DataFrame({"k": [1, 1], "event_timestamp": pd.Series([texts[0], bad], dtype=dtype, index=[3, 4])})
        with pytest.raises(ValueError, match=rf"timestamp column 'event_timestamp' row 4 \('{bad}'\): .*{reason}"):
            store.get_historical_features(wrong, "f:x")
    # Not a separator: a "t" or "z" elsewhere is still refused.
    for odd in ("2024-01-01 12:00:00zz", "2024-01-01tt12:00:00"):
        wrong = pd.DataFrame({"k": [1], "event_timestamp": pd.Series([odd], dtype=dtype)})
        with pytest.raises(ValueError, match=rf"row 0 \('{odd}'\)"):
            store.get_historical_features(wrong, "f:x")


@pytest.mark.parametrize("dtype", [object, "string[pyarrow]", pd.ArrowDtype(pa.large_string())])
def test_week_dates_ordinal_dates_and_a_decimal_comma_are_read(tmp_path, dtype):
    """ISO 8601's week dates (2024-W01-1 is 1 January 2024, a Monday), ordinal dates (2024-001)
    and a comma before the seconds' fraction were refused by pandas' parser, so such a column was
    an error; they are read, in the extended and the basic format, also past 2262. A day that
    does not exist is still refused by row."""
    store = key_store(tmp_path, "(1, '2024-01-01 11:00+00', 1.0)")
    texts = ["2024-W01-1T12:00:00Z", "2024W011T100000Z", "2024-001T11:00:00,000001Z", "2024001T110000,5Z",
             "2024-01-01T10:59:59,999999Z", "2024-W01-1 12:00:00,5+01:00", "2024-001", "2023-W52-7T23:00:00Z",
             "2024-366T00:00:00Z", None]
    entities = pd.DataFrame({"k": [1] * len(texts), "event_timestamp": pd.Series(texts, dtype=dtype)})
    out = store.get_historical_features(entities, "f:x")
    assert out["x"].fillna(-1).tolist() == [1.0, -1, 1.0, 1.0, -1, 1.0, -1, -1, 1.0, -1]
    assert out["event_timestamp"].iloc[:9].tolist() == [
        pd.Timestamp(t, tz="UTC") for t in ("2024-01-01 12:00", "2024-01-01 10:00", "2024-01-01 11:00:00.000001",
                                             "2024-01-01 11:00:00.5", "2024-01-01 10:59:59.999999",
                                             "2024-01-01 11:00:00.5", "2024-01-01", "2023-12-31 23:00",
                                             "2024-12-31")]
    later = pd.DataFrame({"k": [1, 1, 1], "event_timestamp": pd.Series(
        ["3000-W01-1T00:00:00,5Z", "3000-060", "0001-001T00:00:00Z"], dtype=dtype)})
    assert store.get_historical_features(later, "f:x")["event_timestamp"].tolist() == [
        pd.Timestamp("2999-12-30 00:00:00.5", tz="UTC"), pd.Timestamp("3000-03-01", tz="UTC"),  # (no leap year)
        pd.Timestamp("0001-01-01", tz="UTC")]
    # Days that do not exist, named as such (pandas says "is not ISO8601 format" of them, which
    # sends the user looking for another format)...
    for bad, reason in (("2023-366", "no such date (2023 has days 001 to 365)"),
                        ("2024-W54-1", "no such date (2024 has ISO weeks 1 to 52)"),
                        ("2024-W01-8", "no such date (a week's days are 1 to 7)"),
                        ("2024-000", "no such date (2024 has days 001 to 366)"),
                        ("2024-W01-1T25:00", "no such time of day (hour must be in 0..23)"),
                        ("2023-02-29", "no such date (day is out of range for month)"),
                        ("20230229T120000Z", "no such date (day is out of range for month)"),
                        ("2024-01-01T10:00+24:00", "no such UTC offset (offsets are less than 24 hours)"),
                        ("3000-02-30T00:00", "no such date (day is out of range for month)")):  # (past 2262 too)
        wrong = pd.DataFrame({"k": [1, 1], "event_timestamp": pd.Series([texts[0], bad], dtype=dtype, index=[3, 4])})
        with pytest.raises(ValueError, match=re.escape(f"timestamp column 'event_timestamp' row 4 ('{bad}'): "
                                                       f"{reason}") + "$"):
            store.get_historical_features(wrong, "f:x")
    # ... and forms not read: ISO 8601's digits are ASCII ones, as for calendar dates (Arabic-Indic
    # and full-width digits were read as a year); pandas' reason quotes the text as given, not rewritten.
    for bad in ("2024-06-01T12,5", "\u0662\u0660\u0661\u0663-152", "\uff12\uff10\uff11\uff13-W22-6"):
        wrong = pd.DataFrame({"k": [1, 1], "event_timestamp": pd.Series([texts[0], bad], dtype=dtype, index=[3, 4])})
        with pytest.raises(ValueError, match=rf"timestamp column 'event_timestamp' row 4 \('{bad}'\): Time data "
                                             rf"{bad} is not ISO8601"):
            store.get_historical_features(wrong, "f:x")


def test_the_registry_retires_views_no_longer_declared_and_the_cli_lists_them(tmp_path, monkeypatch, capsys):
    """A view whose declaration is gone is not listed as current: its entry is kept, marked
    retired with when (its table stays, and models may have used it), and comes back when
    declared again. The listing shows each TTL in its unit and the owner."""
    from mlops_pipelines.cli import main

    a = FeatureView("fv_a", "t", ("k",), "ts", (Feature("x"),), ttl=parse_ttl("90 minutes"), owner="team-a")
    b = FeatureView("fv_b", "t", ("k", "j"), "ts", (Feature("y", owner="team-b"),), ttl=0.4, created_timestamp="c")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        for view in (a, b):
            FeatureStore.record_materialization(con, view, 3, "run-1", declared=["fv_a", "fv_b"])
        FeatureStore.record_materialization(con, a, 5, "run-2", declared=["fv_a"])  # fv_b's YAML removed
        rows = con.sql("select name, row_count, dagster_run_id, retired_at is not null, features "
                       "from features.registry order by name").fetchall()
    assert [r[:4] for r in rows] == [("fv_a", 5, "run-2", False), ("fv_b", 3, "run-1", True)]
    assert json.loads(rows[1][4]) == [{"name": "y", "type": "float", "description": "", "owner": "team-b"}]
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    assert main(["features", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["view"].split() == ["view", "version", "entities", "event", "ts", "created", "ts", "ttl", "owner",
                                     "rows", "materialized", "(UTC)", "online", "as", "of", "(UTC)"]
    assert lines["fv_a"].split()[:8] == ["fv_a", a.version, "k", "ts", "-", "90m", "team-a", "5"]
    assert lines["fv_b"].split()[:9] == ["fv_b", b.version, "k,", "j", "ts", "c", "400ms", "-", "3"]
    assert ", retired 20" in lines["fv_b"] and "retired" not in lines["fv_a"]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:  # declared again: current again
        FeatureStore.record_materialization(con, b, 4, "run-3", declared=["fv_a", "fv_b"])
        assert con.sql("select count(*) from features.registry where retired_at is not null").fetchall() == [(0,)]


def test_the_cli_says_the_warehouse_is_in_use_rather_than_a_traceback(tmp_path, monkeypatch, capsys):
    from mlops_pipelines.cli import main

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    (tmp_path / "entities.csv").write_text("origin,event_timestamp\nJFK,2013-01-01\n")
    script = ("import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
              "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "warehouse.duckdb")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # (another process writes the warehouse)
        historical = ["features", "historical", "--entities", str(tmp_path / "entities.csv"),
                      "--features", "fv_origin_weather:temp_f", "--out", str(tmp_path / "o.csv")]
        for argv in (["features", "list"], historical):
            assert main(argv) == 2
            assert "the warehouse is in use by another process" in capsys.readouterr().err
        # With an online store beside it, the listing said so twice: a note that the online
        # column is not known, then the error. One line.
        from mlops_pipelines.paths import ProjectPaths

        sqlite3.connect(ProjectPaths.from_env().online_store_path).close()
        assert main(["features", "list"]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "the warehouse is in use by another process" in err
    finally:
        holder.kill()
        holder.wait()


def test_the_cli_names_the_columns_it_found_and_the_timestamp_option(tmp_path, monkeypatch, capsys):
    """A header with spaces after its commas: the columns found are listed, and the option that
    names another timestamp column."""
    from mlops_pipelines.cli import main

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    duckdb.connect(str(tmp_path / "warehouse.duckdb")).close()
    (tmp_path / "entities.csv").write_text("origin, event_timestamp\nJFK, 2013-01-01\n")
    argv = ["features", "historical", "--entities", str(tmp_path / "entities.csv"),
            "--features", "fv_origin_weather:temp_f", "--out", str(tmp_path / "o.csv")]
    assert main(argv) == 2
    assert ("entities.csv: entity frame has no timestamp column 'event_timestamp' (its columns: "
            "['origin', ' event_timestamp']); name another with --timestamp-column") in capsys.readouterr().err
    # A file separated by ';' was told to name another timestamp column; the library's advice to
    # pass full_feature_names=True is the CLI's --full-feature-names.
    (tmp_path / "entities.csv").write_text("origin;event_timestamp\nJFK;2013-01-01\n")
    assert main(argv) == 2
    assert ("the header 'origin;event_timestamp' looks separated by another character than the comma"
            in capsys.readouterr().err)
    # A CSV's rows are named by their line in the file, and the message says "line".
    (tmp_path / "entities.csv").write_text("origin,event_timestamp\nJFK,2013-06-01 12:30Z\n\n\nLGA,13:30\n")
    assert main(argv) == 2
    assert "entities.csv: timestamp column 'event_timestamp' line 5 ('13:30'):" in capsys.readouterr().err
    (tmp_path / "entities.csv").write_text("origin,event_timestamp,temp_f\nJFK,2013-01-01T00:00Z,1\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pass --full-feature-names" in err and "full_feature_names=True" not in err


def test_big_integers_mixed_with_floats_and_integers_against_narrow_decimals(tmp_path):
    """2**53 + 1 beside a float was read as a float (2**53: another key); an int64 against a
    DECIMAL(18, 0) key was an Arrow precision error; a NaN in a dictionary of floats matched a
    view's NaN row."""
    store = key_store(tmp_path, "(9007199254740992, '2024-01-01 11:00+00', 1.0), (5, '2024-01-01 11:00+00', 5.0)")
    rows = [{"k": 2**53 + 1}, {"k": 1.5}, {"k": 5.0}]
    assert store.get_online_features(rows, "f:x")["x"].isna().tolist() == [True, True, False]
    for big in (2**53 + 1, np.int64(2**53 + 1)):  # (Python's and numpy's integers)
        entities = pd.DataFrame({"k": pd.Series([big, 1.5, 5.0], dtype=object), "event_timestamp": NOON})
        assert store.get_historical_features(entities, "f:x")["x"].isna().tolist() == [True, True, False]
        rows = [{"k": big}, {"k": 1.5}, {"k": 5.0}]
        assert store.get_online_features(rows, "f:x")["x"].isna().tolist() == [True, True, False]
    decimal = key_store(tmp_path / "d", "(12, '2024-01-01 11:00+00', 12.0)", "decimal(18, 0)")
    entities = pd.DataFrame({"k": [12, 13, 2**62], "event_timestamp": NOON})
    assert decimal.get_historical_features(entities, "f:x")["x"].isna().tolist() == [False, True, True]
    nan = key_store(tmp_path / "n", "('NaN'::double, '2024-01-01 11:00+00', 99.0), (1.5, '2024-01-01 11:00+00', 1.0)",
                    "double")
    keys = pa.array([float("nan"), 1.5]).dictionary_encode()
    entities = pd.DataFrame({"k": pd.Series(keys, dtype=pd.ArrowDtype(keys.type)), "event_timestamp": NOON})
    assert nan.get_historical_features(entities, "f:x")["x"].isna().tolist() == [True, False]


def test_dates_beside_datetimes_keep_their_times_of_day_against_date_and_timestamp_keys(tmp_path):
    """A datetime is a date to Python, and Arrow typed [date, datetime] objects as dates,
    dropping 10:00: it found that day's row of a DATE key, offline and online. A time of day
    matches no date; a midnight does."""
    import datetime as dt

    day = key_store(tmp_path / "d", "('2013-03-09', '2024-01-01 11:00+00', 9.0), "
                                    "('2013-03-10', '2024-01-01 11:00+00', 10.0)", "date")
    keys = [dt.date(2013, 3, 9), dt.datetime(2013, 3, 10, 10, 0), dt.datetime(2013, 3, 10), T("2013-03-10 00:00")]
    for ordered in (keys, keys[::-1]):
        expected = [9.0, None, 10.0, 10.0] if ordered is keys else [10.0, 10.0, None, 9.0]
        entities = pd.DataFrame({"k": pd.Series(ordered, dtype=object), "event_timestamp": NOON})
        for served in (day.get_historical_features(entities, "f:x")["x"],
                       day.get_online_features([{"k": k} for k in ordered], "f:x")["x"]):
            assert [None if pd.isna(v) else v for v in served] == expected
    instant = key_store(tmp_path / "t", "('2013-03-10 00:00', '2024-01-01 11:00+00', 0.0), "
                                        "('2013-03-10 10:00', '2024-01-01 11:00+00', 10.0)", "timestamp")
    entities = pd.DataFrame({"k": pd.Series([dt.date(2013, 3, 10), dt.datetime(2013, 3, 10, 10)], dtype=object),
                             "event_timestamp": NOON})
    assert instant.get_historical_features(entities, "f:x")["x"].tolist() == [0.0, 10.0]


def test_dates_with_a_missing_one_stay_dates_for_arrow():
    """NaT is a datetime to Python: a column of dates with one missing went value by value
    (~15 us a row and view) as if times of day sat among them."""
    import datetime as dt

    from mlops_pipelines.features.point_in_time import entity_key_array

    typed = entity_key_array(pd.Series([dt.date(2013, 3, 9), pd.NaT, None], dtype=object))
    assert isinstance(typed, pa.Array) and typed.type == pa.date32() and typed.null_count == 2
    assert isinstance(entity_key_array(pd.Series([dt.date(2013, 3, 9), dt.datetime(2013, 3, 9, 1)])), pd.Series)


def test_an_arrow_dictionary_holding_nan_or_null_is_read_as_its_values(tmp_path):
    """pandas refuses a NaN category ("Categorical categories cannot be null") and a category
    given twice, which an Arrow entity table's dictionary may hold: read as plain values, a NaN
    key matches nothing."""
    store = key_store(tmp_path, "(1.5, '2024-01-01 11:00+00', 1.5)", "double")
    for keys in (pa.array([1.5, float("nan")]).dictionary_encode(),
                 pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), pa.array([1.5, None])),
                 # (a value twice in the dictionary: "Categorical categories must be unique")
                 pa.DictionaryArray.from_arrays(pa.array([0, None], pa.int32()), pa.array([1.5, 1.5]))):
        entities = pa.table({"k": keys, "event_timestamp": pa.array([NOON.to_pydatetime()] * 2, pa.timestamp("us"))})
        assert store.get_historical_features(entities, "f:x")["x"].isna().tolist() == [False, True]
        assert store.get_online_features(pa.table({"k": keys}), "f:x")["x"].isna().tolist() == [False, True]


def test_the_cli_does_not_call_a_damaged_warehouse_in_use(tmp_path, monkeypatch, capsys):
    from mlops_pipelines.cli import main

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema features; create table features.registry as select 1 as x")
    data = bytearray(path.read_bytes())
    data[12288:12288 + 64] = b"\xff" * 64  # (a block's bytes: its checksum no longer holds)
    path.write_bytes(bytes(data))
    code = main(["features", "list"])
    err = capsys.readouterr().err
    assert code == 2 and "in use by another process" not in err and err.startswith("mlops features: ")


def test_the_cli_reads_parquet_folders_by_any_name_or_trailing_slash_and_any_case(tmp_path):
    """A folder given as 'rows.parquet/' (shell completion) or named without .parquet, and
    'X.PARQUET' / 'X.CSV', were refused as 'expected a .parquet or .csv file'."""
    import pyarrow.parquet as pq

    from mlops_pipelines.cli import _read_frame

    for folder in (tmp_path / "rows.parquet", tmp_path / "rows"):
        pq.write_to_dataset(pa.table({"carrier": ["UA", "AA"]}), str(folder))
        for given in (str(folder), f"{folder}/"):
            assert sorted(_read_frame(given)["carrier"]) == ["AA", "UA"], given
    pd.DataFrame({"carrier": ["DL"]}).to_parquet(tmp_path / "UPPER.PARQUET")
    (tmp_path / "UPPER.CSV").write_text("carrier\nB6\n")
    assert _read_frame(str(tmp_path / "UPPER.PARQUET"))["carrier"].tolist() == ["DL"]
    assert _read_frame(str(tmp_path / "UPPER.CSV"))["carrier"].tolist() == ["B6"]
    with pytest.raises(ValueError, match="expected a .parquet or .csv file"):
        _read_frame(str(tmp_path / "rows.txt"))


@pytest.mark.parametrize("text", ["NaT", "nan", "NaN", ""])
def test_timestamp_texts_pandas_reads_as_missing_are_refused_by_row(store, text):
    """'NaT', 'nan', 'NaN' and '' were read as no timestamp: the row quietly matched nothing
    (the CLI reads every CSV cell as text, so a cell 'NaT' did too). A missing value stays missing."""
    entities = pd.DataFrame({"carrier": ["AA", "AA", "AA"], "event_timestamp": ["2013-01-01 12:00", None, text]},
                            index=[10, 11, 12])
    with pytest.raises(ValueError, match=rf"timestamp column 'event_timestamp' row 12 \({text!r}\): not an instant"):
        store.get_historical_features(entities, ["carrier_stats:delay"])
    # pandas parses in nanoseconds, and fails past 2262, when one text has nanoseconds: the path
    # past 2262 (which blamed the valid year-2500 row).
    beyond = entities.assign(event_timestamp=["2000-01-01T00:00:00.000000001Z", "2500-01-01T00:00:00Z", text])
    with pytest.raises(ValueError, match=rf"row 12 \({text!r}\): not an instant"):
        store.get_historical_features(beyond, ["carrier_stats:delay"])
    far = store.get_historical_features(beyond.iloc[:2], ["carrier_stats:delay"])["event_timestamp"]
    assert far.iloc[1] == pd.Timestamp("2500-01-01", tz="UTC")
    out = store.get_historical_features(entities.iloc[:2], ["carrier_stats:delay"])
    assert out["delay"].iloc[0] == 3.0 and pd.isna(out["event_timestamp"].iloc[1]) and pd.isna(out["delay"].iloc[1])


@pytest.mark.parametrize("text", ["1230", "-1", " 2013", "0099",
                                  "1230.5", "2013.12", ".5"])  # (a year and month to pandas: 1230-05-01)
def test_timestamp_text_of_bare_digits_is_refused_by_row(store, text):
    """ISO 8601 reads bare digits as a year: '1230' (an HHMM time, as in the flights data) and
    '-1' (a sentinel) were 1 January of that year, and the row quietly matched nothing. A text
    with a date stays an instant, 1 January midnight included, and so does one past 2262."""
    entities = pd.DataFrame({"carrier": ["AA"] * 3, "event_timestamp": ["2013-01-01 12:00", "2013-01-01", text]},
                            index=[10, 11, 12])
    with pytest.raises(ValueError, match=rf"timestamp column 'event_timestamp' row 12 \({text!r}\): a number, not "
                                         "an instant"):
        store.get_historical_features(entities, ["carrier_stats:delay"])
    # numpy datetimes of any unit in an object column, 1 January midnight among them, are
    # instants (the check of texts raised Arrow's 'Unsupported datetime64 time unit').
    for unit in ("m", "h", "s"):
        mixed = entities.assign(event_timestamp=pd.Series([np.datetime64("2013-01-01T12:00", unit)] * 2
                                                          + [np.datetime64("2013-01-01T00:00", unit)], dtype=object,
                                                          index=entities.index))
        assert store.get_historical_features(mixed, ["carrier_stats:delay"])["event_timestamp"].iloc[2] == \
            pd.Timestamp("2013-01-01", tz="UTC")
    # ISO 8601's basic format ('20130101', eight digits) is a date, not a year.
    ok = entities.assign(event_timestamp=["2013-01-01 12:00", "20130101", "2013-01-01T00:00Z"])
    assert store.get_historical_features(ok, ["carrier_stats:delay"])["event_timestamp"].iloc[1:].tolist() == \
        [pd.Timestamp("2013-01-01", tz="UTC")] * 2


def test_dates_as_entity_timestamps_are_refused_by_row(store, tmp_path):
    """Dates were read as midnight UTC (a New York day from 19:00 the day before): Python dates,
    also beside datetimes, Arrow DATE columns and an end_ts of materialize_online."""
    import datetime as dt

    day = dt.date(2013, 1, 1)
    cases = [
        pd.DataFrame({"carrier": ["AA", "AA"], "event_timestamp": [dt.datetime(2013, 1, 1, 12), day]}, index=[7, 8]),
        pa.table({"carrier": ["AA", "AA"], "event_timestamp": pa.array([None, day], pa.date32())}),
        pd.DataFrame({"carrier": ["AA", "AA"], "event_timestamp": pd.Series([None, day], index=[7, 8],
                                                                            dtype=pd.ArrowDtype(pa.date64()))}),
    ]
    cases += [  # categories of dates, Arrow dictionaries of dates, pandas periods
        pd.DataFrame({"carrier": ["AA", "AA"], "event_timestamp": pd.Categorical([None, day])}, index=[7, 8]),
        pa.table({"carrier": ["AA", "AA"], "event_timestamp": pa.array([None, day], pa.date32()).dictionary_encode()}),
    ]
    for entities, row in zip(cases, (8, 1, 8, 8, 1), strict=True):
        with pytest.raises(ValueError, match=rf"timestamp column 'event_timestamp' row {row} \(datetime\.date"
                                             r"\(2013, 1, 1\)\): a date, not an instant"):
            store.get_historical_features(entities, ["carrier_stats:delay"])
    online = FeatureStore(store.database_path, store.views.values(), online_path=tmp_path / "o.sqlite")
    with pytest.raises(ValueError, match=r"end_ts datetime\.date\(2013, 1, 2\) is not an instant"):
        online.materialize_online(["carrier_stats"], end_ts=dt.date(2013, 1, 2))
    assert not (tmp_path / "o.sqlite").exists()  # refused before anything was written
    periods = pd.DataFrame({"carrier": ["AA"], "event_timestamp": pd.period_range("2013-01-01", periods=1, freq="D")})
    with pytest.raises(ValueError, match=r"row 0 \(Period\('2013-01-01', 'D'\)\): a date, not an instant"):
        store.get_historical_features(periods, ["carrier_stats:delay"])
    # Datetimes alone, and midnights as datetimes, are instants.
    stamps = pd.DataFrame({"carrier": ["AA"], "event_timestamp": [dt.datetime(2013, 1, 1, 12)]})
    assert store.get_historical_features(stamps, ["carrier_stats:delay"])["delay"].tolist() == [3.0]


def test_a_registered_views_declared_types_are_checked_when_it_is_read(tmp_path):
    """A view only registered (not applied) and declaring an int over text served 'hello', with
    dtype str, offline and online. Types other than the default float are now checked when the
    view is read; float, the default, stays any number (and more: it is no claim)."""
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table t as select 'AA' as carrier, timestamptz '2013-01-01 00:00:00+00' as ts, "
                    "'hello' as n, true as flag, 'x' as label")
    fs = FeatureStore(path, online_path=tmp_path / "o.sqlite")
    fs.register(FeatureView("v", "t", ("carrier",), "ts", (Feature("n", "int"), Feature("flag", "bool"),
                                                           Feature("label"))))
    entities = pd.DataFrame({"carrier": ["AA"], "event_timestamp": T("2013-01-02", tz="UTC")})
    error = r"feature view 'v': feature 'n' is declared int, but t gives VARCHAR"
    for run in (lambda: fs.get_historical_features(entities, ["v:flag"]), lambda: fs.materialize_online(["v"])):
        with pytest.raises(ValueError, match=error):
            run()
    fs.register(FeatureView("v", "t", ("carrier",), "ts", (Feature("n", "str"), Feature("flag", "bool"),
                                                           Feature("label"))))
    out = fs.get_historical_features(entities, ["v:n", "v:flag", "v:label"])
    assert (out["n"].tolist(), out["flag"].tolist(), out["label"].tolist()) == (["hello"], [True], ["x"])
    with duckdb.connect(str(path)) as con:  # JSON is text
        con.execute("""alter table t add column j json default '{"a": 1}'""")
    fs.register(FeatureView("v", "t", ("carrier",), "ts", (Feature("j", "str"),)))
    assert fs.get_historical_features(entities, ["v:j"])["j"].tolist() == ['{"a": 1}']


def test_arguments_of_the_wrong_kind_are_refused_by_name(store, tmp_path):
    """Wrong kinds of arguments failed deep inside the store (AttributeError: 'str' object has no
    attribute 'name'), or were taken: entities as a set changed the view's version from process
    to process (so one process's online rows were 'not materialized' for another), and
    full_feature_names='no' meant True."""
    view = store.views["weather"]
    refused = [
        (lambda: FeatureView("v", "t", "k", "ts", ["x"]), r"feature view 'v': features \['x'\] are not Feature"),
        (lambda: FeatureView("v", "t", {"a", "b"}, "ts", (Feature("x"),)),
         r"feature view 'v': entities .*: give a name or a list of names, in order"),
        (lambda: FeatureView("v", "t", None, "ts", (Feature("x"),)), r"entities None: give a name"),
        (lambda: FeatureView("v", "t", [5], "ts", (Feature("x"),)), r"entity join keys \[5\] are not column names"),
        (lambda: FeatureView("v", "t", "k", "", (Feature("x"),)), r"event_timestamp '' is not a name"),
        (lambda: FeatureView("v", "t", "k", "ts", (Feature("x"),), created_timestamp=" "),
         r"created_timestamp ' ' is not a column name"),
        (lambda: Feature(5), r"feature name 5: a column name"),
        (lambda: Feature("x", "double"), r"feature 'x': type 'double' is not one of \['float', 'int'"),
        (lambda: FeatureView("", "t", "k", "ts", (Feature("x"),)), r"feature view name '': non-empty text"),
        (lambda: FeatureView("v", "t", (), "ts", (Feature("x"),)), r"feature view 'v': no entity join key"),
        (lambda: FeatureView("v", "t", "k", "ts", Feature("x")),
         r"feature view 'v': features Feature\(.*\): give a list of Feature\(\.\.\.\)"),
        (lambda: FeatureView.from_yaml("v", "t", {"entities": ["k"], "features": [{"name": "x"}]}),
         r"feature view v: field 'event_timestamp' is required"),
        (lambda: FeatureStore(store.database_path, [view], online_path=tmp_path / "none.sqlite").get_online_features(
            [{"origin": "JFK"}], ["weather:delay"]),
         r"online store .*none\.sqlite does not exist: run materialize_online first"),
        (lambda: store.register([view]), r"register\(\) takes one FeatureView, not list"),
        (lambda: FeatureStore(store.database_path, online_path=tmp_path / "o.sqlite").materialize_online(5),
         r"views: a list, not int 5"),
        (lambda: store.get_historical_features(pd.DataFrame({"origin": ["JFK"], "event_timestamp": ["2013-01-02"]}),
                                               ["weather:delay"], full_feature_names="no"),
         r"full_feature_names must be True or False, not 'no'"),
    ]
    for call, error in refused:
        with pytest.raises((TypeError, ValueError, FileNotFoundError), match=error):
            call()
    # What a user of Feast or of the SQL project would pass is taken as meant.
    views = {"weather": view, "carrier_stats": store.views["carrier_stats"]}
    assert list(FeatureStore(store.database_path, views).views) == ["weather", "carrier_stats"]
    assert list(FeatureStore(store.database_path, view).views) == ["weather"]
    entities = pd.DataFrame({"origin": ["JFK"], "event_timestamp": [T("2013-01-02", tz="UTC")]})
    online = FeatureStore(store.database_path, [view], online_path=tmp_path / "o.sqlite")
    assert online.materialize_online([view], end_ts="2013-01-02") == {"weather": 1}
    assert online.get_online_features(entities[["origin"]], ["weather:delay"])["delay"].tolist() == [9.0]
    other = FeatureView("weather", "weather", ("origin",), "ts", (Feature("delay", "float", "another"),))
    with pytest.raises(ValueError, match=r"feature view 'weather': not the view registered under that name"):
        online.materialize_online([other])
    keys = ("b", "a", "c")  # a generator of keys is read once, in order; a dict's keys keep theirs
    assert FeatureView("v", "t", (k for k in keys), "ts", (Feature("x"),)).entities == keys
    assert FeatureView("v", "t", dict.fromkeys(keys).keys(), "ts", (Feature("x"),)).entities == keys
    for flag in (0, 1, None, np.bool_(True)):
        store.get_historical_features(entities, ["weather:delay"], full_feature_names=flag)


def test_a_failure_inside_the_callers_transaction_is_the_error_raised(tmp_path):
    """Inside a transaction of the caller's that the failure aborted, setting the TimeZone back
    raised 'Current transaction is aborted' instead of the failure; now the failure is raised,
    with a note that the TimeZone stayed UTC, and it is set back when nothing failed."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create table t as select 1::bigint as k, '2020-01-01'::timestamp as ts, 'ax' as x")
    store = FeatureStore(tmp_path / "w.duckdb", [
        FeatureView("bad", "(select k, ts, x::int as x from t)", "k", "ts", (Feature("x"),)),
        FeatureView("good", "(select k, ts, 1.5 as y from t)", "k", "ts", (Feature("y"),))])
    entities = pd.DataFrame({"k": [1], "event_timestamp": T("2021-01-01", tz="UTC")})
    con.execute("set TimeZone = 'America/Los_Angeles'")
    con.begin()
    with pytest.raises(ValueError, match="feature view 'bad': reading .*Could not convert string 'ax'") as failure:
        store.get_historical_features(entities, ["bad:x"], connection=con)
    assert any("TimeZone is still 'UTC' (it was 'America/Los_Angeles')" in n for n in failure.value.__notes__)
    con.rollback()
    con.execute("set TimeZone = 'America/Los_Angeles'")
    con.begin()
    assert store.get_historical_features(entities, ["good:y"], connection=con)["y"].tolist() == [1.5]
    assert con.execute("select current_setting('TimeZone')").fetchone()[0] == "America/Los_Angeles"
    con.commit()


def test_new_yorks_repeated_hour_as_text_and_as_python_datetimes():
    """01:45 on 2013-11-03 happens twice in New York (EDT, then EST): the offset in ISO text and
    ``fold=1`` on a Python datetime tell them apart (random cases hit this hour only sometimes)."""
    from zoneinfo import ZoneInfo

    new_york = ZoneInfo("America/New_York")
    con = duckdb.connect()
    con.execute("create table f (k bigint, ts timestamptz, x double)")
    con.execute("insert into f values (1, '2013-11-03 05:30+00', 1.0), (1, '2013-11-03 06:30+00', 2.0)")
    store = FeatureStore(":memory:", [FeatureView("f", "f", ("k",), "ts", (Feature("x"),))])
    first, second = (datetime(2013, 11, 3, 1, 45, fold=fold, tzinfo=new_york) for fold in (0, 1))
    for times in (["2013-11-03T01:45:00-04:00", "2013-11-03T01:45:00-05:00"], [first, second]):
        frame = pd.DataFrame({"k": [1, 1], "event_timestamp": pd.Series(times, dtype=object)})
        assert store.get_historical_features(frame, ["f:x"], connection=con)["x"].tolist() == [1.0, 2.0], times


def test_ranked_times_with_one_infinity_before_the_first_and_after_the_last_event():
    """An infinite event rules out the time grid (times are ranked instead): an entity just
    before the first finite event, or after the last one, on either side of a single infinity."""
    con = duckdb.connect()
    con.execute("create table g (k bigint, ts timestamptz, x double)")  # +infinity: nothing after the last event
    con.execute("insert into g values (1, 'infinity', 9.0), (1, '2020-01-01 10:00+00', 1.0)")
    con.execute("create table h (k bigint, ts timestamptz, x double)")  # -infinity: nothing before the first event
    con.execute("insert into h values (1, '-infinity', 8.0), (1, '2020-01-01 10:00+00', 1.0), "
                "(2, '2020-01-01 09:00+00', 2.0)")
    store = FeatureStore(":memory:", [FeatureView(v, v, ("k",), "ts", (Feature("x"),)) for v in "gh"])
    frame = pd.DataFrame({"k": [1, 1, 1, 2], "event_timestamp": pd.to_datetime(
        ["2020-01-01 09:59:59.999999", "2020-01-01 10:00:00", "2020-01-02 00:00:00", "2030-01-01 00:00:00"],
        utc=True, format="ISO8601")})
    out = store.get_historical_features(frame, ["g:x", "h:x"], full_feature_names=True, connection=con)
    assert out["g__x"].fillna(-1).tolist() == [-1, 1.0, 1.0, -1]
    assert out["h__x"].tolist() == [8.0, 1.0, 1.0, 2.0]


@pytest.mark.parametrize("ttl", [timedelta(hours=3), timedelta(days=7), timedelta(minutes=90), timedelta(seconds=5),
                                 timedelta(milliseconds=400), timedelta(microseconds=1500), timedelta(weeks=2)])
def test_the_ttl_mlops_features_list_prints_reads_back_as_the_same_ttl(ttl):
    """`mlops features list` printed '3h' and '400ms', which a declaration refused ('ttl: 3h')."""
    from mlops_pipelines.features.views import ttl_text

    assert parse_ttl(ttl_text(ttl.total_seconds())) == ttl
    assert parse_ttl(ttl_text(ttl)) == ttl


def test_a_ttl_prints_to_the_microsecond_and_none_reads_back_as_no_ttl():
    """The metadata's TTL went through float seconds: 100,000 days and 1 us printed 2 us too many."""
    from mlops_pipelines.features.views import ttl_text

    ttl = timedelta(days=100_000, microseconds=1)
    assert ttl_text(ttl) == "8640000000000001us" and parse_ttl(ttl_text(ttl)) == ttl
    assert [ttl_text(t) for t in (None, timedelta(0), 0.0, float("nan"))] == ["none"] * 4
    assert parse_ttl("none") is None and parse_ttl(" None ") is None


@pytest.mark.parametrize("text", ["3M", "3 M", "10mS", "3 H", "1w", "1e3s"])
def test_short_ttl_forms_are_lower_case_units_only(text):
    """'3M' could mean three months: the short forms are only those `mlops features list` prints
    (words, such as '1 min', may be in any case)."""
    with pytest.raises(ValueError, match=f"ttl '{text}': expected a duration such as '3 hours'"):
        parse_ttl(text)


def test_a_store_over_a_missing_warehouse_says_so(tmp_path):
    """DuckDB's own words were 'IO Error: Cannot open database ... does not exist' (read-only)."""
    store = FeatureStore(tmp_path / "nowhere.duckdb", [FeatureView("f", "f", ("k",), "ts", (Feature("x"),))])
    entities = pd.DataFrame({"k": [1], "event_timestamp": T("2021-01-01", tz="UTC")})
    with pytest.raises(FileNotFoundError, match=r"no warehouse at .*nowhere\.duckdb: run `mlops demo`"):
        store.get_historical_features(entities, ["f:x"])
    assert not (tmp_path / "nowhere.duckdb").exists()


@pytest.mark.parametrize(("source", "prefetch"), [("read_parquet('{path}')", False),
                                                  ("read_parquet('s3://bucket/x.parquet')", True)])
def test_the_store_reads_local_parquet_without_prefetching_and_keeps_it_for_remote_files(tmp_path, source, prefetch):
    """Prefetching whole row groups only held more fresh memory for local files (the benchmark's
    reads: 240,000 page faults against 190,000); remote files need it to save round trips."""
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"k": [1], "ts": pa.array([0], pa.timestamp("us", "UTC")), "x": [1.0]}), path)
    view = FeatureView("v", source.format(path=path), entities=("k",), event_timestamp="ts", features=(Feature("x"),))
    store = FeatureStore(":memory:", [view])
    with store._connection(None) as con:
        assert con.sql("select current_setting('disable_parquet_prefetching')").fetchall() == [(not prefetch,)]
    if not prefetch:
        entity = pd.DataFrame({"k": [1], "event_timestamp": pd.to_datetime(["2000-01-01"], utc=True)})
        assert store.get_historical_features(entity, ["v:x"])["x"].tolist() == [1.0]


def test_the_last_two_views_of_a_call_are_their_workspaces_last_use(tmp_path, monkeypatch):
    """Two workers, three views: the first view's workspace is used again by the third, so only
    the last two may hand their scratch arrays over as output columns."""
    from mlops_pipelines.features import point_in_time

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create table t as select 1 as k, timestamp '2020-01-01' as ts, 1.0 as x")
    store = FeatureStore(tmp_path / "w.duckdb", [FeatureView(f"v{i}", "t", ("k",), "ts", (Feature("x"),))
                                                 for i in range(3)])
    con.close()
    told = []
    real = point_in_time.join_view

    def recording(*args, last=False, **kwargs):
        told.append(last)
        return real(*args, last=last, **kwargs)

    monkeypatch.setattr(point_in_time, "join_view", recording)
    entity = pd.DataFrame({"k": [1], "event_timestamp": pd.to_datetime(["2021-01-01"], utc=True)})
    out = store.get_historical_features(entity, ["v0:x", "v1:x", "v2:x"], full_feature_names=True)
    assert out[["v0__x", "v1__x", "v2__x"]].values.tolist() == [[1.0, 1.0, 1.0]]
    assert told == [False, True, True]


def test_one_remote_source_keeps_prefetching_for_the_whole_store(tmp_path):
    views = [FeatureView("local", "read_parquet('x.parquet')", ("k",), "ts", (Feature("x"),)),
             FeatureView("remote", "read_parquet('https://example.org/x.parquet')", ("k",), "ts", (Feature("x"),))]
    with FeatureStore(":memory:", views)._connection(None) as con:
        assert con.sql("select current_setting('disable_parquet_prefetching')").fetchall() == [(False,)]


def test_errors_about_one_entity_row_carry_the_row_so_callers_can_name_it_their_way(tmp_path):
    """The CLI named a CSV's rows by their line by rewriting the library's text ('row 7' to
    'line 7'); the errors are now typed, with the row's label, for every rule that names a row:
    a timestamp, a TIME key and a UUID key that do not parse, an INTEGER key that is text."""
    from mlops_pipelines.features.errors import EntityRowError, FeatureNameCollision, MissingTimestampColumn

    cases = [
        (key_store(tmp_path / "ts", "(1, '2024-01-01 11:00+00', 1.0)"), ["1", "1"], ["2024-01-01", "soon"],
         r"timestamp column 'event_timestamp' {} 7 \('soon'\): "),
        (key_store(tmp_path / "time", "('10:00', '2024-01-01 11:00+00', 1.0)", "time"), ["10:00", "ten"],
         [NOON, NOON], r"join key 'k' {} 7 \('ten'\): not an ISO 8601 time of day"),
        (key_store(tmp_path / "uuid", "('c9a646d3-9c61-4cb7-bfcd-ee2522c8f633', '2024-01-01 11:00+00', 1.0)", "uuid"),
         ["c9a646d3-9c61-4cb7-bfcd-ee2522c8f633", "c9a6-nope"], [NOON, NOON],
         r"join key 'k': entity value 'c9a6-nope' \({} 7 of the entity rows\) is not a UUID"),
        (key_store(tmp_path / "int", "(1, '2024-01-01 11:00+00', 1.0)"), ["1", "x1"], [NOON, NOON],
         r"join key 'k': entity values of type \w+ cannot be compared with the view's int64 \({} 7: "),
    ]
    for store, keys, stamps, rule in cases:
        entities = pd.DataFrame({"k": keys, "event_timestamp": stamps}, index=[6, 7])
        with pytest.raises(EntityRowError, match=rule.format("row")) as caught:
            store.get_historical_features(entities, "f:x")
        assert caught.value.row == 7 and re.search(rule.format("line"), caught.value.naming_rows("line"))
    store = cases[0][0]
    with pytest.raises(MissingTimestampColumn, match="no timestamp column 'when'") as missing:
        store.get_historical_features(pd.DataFrame({"k": [1], "event_timestamp": [NOON]}), "f:x",
                                      timestamp_column="when")
    assert missing.value.column == "when"
    with pytest.raises(FeatureNameCollision, match=r"rename them or pass full_feature_names=True") as clash:
        store.get_historical_features(pd.DataFrame({"k": [1], "event_timestamp": [NOON], "x": [0]}), "f:x")
    assert clash.value.advising("--full-feature-names").endswith("rename them or pass --full-feature-names")


def test_typed_errors_survive_a_copy_and_a_pickle():
    """Errors crossing processes (multiprocessing, joblib) or copied keep their text and parts."""
    import copy
    import pickle

    from mlops_pipelines.features.errors import EntityRowError, FeatureNameCollision, MissingTimestampColumn

    for error in (EntityRowError("timestamp column 'ts' ", 7, " ('soon'): not an instant"),
                  MissingTimestampColumn("entity frame has no timestamp column 'when'", "when"),
                  FeatureNameCollision("feature name 'x' is in views 'a' and 'b': pass ")):
        for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
            assert type(again) is type(error) and str(again) == str(error) and vars(again) == vars(error)


def _cli_with_view(tmp_path, monkeypatch) -> list[str]:
    """A warehouse with the view ``v`` (origin, ts, x) applied, ``MLOPS_DATA_DIR`` at it, and the
    CLI's ``--features`` for it."""
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    FeatureStore(tmp_path / "warehouse.duckdb").apply(FeatureView(
        "v", f"read_parquet('{_tiny_parquet(tmp_path)}')", "origin", "ts", (Feature("x"),)))
    return ["--features", "v:x"]


def test_the_cli_never_writes_its_output_into_the_entity_folder(tmp_path, monkeypatch, capsys):
    """Every file of a parquet folder is read as entity rows: an output there would replace an
    input, or be read as entity rows by the next run. Refused before the join."""
    from mlops_pipelines.cli import main

    features = _cli_with_view(tmp_path, monkeypatch)
    folder = tmp_path / "entities"
    folder.mkdir()
    frame = pd.DataFrame({"origin": ["JFK"], "event_timestamp": pd.to_datetime(["2013-02-01"], utc=True)})
    frame.to_parquet(folder / "a.parquet")
    before = (folder / "a.parquet").read_bytes()
    for out in (folder / "a.parquet", folder / "new.parquet", folder / "." / "a.parquet"):
        assert main(["features", "historical", "--entities", str(folder), *features, "--out", str(out)]) == 2
        assert f"--out {out}: inside the entity folder {folder}" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["a.parquet"] and (folder / "a.parquet").read_bytes() == before
    (tmp_path / "folder.csv").mkdir()
    assert main(["features", "historical", "--entities", str(folder), *features, "--out",
                 str(tmp_path / "folder.csv")]) == 2
    assert f"--out {tmp_path / 'folder.csv'}: a folder; give a file to write" in capsys.readouterr().err
    assert main(["features", "historical", "--entities", str(folder), *features,
                 "--out", str(tmp_path / "o.parquet")]) == 0
    assert pd.read_parquet(tmp_path / "o.parquet")["x"].tolist() == [1.0]


def test_a_failed_write_leaves_the_previous_output_whole(tmp_path, monkeypatch, capsys):
    """The output is written beside ``--out`` and put in its place when whole: a write that fails
    (a full disk) leaves the file there before as it was, and no partial file."""
    from mlops_pipelines.cli import main

    features = _cli_with_view(tmp_path, monkeypatch)
    (tmp_path / "e.csv").write_text("origin,event_timestamp\nJFK,2013-02-01\n")
    out = tmp_path / "out" / "o.csv"
    out.parent.mkdir()
    argv = ["features", "historical", "--entities", str(tmp_path / "e.csv"), *features, "--out", str(out)]
    assert main(argv) == 0
    first = out.read_text()
    assert first.splitlines() == ["origin,event_timestamp,x", "JFK,2013-02-01 00:00:00+00:00,1.0"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # (as a file written in place)
    out.chmod(0o600)  # (a private output stays private; a link stays a link, its target written)
    link = tmp_path / "link.csv"
    link.symlink_to(out)
    out.write_text("old")
    assert main(argv[:-1] + [str(link)]) == 0
    assert link.is_symlink() and out.read_text() == first and oct(out.stat().st_mode & 0o777) == oct(0o600)
    link.unlink()

    def half_then_full(self, path, **kwargs):
        Path(path).write_text("origin,event_timestamp,x\nJFK,2013-02-01 00:00:00+00:00,1.")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_full)
    assert main(argv) == 2
    assert (f"--out {out}: not written (No space left on device); a file there before is as it was"
            in capsys.readouterr().err)
    assert out.read_text() == first and [p.name for p in out.parent.iterdir()] == ["o.csv"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_cli_refuses_a_parquet_folder_whose_files_have_other_columns(tmp_path, monkeypatch, capsys):
    """Arrow reads a folder with its first file's columns: a misspelt column of another file would
    be dropped, its rows' keys read as missing. Columns in another order are the same table."""
    from mlops_pipelines.cli import main

    features = _cli_with_view(tmp_path, monkeypatch)
    folder = tmp_path / "entities"
    folder.mkdir()
    at = pd.to_datetime(["2013-02-01"], utc=True)
    pd.DataFrame({"origin": ["JFK"], "event_timestamp": at}).to_parquet(folder / "a.parquet")
    pd.DataFrame({"event_timestamp": at, "origin": ["JFK"]}).to_parquet(folder / "b.parquet")
    argv = ["features", "historical", "--entities", str(folder), *features, "--out", str(tmp_path / "o.csv")]
    assert main(argv) == 0
    assert pd.read_csv(tmp_path / "o.csv")["x"].tolist() == [1.0, 1.0]
    pd.DataFrame({"orign": ["JFK"], "event_timestamp": at}).to_parquet(folder / "c.parquet")
    assert main(argv) == 2
    assert (f"{folder}: c.parquet has other columns than a.parquet (lacks ['origin']; has ['orign'], which "
            "a.parquet has not); the files of a folder are read as one table") in capsys.readouterr().err
    assert main(["features", "historical", "--entities", str(tmp_path / "none.parquet"), *features,
                 "--out", str(tmp_path / "o.csv")]) == 2
    assert f"{tmp_path / 'none.parquet'}: no such file" in capsys.readouterr().err
    # Hive partitions (pandas' partition_cols): their column is in no file, and their files may
    # share a name. One table, as before.
    hive = tmp_path / "hive"
    pd.DataFrame({"origin": ["JFK", "JFK"], "event_timestamp": pd.to_datetime(["2013-02-01"] * 2, utc=True),
                  "month": ["2013-01", "2013-02"]}).to_parquet(hive, partition_cols=["month"])
    assert main(["features", "historical", "--entities", str(hive), *features, "--out", str(tmp_path / "h.csv")]) == 0
    assert pd.read_csv(tmp_path / "h.csv")["x"].tolist() == [1.0, 1.0]
    (hive / "month=2013-03").mkdir()
    pd.DataFrame({"orign": ["JFK"], "event_timestamp": at}).to_parquet(hive / "month=2013-03" / "c.parquet")
    assert main(["features", "historical", "--entities", str(hive), *features, "--out", str(tmp_path / "h.csv")]) == 2
    assert ("has other columns than month=2013-01/" in capsys.readouterr().err)


def test_the_cli_notes_the_rows_without_a_timestamp_or_a_key(tmp_path, monkeypatch, capsys):
    """An empty cell is a missing value (its row gets no features, as NaT or None from Python),
    which the nulls alone would not tell: a note names the rows, by line for a CSV."""
    from mlops_pipelines.cli import main

    features = _cli_with_view(tmp_path, monkeypatch)
    (tmp_path / "e.csv").write_text("origin,event_timestamp\nJFK,2013-02-01\nJFK,\n,2013-02-01\n\nJFK,2013-02-02\n"
                                    + "JFK,\n" * 6)
    assert main(["features", "historical", "--entities", str(tmp_path / "e.csv"), *features,
                 "--out", str(tmp_path / "o.csv")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: 7 entity rows have no event_timestamp (lines 3, 7, 8, 9, 10, ...): no feature is found "
                   "for them",
                   "note: 1 entity row has no origin (line 4): no feature of v is found for it"]
    assert pd.read_csv(tmp_path / "o.csv")["x"].fillna(-1).tolist() == [1.0, -1, -1, 1.0] + [-1] * 6


def test_the_cli_blames_a_view_for_its_source_and_notes_its_warnings_in_one_line(tmp_path, monkeypatch, capsys):
    """A view's source that no longer fits it is the view's fault, not the entity file's; the
    store's warnings are one-line notes, not Python's two-line warnings."""
    from mlops_pipelines.cli import main

    features = _cli_with_view(tmp_path, monkeypatch)
    (tmp_path / "e.csv").write_text("origin,event_timestamp\nJFK,2013-02-01\n")
    argv = ["features", "historical", "--entities", str(tmp_path / "e.csv"), *features,
            "--out", str(tmp_path / "o.csv")]
    source = tmp_path / "tiny.parquet"
    pd.DataFrame({"origin": ["JFK"], "ts": ["2013-01-01"], "x": [1.0]}).to_parquet(source)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"mlops features: feature view 'v': event timestamp column 'ts' is VARCHAR, not a TIMESTAMP (cast "
                   f"it to the instant in the view's SQL); the view reads read_parquet('{source}')\n")
    pd.DataFrame({"origin": ["JFK"], "ts": pd.to_datetime(["2013-01-01"], utc=True), "x": ["high"]}).to_parquet(source)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.startswith("note: feature view 'v': feature 'x' has the type float (the default), but read_parquet(")
    assert len(err.splitlines()) == 1


def test_the_store_warnings_of_a_run_reach_its_log(caplog):
    """Python's warnings reach neither a Dagster run's events nor its compute logs: the project's
    go to the run's log, each time; others' are shown as Python would."""
    import logging
    import warnings

    from mlops_pipelines.features.errors import DeclarationNotBuiltWarning
    from mlops_pipelines.features.resource import store_warnings_logged

    log = logging.getLogger("a_run")
    with pytest.warns(UserWarning, match="not ours") as shown:
        with caplog.at_level(logging.WARNING, logger="a_run"), store_warnings_logged(log):
            for _ in range(2):
                warnings.warn(DeclarationNotBuiltWarning("feature view 'v': edited"), stacklevel=1)
            warnings.warn(UserWarning("not ours"), stacklevel=1)
    assert [r.getMessage() for r in caplog.records] == ["DeclarationNotBuiltWarning: feature view 'v': edited"] * 2
    assert [str(w.message) for w in shown] == ["not ours"]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), duckdb.InterruptException("Query interrupted")])
def test_the_cli_says_it_was_interrupted_in_one_line(interruption, monkeypatch, capsys):
    """Ctrl-C inside a DuckDB query came out as a traceback of "Query interrupted"."""
    from mlops_pipelines import cli

    def interrupted(_args):
        raise interruption

    monkeypatch.setattr(cli, "_features_list", interrupted)
    assert cli.main(["features", "list"]) == 130
    assert capsys.readouterr().err == "mlops features: interrupted\n"
