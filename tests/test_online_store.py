"""Online store: materialize the latest rows to SQLite, read them back, agree with the offline store."""

from __future__ import annotations

import decimal
import re
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlops_pipelines.features import online as online_module
from mlops_pipelines.features import point_in_time
from mlops_pipelines.features.store import FeatureStore, entity_rows
from mlops_pipelines.features.views import Feature, FeatureView


def _stats_frame(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    start = pd.Timestamp("2013-03-01", tz="UTC")
    event = start + pd.to_timedelta(rng.integers(0, 30 * 24, rows), unit="h")
    return pd.DataFrame({
        "carrier": rng.choice(["AA", "UA", "DL", "B6", "WN"], rows),
        "origin": rng.choice(["EWR", "JFK", "LGA"], rows),
        "ts": event,
        # Half the rows share an instant with another row: the created timestamp decides.
        "created": event + pd.to_timedelta(rng.integers(0, 3, rows), unit="h"),
        "delay": rng.normal(10, 20, rows).round(1),
        "share": rng.random(rows).round(3),
    })


@pytest.fixture()
def store(tmp_path) -> FeatureStore:
    rng = np.random.default_rng(7)
    frame = _stats_frame(rng, 3000)
    database = tmp_path / "offline.duckdb"
    with duckdb.connect(str(database)) as con:
        con.register("frame", frame)
        con.execute("create table stats as select * from frame")
    fs = FeatureStore(database, online_path=tmp_path / "online.sqlite")
    fs.register(FeatureView("stats", "stats", ("carrier", "origin"), "ts",
                            (Feature("delay"), Feature("share")), ttl=timedelta(hours=12),
                            created_timestamp="created"))
    return fs


def _offline_at(store: FeatureStore, entities: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    frame = entities.assign(event_timestamp=at)
    return store.get_historical_features(frame, ["stats:delay", "stats:share"])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_online_equals_offline_at_the_materialization_instant(store, seed):
    rng = np.random.default_rng(seed)
    entities = pd.DataFrame({
        "carrier": rng.choice(["AA", "UA", "DL", "B6", "WN", "ZZ"], 40),  # ZZ never seen
        "origin": rng.choice(["EWR", "JFK", "LGA"], 40),
    })
    for hours in sorted(rng.integers(24, 30 * 24, 4)):  # increasing: each run is incremental
        at = pd.Timestamp("2013-03-01", tz="UTC") + pd.Timedelta(hours=int(hours))
        store.materialize_online(["stats"], end_ts=at)
        online = store.get_online_features(entities, ["stats:delay", "stats:share"])
        offline = _offline_at(store, entities, at)
        pd.testing.assert_frame_equal(online[["delay", "share"]], offline[["delay", "share"]])
        assert online["delay"].notna().any()  # the comparison is not between two empty frames


def test_second_materialization_reads_only_newer_rows(store):
    first = store.materialize_online(["stats"], end_ts="2013-03-15")
    again = store.materialize_online(["stats"], end_ts="2013-03-15")
    later = store.materialize_online(["stats"], end_ts="2013-03-16")
    assert first["stats"] == 15  # 5 carriers x 3 origins
    assert again["stats"] == 0
    assert 0 < later["stats"] <= 15
    with pytest.raises(ValueError, match=r"would go back in time \(full_refresh=True rebuilds it"):
        store.materialize_online(["stats"], end_ts="2013-03-10")


def test_late_corrected_and_deleted_rows_are_picked_up_and_a_full_refresh_may_go_back(store, tmp_path):
    """Rows that change at or before the last end_ts (a late row, a corrected value with the same
    event time, a deleted row) used to be missed by incremental runs: only newer rows were read.
    A fingerprint of the rows up to the last end_ts now finds them, and the view is rebuilt."""
    store.materialize_online(["stats"], end_ts="2013-03-20")
    assert _last_refresh(store, "stats") == "rebuilt: this version of the view was not materialized before"
    entities = pd.DataFrame({"carrier": ["UA", "AA"], "origin": ["JFK", "EWR"]})
    at = pd.Timestamp("2013-03-20", tz="UTC")
    changes = [
        "insert into stats values ('UA', 'JFK', '2013-03-19 23:00+00', '2013-03-19 23:00+00', 999.0, 0.5)",
        "update stats set delay = 555.0 where carrier = 'UA' and origin = 'JFK' and delay = 999.0",
        "delete from stats where carrier = 'UA' and origin = 'JFK' and delay = 555.0",
    ]
    for change, expected in zip(changes, (999.0, 555.0, None), strict=True):
        with duckdb.connect(store.database_path) as con:
            con.execute(change)
        assert store.materialize_online(["stats"], end_ts="2013-03-20")["stats"] > 0, change
        assert _last_refresh(store, "stats") == ("rebuilt: rows at or before 2013-03-20 00:00:00+00:00 changed "
                                                 "(late, corrected or deleted rows)"), change
        online = store.get_online_features(entities, ["stats:delay", "stats:share"])
        pd.testing.assert_frame_equal(online[["delay", "share"]], _offline_at(store, entities, at)[["delay", "share"]])
        assert (online["delay"].iloc[0] == expected) if expected else online["delay"].iloc[0] not in (999.0, 555.0)
    # Nothing changed: nothing read again.
    assert store.materialize_online(["stats"], end_ts="2013-03-20") == {"stats": 0}
    assert _last_refresh(store, "stats") == "incremental: rows after 2013-03-20 00:00:00+00:00"
    # And back to an earlier instant, which an incremental run refuses.
    store.materialize_online(["stats"], end_ts="2013-03-10", full_refresh=True)
    assert _last_refresh(store, "stats") == "rebuilt: full refresh asked"
    earlier = pd.Timestamp("2013-03-10", tz="UTC")
    online = store.get_online_features(entities, ["stats:delay", "stats:share"])
    pd.testing.assert_frame_equal(online[["delay", "share"]], _offline_at(store, entities, earlier)[["delay", "share"]])


def _last_refresh(store: FeatureStore, view: str) -> str | None:
    """How the last materialization refreshed ``view`` (as the online_features asset shows it)."""
    with store.online.connect() as lite:
        return store.online.last_refresh(lite, store.views[view])


def test_online_file_is_wal_and_readable_while_written(store, tmp_path):
    store.materialize_online(["stats"], end_ts="2013-03-20")
    reader = sqlite3.connect(tmp_path / "online.sqlite")
    assert reader.execute("pragma journal_mode").fetchall()[0][0] == "wal"
    reader.execute("begin")
    before = reader.execute('select count(*) from "fv__stats"').fetchall()[0][0]
    store.materialize_online(["stats"], end_ts="2013-03-25")  # writes while a reader holds a snapshot
    assert reader.execute('select count(*) from "fv__stats"').fetchall()[0][0] == before
    reader.close()


_RACE = """
import multiprocessing, sqlite3, sys
from pathlib import Path
from mlops_pipelines.features.online import OnlineStore

def connect_each(folder, rounds, barrier, failures):
    for i in range(rounds):
        barrier.wait()
        try:
            with OnlineStore(Path(folder) / f"s{i}.sqlite").connect():
                pass
        except sqlite3.OperationalError as exc:
            failures.put(f"round {i}: {exc}")
    failures.put(None)

if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    barrier, failures = context.Barrier(2), context.Queue()
    workers = [context.Process(target=connect_each, args=(sys.argv[1], int(sys.argv[2]), barrier, failures))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    found, done = [], 0
    while done < 2:
        item = failures.get()
        done, found = (done + 1, found) if item is None else (done, found + [item])
    for worker in workers:
        worker.join()
    print(len(found), found[:3])
"""


def test_two_processes_opening_a_new_store_at_once_both_get_it(tmp_path):
    """The first connection to a new file switches it to WAL mode; two at once (the first
    materialization beside a serving process already polling) deadlocked, and SQLite failed one
    at once with "database is locked", its 30 s busy timeout notwithstanding: 15 to 38 of 300
    connections failed. Here 2 processes x 60 new files, connecting together."""
    script = tmp_path / "race.py"
    script.write_text(_RACE)
    (tmp_path / "stores").mkdir()
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "stores"), "60"], capture_output=True,
                          text=True, timeout=300, check=True)
    assert done.stdout.strip() == "0 []", done.stdout + done.stderr
    assert len(list((tmp_path / "stores").glob("*.sqlite"))) == 60
    assert sqlite3.connect(tmp_path / "stores" / "s0.sqlite").execute("pragma journal_mode").fetchall() == [("wal",)]


def test_the_registry_listing_shows_as_of_when_each_view_is_served_online(store, tmp_path):
    """`mlops features list` showed when a view's table was built ("never" for one applied from
    Python, even once materialized online); the last column is now the instant the online store
    serves it as of, or that it holds another declaration's rows."""
    store.apply(FeatureView("applied", "stats", ("carrier", "origin"), "ts", (Feature("delay"),)))
    assert [row[-1] for row in store.registry()] == ["-"]  # (applied: in the registry; nothing online yet)
    store.materialize_online(["stats", "applied"], end_ts="2013-03-20")
    assert store.online_as_of() == {"stats": "2013-03-20 00:00:00+00:00", "applied": "2013-03-20 00:00:00+00:00"}
    assert [(row[0], row[-1]) for row in store.registry()] == [("applied", "2013-03-20 00:00:00+00:00")]
    edited = FeatureStore(store.database_path, [FeatureView("stats", "stats", ("carrier", "origin"), "ts",
                                                            (Feature("delay"),), ttl=timedelta(days=1))],
                          online_path=tmp_path / "online.sqlite")
    assert edited.online_as_of() == {"stats": "stale: another declaration", "applied": "2013-03-20 00:00:00+00:00"}
    # Rows of this declaration that an earlier version of the store wrote (other serving rules):
    # not "another declaration", as the lookup says too.
    with sqlite3.connect(store.online.path) as lite:
        lite.execute("update _materializations set version = ? where view = 'stats'",
                     [f"{store.views['stats'].serving_version}.1"])
    assert store.online_as_of()["stats"] == "stale: an earlier version of the store wrote it"
    with pytest.raises(LookupError, match="its rows were written by an earlier version of the store"):
        store.get_online_features({"carrier": ["UA"], "origin": ["JFK"]}, ["stats:delay"])
    assert FeatureStore(store.database_path, online_path=tmp_path / "absent.sqlite").online_as_of() == {}


def test_online_rows_keep_caller_order_and_dict_input(store):
    store.materialize_online(["stats"], end_ts="2013-03-31")
    rows = [{"carrier": "UA", "origin": "JFK"}, {"carrier": "ZZ", "origin": "JFK"},
            {"carrier": "UA", "origin": "JFK"}]
    out = store.get_online_features(rows, ["stats:delay"])
    assert out["carrier"].tolist() == ["UA", "ZZ", "UA"]
    assert pd.isna(out["delay"][1]) and out["delay"][0] == out["delay"][2]
    # Without the record of its rows' types (deleted by hand: every run writes it), a lookup is
    # refused rather than matching keys uncast, and the next run, even incremental, rebuilds it.
    with sqlite3.connect(store.online.path) as lite:
        assert lite.execute("delete from _schemas").rowcount == 1
    with pytest.raises(LookupError, match=r"feature view 'stats' \(version \w+\): the online store .* has no "
                                          r"record of its rows' types.*materialize_online\(\) rebuilds"):
        store.get_online_features(rows, ["stats:delay"])
    store.materialize_online(["stats"], end_ts="2013-03-31")
    with sqlite3.connect(store.online.path) as lite:
        assert lite.execute("select refresh from _refreshes").fetchall() == [
            ("rebuilt: the types of its rows were not recorded",)]
    again = store.get_online_features(rows, ["stats:delay"])
    assert again["delay"].tolist()[::2] == out["delay"].tolist()[::2] and pd.isna(again["delay"][1])


def test_reading_a_view_never_materialized_is_an_error(store):
    store.materialize_online(["stats"], end_ts="2013-03-31")
    store.register(FeatureView("other", "stats", ("carrier",), "ts", (Feature("delay"),)))
    with pytest.raises(LookupError, match="'other'.*is not materialized online"):
        store.get_online_features([{"carrier": "AA"}], ["other:delay"])


