"""A historical request reads only the view rows its entity rows can reach: rows of other keys
(small entity frames) and rows outside the entity times and the TTL stay in DuckDB."""

from __future__ import annotations

from datetime import timedelta
from unittest.mock import patch

import duckdb
import pandas as pd
import pytest

from mlops_pipelines.features import store as store_module
from mlops_pipelines.features.store import FeatureStore, entity_rows, read_view_rows
from mlops_pipelines.features.views import Feature, FeatureView

T = pd.Timestamp
VIEW = FeatureView("hourly", "hourly", ("k",), "ts", (Feature("x"),), ttl=timedelta(hours=2),
                   created_timestamp="created")


@pytest.fixture()
def con() -> duckdb.DuckDBPyConnection:
    """Keys 1-4, one row an hour from 00:00 to 10:00 (x = 100 k + hour), and a second row at
    (2, 03:00) created later (x = 999): a tie the reads must keep whole."""
    con = duckdb.connect()
    con.execute("set TimeZone='UTC'")
    con.execute("""create table hourly as
        select k::bigint as k, timestamptz '2024-01-01 00:00:00+00' + to_hours(h) as ts,
               timestamptz '2024-01-01 00:00:00+00' + to_hours(h) as created, (100 * k + h)::double as x
        from range(1, 5) a(k), range(0, 11) b(h)
        union all select 2, timestamptz '2024-01-01 03:00:00+00', timestamptz '2024-01-01 03:30:00+00', 999""")
    return con


def _entities(keys: list, times: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"k": pd.array(keys, dtype="Int64"),
                         "event_timestamp": pd.to_datetime(times, utc=True)})


def _read(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> list[tuple[int, int, float]]:
    entities = entity_rows({"k": frame["k"]}, frame["event_timestamp"])
    table = read_view_rows(con, VIEW, ["x"], entities=entities)
    return sorted((k, ts.hour, x) for k, ts, x in zip(table["k"].to_pylist(), table["__ts"].to_pylist(),
                                                       table["x"].to_pylist(), strict=True))


def test_a_small_entity_frame_reads_its_keys_between_its_earliest_time_less_the_ttl_and_its_latest(con):
    frame = _entities([2, 3, None, 99], ["2024-01-01 05:00", "2024-01-01 06:30", "2024-01-01 08:00",
                                        "2024-01-01 04:00"])
    # Keys 2 and 3 (a NULL key and an unknown one add none); events from 04:00 - 2 h to 08:00,
    # both ends included; the tie at (2, 03:00) whole.
    expected = sorted([(k, h, 100.0 * k + h) for k in (2, 3) for h in range(2, 9)] + [(2, 3, 999.0)])
    assert _read(con, frame) == expected

    store = FeatureStore(":memory:")
    store.register(VIEW)
    out = store.get_historical_features(frame, ["hourly:x"], connection=con)
    assert out["x"].tolist()[:2] == [205.0, 306.0]
    assert out["x"].isna().tolist()[2:] == [True, True]


def test_the_tie_at_the_ttl_boundary_is_read_whole_and_decided_as_before(con):
    store = FeatureStore(":memory:")
    store.register(VIEW)
    # 05:00 less the 2 h TTL is 03:00: both rows of the tie are read and the later created wins.
    frame = _entities([2, 2], ["2024-01-01 05:00", "2024-01-01 03:00"])
    assert [row for row in _read(con, frame) if row[1] == 3] == [(2, 3, 203.0), (2, 3, 999.0)]
    out = store.get_historical_features(frame.iloc[[1]], ["hourly:x"], connection=con)
    assert out["x"].tolist() == [999.0]


def test_a_large_entity_frame_is_narrowed_by_time_only(con):
    frame = _entities([2, 3, 3], ["2024-01-01 05:00", "2024-01-01 06:30", "2024-01-01 06:00"])
    with patch.object(store_module, "FEW_ENTITY_ROWS", 2):
        rows = _read(con, frame)
    assert {k for k, _, _ in rows} == {1, 2, 3, 4}
    assert {h for _, h, _ in rows} == set(range(3, 7))


def test_entity_rows_without_a_timestamp_read_no_row_and_come_back_empty(con):
    frame = pd.DataFrame({"k": pd.array([2, 3], dtype="Int64"),
                          "event_timestamp": pd.Series([pd.NaT, pd.NaT], dtype="datetime64[ns, UTC]")})
    assert _read(con, frame) == []
    store = FeatureStore(":memory:")
    store.register(VIEW)
    out = store.get_historical_features(frame, ["hourly:x"], connection=con)
    assert len(out) == 2 and out["x"].isna().all()


def test_entity_keys_are_narrowed_as_the_join_converts_them():
    """Text for an integer key (the CLI reads CSV cells as text), an integer for a text key, and a
    value the key type cannot hold (300 for a UTINYINT), which matches nothing."""
    con = duckdb.connect()
    con.execute("set TimeZone='UTC'")
    con.execute("""create table small as select k::utinyint as k, timestamptz '2024-01-01 00:00:00+00' as ts,
                   k * 1.5 as x from range(0, 256) r(k)""")
    con.execute("create table coded as select k::varchar as code, ts, x from small")
    store = FeatureStore(":memory:")
    store.register(FeatureView("small", "small", ("k",), "ts", (Feature("x"),)))
    store.register(FeatureView("coded", "coded", ("code",), "ts", (Feature("x"),)))
    frame = pd.DataFrame({"k": ["2", "300", "255"], "code": [7, 8, 300],
                          "event_timestamp": T("2024-02-01", tz="UTC")})
    small = store.get_historical_features(frame, ["small:x"], connection=con)
    assert small["x"].tolist()[0] == 3.0 and pd.isna(small["x"].iloc[1]) and small["x"].iloc[2] == 382.5
    coded = store.get_historical_features(frame, ["coded:x"], connection=con)
    assert coded["x"].tolist()[:2] == [10.5, 12.0] and pd.isna(coded["x"].iloc[2])


def test_no_key_list_is_left_on_the_callers_connection(con):
    store = FeatureStore(":memory:")
    store.register(VIEW)
    frame = _entities([2, 3], ["2024-01-01 05:00", "2024-01-01 06:30"])
    con.begin()
    out = store.get_historical_features(frame, ["hourly:x"], connection=con)
    assert out["x"].tolist() == [205.0, 306.0]
    assert con.execute("select count(*) from duckdb_views() where view_name like '%entity_keys%'").fetchone() == (0,)
    con.commit()
    assert con.execute("select count(*) from duckdb_views() where view_name like '%entity_keys%'").fetchone() == (0,)
