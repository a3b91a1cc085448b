"""get_historical_features against a brute-force reference, on random cases (hypothesis).

The cases mix: ties on event time with and without created timestamps, TTL boundaries, entity
rows before any feature row and in the future, duplicate entity rows, a two-column key, null
keys, entity timestamps naive, in UTC or in New York time across the 2013 DST change, two views in
one call, and colliding feature names with full_feature_names.
"""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pandas as pd
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