def test_ties_pick_the_same_row_whatever_is_asked(tmp_path):
    """Rows tied on event and created timestamps are decided by all the view's features in their
    declared order, not by those asked for: asking for one feature, for both, or the online store
    gives values of the same row."""
    database = tmp_path / "ties.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute("""create table t as select * from (values
            ('AA', '2013-03-01 10:00+00'::timestamptz, 2.0::double, 0.1::double),
            ('AA', '2013-03-01 10:00+00'::timestamptz, 1.0, 0.9),   -- smallest delay: wins
            ('UA', '2013-03-01 10:00+00'::timestamptz, NULL, 0.0),  -- NULL delay: loses
            ('UA', '2013-03-01 10:00+00'::timestamptz, 5.0, 0.7)
        ) v(carrier, ts, delay, share)""")
    fs = FeatureStore(database, online_path=tmp_path / "online.sqlite")
    fs.register(FeatureView("t", "t", ("carrier",), "ts", (Feature("delay"), Feature("share"))))
    entities = pd.DataFrame({"carrier": ["AA", "UA"], "event_timestamp": pd.Timestamp("2013-03-01 11:00", tz="UTC")})
    share_alone = fs.get_historical_features(entities, ["t:share"])["share"].tolist()
    both = fs.get_historical_features(entities, ["t:delay", "t:share"])
    fs.materialize_online(["t"], end_ts=pd.Timestamp("2013-03-01 11:00", tz="UTC"))
    online = fs.get_online_features([{"carrier": "AA"}, {"carrier": "UA"}], ["t:share"])
    assert share_alone == both["share"].tolist() == online["share"].tolist() == [0.9, 0.7]
    assert both["delay"].tolist() == [1.0, 5.0]


def test_decimal_features_are_served_as_doubles(tmp_path):
    database = tmp_path / "decimal.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute("create table d as select 'AA' as carrier, '2013-03-01 10:00+00'::timestamptz as ts, "
                    "12.1::decimal(6, 2) as delay")
    fs = FeatureStore(database, online_path=tmp_path / "online.sqlite")
    fs.register(FeatureView("d", "d", ("carrier",), "ts", (Feature("delay"),)))
    assert fs.materialize_online(["d"], end_ts=pd.Timestamp("2013-03-01 11:00", tz="UTC")) == {"d": 1}
    assert fs.get_online_features([{"carrier": "AA"}], ["d:delay"])["delay"].tolist() == [12.1]
    # Offline too: DOUBLE, so that both paths give the same number (Decimal("12.1") != 12.1).
    entities = pd.DataFrame({"carrier": ["AA", "UA"],
                             "event_timestamp": [pd.Timestamp("2013-03-01 11:00", tz="UTC")] * 2})
    offline = fs.get_historical_features(entities, ["d:delay"])["delay"]
    assert offline.dtype == np.float64 and offline.iloc[0] == 12.1 and np.isnan(offline.iloc[1])


def test_features_of_every_type_are_served_online_as_offline(tmp_path):
    """Booleans, dates, timestamps with and without zone, times, intervals, lists, structs, maps,
    ENUMs, blobs, small ints, floats, NaN: the same values and dtypes on both paths, after a
    first and an incremental materialization."""
    database = tmp_path / "types.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute("""create table t as select * from (values
            (1, timestamptz '2024-01-01 00:00:00+00', true, date '2024-01-02', timestamp '2024-01-01 10:00:00',
             timestamptz '2024-01-01 10:00:00+00', [1.5, 2.0]::double[], {'a': 1, 'b': 'x'}, 'x'::enum('x', 'y'),
             'ab'::blob, 7::smallint, 1.5::float, interval 3 day, time '10:00:00', 'nan'::double,
             map([1], ['a'])),
            (2, timestamptz '2024-01-01 00:00:00+00', false, null, null, null, [], null, 'y', null, null, null,
             null, null, null, null),
            (1, timestamptz '2024-01-05 00:00:00+00', false, date '1900-03-04', timestamp '2262-05-01 00:00:00',
             timestamptz '1969-12-31 23:59:59.999999+00', [null, -0.5]::double[], {'a': null, 'b': null}, 'y',
             '\\x00'::blob, (-32768)::smallint, -2.25::float, interval 14 month, time '23:59:59.999999', 1e308,
             map([2, 3], ['b', null]))
        ) v(id, ts, b, d, tsn, tsz, l, s, e, bl, si, f4, iv, tm, x, m)""")
    names = ["b", "d", "tsn", "tsz", "l", "s", "e", "bl", "si", "f4", "iv", "tm", "x", "m"]
    fs = FeatureStore(database, online_path=tmp_path / "online.sqlite")
    fs.register(FeatureView("t", "t", ("id",), "ts", tuple(Feature(n) for n in names)))
    entities = pd.DataFrame({"id": [2, 1, 3, 1]})
    for end in ("2024-01-02", "2024-01-06"):
        fs.materialize_online(["t"], end_ts=end)
        online = fs.get_online_features(entities, [f"t:{n}" for n in names])
        offline = fs.get_historical_features(entities.assign(event_timestamp=pd.Timestamp(end, tz="UTC")),
                                             [f"t:{n}" for n in names])
        for name in names:
            pd.testing.assert_series_equal(online[name], offline[name], obj=f"{name} at {end}")
    assert online["tsn"].iloc[1] == pd.Timestamp("2262-05-01") and online["d"].iloc[1].isoformat() == "1900-03-04"
    assert online["tsz"].iloc[1] == pd.Timestamp("1969-12-31 23:59:59.999999", tz="UTC")
    assert list(online["l"].iloc[1][1:]) == [-0.5] and online["e"].tolist()[:2] == ["y", "y"]
    assert online["x"].iloc[1] == 1e308 and online["bl"].iloc[1] == b"\x00" and online["si"].iloc[1] == -32768


def test_keys_sqlite_cannot_hold_as_they_are_are_served(tmp_path):
    """UUID, HUGEINT, UBIGINT above 2**63, DECIMAL and timestamp keys: the online store answers
    for them as the offline store does, whichever Python type the caller looks them up with."""
    database = tmp_path / "keys.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute(
            "create table k as select "
            "('00000000-0000-0000-0000-00000000000' || i::varchar)::uuid as u, "
            "(i::hugeint * 10000000000000000000000) as h, (18446744073709551610 + i)::ubigint as ub, "
            "(i + 0.5)::decimal(6, 2) as d, ('2013-03-0' || (i + 1)::varchar || ' 10:00+00')::timestamptz as t, "
            "'2013-03-01 10:00+00'::timestamptz + to_minutes(i) as ts, i::double as x from range(1, 4) r(i)"
        )
    fs = FeatureStore(database, online_path=tmp_path / "online.sqlite")
    for key in ("u", "h", "ub", "d", "t"):
        fs.register(FeatureView(f"by_{key}", "k", (key,), "ts", (Feature("x"),)))
    views = [f"by_{key}" for key in ("u", "h", "ub", "d", "t")]
    end = pd.Timestamp("2013-03-02", tz="UTC")
    assert fs.materialize_online(views, end_ts=end) == {v: 3 for v in views}
    rows = pd.DataFrame({
        "u": [uuid.UUID("00000000-0000-0000-0000-000000000002"), "00000000-0000-0000-0000-000000000003", None],
        "h": [20_000_000_000_000_000_000_000, 30_000_000_000_000_000_000_000, 4],
        "ub": [np.uint64(18446744073709551612), 18446744073709551613, 7],
        "d": [decimal.Decimal("2.50"), decimal.Decimal("3.5"), decimal.Decimal("9")],
        # The same instants as 2013-03-03 and 2013-03-04 10:00 UTC, in another zone.
        "t": pd.to_datetime(["2013-03-03 05:00", "2013-03-04 05:00", "2013-03-09 05:00"]).tz_localize(
            "America/New_York"),
    })
    for key in ("u", "h", "ub", "d", "t"):
        online = fs.get_online_features(rows, [f"by_{key}:x"])["x"].tolist()
        assert online[:2] == [2.0, 3.0] and pd.isna(online[2]), key
        offline = fs.get_historical_features(rows.assign(event_timestamp=end), [f"by_{key}:x"])["x"]
        assert offline.iloc[:2].tolist() == [2.0, 3.0] and offline.iloc[2:].isna().all(), key


def test_128_bit_integers_keep_every_value_as_keys_and_features(tmp_path):
    """DuckDB hands HUGEINT and UHUGEINT over as the bits of a DECIMAL(38, 0): a 39-digit HUGEINT
    key matched nothing (given as an integer) or was an error (as text), and a UHUGEINT above
    2**127 - 1 read as negative, so entity key -1 found the row of 2**128 - 1 and its feature
    2**128 - 1 was served as -1.0, offline and online."""
    huge, top = 10**38 + 7, 2**127 - 1
    fs = _sql_store(
        tmp_path,
        [FeatureView("h", "t", "h", "ts", (Feature("u"),)), FeatureView("u", "t", "u", "ts", (Feature("h"),))],
        f"""create table t as select * from (values
            ({huge}::hugeint, {2**128 - 1}::uhugeint, timestamp '2024-01-01'),
            ('{-(2**127)}'::hugeint, {2**127}::uhugeint, timestamp '2024-01-01'),
            ({top}::hugeint, 5::uhugeint, timestamp '2024-01-01')) v(h, u, ts)""")
    fs.materialize_online(end_ts="2024-01-02")
    at = pd.Timestamp("2024-01-02", tz="UTC")
    cases = {  # entity keys -> features served, for the HUGEINT key and for the UHUGEINT key
        "h": ([huge, str(huge), -(2**127), str(top), 2**128 - 1, 2**200, -1],
              [2.0**128, 2.0**128, 2.0**127, 5.0, None, None, None]),
        "u": ([2**128 - 1, str(2**127), -1, 5, 2**128, -(2**127), 0],
              [float(huge), -(2.0**127), None, float(top), None, None, None]),
    }
    for key, (keys, expected) in cases.items():
        feature = "u" if key == "h" else "h"
        entities = pd.DataFrame({key: pd.Series(keys, dtype=object)})
        offline = fs.get_historical_features(entities.assign(event_timestamp=at), [f"{key}:{feature}"])[feature]
        online = fs.get_online_features(entities, [f"{key}:{feature}"])[feature]
        for served in (offline, online):
            assert [None if pd.isna(v) else v for v in served] == expected, key
    # On the Arrow path the training sets take, features are the same doubles (DuckDB, which
    # builds the training set, cannot read Arrow's DECIMAL(39, 0) back: it failed there).
    with duckdb.connect(fs.database_path, read_only=True) as con:
        rows = entity_rows({"h": pd.Series([huge, top], dtype=object)}, pd.Series([at, at]))
        arrow = fs.join_features(con, rows, {"h": ["u"]}, full_feature_names=False)
        assert con.from_arrow(arrow).fetchall() == [(2.0**128,), (5.0,)]
        # Entity keys as DuckDB hands them over (a UHUGEINT above 2**127 - 1 as a negative
        # DECIMAL(38, 0)) are mended as the view's are, offline and online.
        keys = con.sql(f"select * from (values ({2**128 - 1}::uhugeint), (5::uhugeint)) v(u)").to_arrow_table()
    assert keys.column("u").to_pylist()[0] == -1  # (what DuckDB's Arrow gives)
    offline = fs.get_historical_features(keys.append_column("event_timestamp", pa.array([at, at])), ["u:h"])
    assert offline["h"].tolist() == [float(huge), float(top)]
    assert fs.get_online_features(keys, ["u:h"])["h"].tolist() == [float(huge), float(top)]


def test_unsigned_128_bit_integers_inside_a_feature_value_are_refused_by_name(tmp_path):
    """Inside a list DuckDB's UHUGEINT still arrives as signed bits (2**128 - 1 as -1); the store
    cannot mend it there, so it asks for a cast rather than serving -1."""
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("l"),))],
                    f"create table t as select 1 as k, timestamp '2024-01-01' as ts, [{2**128 - 1}::uhugeint] as l")
    entities = pd.DataFrame({"k": [1], "event_timestamp": pd.Timestamp("2024-01-02", tz="UTC")})
    def arrow():  # the path of training sets
        with duckdb.connect(fs.database_path, read_only=True) as con:
            rows = entity_rows({"k": entities["k"]}, entities["event_timestamp"])
            return fs.join_features(con, rows, {"v": ["l"]}, full_feature_names=False)

    for run in (lambda: fs.get_historical_features(entities, ["v:l"]), lambda: fs.materialize_online(), arrow):
        with pytest.raises(ValueError, match=r"feature view 'v': feature 'l' is UHUGEINT\[\] holding a UHUGEINT, "
                                             "which the store does not serve inside a value: cast it"):
            run()


def test_unsigned_features_beyond_sqlite_integers_are_refused_by_name(tmp_path):
    database = tmp_path / "ubig.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("create table b as select 'AA' as carrier, '2013-03-01 10:00+00'::timestamptz as ts, "
                    "18446744073709551615::ubigint as big")
    fs = FeatureStore(database, online_path=tmp_path / "online.sqlite")
    fs.register(FeatureView("b", "b", ("carrier",), "ts", (Feature("big"),)))
    with pytest.raises(ValueError, match=r"feature view 'b'.*'big'.*18446744073709551615.*64-bit"):
        fs.materialize_online(["b"], end_ts=pd.Timestamp("2013-03-02", tz="UTC"))


def test_lookups_cast_keys_to_the_view_key_type_as_the_offline_join_does(tmp_path):
    """Online lookups cast keys to the view's key type first, as get_historical_features does: an
    instant given as ISO text, an id as text or a float, a date as a midnight timestamp find their
    row; a value the key type cannot hold (1.5 as BIGINT, 1.106 as DECIMAL(10, 2), 10:00 as a DATE)
    finds none, on both paths, as do nanosecond timestamps off the key's own instant."""
    database = tmp_path / "cast.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute("create type size as enum ('small', 'large')")
        con.execute(
            "create table k as select i::bigint as n, ('2013-03-0' || i::varchar)::date as d, "
            "('2013-03-0' || i::varchar || ' 10:00+00')::timestamptz as t, "
            "(i + 0.11)::decimal(10, 2) as m, ('0.1000000000000000000' || i::varchar)::decimal(38, 20) as fine, "
            "(['small', 'large'])[i]::size as e, "
            "case i when 1 then '9999-12-31'::timestamp else '2013-01-01'::timestamp end as far, "
            "('2013-03-01 10:00:00.00000000' || i::varchar)::timestamp_ns as ns, "
            "case i when 1 then '-0.0'::double else 2.5 end as z, "
            "('6ba7b810-9dad-11d1-80b4-00c04fd430c' || i::varchar)::uuid as u, "
            "'2013-03-01 10:00+00'::timestamptz as ts, i::double as x from range(1, 3) r(i)"
        )
    fs = FeatureStore(database, online_path=tmp_path / "online.sqlite")
    keys = ("n", "d", "t", "m", "fine", "e", "far", "ns", "z", "u")
    for key in keys:
        fs.register(FeatureView(f"by_{key}", "k", (key,), "ts", (Feature("x"),)))
    end = pd.Timestamp("2013-03-02", tz="UTC")
    assert fs.materialize_online([f"by_{key}" for key in keys], end_ts=end) == {f"by_{key}": 2 for key in keys}
    cases = {  # key: (lookups, expected x)
        "n": (["2", 1.0, 1.5], [2.0, 1.0, None]),
        "d": ([pd.Timestamp("2013-03-02"), "2013-03-01", pd.Timestamp("2013-03-01 10:00")], [2.0, 1.0, None]),
        "t": (["2013-03-02T05:00:00-05:00", "2013-03-01T10:00:00Z", "2013-03-01T10:00:01Z"], [2.0, 1.0, None]),
        "m": ([2.11, decimal.Decimal("1.110"), 1.106], [2.0, 1.0, None]),
        "fine": ([decimal.Decimal("0.10000000000000000002"), decimal.Decimal("0.10000000000000000001"),
                  decimal.Decimal("0.1")], [2.0, 1.0, None]),
        "e": (["large", "small", "medium"], [2.0, 1.0, None]),
        "far": ([pd.Timestamp("2013-01-01"), datetime(9999, 12, 31), datetime(9999, 12, 30)], [2.0, 1.0, None]),
        # Keys one nanosecond apart stay apart; -0.0 and 0.0 are one key (as in SQL).
        "ns": ([pd.Timestamp("2013-03-01 10:00:00.000000002"), "2013-03-01 10:00:00.000000001",
                pd.Timestamp("2013-03-01 10:00")], [2.0, 1.0, None]),
        "z": ([2.5, 0.0, -0.0], [2.0, 1.0, 1.0]),
        # UUID text in the spellings DuckDB reads as the same UUID: upper case, braces, no hyphens.
        "u": (["6BA7B810-9DAD-11D1-80B4-00C04FD430C2", "{6ba7b8109dad11d180b400c04fd430c1}",
               "6ba7b810-9dad-11d1-80b4-00c04fd430c3"], [2.0, 1.0, None]),
    }
    for key, (lookups, expected) in cases.items():
        rows = pd.DataFrame({key: pd.Series(lookups, dtype=object)})
        online = fs.get_online_features(rows, [f"by_{key}:x"])["x"].tolist()
        offline = fs.get_historical_features(rows.assign(event_timestamp=end), [f"by_{key}:x"])["x"].tolist()
        assert [None if pd.isna(v) else v for v in online] == expected, (key, online)
        assert [None if pd.isna(v) else v for v in offline] == expected, (key, offline)
    # An Arrow table whose key column is of Arrow's UUID type (pandas would get raw bytes).
    import pyarrow as pa

    arrow_uuids = pa.table({"u": pa.array([uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c2").bytes, None],
                                          pa.uuid())})
    assert fs.get_online_features(arrow_uuids, ["by_u:x"])["x"].fillna(-1).tolist() == [2.0, -1]
    offline = fs.get_historical_features(arrow_uuids.append_column("event_timestamp", pa.array([end, end])),
                                         ["by_u:x"])
    assert offline["x"].fillna(-1).tolist() == [2.0, -1]
    # Text that is no UUID is refused on both paths, as DuckDB's cast refuses it.
    not_uuid = pd.DataFrame({"u": ["6ba7b810-9dad-11d1-80b4-00c04fd430c1", "6ba7b810-nope"]})
    with pytest.raises(ValueError, match=r"join key 'u'.*'6ba7b810-nope' \(row 1 .*not a UUID"):
        fs.get_online_features(not_uuid, ["by_u:x"])
    with pytest.raises(ValueError, match=r"join key 'u'.*'6ba7b810-nope' \(row 1 .*not a UUID"):
        fs.get_historical_features(not_uuid.assign(event_timestamp=end), ["by_u:x"])


def test_online_rows_as_dicts_lists_or_empty_and_columns_in_the_order_asked(store):
    store.materialize_online("stats", end_ts="2013-03-31")
    rows = [{"carrier": "UA", "origin": "JFK"}, {"carrier": "AA", "origin": "EWR"}]
    as_dicts = store.get_online_features(rows, ["stats:share", "stats:delay"])
    assert list(as_dicts.columns) == ["carrier", "origin", "share", "delay"]
    as_lists = store.get_online_features({"carrier": ["UA", "AA"], "origin": ["JFK", "EWR"]},
                                         ["stats:share", "stats:delay"])
    pd.testing.assert_frame_equal(as_lists, as_dicts)
    empty = store.get_online_features([], "stats:delay")
    assert len(empty) == 0 and list(empty.columns) == ["carrier", "origin", "delay"]
    with pytest.raises(KeyError, match=r"entity row 1 lacks join keys \['origin'\]"):
        store.get_online_features([{"carrier": "UA", "origin": "JFK"}, {"carrier": "AA"}], ["stats:delay"])
    with pytest.raises(ValueError, match=r"entity columns \['delay'\] have the names of requested features"):
        store.get_online_features([{"carrier": "UA", "origin": "JFK", "delay": 1.0}], ["stats:delay"])


def test_a_failed_materialization_changes_nothing(store):
    """All the views of one call change together: a refusal for one leaves the others as they were
    (and a new version replaces the old one in the same transaction, never an empty table first)."""
    store.register(FeatureView("later", "stats", ("carrier", "origin"), "ts", (Feature("share"),)))
    store.materialize_online(["stats"], end_ts="2013-03-10")
    store.materialize_online(["later"], end_ts="2013-03-20")
    rows = [{"carrier": "UA", "origin": "JFK"}]
    before = store.get_online_features(rows, ["stats:delay"])
    # 'later' would go back in time: 'stats', listed first, must not move to 2013-03-15.
    with pytest.raises(ValueError, match="'later' is materialized up to 2013-03-20.*back in time"):
        store.materialize_online(["stats", "later"], end_ts="2013-03-15")
    pd.testing.assert_frame_equal(store.get_online_features(rows, ["stats:delay"]), before)
    with sqlite3.connect(store.online.path) as lite:
        marks = dict(lite.execute("select view, watermark_us from _materializations").fetchall())
    assert marks["stats"] == int(pd.Timestamp("2013-03-10", tz="UTC").value // 1000)
    # A new version whose source fails to read: the old version's table and rows are still there.
    store.register(FeatureView("stats", "no_such_table", ("carrier", "origin"), "ts", (Feature("delay"),)))
    with pytest.raises(ValueError, match="feature view 'stats': reading no_such_table"):
        store.materialize_online(["stats"], end_ts="2013-03-31")
    with sqlite3.connect(store.online.path) as lite:
        assert lite.execute('select count(*) from "fv__stats"').fetchall()[0][0] == 15  # 5 carriers x 3 origins


def test_a_view_without_rows_is_materialized_as_empty(tmp_path):
    database = tmp_path / "empty.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("create table a (k bigint, ts timestamp, x double)")
        con.execute("create table b (k bigint, ts timestamp, y double)")
        con.execute("insert into b values (1, '2024-01-01', 5.0)")
    fs = FeatureStore(database, online_path=tmp_path / "online.sqlite")
    fs.register(FeatureView("a", "a", ("k",), "ts", (Feature("x"),)))
    fs.register(FeatureView("b", "b", ("k",), "ts", (Feature("y"),)))
    assert fs.materialize_online() == {"a": 0, "b": 1}
    out = fs.get_online_features([{"k": 1}], ["b:y", "a:x"])
    assert out["y"].tolist() == [5.0] and out["x"].isna().all()
    # Its first rows arrive later: the next materialization reads them all.
    with duckdb.connect(str(database)) as con:
        con.execute("insert into a values (1, '2023-06-01', 3.0)")
    assert fs.materialize_online("a") == {"a": 1}
    assert fs.get_online_features([{"k": 1}], "a:x")["x"].tolist() == [3.0]


def test_online_ttl_boundary_is_inclusive_for_ttls_of_fractional_seconds(tmp_path):
    """1.001 s is 1,000,999.999... microseconds in floating point: the boundary row must still be served."""
    database = tmp_path / "ttl.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("create table a as select 1 as k, timestamp '2024-01-01 00:00:00' as ts, 1.0 as x")
    fs = FeatureStore(database, online_path=tmp_path / "online.sqlite")
    fs.register(FeatureView("a", "a", ("k",), "ts", (Feature("x"),), ttl=timedelta(seconds=1, milliseconds=1)))
    end = pd.Timestamp("2024-01-01 00:00:01.001", tz="UTC")
    fs.materialize_online("a", end_ts=end)
    assert fs.get_online_features([{"k": 1}], "a:x")["x"].tolist() == [1.0]
    assert fs.get_historical_features(pd.DataFrame({"k": [1], "event_timestamp": [end]}), "a:x")["x"].tolist() == [1.0]
    with pytest.raises(ValueError, match="end_ts NaT is not an instant"):
        fs.materialize_online("a", end_ts=pd.NaT)


def _sql_store(tmp_path, views: list[FeatureView], *statements: str) -> FeatureStore:
    """A store over a warehouse built by ``statements`` (DuckDB SQL: tables of types pandas could
    not carry over, ENUMs, TIMESTAMP_NS...), with an online store beside it."""
    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as con:
        for statement in statements:
            con.execute(statement)
    return FeatureStore(database, views, online_path=tmp_path / "online.sqlite")


def _tiny_store(tmp_path, frame: pd.DataFrame, views: list[FeatureView]) -> FeatureStore:
    database = tmp_path / "tiny.duckdb"
    with duckdb.connect(str(database)) as con:
        con.register("frame", frame)
        con.execute("create table t as select * from frame")
    return FeatureStore(database, views, online_path=tmp_path / "online.sqlite")


def test_a_lookup_sees_one_state_of_the_store_while_a_materialization_commits(tmp_path, monkeypatch):
    """A materialization that commits while a lookup reads is seen whole or not at all, across
    views too: the lookup used to read the watermark and the rows in separate statements."""
    from mlops_pipelines.features import online

    start = pd.Timestamp("2024-01-01", tz="UTC")
    frame = pd.DataFrame({"k": ["a", "b"], "ts": [start, start + pd.Timedelta(hours=2)], "x": [1.0, 2.0]})
    fs = _tiny_store(tmp_path, frame, [FeatureView(v, "t", "k", "ts", (Feature("x"),), ttl=timedelta(hours=1))
                                       for v in ("va", "vb")])
    rows = {"k": ["a", "b"]}
    refs = ["va:x", "vb:x"]
    fs.materialize_online(end_ts=start + pd.Timedelta(minutes=30))
    old = fs.get_online_features(rows, refs, full_feature_names=True)
    real_read_rows = online.read_rows

    def read_rows_while_a_writer_commits(*args, **kwargs):
        monkeypatch.setattr(online, "read_rows", real_read_rows)
        fs.materialize_online(end_ts=start + pd.Timedelta(hours=2, minutes=30))  # a real write, committed now
        return real_read_rows(*args, **kwargs)

    monkeypatch.setattr(online, "read_rows", read_rows_while_a_writer_commits)
    during = fs.get_online_features(rows, refs, full_feature_names=True)
    pd.testing.assert_frame_equal(during, old)
    new = fs.get_online_features(rows, refs, full_feature_names=True)
    for view in ("va__x", "vb__x"):  # a's row expired by the second instant, b's arrived
        assert old[view].fillna(-1).tolist() == [1.0, -1] and new[view].fillna(-1).tolist() == [-1, 2.0]


def test_instants_beyond_pandas_nanosecond_range_and_nanosecond_end_ts(tmp_path):
    """end_ts in 2300, and the default end_ts of a view whose latest event is 9999-12-31, used
    to overflow pandas' nanoseconds; an end_ts with nanoseconds is refused (the store keeps
    microseconds, and the TTL bound would move)."""
    frame = pd.DataFrame({"k": ["a", "b"], "ts": pd.to_datetime(["2013-01-01", "9999-12-31"]).as_unit("us"),
                          "x": [1.0, 2.0]})
    fs = _tiny_store(tmp_path, frame, [FeatureView("v", "t", "k", "ts", (Feature("x"),))])
    rows = pd.DataFrame({"k": ["a", "b"]})
    for end in (datetime(2300, 1, 1), None):
        fs.materialize_online(end_ts=end, full_refresh=True)
        online = fs.get_online_features(rows, ["v:x"])["x"].tolist()
        assert online[0] == 1.0 and (pd.isna(online[1]) if end else online[1] == 2.0), end
    with pytest.raises(ValueError, match="end_ts .* has nanoseconds: give it to the microsecond"):
        fs.materialize_online(end_ts=pd.Timestamp("2024-01-01 00:00:00.000000500"))
    for bad in ("now", "soon"):
        with pytest.raises(ValueError, match=f"end_ts '{bad}' is not an instant"):
            fs.materialize_online(end_ts=bad)


def test_online_dtypes_equal_offline_when_every_value_is_null(tmp_path):
    at = pd.Timestamp("2024-01-01", tz="UTC")
    frame = pd.DataFrame({"k": ["a"], "ts": [at], "s": ["text"], "when_": [at]})
    fs = _tiny_store(tmp_path, frame, [FeatureView("v", "t", "k", "ts", (Feature("s"), Feature("when_")))])
    fs.materialize_online(end_ts=at)
    for keys in (["zz"], []):
        online = fs.get_online_features(pd.DataFrame({"k": pd.Series(keys, dtype=object)}), ["v:s", "v:when_"])
        offline = fs.get_historical_features(pd.DataFrame({"k": pd.Series(keys, dtype=object), "event_timestamp": at}),
                                             ["v:s", "v:when_"])
        assert online.dtypes[["s", "when_"]].tolist() == offline.dtypes[["s", "when_"]].tolist(), keys


def test_a_source_whose_types_change_is_materialized_again_from_the_start(tmp_path):
    """Same declaration, new column types (BIGINT key and feature become text): an incremental
    run used to keep the old rows under integer keys, and served them as the wrong type."""
    at = pd.Timestamp("2024-01-01", tz="UTC")
    fs = _tiny_store(tmp_path, pd.DataFrame({"k": [1, 2], "ts": [at, at], "x": [10, 20]}),
                     [FeatureView("v", "t", "k", "ts", (Feature("x"),))])
    fs.materialize_online(end_ts=at)
    with duckdb.connect(fs.database_path) as con:
        con.execute("create or replace table t as select k::varchar as k, ts, x::varchar as x from t")
        con.execute("insert into t values ('2', ?, 'twenty-one')", [at + pd.Timedelta(hours=1)])
    end = at + pd.Timedelta(hours=2)
    fs.materialize_online(end_ts=end)
    rows = pd.DataFrame({"k": ["1", "2"]})
    online = fs.get_online_features(rows, ["v:x"])["x"].tolist()
    offline = fs.get_historical_features(rows.assign(event_timestamp=end), ["v:x"])["x"].tolist()
    assert online == offline == ["10", "twenty-one"]


def test_views_whose_names_differ_only_in_case_keep_their_own_rows(tmp_path):
    at = pd.Timestamp("2024-01-01", tz="UTC")
    frame = pd.DataFrame({"k": ["a", "b"], "ts": [at, at], "x": [1.0, 2.0]})
    fs = _tiny_store(tmp_path, frame, [FeatureView("Stats", "(select * from t where k = 'a')", "k", "ts",
                                                   (Feature("x"),)),
                                       FeatureView("stats", "(select * from t where k = 'b')", "k", "ts",
                                                   (Feature("x"),))])
    fs.materialize_online(end_ts=at)
    rows = {"k": ["a", "b"]}
    assert fs.get_online_features(rows, ["Stats:x"])["x"].tolist()[0] == 1.0
    assert fs.get_online_features(rows, ["stats:x"])["x"].tolist()[1] == 2.0
    assert fs.get_online_features(rows, ["Stats:x"])["x"].isna().tolist() == [False, True]


def test_entity_rows_in_other_forms_are_read_or_refused_by_name(tmp_path):
    at = pd.Timestamp("2024-01-01", tz="UTC")
    fs = _tiny_store(tmp_path, pd.DataFrame({"k": ["a", "b", "ab"], "ts": [at] * 3, "x": [1.0, 2.0, 3.0]}),
                     [FeatureView("v", "t", "k", "ts", (Feature("x"),))])
    fs.materialize_online(end_ts=at)
    import pyarrow as pa

    assert fs.get_online_features(pa.table({"k": ["ab", "a"]}), ["v:x"])["x"].tolist() == [3.0, 1.0]
    # A text value in the dict-of-lists form was split into its letters (two rows, 'a' and 'b').
    with pytest.raises(TypeError, match="a list of values per key; 'k' has 'ab'"):
        fs.get_online_features({"k": "ab"}, ["v:x"])
    with pytest.raises(TypeError, match="a list of values per key; 'k' has 5"):
        fs.get_online_features({"k": 5}, ["v:x"])
    with pytest.raises(TypeError, match="entity rows must be a list of dicts, .* not NoneType"):
        fs.get_online_features(None, ["v:x"])


def test_the_default_run_after_an_explicit_later_end_ts_has_nothing_to_do(tmp_path):
    """The asset's default end_ts (each view's latest event) used to be refused as going back in
    time once someone had materialized up to a later instant, until new data passed it."""
    at = pd.Timestamp("2024-01-01", tz="UTC")
    fs = _tiny_store(tmp_path, pd.DataFrame({"k": ["a"], "ts": [at], "x": [1.0]}),
                     [FeatureView("v", "t", "k", "ts", (Feature("x"),), ttl=timedelta(days=2))])
    fs.materialize_online(end_ts=at + pd.Timedelta(days=1))
    assert fs.materialize_online() == {"v": 0}
    assert fs.get_online_features({"k": ["a"]}, ["v:x"])["x"].tolist() == [1.0]
    with duckdb.connect(fs.database_path) as con:
        con.execute("insert into t values ('a', ?, 2.0)", [at + pd.Timedelta(days=3)])
    assert fs.materialize_online() == {"v": 1}
    assert fs.get_online_features({"k": ["a"]}, ["v:x"])["x"].tolist() == [2.0]
    with pytest.raises(ValueError, match="would go back in time"):  # an explicit earlier end_ts still is
        fs.materialize_online(end_ts=at)


def test_infinite_events_far_timestamp_keys_and_time_keys_online_equal_offline(tmp_path):
    """+infinity events (the default end_ts is the latest finite one: it used to be taken for
    'no rows'), TIMESTAMP keys beyond year 9999 and at +/-infinity, TIME keys and an explicit
    end_ts beyond year 9999 (each used to fail or be left out online)."""
    database = tmp_path / "far.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("create table t as select * from (values "
                    "(1, 'infinity'::timestamp, '05:00'::time, 1.0), (2, '2020-01-01'::timestamp, '06:00'::time, 2.0), "
                    "(3, '-infinity'::timestamp, '07:00:00.5'::time, 3.0)) v(k, ts, tod, x)")
        con.execute("create table f as select * from (values ('20000-01-01'::timestamp, 1.0), "
                    "('infinity'::timestamp, 2.0), ('-infinity'::timestamp, 3.0)) v(far, x), "
                    "(select '2019-01-01'::timestamp as ts)")
    fs = FeatureStore(database, [FeatureView("v", "t", "k", "ts", (Feature("x"),)),
                                 FeatureView("by_far", "f", "far", "ts", (Feature("x"),)),
                                 FeatureView("by_tod", "t", "tod", "ts", (Feature("x"),))],
                      online_path=tmp_path / "online.sqlite")
    assert fs.materialize_online() == {"v": 2, "by_far": 3, "by_tod": 2}
    rows = pd.DataFrame({"k": [1, 2, 3], "tod": ["05:00", "06:00:00", "07:00:00.5"],
                         "far": np.array(["20000-01-01", "NaT", "NaT"], dtype="datetime64[s]")})
    at = pd.Timestamp("2020-01-01", tz="UTC")
    for view in ("v", "by_far", "by_tod"):
        online = fs.get_online_features(rows, [f"{view}:x"])["x"].fillna(-1).tolist()
        offline = fs.get_historical_features(rows.assign(event_timestamp=at), [f"{view}:x"])["x"].fillna(-1).tolist()
        assert online == offline, view
    assert fs.get_online_features(rows, ["v:x"])["x"].fillna(-1).tolist() == [-1, 2.0, 3.0]
    assert fs.get_online_features(rows, ["by_tod:x"])["x"].fillna(-1).tolist() == [-1, 2.0, 3.0]
    assert fs.get_online_features(rows, ["by_far:x"])["x"].fillna(-1).tolist() == [1.0, -1, -1]
    assert fs.materialize_online(["v"], end_ts=np.datetime64("20000-01-01")) == {"v": 0}
    assert fs.get_online_features(rows, ["v:x"])["x"].fillna(-1).tolist() == [-1, 2.0, 3.0]


def test_a_default_run_still_starts_over_when_the_source_types_change(tmp_path):
    """The default end_ts with nothing newer used to skip the view, and with it the type check."""
    at = pd.Timestamp("2024-01-01", tz="UTC")
    fs = _tiny_store(tmp_path, pd.DataFrame({"k": [1, 2], "ts": [at, at], "x": [1.5, 2.5]}),
                     [FeatureView("v", "t", "k", "ts", (Feature("x"),))])
    fs.materialize_online()
    with duckdb.connect(fs.database_path) as con:
        con.execute("create or replace table t as select k, ts, x::varchar as x from t")
    fs.materialize_online()
    assert fs.get_online_features({"k": [1, 2]}, ["v:x"])["x"].tolist() == ["1.5", "2.5"]


def test_a_view_table_under_its_earlier_name_is_rebuilt_not_misread(tmp_path):
    """Stores written before tables were named apart by case kept a view with capitals in its name
    under ``fv__<name>``: its lookups say it is not materialized, and the next run rebuilds it."""
    from mlops_pipelines.features.online import table_name

    at = pd.Timestamp("2024-01-01", tz="UTC")
    view = FeatureView("Stats", "t", "k", "ts", (Feature("x"),))
    fs = _tiny_store(tmp_path, pd.DataFrame({"k": [1, 1], "ts": [at, at + pd.Timedelta(days=2)], "x": [10, 11]}),
                     [view])
    fs.materialize_online(end_ts=at + pd.Timedelta(days=1))
    with sqlite3.connect(fs.online.path) as lite:
        lite.execute(f'alter table "{table_name(view)}" rename to "fv__Stats"')
    with pytest.raises(LookupError, match="feature view 'Stats' .* is not materialized online"):
        fs.get_online_features({"k": [1]}, ["Stats:x"])
    assert fs.materialize_online(end_ts=at + pd.Timedelta(days=3)) == {"Stats": 1}
    assert fs.get_online_features({"k": [1]}, ["Stats:x"])["x"].tolist() == [11]


def test_a_lookup_after_the_declaration_changed_says_which_version_is_there(tmp_path):
    """'is not materialized online' right after a materialization, under the previous
    declaration (another TTL), did not say why."""
    at = pd.Timestamp("2024-01-01", tz="UTC")
    before = FeatureView("v", "t", "k", "ts", (Feature("x"),), ttl=timedelta(days=1))
    fs = _tiny_store(tmp_path, pd.DataFrame({"k": [1], "ts": [at], "x": [10.0]}), [before])
    fs.materialize_online(end_ts=at)
    after = fs.register(FeatureView("v", "t", "k", "ts", (Feature("x"),), ttl=timedelta(days=2)))
    with pytest.raises(LookupError, match=rf"feature view 'v' \(version {after.version}\) is not materialized "
                                          r"online: the online store holds rows of another declaration of the view, "
                                          r"which changed since \(materialize_online\(\) rebuilds it\)"):
        fs.get_online_features({"k": [1]}, ["v:x"])
    fs.materialize_online(end_ts=at)
    assert fs.get_online_features({"k": [1]}, ["v:x"])["x"].tolist() == [10.0]


def test_editing_only_a_views_documentation_keeps_its_online_rows(tmp_path):
    """A new description or owner (of the view or a feature) is a new version of the view (the
    registry and the models' lineage say so) but serves the same values: the online store keeps
    the view's rows, serves them at once and refreshes them incrementally, where it rebuilt them."""
    at = pd.Timestamp("2024-01-01", tz="UTC")
    before = FeatureView("v", "t", "k", "ts", (Feature("x", description="a value"),), owner="team-a")
    fs = _tiny_store(tmp_path, pd.DataFrame({"k": [1], "ts": [at], "x": [10.0]}), [before])
    fs.materialize_online(end_ts=at)
    for after in (FeatureView("v", "t", "k", "ts", (Feature("x", description="the value, in units"),),
                              owner="team-a", description="A view."),
                  FeatureView("v", "t", "k", "ts", (Feature("x", owner="team-b"),), owner="team-c")):
        assert after.version != before.version and after.serving_version == before.serving_version
        again = FeatureStore(fs.database_path, [after], online_path=fs.online.path)
        assert again.get_online_features({"k": [1]}, ["v:x"])["x"].tolist() == [10.0]
        assert again.materialize_online(end_ts=at + pd.Timedelta(days=1)) == {"v": 0}
        assert _last_refresh(again, "v").startswith("incremental: rows after")
    # What decides the values served is a new serving version: a feature's type, the TTL, the SQL.
    for other in (FeatureView("v", "t", "k", "ts", (Feature("x", "int"),)),
                  FeatureView("v", "t", "k", "ts", (Feature("x"),), ttl=timedelta(days=1)),
                  FeatureView("v", "t", "k", "ts", (Feature("x"),), sql="select 1")):
        assert other.serving_version != before.serving_version


def test_changes_duckdbs_value_hash_cannot_see_are_picked_up_too(tmp_path):
    """DuckDB hashes an empty list like NULL and an all-NULL struct like a NULL struct: the
    fingerprint hashes each row's text instead."""
    database = tmp_path / "nested.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("create table t as select 1 as k, '2024-01-01'::timestamp as ts, NULL::int[] as l, "
                    "NULL::struct(a int) as s")
    fs = FeatureStore(database, [FeatureView("v", "t", "k", "ts", (Feature("l"), Feature("s")))],
                      online_path=tmp_path / "online.sqlite")
    fs.materialize_online()
    with duckdb.connect(str(database)) as con:
        con.execute("update t set l = []::int[], s = {'a': NULL}")
    assert fs.materialize_online() == {"v": 1}
    online = fs.get_online_features({"k": [1]}, ["v:l", "v:s"])
    assert list(online["l"].iloc[0]) == [] and online["s"].iloc[0] == {"a": None}


def test_changes_hidden_from_a_hash_of_values_are_picked_up(tmp_path):
    """The fingerprint hashes values where DuckDB's hash tells them apart, text elsewhere: an
    ENUM relabelled (same index, another label) and an interval rewritten (1 day as 24 hours,
    which DuckDB hashes alike) are changes the next incremental run must see."""
    database = tmp_path / "hidden.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("create type mood as enum ('calm', 'busy')")
        con.execute("create table t as select 1 as k, '2024-01-01'::timestamp as ts, 'calm'::mood as m, "
                    "interval 1 day as i, 2.5 as x")
    fs = FeatureStore(database, [FeatureView("v", "t", "k", "ts", (Feature("m"), Feature("i"), Feature("x")))],
                      online_path=tmp_path / "online.sqlite")
    assert fs.materialize_online() == {"v": 1}
    assert fs.materialize_online() == {"v": 0}  # nothing changed: nothing read again
    with duckdb.connect(str(database)) as con:
        # (an UPDATE keeps the stored 1 day, which DuckDB finds equal)
        con.execute("create or replace table t as select k, ts, m, interval 24 hours as i, x from t")
    assert fs.materialize_online() == {"v": 1}
    served = fs.get_online_features({"k": [1]}, ["v:i"])["i"].iloc[0]  # (a DateOffset: months, days, µs)
    assert (served.months, served.days, served.microseconds) == (0, 0, 86_400_000_000)
    with duckdb.connect(str(database)) as con:
        con.execute("alter table t alter m type varchar")
        con.execute("drop type mood")
        con.execute("create type mood as enum ('busy', 'calm')")  # 'busy' now has 'calm''s index
        con.execute("alter table t alter m type mood")
        con.execute("update t set m = 'busy'")
    assert fs.materialize_online() == {"v": 1}
    assert fs.get_online_features({"k": [1]}, ["v:m"])["m"].iloc[0] == "busy"
    with duckdb.connect(str(database)) as con:
        con.execute("update t set x = 3.5")
    assert fs.materialize_online() == {"v": 1}
    assert fs.get_online_features({"k": [1]}, ["v:x"])["x"].iloc[0] == 3.5
    assert fs.materialize_online() == {"v": 0}


def test_a_source_type_changed_under_the_same_declaration_starts_the_view_over(tmp_path):
    """INTEGER -> BIGINT keeps every value and its hash (the fingerprint cannot see it), but rows
    kept from earlier runs would be of the old type beside new ones: the next incremental run
    compares the recorded schema and starts over; the one after it reads nothing again."""
    view = FeatureView("v", "t", "k", "ts", (Feature("x", "int"),))
    fs = _sql_store(tmp_path, [view], "create table t as select * from (values (1, timestamp '2013-01-01', "
                    "7::integer), (2, timestamp '2013-01-01', 8::integer)) r(k, ts, x)")
    assert fs.materialize_online(end_ts="2013-01-02") == {"v": 2}
    assert fs.materialize_online(end_ts="2013-01-02") == {"v": 0}
    with duckdb.connect(str(fs.database_path)) as con:
        con.execute("alter table t alter x type bigint")
        con.execute("insert into t values (3, timestamp '2013-01-03', (2::bigint) ** 40)")  # (a newer row)
    assert fs.materialize_online(end_ts="2013-01-04") == {"v": 3}  # all of them, not only the new row
    assert _last_refresh(fs, "v") == "rebuilt: the source's column types changed"
    online = fs.get_online_features({"k": [1, 3]}, ["v:x"])
    assert online["x"].tolist() == [7, 2**40] and str(online["x"].dtype) == "Int64"
    assert fs.materialize_online(end_ts="2013-01-04") == {"v": 0}


def test_misused_arguments_are_named(tmp_path):
    """Entity rows, views and stores given the wrong way get errors that say what was expected."""
    view = FeatureView("v", "t", "k", "ts", (Feature("x"),))
    fs = _sql_store(tmp_path, [view], "create table t as select 1 as k, timestamp '2013-01-01' as ts, 1.5 as x")
    fs.materialize_online(end_ts="2013-01-02")
    with pytest.raises(ValueError, match=r"entity rows: the key lists differ in length \{'k': 2, 'j': 1\}"):
        fs.get_online_features({"k": [1, 2], "j": [1]}, ["v:x"])
    with pytest.raises(TypeError, match="entity row 1 is a int, not a dict of join keys"):
        fs.get_online_features([{"k": 1}, 5], ["v:x"])
    with pytest.raises(KeyError, match=r"entity rows lack join keys \['k'\] of view 'v'"):
        fs.get_online_features({"j": [1]}, ["v:x"])
    with pytest.raises(TypeError, match="entity_df must be a pandas DataFrame or an Arrow table, not dict"):
        fs.get_historical_features({"k": [1], "event_timestamp": ["2013-01-02"]}, ["v:x"])
    with pytest.raises(KeyError, match=r"feature view 'w' is not registered \(known: \['v'\]\)"):
        fs.materialize_online(["w"], end_ts="2013-01-02")
    with pytest.raises(TypeError, match=r"views: names of feature views \(text\), not int 3"):
        fs.materialize_online([3], end_ts="2013-01-02")
    with pytest.raises(TypeError, match=r"views: FeatureView objects, not str 'v'"):
        FeatureStore(fs.database_path, ["v"])
    offline_only = FeatureStore(fs.database_path, [view])
    with pytest.raises(ValueError, match=r"this FeatureStore has no online store: pass online_path=\.\.\."):
        offline_only.get_online_features({"k": [1]}, ["v:x"])


def test_integers_and_booleans_keep_their_values_and_dtype_whatever_matched(tmp_path):
    """An int64 feature came back as int64 when every entity row matched and as float64 (2**53 + 1
    read as 2**53) when one did not; a boolean as bool or object; an integer in a struct as a
    float. Now Int64 / boolean on both paths, whatever matched, and nested integers exact."""
    at = pd.Timestamp("2024-01-01", tz="UTC")
    big = 2**53 + 1
    frame = pd.DataFrame({"k": [1, 2], "ts": [at, at], "n": [big, -7], "flag": [True, False], "label": ["a", "b"]})
    view = FeatureView("v", "t", "k", "ts", (Feature("n", "int"), Feature("flag", "bool"), Feature("label", "str")))
    fs = _tiny_store(tmp_path, frame, [view])
    with duckdb.connect(str(tmp_path / "tiny.duckdb")) as con:
        con.execute("create table nested as select k, ts, {'a': n} as s, [n, null] as l from t")
    fs.register(FeatureView("w", "nested", "k", "ts", (Feature("s"), Feature("l"))))
    fs.materialize_online(end_ts=at)
    refs = ["v:n", "v:flag", "v:label", "w:s", "w:l"]
    for keys in ([1], [1, 3], [3]):
        online = fs.get_online_features({"k": keys}, refs)
        offline = fs.get_historical_features(pd.DataFrame({"k": keys, "event_timestamp": at}), refs)
        for frame_ in (online, offline):
            assert str(frame_["n"].dtype) == "Int64" and str(frame_["flag"].dtype) == "boolean", keys
            assert frame_["n"].tolist() == [big if k == 1 else pd.NA for k in keys], keys
            assert frame_["flag"].tolist() == [True if k == 1 else pd.NA for k in keys], keys
            # (text too: a column of nulls only came back as object, beside str with a value)
            assert frame_["label"].dtype == pd.Series(["text"]).dtype, keys
            if 1 in keys:
                assert frame_["s"].iloc[0] == {"a": big} and frame_["l"].iloc[0][0] == big, keys
        pd.testing.assert_frame_equal(online, offline.drop(columns="event_timestamp"))


def test_an_arrow_table_of_entity_rows_keeps_large_integer_keys_beside_a_null(tmp_path):
    """pandas read an Arrow int64 column with a null as float64: 2**60 + 1 became 2**60 and got
    2**60's features (online and offline)."""
    at = pd.Timestamp("2024-01-01", tz="UTC")
    base = 2**60
    frame = pd.DataFrame({"k": [base], "ts": [at], "x": [1.0]})
    fs = _tiny_store(tmp_path, frame, [FeatureView("v", "t", "k", "ts", (Feature("x"),))])
    fs.materialize_online(end_ts=at)
    keys = pa.array([base + 1, base, None], pa.int64())
    online = fs.get_online_features(pa.table({"k": keys}), ["v:x"])
    offline = fs.get_historical_features(pa.table({"k": keys, "event_timestamp": pa.array([at] * 3)}), ["v:x"])
    for result in (online, offline):
        assert result["x"].fillna(-1).tolist() == [-1, 1.0, -1]
        assert result["k"].tolist() == [base + 1, base, pd.NA] and str(result["k"].dtype) == "Int64"
    # Tables made from pandas frames carry their index in their metadata (a slice: 2, 3, 4; or
    # stored first): the fixed column was aligned on that index (blanked, or rows swapped) or
    # put at the table's position of another column.
    frame = pd.DataFrame({"k": pd.array([0, 1, base, None, base], dtype="Int64"), "b": [1, 2, 3, 4, None]})
    for table in (pa.Table.from_pandas(frame.iloc[2:5]), pa.Table.from_pandas(frame.iloc[[4, 2, 3]]),
                  pa.Table.from_pandas(frame.iloc[2:5].set_index(pd.Index([7, 8, 9], name="rid")),
                                       preserve_index=True).select(["rid", "b", "k"])):
        online = fs.get_online_features(table, ["v:x"])
        offline = fs.get_historical_features(table.append_column("event_timestamp", pa.array([at] * 3)), ["v:x"])
        for result in (online, offline):
            keys = table.column("k").to_pylist()
            assert [None if k is pd.NA else k for k in result["k"]] == keys, table.schema
            assert result["x"].notna().tolist() == [k == base for k in keys], table.schema
            assert result["b"].fillna(-1).tolist() == [-1 if b is None else b for b in table.column("b").to_pylist()]


def test_views_the_online_store_cannot_hold_are_refused_by_name(tmp_path):
    """A view without features made materialize_online fail with SQLite's 'near ",": syntax
    error' for every view; one of more than 1,997 features with 'too many columns'."""
    with pytest.raises(ValueError, match="feature view 'keys_only': no features"):
        FeatureView("keys_only", "t", "k", "ts", ())
    at = pd.Timestamp("2024-01-01", tz="UTC")
    frame = pd.DataFrame({"k": ["a"], "ts": [at], **{f"e{i}": [float(i)] for i in range(2100)}})
    wide = FeatureView("emb", "t", "k", "ts", tuple(Feature(f"e{i}") for i in range(2100)))
    fs = _tiny_store(tmp_path, frame, [wide])
    offline = fs.get_historical_features(pd.DataFrame({"k": ["a"], "event_timestamp": at}), ["emb:e2099"])
    assert offline["e2099"][0] == 2099
    with pytest.raises(ValueError, match=r"feature view 'emb': 2100 features do not fit in the online store, a SQLite "
                                         r"table of at most 2000 columns \(1997 features"):
        fs.materialize_online(end_ts=at)


def test_online_errors_name_the_callers_row_and_nan_keys_are_not_stored(tmp_path):
    """An online key that did not parse was named by its position, the offline one by the frame's
    label; a NaN key (which matches nothing) was stored as a NULL key, one more row every run."""
    start = pd.Timestamp("2024-01-01", tz="UTC")
    frame = pd.DataFrame({"k": [np.nan, np.nan, 1.0], "ts": [start + pd.Timedelta(hours=h) for h in (0, 1, 0)],
                          "x": [1.0, 2.0, 3.0]})
    fs = _tiny_store(tmp_path, frame, [FeatureView("v", "t", "k", "ts", (Feature("x"),))])
    with duckdb.connect(str(tmp_path / "tiny.duckdb")) as con:  # (pandas' NaN arrives in DuckDB as NULL)
        con.execute("update t set k = 'nan'::double where k is null")
        assert con.execute("select count(*) from t where isnan(k)").fetchone()[0] == 2
    for hours in (0, 1, 2):
        fs.materialize_online(end_ts=start + pd.Timedelta(hours=hours))
    with sqlite3.connect(tmp_path / "online.sqlite") as lite:
        assert lite.execute('select k, x from "fv__v"').fetchall() == [(1.0, 3.0)]
    rows = pd.DataFrame({"k": ["1", "seven", np.nan]}, index=[100, 200, 300])
    for lookup in (lambda: fs.get_online_features(rows, ["v:x"]),
                   lambda: fs.get_historical_features(rows.assign(event_timestamp=start), ["v:x"])):
        with pytest.raises(ValueError, match=r"join key 'k': .*\(row 200: .*'seven'"):
            lookup()
    online = fs.get_online_features(rows.iloc[[0, 2]], ["v:x"])
    assert online["x"].fillna(-1).tolist() == [3.0, -1] and online.index.tolist() == [100, 300]


def test_the_online_asset_of_another_project_materializes_that_projects_views(tmp_path):
    """online_features_asset(project) named the project's views but its resource read the
    default project's: 'feature views ['fv_tiny'] are not registered'."""
    from dagster import materialize

    from mlops_pipelines.features.assets import online_features_asset
    from mlops_pipelines.features.resource import FeatureStoreResource
    from mlops_pipelines.features.sql_project import SqlProject

    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "fv_tiny.sql").write_text("select 'a' as k, timestamptz '2024-01-01 00:00:00+00' as ts, "
                                                      "1.5 as x\n")
    (tmp_path / "features" / "fv_tiny.yml").write_text(
        "feature_view:\n  entities: [k]\n  event_timestamp: ts\n  features:\n    - {name: x, type: float}\n")
    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("create schema features")
        con.execute("create table features.fv_tiny as select 'a' as k, timestamptz '2024-01-01 00:00:00+00' as ts, "
                    "1.5 as x")
    resource = FeatureStoreResource(database_path=str(database), online_path=str(tmp_path / "online.sqlite"))
    project = SqlProject(tmp_path)
    assert materialize([online_features_asset(project)], resources={"feature_store": resource}).success
    assert resource.store(project).get_online_features({"k": ["a", "b"]}, ["fv_tiny:x"])["x"].fillna(-1).tolist() \
        == [1.5, -1]


def test_enums_inside_lists_structs_and_maps_are_served_online_as_offline(tmp_path):
    """A LIST, STRUCT, MAP or ARRAY feature holding an ENUM materialized without error, then every
    lookup of it failed ('Dictionary field not found'): its dictionary was not stored."""
    fs = _sql_store(
        tmp_path, [],
        "create type mood as enum ('sad', 'ok', 'happy')",
        """create table t as select * from (values
            (1, timestamptz '2024-01-01 00:00:00+00', ['ok', 'happy']::mood[], {'m': 'ok'::mood},
             map(['a'], ['sad'::mood]), ['ok', 'sad']::mood[2]),
            (2, timestamptz '2024-01-01 00:00:00+00', ['sad']::mood[], {'m': null::mood}, map(['b'], [null::mood]),
             null)) v(id, ts, l, s, m, a)""")
    fs.register(FeatureView("t", "t", ("id",), "ts", tuple(Feature(n) for n in "lsma")))
    fs.materialize_online(end_ts="2024-01-02")
    refs = [f"t:{n}" for n in "lsma"]
    entities = pd.DataFrame({"id": [2, 1, 3]})
    online = fs.get_online_features(entities, refs)
    offline = fs.get_historical_features(entities.assign(event_timestamp=pd.Timestamp("2024-01-02", tz="UTC")), refs)
    pd.testing.assert_frame_equal(online, offline.drop(columns="event_timestamp"))
    assert list(online["l"].iloc[1]) == ["ok", "happy"] and online["s"].iloc[1] == {"m": "ok"}
    assert online["m"].iloc[0] == [("b", None)] and list(online["a"].iloc[1]) == ["ok", "sad"]


def test_nanosecond_created_timestamps_break_ties_online_and_offline(tmp_path):
    """Created timestamps were cut to microseconds: two rows created 300 ns apart tied, and the
    smaller feature value won instead of the later row."""
    fs = _sql_store(
        tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),), created_timestamp="created")],
        """create table t as select * from (values
            (1, timestamp '2024-01-01 00:00:00', timestamp_ns '2024-01-01 00:00:00.000000100', 1.0),
            (1, timestamp '2024-01-01 00:00:00', timestamp_ns '2024-01-01 00:00:00.000000400', 2.0),
            (2, timestamp '2024-01-01 00:00:00', timestamp_ns '2024-01-01 00:00:00.000000999', 5.0),
            (2, timestamp '2024-01-01 00:00:00', timestamp_ns '2024-01-01 00:00:00.000001000', 4.0)
            ) v(k, ts, created, x)""")
    fs.materialize_online(end_ts="2024-01-02")
    offline = fs.get_historical_features(pd.DataFrame({"k": [1, 2], "event_timestamp": pd.Timestamp("2024-01-02")}),
                                         ["v:x"])
    assert offline["x"].tolist() == [2.0, 4.0]
    assert fs.get_online_features({"k": [1, 2]}, ["v:x"])["x"].tolist() == [2.0, 4.0]


@pytest.mark.parametrize(("type_", "literal", "error"), [
    ("VARINT", "-3", r"feature 'y' is a BIGNUM \(VARINT\), which the store does not serve: cast it to HUGEINT"),
    ("UNION(a INTEGER, b VARCHAR)", "1", r"feature 'y' is a UNION, which the store does not serve"),
    ("BIT[]", "['101']", r"feature 'y' is BIT\[\] holding a BIT, which the store does not serve"),
    ("MAP(VARCHAR, VARINT)", "map(['a'], [1])", r"feature 'y' is MAP\(VARCHAR, BIGNUM\) holding a BIGNUM"),
])
def test_types_pandas_cannot_hold_are_refused_by_view_and_feature(tmp_path, type_, literal, error):
    """A VARINT came back as its raw encoded bytes (b'\\x7f\\xff\\xfe\\xfc' for -3), and with an
    unmatched row, a UNION raised Arrow's errors naming neither view nor feature; a BIT came back
    as DuckDB's bytes."""
    fs = _sql_store(
        tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("y"), Feature("x")))],
        f"create table t (k bigint, ts timestamptz, y {type_})",
        f"insert into t values (1, '2013-01-01 00:00:00+00', {literal})",
        "alter table t add column x double default 2.5")
    entities = pd.DataFrame({"k": [1, 2], "event_timestamp": pd.Timestamp("2013-06-01", tz="UTC")})
    for run in (lambda: fs.get_historical_features(entities, ["v:y"]), lambda: fs.materialize_online()):
        with pytest.raises(ValueError, match="feature view 'v': " + error):
            run()
    # The view's other features are served, and the Arrow path (training sets) serves it too.
    assert fs.get_historical_features(entities, ["v:x"])["x"].fillna(-1).tolist() == [2.5, -1]
    with duckdb.connect(fs.database_path, read_only=True) as con:
        rows = entity_rows({"k": entities["k"]}, entities["event_timestamp"])
        arrow = fs.join_features(con, rows, {"v": ["y", "x"]}, full_feature_names=False)
    assert arrow.column("x").to_pylist() == [2.5, None] and arrow.column("y").to_pylist()[1] is None


def test_a_date_pandas_cannot_hold_is_an_error_naming_the_view_and_feature(tmp_path):
    """DATE 'infinity' raised a bare 'year 5881580 is out of range', naming neither."""
    fs = _sql_store(
        tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("d"), Feature("x")))],
        "create table t as select 1::bigint as k, timestamptz '2013-01-01 00:00:00+00' as ts, "
        "'infinity'::date as d, 1.0 as x")
    entities = pd.DataFrame({"k": [1], "event_timestamp": pd.Timestamp("2013-06-01", tz="UTC")})
    fs.materialize_online(end_ts="2013-06-01")
    for run in (lambda: fs.get_historical_features(entities, ["v:d"]),
                lambda: fs.get_online_features({"k": [1]}, ["v:d"])):
        with pytest.raises(ValueError, match=r"feature view 'v': feature 'd': values of type date32\[day\] that pandas "
                                             r"cannot hold \(year 5881580 is out of range\)"):
            run()
    assert fs.get_online_features({"k": [1]}, ["v:x"])["x"].tolist() == [1.0]


@pytest.mark.parametrize("years", [200_000, 300_000])
def test_a_minus_infinity_event_is_older_than_any_ttl_online_and_offline(tmp_path, years):
    """With a TTL of more than 2**63 µs (about 292,000 years, still a timedelta) a '-infinity'
    event was within it, its age measured from its int64 stand-in."""
    fs = _sql_store(
        tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),), ttl=timedelta(days=365 * years))],
        "create table t (k bigint, ts timestamptz, x double)",
        "insert into t values (1, '-infinity', 1.0), (2, '1999-01-01 00:00:00+00', 2.0)")
    fs.materialize_online(end_ts="1999-01-01")
    at = pd.Timestamp("1999-01-01", tz="UTC")
    assert fs.get_online_features({"k": [1, 2]}, ["v:x"])["x"].fillna(-1).tolist() == [-1, 2.0]
    offline = fs.get_historical_features(pd.DataFrame({"k": [1, 2], "event_timestamp": at}), ["v:x"])
    assert offline["x"].fillna(-1).tolist() == [-1, 2.0]
    # An entity time before DuckDB's range has its TTL measured from its true instant: still out.
    far = pd.Series(np.array(["-300000-01-01", "1999-01-01"], dtype="datetime64[s]"))
    offline = fs.get_historical_features(pd.DataFrame({"k": [1, 1], "event_timestamp": far}), ["v:x"])
    assert offline["x"].isna().tolist() == [True, True]


@pytest.mark.parametrize(("type_", "literal"), [
    ("BIT", "'101'"), ("INTEGER[]", "[1]"), ("STRUCT(a INTEGER)", "{'a': 1}"),
    ("MAP(VARCHAR, INTEGER)", "map(['a'], [1])")])
def test_key_types_no_join_compares_are_refused_by_view_and_key(tmp_path, type_, literal):
    """An INTERVAL key failed online with sqlite3's "type 'MonthDayNano' is not supported", a list
    or struct key with Arrow's "Keys of type list<...>", and offline on the entity values' cast."""
    fs = _sql_store(
        tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
        f"create table t (k {type_}, ts timestamptz, x double)",
        f"insert into t values ({literal}, '1999-01-01 00:00:00+00', 2.0)")
    entities = pd.DataFrame({"k": pd.Series([None], dtype=object), "event_timestamp": pd.Timestamp("2000-01-01")})
    for run in (lambda: fs.get_historical_features(entities, ["v:x"]), lambda: fs.materialize_online()):
        with pytest.raises(ValueError, match=rf"feature view 'v': join key 'k' is {re.escape(type_)}, which cannot be "
                                             r"a key in a join \(cast it in the view: a number, text, .* TIME, "):
            run()


@pytest.mark.parametrize(("type_", "literal"), [("INTERVAL", "interval 1 day"),
                                               ("TIME WITH TIME ZONE", "'10:00:00+01'::timetz")])
def test_keys_duckdb_compares_otherwise_than_arrow_are_refused_by_name(tmp_path, type_, literal):
    """INTERVAL keys joined offline on their parts, where DuckDB finds 1 day and 24 hours equal
    (and SQLite cannot store them); TIME WITH TIME ZONE keys lost their offset to Arrow, so
    10:00+01 found the row of 10:00+05, offline and online."""
    fs = _sql_store(
        tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
        f"create table t as select {literal} as k, timestamptz '1999-01-01 00:00:00+00' as ts, 2.0 as x")
    entities = pd.DataFrame({"k": [None], "event_timestamp": [pd.Timestamp("2000-01-01", tz="UTC")]})
    for run in (lambda: fs.get_historical_features(entities, ["v:x"]), fs.materialize_online):
        with pytest.raises(ValueError, match=rf"join key 'k' is {type_}, which cannot be a key in a join \(cast it"):
            run()


def test_time_with_time_zone_features_are_refused_on_every_path(tmp_path):
    """A TIME WITH TIME ZONE feature came back without its offset (10:00+05 as 10:00)."""
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("t"), Feature("x")))],
                    "create table t as select 1 as k, timestamp '2024-01-01' as ts, '10:00:00+05'::timetz as t, "
                    "1.0 as x")
    entities = pd.DataFrame({"k": [1], "event_timestamp": pd.Timestamp("2024-01-02", tz="UTC")})

    def arrow():
        with duckdb.connect(fs.database_path, read_only=True) as con:
            rows = entity_rows({"k": entities["k"]}, entities["event_timestamp"])
            return fs.join_features(con, rows, {"v": ["t"]}, full_feature_names=False)

    for run in (lambda: fs.get_historical_features(entities, ["v:t"]), fs.materialize_online, arrow):
        with pytest.raises(ValueError, match=r"feature view 'v': feature 't' is a TIME WITH TIME ZONE, which the "
                                             r"store does not serve \(DuckDB hands it over without its offset\)"):
            run()
    # Inside a UNION too, on the Arrow path (which serves UNIONs).
    with duckdb.connect(fs.database_path) as con:
        con.execute("alter table t add column u union(t timetz, n integer)")
        con.execute("update t set u = union_value(t := '10:00:00+05'::timetz)")
    fs.register(FeatureView("v", "t", "k", "ts", (Feature("u"), Feature("x"))))
    with pytest.raises(ValueError, match=r"feature 'u' is UNION\(t TIME WITH TIME ZONE, n INTEGER\) holding a TIME "
                                         "WITH TIME ZONE"):
        with duckdb.connect(fs.database_path, read_only=True) as con:
            rows = entity_rows({"k": entities["k"]}, entities["event_timestamp"])
            fs.join_features(con, rows, {"v": ["u"]}, full_feature_names=False)
    assert fs.get_historical_features(entities, ["v:x"])["x"].tolist() == [1.0]  # the view's other features


def test_date_keys_python_cannot_hold_do_not_stop_a_materialization(tmp_path):
    """A DATE key 'infinity' (or in year 12000), which offline joins ignore, stopped every view
    of materialize_online with a bare OverflowError."""
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "d", "ts", (Feature("x"),))],
                    "create table t as select * from (values (date '2024-01-01', timestamp '2024-01-01', 1.0), "
                    "('infinity'::date, timestamp '2024-01-01', 2.0), ('12000-01-01'::date, timestamp '2024-01-01', "
                    "3.0)) v(d, ts, x)")
    assert fs.materialize_online(end_ts="2024-01-02") == {"v": 3}
    keys = {"d": [datetime(2024, 1, 1).date(), "2024-01-01", None]}
    assert fs.get_online_features(keys, ["v:x"])["x"].fillna(-1).tolist() == [1.0, 1.0, -1]
    with sqlite3.connect(fs.online.path) as lite:
        stored = sorted(row[0] for row in lite.execute('select d from "fv__v"'))
    assert stored == ["2024-01-01", "2147483647 days after 1970-01-01", "3663382 days after 1970-01-01"]


def test_rows_written_by_earlier_serving_rules_are_rebuilt_not_served(tmp_path):
    """A view's version hashes its declaration only: rows an earlier version of the store wrote
    (DECIMALs one ulp off) stayed, since the next run found nothing new, and online and offline
    disagreed until a full refresh."""
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
                    "create table t as select 1 as k, timestamp '2024-01-01' as ts, 0.942::decimal(12, 3) as x")
    assert fs.materialize_online(end_ts="2024-01-02") == {"v": 1}
    view = fs.views["v"]
    with sqlite3.connect(fs.online.path) as lite:  # as the previous rules wrote them
        for table in ("_materializations", "_schemas", "_fingerprints"):
            lite.execute(f"update {table} set version = ?", [view.version])
        lite.execute('update "fv__v" set x = 0.9420000000000001')
    with pytest.raises(LookupError, match=r"its rows were written by an earlier version of the store "
                                          r"\(materialize_online\(\) rebuilds them\)"):
        fs.get_online_features({"k": [1]}, ["v:x"])
    assert fs.materialize_online(end_ts="2024-01-02") == {"v": 1}
    assert _last_refresh(fs, "v") == "rebuilt: its rows were written by an earlier version of the store"
    assert fs.get_online_features({"k": [1]}, ["v:x"])["x"].tolist() == [0.942]


def test_a_rebuild_after_an_upgrade_stays_as_of_the_instant_the_store_was(tmp_path):
    """Rows an earlier version wrote were rebuilt as of the latest event, earlier than the store
    was: a row the TTL had expired was served again, and an earlier end_ts was not refused."""
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),), ttl=timedelta(days=4, hours=12))],
                    "create table t as select * from (values (1, timestamp '2024-01-01', 1.0), "
                    "(2, timestamp '2024-01-05', 2.0)) v(k, ts, x)")
    fs.materialize_online(end_ts="2024-01-06")
    view = fs.views["v"]
    with sqlite3.connect(fs.online.path) as lite:  # as the previous rules wrote them
        for table in ("_materializations", "_schemas", "_fingerprints"):
            lite.execute(f"update {table} set version = ?", [view.version])
    with pytest.raises(ValueError, match=r"materialized up to 2024-01-06 00:00:00\+00:00; end_ts .* would go back"):
        fs.materialize_online(end_ts="2024-01-05T12:00:00")
    assert fs.materialize_online() == {"v": 2}  # (rebuilt from every row, as of 2024-01-06 still)
    assert fs.get_online_features({"k": [1, 2]}, ["v:x"])["x"].fillna(-1).tolist() == [-1, 2.0]


def test_decimal_features_are_the_doubles_nearest_their_values(tmp_path):
    """Arrow's decimal-to-double cast rounds twice: 0.942 as DECIMAL(12, 3) came back as
    0.9420000000000001 (1,342 of the 10,000 values below were one ulp off), offline and online."""
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
                    "create table t as select i as k, timestamp '2024-01-01' as ts, "
                    "((i - 5000) / 1000)::decimal(12, 3) as x from range(10000) r(i)")
    expected = [float(decimal.Decimal(i - 5000) / 1000) for i in range(10000)]
    entities = pd.DataFrame({"k": range(10000), "event_timestamp": pd.Timestamp("2024-01-02", tz="UTC")})
    assert fs.get_historical_features(entities, ["v:x"])["x"].tolist() == expected
    fs.materialize_online(end_ts="2024-01-02")
    assert fs.get_online_features(entities[["k"]], ["v:x"])["x"].tolist() == expected


@pytest.mark.parametrize("literal", [
    "DATE '2013-03-10'", "unhex('ff')", "TIME '10:00'",  # a float NaN was "cannot be compared with" these
    "TIMESTAMP '2013-03-10'",
    "'a'", "1::BIGINT",                                  # (these already matched nothing)
])
def test_a_key_column_with_no_value_matches_nothing_whatever_the_key_type(tmp_path, literal):
    """An entity key column of missing values only (pandas' float NaN column, None beside NaN) was
    an error against DATE, BLOB, TIME and TIMESTAMP keys, offline and online: every row now comes
    back with nulls, as for text and integer keys."""
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
                    f"create table t as select {literal} as k, timestamp '2013-03-10' as ts, 1.5 as x")
    fs.materialize_online(end_ts="2013-03-11")
    for keys in (pd.Series([np.nan, np.nan]), pd.Series([None, np.nan], dtype=object)):
        offline = fs.get_historical_features(pd.DataFrame({"k": keys, "event_timestamp": "2013-03-11"}), ["v:x"])
        assert offline["x"].isna().tolist() == [True, True]
        assert fs.get_online_features({"k": list(keys)}, ["v:x"])["x"].isna().tolist() == [True, True]


def test_a_category_of_uuid_objects_finds_its_rows_offline_and_online(tmp_path):
    """A pandas category of uuid.UUID objects (or an Arrow table made from one) as a UUID key
    crashed with Arrow's "no kernel matching ... extension<arrow.uuid>"; as objects it worked."""
    one, two = uuid.UUID(int=1), uuid.UUID(int=2)
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
                    f"create table t as select '{one}'::uuid as k, timestamp '2013-01-01' as ts, 1.5 as x")
    fs.materialize_online(end_ts="2013-01-02")
    entities = pd.DataFrame({"k": pd.Series([one, two, one], dtype="category"), "event_timestamp": "2013-01-02"})
    for given in (entities, pa.Table.from_pandas(entities)):
        assert fs.get_historical_features(given, ["v:x"])["x"].fillna(-1).tolist() == [1.5, -1, 1.5]
    assert fs.get_online_features(entities[["k"]], ["v:x"])["x"].fillna(-1).tolist() == [1.5, -1, 1.5]


def test_uuid_objects_and_arrow_uuids_read_as_duckdbs_text_in_slices_chunks_and_beside_nulls(tmp_path):
    """Arrow UUIDs (what uuid.UUID objects become) are turned into DuckDB's text in numpy, not
    one str() a value: every byte's two digits in order, hyphens in place, nulls kept, for arrays
    that are slices of others or in several chunks."""
    keys = [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.UUID("01234567-89ab-cdef-0123-456789abcdef"),
            *(uuid.UUID(int=(2**61 - 1) * i + 1) for i in range(1, 40))]
    arrow = pa.array([*keys, None, keys[2]])
    for given in (arrow, arrow.slice(2), arrow.slice(5, 3), pa.chunked_array([arrow.slice(0, 4), arrow.slice(4)])):
        expected = [None if value is None else str(value) for value in given.to_pylist()]
        assert point_in_time.uuid_texts_of(given).to_pylist() == expected
    assert point_in_time.uuid_texts_of(arrow).to_pylist()[2] == "01234567-89ab-cdef-0123-456789abcdef"
    values = ", ".join(f"('{key}'::uuid, timestamp '2013-01-01', {i}.5)" for i, key in enumerate(keys))
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
                    f"create table t as select * from (values {values}) as r(k, ts, x)")
    fs.materialize_online(end_ts="2013-01-02")
    asked = pd.Series([*keys[::-1], None, uuid.UUID(int=5)], dtype=object)
    expected = [*(i + 0.5 for i in range(len(keys)))][::-1] + [-1, -1]
    entities = pd.DataFrame({"k": asked, "event_timestamp": "2013-01-02"})
    for given in (entities, pa.Table.from_pandas(pd.concat([entities.iloc[:3], entities])).slice(3)):  # (an offset)
        assert fs.get_historical_features(given, ["v:x"])["x"].fillna(-1).tolist() == expected
    assert fs.get_online_features(entities[["k"]], ["v:x"])["x"].fillna(-1).tolist() == expected


@pytest.mark.parametrize(("key_type", "beyond"), [
    ("BIGINT", "170141183460469231731687303715884105727"),  # 2**127 - 1
    ("UTINYINT", "300"), ("UTINYINT", "-1"),
])
def test_integer_text_beyond_the_key_type_matches_nothing_as_the_same_integer_does(tmp_path, key_type, beyond):
    """Integer text the key type cannot hold was an error ('Failed to parse string'), so a CSV
    holding it stopped the CLI, while the same number given as an integer matched nothing."""
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
                    f"create table t as select 1::{key_type} as k, timestamp '2013-01-01' as ts, 1.5 as x")
    fs.materialize_online(end_ts="2013-01-02")
    for keys in (["1", beyond], [1, int(beyond)]):
        entities = pd.DataFrame({"k": pd.Series(keys, dtype=object), "event_timestamp": "2013-01-02"})
        assert fs.get_historical_features(entities, ["v:x"])["x"].fillna(-1).tolist() == [1.5, -1]
        assert fs.get_online_features({"k": keys}, ["v:x"])["x"].fillna(-1).tolist() == [1.5, -1]
    with pytest.raises(ValueError, match=r"join key 'k': .* \(row 1: Failed to parse string: 'x1'"):
        fs.get_historical_features(pd.DataFrame({"k": ["1", "x1"], "event_timestamp": "2013-01-02"}), ["v:x"])


def test_decimal_text_for_an_integer_key_is_read_as_the_number_and_errors_name_the_row_that_fails(tmp_path):
    """Text '7.0' found 7 (as 7.0 does), but '1.5' was an error where the number 1.5 matched
    nothing; and when a later row did not parse (' 2'), the error named the first row that is no
    integer ('7.0'), which was fine, instead of the one that is no number."""
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
                    "create table t as select k, timestamp '2013-01-01' as ts, k * 1.5 as x from range(1, 9) r(k)")
    fs.materialize_online(end_ts="2013-01-02")
    # (digits read exactly: up to 38 before and 38 after the point; an integer of more digits
    # is beyond every integer key, also beside fractions)
    for keys, expected in ((["7.0", "1.5", "2", "0.20", "-0.0", "7." + "0" * 37 + "1"], [10.5, -1, 3.0, -1, -1, -1]),
                           ([7.0, 1.5, 2, 0.2, -0.0, 7.0 + 2**-50], [10.5, -1, 3.0, -1, -1, -1]),
                           (["7", "1" * 60, "+1", "1.5", "0" * 50 + "2"], [10.5, -1, 1.5, -1, 3.0])):
        entities = pd.DataFrame({"k": pd.Series(keys, dtype=object), "event_timestamp": "2013-01-02"})
        assert fs.get_historical_features(entities, ["v:x"])["x"].fillna(-1).tolist() == expected
        assert fs.get_online_features({"k": keys}, ["v:x"])["x"].fillna(-1).tolist() == expected
    for keys, row, bad in ((["1", "7.0", " 2", "x"], 2, " 2"), (["1.5", "1" * 60, "1.5", "2x", "x"], 3, "2x")):
        with pytest.raises(ValueError, match=rf"join key 'k': .* \(row {row}: Failed to parse string: '{bad}'"):
            fs.get_historical_features(pd.DataFrame({"k": keys, "event_timestamp": "2013-01-02"}), ["v:x"])
        with pytest.raises(ValueError, match=rf"join key 'k': .* \(row {row}: Failed to parse string: '{bad}'"):
            fs.get_online_features({"k": keys}, ["v:x"])


def test_numbers_or_bytes_for_a_uuid_key_are_refused_by_key_offline_and_online(tmp_path):
    """Integers against a UUID key matched nothing without a word (their text is no UUID), and a
    UUID's 16 bytes matched nothing offline but raised a bare UnicodeDecodeError online."""
    one = uuid.UUID(int=1)
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
                    f"create table t as select '{one}'::uuid as k, timestamp '2013-01-01' as ts, 1.5 as x")
    fs.materialize_online(end_ts="2013-01-02")
    for keys in ([1, 2], [one.bytes, one.bytes]):
        entities = pd.DataFrame({"k": keys, "event_timestamp": "2013-01-02"})
        message = r"join key 'k': entity values of type (int64|binary) cannot be compared with the view's UUIDs"
        with pytest.raises(ValueError, match=message):
            fs.get_historical_features(entities, ["v:x"])
        with pytest.raises(ValueError, match=message):
            fs.get_online_features({"k": keys}, ["v:x"])
    assert fs.get_online_features({"k": [one, str(one).upper()]}, ["v:x"])["x"].tolist() == [1.5, 1.5]


def _decimal_cases(precision: int, scale: int) -> list[str | None]:
    """The largest and smallest values of DECIMAL(precision, scale), values at 2**53 in its last
    place (where doubles stop holding every integer), a one-in-the-last-place value, 0 and NULL."""
    def text(unscaled: int) -> str:
        digits = str(abs(unscaled)).rjust(scale + 1, "0")
        sign = "-" if unscaled < 0 else ""
        return sign + (digits if not scale else f"{digits[:-scale]}.{digits[-scale:]}")
    unscaled = [10**precision - 1, -(10**precision - 1), 1, -1, 0, 942, 2**53 - 1, 2**53, 2**53 + 1, -(2**53 + 1)]
    return [text(u) for u in unscaled if abs(u) < 10**precision] + [None]


@pytest.mark.parametrize("precision,scale", [
    (1, 0), (3, 3),     # the narrowest
    (12, 3),            # the demo's kind of measure
    (16, 0), (16, 16),  # unscaled integers of 16 digits pass 2**53 (9.0e15)
    (18, 0), (18, 6),   # the widest whose unscaled integer is 64 bits
    (19, 2), (38, 10),  # 128 bits: through their text
])
def test_decimal_values_become_the_doubles_nearest_them(precision, scale):
    """DECIMALs are served as the double nearest their value (Python's float of the exact text
    is the oracle), read straight from their unscaled integers where they fit, through their
    text otherwise, nulls kept; sliced arrays too (Arrow's offset into the buffer)."""
    cases = _decimal_cases(precision, scale)
    values = pa.array(cases).cast(pa.decimal128(precision, scale))
    expected = [None if c is None else float(decimal.Decimal(c)) for c in cases]
    assert point_in_time.served(values).to_pylist() == expected
    assert point_in_time.served(values.slice(1, 3)).to_pylist() == expected[1:4]
    assert point_in_time.served(pa.chunked_array([values[:2], values[2:]])).to_pylist() == expected
    assert point_in_time.served(values.slice(0, 0)).to_pylist() == []


def test_each_view_keeps_its_own_created_timestamp_precision_between_runs(tmp_path):
    """The fingerprint of every view was taken with the created-timestamp precision of the last
    view planned: a run of one view after a run of several started it over for nothing."""
    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as con:
        for name, type_ in (("a", "timestamp_ns"), ("b", "timestamp")):
            con.execute(f"create table {name} as select i as k, timestamp '2024-01-01' + to_hours(i) as ts, "
                        f"(timestamp '2024-01-01 00:00:00.000000001' + to_hours(i))::{type_} as created, i * 1.0 as x "
                        "from range(4) r(i)")
    views = [FeatureView(n, n, "k", "ts", (Feature("x"),), created_timestamp="created") for n in "ab"]
    fs = FeatureStore(database, views, online_path=tmp_path / "o.sqlite")
    assert fs.materialize_online(end_ts="2024-01-01 01:00") == {"a": 2, "b": 2}
    assert fs.materialize_online(["a"], end_ts="2024-01-01 02:00") == {"a": 1}  # (was 3: started over)
    assert fs.materialize_online(["b"], end_ts="2024-01-01 03:00") == {"b": 2}


def test_a_nanosecond_event_is_never_shown_before_it_happened_online_or_offline(tmp_path):
    """DuckDB's cast rounds a TIMESTAMP_NS event to the nearest microsecond: an event 400 ns after
    an entity's instant was shown to it (a feature from its future), offline and online. It now
    counts from the next whole microsecond."""
    fs = _sql_store(
        tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
        """create table t as select * from (values
            (1, timestamp_ns '2024-01-01 00:00:00.000000400', 1.0),
            (2, timestamp_ns '1969-12-31 23:59:59.999998400', 2.0)) v(k, ts, x)""")
    stamps = ["2024-01-01 00:00:00", "2024-01-01 00:00:00.000000200", "2024-01-01 00:00:00.000001",
              "1969-12-31 23:59:59.999998", "1969-12-31 23:59:59.999999"]
    entities = pd.DataFrame({"k": [1, 1, 1, 2, 2],
                             "event_timestamp": pd.to_datetime(stamps, utc=True, format="ISO8601")})
    assert fs.get_historical_features(entities, ["v:x"])["x"].fillna(-1).tolist() == [-1, -1, 1.0, -1, 2.0]
    assert fs.materialize_online(end_ts="2024-01-01 00:00:00") == {"v": 1}  # (k = 2's row only)
    assert fs.get_online_features({"k": [1, 2]}, ["v:x"])["x"].fillna(-1).tolist() == [-1, 2.0]
    assert fs.materialize_online(end_ts="2024-01-01 00:00:00.000001") == {"v": 1}
    assert fs.get_online_features({"k": [1, 2]}, ["v:x"])["x"].tolist() == [1.0, 2.0]


def test_time_ns_keys_and_features_on_the_microsecond_grid_are_served(tmp_path):
    """TIME_NS keys and features were refused outright for a while; on whole microseconds they join."""
    fs = _sql_store(
        tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"), Feature("y")))],
        "create table t as select '10:00'::time_ns as k, timestamptz '2024-01-01 00:00:00+00' as ts, "
        "'10:00:00.000001'::time_ns as y, 2.0 as x")
    keys = ["10:00:00", "11:00:00"]
    offline = fs.get_historical_features(pd.DataFrame({"k": keys, "event_timestamp": pd.Timestamp("2024-01-02")}),
                                         ["v:x", "v:y"])
    fs.materialize_online(end_ts="2024-01-02")
    online = fs.get_online_features({"k": keys}, ["v:x", "v:y"])
    for result in (offline, online):
        assert result["x"].fillna(-1).tolist() == [2.0, -1]
        assert result["y"].iloc[0] == datetime(2024, 1, 1, 10, 0, 0, 1).time() and pd.isna(result["y"].iloc[1])


@pytest.mark.parametrize(("created", "rows", "correction"), [
    # The fingerprint of earlier rows reads created timestamps as they are joined, nanoseconds
    # included: a correction of 350 ns (the same microsecond) changes which row wins.
    ("created", """(1, timestamp '2024-01-01 00:00:00', timestamp_ns '2024-01-01 00:00:00.000000100', 1.0),
                   (1, timestamp '2024-01-01 00:00:00', timestamp_ns '2024-01-01 00:00:00.000000400', 2.0)
                   ) v(k, ts, created, x)""",
     "update t set created = timestamp_ns '2024-01-01 00:00:00.000000450' where x = 1.0"),
    # Events are ordered by their nanoseconds: one moved from 500 ns to 900 ns (the same
    # microsecond, so the same rounded-up time) becomes the latest.
    (None, """(1, timestamp_ns '2024-01-01 00:00:00.000000500', 1.0),
              (1, timestamp_ns '2024-01-01 00:00:00.000000800', 2.0)) v(k, ts, x)""",
     "update t set ts = timestamp_ns '2024-01-01 00:00:00.000000900' where x = 1.0"),
])
def test_a_correction_by_nanoseconds_is_seen_by_the_next_run(tmp_path, created, rows, correction):
    """A timestamp corrected within its microsecond changes which row wins: the fingerprint of
    earlier rows holds the nanoseconds, so the next run rebuilds the view rather than keep the old row."""
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),), created_timestamp=created)],
                    f"create table t as select * from (values {rows}")
    fs.materialize_online(end_ts="2024-01-02")
    assert fs.get_online_features({"k": [1]}, ["v:x"])["x"].tolist() == [2.0]
    with duckdb.connect(fs.database_path) as con:
        con.execute(correction)
    assert fs.materialize_online(end_ts="2024-01-03") == {"v": 1}
    assert fs.get_online_features({"k": [1]}, ["v:x"])["x"].tolist() == [1.0]
    assert _last_refresh(fs, "v").startswith("rebuilt: rows at or before")


def test_parquet_written_by_pandas_with_aware_nanosecond_timestamps_is_a_view(tmp_path):
    """pandas writes datetime64[ns, UTC] to parquet, which DuckDB reads as TIMESTAMPTZ_NS: such
    event and created columns were refused ('TIMESTAMPTZ_NS, not a TIMESTAMP')."""
    stamps = pd.to_datetime(["2024-01-01 00:00:00.000000400", "2024-01-01 00:00:01"], utc=True,
                            format="ISO8601").as_unit("ns")
    pd.DataFrame({"k": [1, 1], "ts": stamps, "created": stamps, "x": [1.0, 2.0]}).to_parquet(tmp_path / "my.parquet")
    fs = FeatureStore(":memory:", [FeatureView("v", f"read_parquet('{tmp_path / 'my.parquet'}')", "k", "ts",
                                               (Feature("x"),), created_timestamp="created")],
                      online_path=tmp_path / "o.sqlite")
    at = pd.to_datetime(["2024-01-01 00:00:00", "2024-01-01 00:00:00.000001", "2024-01-02"], utc=True,
                        format="ISO8601")
    offline = fs.get_historical_features(pd.DataFrame({"k": [1, 1, 1], "event_timestamp": at}), ["v:x"])
    assert offline["x"].fillna(-1).tolist() == [-1, 1.0, 2.0]  # (the 400 ns event counts from the next microsecond)
    fs.materialize_online(end_ts="2024-01-02")
    assert fs.get_online_features({"k": [1]}, ["v:x"])["x"].tolist() == [2.0]


@pytest.mark.parametrize("ttl", [None, timedelta(microseconds=5)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_nanosecond_events_are_compared_exactly_offline_and_online(tmp_path, seed, ttl):
    """TIMESTAMP_NS events a few hundred nanoseconds apart (many in one microsecond, some tied),
    entity times with nanoseconds on them, 1 ns either side and at the TTL's edge: the join
    picks what a brute force over the nanoseconds picks (latest event at or before the entity's
    instant, within the TTL, ties by latest created, then smallest value). The online store,
    materialized run after run at whole microseconds, serves what the join gives there."""
    rng = np.random.default_rng(seed)
    base = 1_704_067_200 * 10**9  # 2024-01-01 00:00 UTC, in ns
    rows = []
    for key in (1, 2, 3):
        for _ in range(30):
            event = base + int(rng.integers(0, 80)) * 250  # 20 µs in steps of 250 ns: ties, and 4 a microsecond
            created = None if rng.random() < 0.2 else base + int(rng.integers(0, 3)) * 1000
            rows.append((key, event, created, float(len(rows))))
    ttl_ns = None if ttl is None else 5_000

    def expected(key: int, at: int) -> float | None:
        candidates = [r for r in rows if r[0] == key and r[1] <= at and (ttl_ns is None or at - r[1] <= ttl_ns)]
        if not candidates:
            return None
        latest = max(r[1] for r in candidates)
        tied = [r for r in candidates if r[1] == latest]
        stamps = [r[2] for r in tied if r[2] is not None]
        if stamps:
            tied = [r for r in tied if r[2] == max(stamps)]
        return min(r[3] for r in tied)

    def ns_sql(value: int | None) -> str:
        if value is None:
            return "NULL"
        return f"make_timestamp_ns({value})"

    values = ", ".join(f"({k}, {ns_sql(e)}, {ns_sql(c)}, {x})" for k, e, c, x in rows)
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),), created_timestamp="created", ttl=ttl)],
                    f"create table t as select * from (values {values}) v(k, ts, created, x)")
    events = sorted({r[1] for r in rows})
    asked = []
    for _ in range(600):
        pick = int(rng.integers(0, 4))
        event = events[int(rng.integers(0, len(events)))]
        at = {0: event + int(rng.integers(-1, 2)), 1: event + 5_000 + int(rng.integers(-1, 2)),
              2: base + int(rng.integers(-2_000, 25_000)), 3: event + int(rng.integers(1, 1000))}[pick]
        asked.append((int(rng.integers(1, 5)), at))  # (key 4: no rows)
    entities = pd.DataFrame({"k": [k for k, _ in asked],
                             "event_timestamp": pd.to_datetime([at for _, at in asked], unit="ns", utc=True)})
    assert entities["event_timestamp"].dtype == "datetime64[ns, UTC]"
    got = fs.get_historical_features(entities, ["v:x"])["x"]
    want = [expected(k, at) for k, at in asked]
    assert [None if pd.isna(v) else v for v in got] == want
    assert sum(v is not None for v in want) > 200  # (not a comparison of empty answers)

    for end_us in range(base // 1000 - 1, base // 1000 + 26, 3):  # incremental runs at whole microseconds
        fs.materialize_online(["v"], end_ts=pd.Timestamp(end_us, unit="us", tz="UTC"))
        online = fs.get_online_features({"k": [1, 2, 3, 4]}, ["v:x"])["x"]
        assert [None if pd.isna(v) else v for v in online] == [expected(k, end_us * 1000) for k in (1, 2, 3, 4)]


def test_nanosecond_events_exactly_on_an_entity_time_at_the_ttl_and_at_infinity(tmp_path):
    """The cases a join rounding nanosecond events to microseconds got wrong: an entity row
    exactly on an event 500 ns into a microsecond (it missed it), two events 300 ns apart in one
    microsecond (they tied, the created timestamp chose), an event 1 ns older than the TTL (it
    counted); and the infinities, which no entity time beyond 2262 or before 1677 passes."""
    fs = _sql_store(
        tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),), created_timestamp="c"),
                   FeatureView("w", "t", "k", "ts", (Feature("x"),), created_timestamp="c", ttl=timedelta(hours=1))],
        """create table t as select * from (values
            (1, timestamp_ns '2024-01-01 00:00:00.000000500', timestamp '2024-01-02', 1.0),
            (1, timestamp_ns '2024-01-01 00:00:00.000000800', timestamp '2024-01-01', 2.0),
            (2, timestamp_ns '-infinity', NULL, 3.0),
            (2, timestamp_ns '2024-01-01 00:00:00.000000001', NULL, 4.0),
            (2, timestamp_ns 'infinity', NULL, 5.0)) v(k, ts, c, x)""")
    stamps = ["2024-01-01 00:00:00.000000499", "2024-01-01 00:00:00.000000500", "2024-01-01 00:00:00.000000799",
              "2024-01-01 00:00:00.000000800", "2024-01-01 01:00:00.000000800", "2024-01-01 01:00:00.000000801",
              "2024-01-01 00:00:00", "2024-01-01 00:00:00.000000001", "2024-01-01 01:00:00.000000002"]
    entities = pd.DataFrame({"k": [1] * 6 + [2] * 3,
                             "event_timestamp": pd.to_datetime(stamps, utc=True, format="ISO8601")})
    out = fs.get_historical_features(entities, ["v:x", "w:x"], full_feature_names=True)
    assert out["v__x"].fillna(-1).tolist() == [-1, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 4.0, 4.0]
    assert out["w__x"].fillna(-1).tolist() == [-1, 1.0, 1.0, 2.0, 2.0, -1, -1, 4.0, -1]
    # Alone, an entity row 200 ns after an event of its microsecond (the rows read are narrowed to
    # the latest entity time: the event, rounded up to the next microsecond, must not be cut).
    alone = pd.DataFrame({"k": [1], "event_timestamp": pd.to_datetime(["2024-01-01 00:00:00.000000700"], utc=True)})
    assert fs.get_historical_features(alone, ["v:x"])["x"].tolist() == [1.0]
    far = pd.DataFrame({"k": [2, 2], "event_timestamp": pd.to_datetime(["1500-01-01", "3000-01-01"]).as_unit("us")})
    far_out = fs.get_historical_features(far, ["v:x", "w:x"], full_feature_names=True)
    assert far_out["v__x"].tolist() == [3.0, 4.0] and far_out["w__x"].isna().all()
    fs.materialize_online(end_ts="2024-01-01 01:00:00")  # (the 800 ns row is 1 h - 800 ns old)
    online = fs.get_online_features({"k": [1, 2]}, ["v:x", "w:x"], full_feature_names=True)
    assert online["v__x"].tolist() == [2.0, 4.0] and online["w__x"].tolist() == [2.0, 4.0]
    fs.materialize_online(end_ts="2024-01-01 01:00:00.000001")  # (1 µs later: 200 ns and 999 ns too old)
    online = fs.get_online_features({"k": [1, 2]}, ["v:x", "w:x"], full_feature_names=True)
    assert online["v__x"].tolist() == [2.0, 4.0] and online["w__x"].isna().all()


def test_nanosecond_entity_times_in_the_last_microseconds_of_int64_are_exact(tmp_path):
    """Entity times in the first and last microsecond int64's nanoseconds hold (1677, 2262) were
    put at int64's ends: one took an event 499 ns in its future, one missed an event at its
    very instant."""
    fs = _sql_store(tmp_path, [FeatureView("v", "t", "k", "ts", (Feature("x"),))],
                    """create table t as select * from (values
                        (1, timestamp_ns '2262-04-11 23:47:16.854774000', 0.5),
                        (1, timestamp_ns '2262-04-11 23:47:16.854775500', 1.0),
                        (3, timestamp_ns '1677-09-21 00:12:43.145225000', 3.0)) v(k, ts, x)""")
    entities = pd.DataFrame({"k": [1, 1, 3], "event_timestamp": pd.to_datetime(
        ["2262-04-11 23:47:16.854775001", "2262-04-11 23:47:16.854775500", "1677-09-21 00:12:43.145225000"],
        utc=True, format="ISO8601")})
    assert fs.get_historical_features(entities, ["v:x"])["x"].tolist() == [0.5, 1.0, 3.0]
    later = entities.assign(event_timestamp=entities["event_timestamp"].astype("datetime64[us, UTC]"))
    assert fs.get_historical_features(later, ["v:x"])["x"].tolist() == [0.5, 0.5, 3.0]


def test_rows_recorded_under_the_whole_version_are_served_and_refreshed_without_a_rebuild(tmp_path):
    """Stores keyed a view's rows by its whole version before the serving version: upgraded, they
    serve at once and refresh incrementally (no outage of every view until a rebuild). A
    nanosecond view's rows, written rounded up to the microsecond, are rebuilt by the next run."""
    at = pd.Timestamp("2024-01-01", tz="UTC")
    view = FeatureView("v", "t", "k", "ts", (Feature("x", description="a value"),))
    fs = _tiny_store(tmp_path, pd.DataFrame({"k": [1], "ts": [at], "x": [10.0]}), [view])
    fs.materialize_online(end_ts=at)
    with sqlite3.connect(fs.online.path) as lite:  # as the previous store recorded them
        for table in ("_materializations", "_schemas", "_fingerprints", "_refreshes"):
            lite.execute(f"update {table} set version = ?", [f"{view.version}.{online_module.SERVING_RULES}"])
    assert fs.get_online_features({"k": [1]}, ["v:x"])["x"].tolist() == [10.0]
    assert fs.materialize_online(end_ts=at + pd.Timedelta(days=1)) == {"v": 0}
    assert _last_refresh(fs, "v").startswith("incremental: rows after")

    (tmp_path / "ns").mkdir()
    ns = _sql_store(tmp_path / "ns", [FeatureView("n", "t", "k", "ts", (Feature("x"),))],
                    "create table t as select 1 as k, timestamp_ns '2024-01-01 00:00:00.000000500' as ts, 1.0 as x")
    ns.materialize_online(end_ts="2024-01-02")
    old = ns.views["n"]
    with sqlite3.connect(ns.online.path) as lite:  # as the previous store wrote it: keyed by the whole
        (blob,) = lite.execute("select schema from _schemas").fetchone()  # version, no mark, another fingerprint
        unmarked = pa.ipc.read_schema(pa.py_buffer(blob)).with_metadata(None)
        lite.execute("update _schemas set schema = ?", [unmarked.serialize().to_pybytes()])
        lite.execute("update _fingerprints set fingerprint = '1:0'")
        for table in ("_materializations", "_schemas", "_fingerprints", "_refreshes"):
            lite.execute(f"update {table} set version = ?", [f"{old.version}.{online_module.SERVING_RULES}"])
    assert ns.get_online_features({"k": [1]}, ["n:x"])["x"].tolist() == [1.0]
    assert ns.materialize_online(end_ts="2024-01-03") == {"n": 1}
    assert _last_refresh(ns, "n") == ("rebuilt: its event times are kept in nanoseconds now (rows written before "
                                      "held them rounded up to the microsecond)")
    # The event column's unit changed under the same declaration (rows present): a type change.
    with duckdb.connect(ns.database_path) as con:
        con.execute("create or replace table t as select k, ts::timestamp as ts, x from t")
    assert ns.materialize_online(end_ts="2024-01-04") == {"n": 1}
    assert _last_refresh(ns, "n") == "rebuilt: the source's column types changed"
    with duckdb.connect(ns.database_path) as con:
        con.execute("create or replace table t as select k, ts::timestamp_ns as ts, x from t")
    assert ns.materialize_online(end_ts="2024-01-05") == {"n": 1}
    assert _last_refresh(ns, "n") == "rebuilt: the source's column types changed"


def test_the_listing_says_when_online_rows_are_stale_because_a_declaration_was_not_built(tmp_path):
    """A view of the SQL project edited and not built since (its build not run, or failed): its
    online rows are still those of the table as built, and the listing said only "another
    declaration", as for an online store not refreshed after a build."""
    warehouse = tmp_path / "w.duckdb"
    built = FeatureView("fv_t", "fv_t", ("k",), "ts", (Feature("x"),))
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create table fv_t as select 1 as k, timestamptz '2013-03-01 00:00:00+00' as ts, 0.5 as x")
        FeatureStore.record_materialization(con, built, 1, "run-1", declared=["fv_t"])
    FeatureStore(warehouse, [built], online_path=tmp_path / "online.sqlite").materialize_online("fv_t", "2013-03-02")
    edited = replace(built, ttl=timedelta(days=1))
    store = FeatureStore(warehouse, [edited], online_path=tmp_path / "online.sqlite")
    assert store.online_as_of() == {"fv_t": "stale: declared otherwise than built (materialize the view)"}
    with duckdb.connect(str(warehouse)) as con:  # (built as declared now; the online store not refreshed yet)
        FeatureStore.record_materialization(con, edited, 1, "run-2", declared=["fv_t"])
    assert store.online_as_of() == {"fv_t": "stale: another declaration"}
    store.materialize_online("fv_t", "2013-03-02")
    assert store.online_as_of() == {"fv_t": "2013-03-02 00:00:00+00:00"}


def test_a_view_of_infinite_events_only_is_listed_without_a_finite_event_and_served(tmp_path):
    """A view whose rows are all at -infinity or +infinity: its -infinity rows are served, and
    the listing said "no rows yet"."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create table src (k bigint, ts timestamp, x double); "
                "insert into src values (1, '-infinity', 1.0), (2, 'infinity', 2.0)")
    con.close()
    store = FeatureStore(tmp_path / "w.duckdb", [FeatureView("v", "src", ("k",), "ts", (Feature("x"),))],
                         online_path=tmp_path / "online.sqlite")
    assert store.materialize_online("v") == {"v": 1}
    assert store.online_as_of() == {"v": "no finite event yet"}
    assert store.get_online_features({"k": [1, 2]}, ["v:x"])["x"].fillna(-1).tolist() == [1.0, -1]
