"""get_historical_features and the online store against an independent reference (plain Python
over integer microseconds, importing nothing of the project), on random cases that force the
situations the point-in-time rule is about: ties on event time decided by the created timestamp
(NULL created loses) and then by feature values with NULLs (NULL last); entity times exactly at
events, at event + TTL, 1 µs beyond, 1 µs before, before every row and in the future; NULL keys
and NULL event times in feature rows; a two-column key with one part NULL; entity times in UTC,
naive, New York (through both DST changes, the repeated fall-back hour included, as numpy values,
Python datetimes and ISO text) and Asia/Kolkata; three views in one call, with and without
full_feature_names (and the collision error); a caller's connection in another time zone; the
views' rows narrowed to the entity keys in DuckDB before the join, or not. Online:
incremental materializations at such instants (a repeated one, a full refresh going back), end_ts
in several forms; after each, online == offline at t == the reference.
(``pytest --hypothesis-show-statistics`` shows how often each kind of case was drawn.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from unittest.mock import patch
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mlops_pipelines.features import store as store_module
from mlops_pipelines.features.store import FeatureStore
from mlops_pipelines.features.views import Feature, FeatureView

MIN = 60_000_000
BASES = {  # UTC µs of New York's DST changes in 2013
    "spring": int(pd.Timestamp("2013-03-10 07:00", tz="UTC").value // 1000),
    "fall": int(pd.Timestamp("2013-11-03 06:00", tz="UTC").value // 1000),  # 01:00-02:00 twice
}
NY = ZoneInfo("America/New_York")
VIEWS = {  # name: (keys, features)
    "a": (("k1",), ("x", "y")),
    "b": (("k1", "k2"), ("x", "z")),
    "c": (("k2",), ("w",)),
}
ONLINE_VIEWS = {v: VIEWS[v] for v in ("a", "b")}
TTLS = [None, 30 * MIN, 60 * MIN + 1, 90 * MIN, 1]
OFFLINE_EXAMPLES, ONLINE_EXAMPLES = 250, 80


def _null_last_desc(v):
    # sort key for "descending, NULL last" with ascending sort: None -> (1,), value -> (0, -v)
    return (1, 0) if v is None else (0, -v)

def _null_last_asc(v):
    return (1, 0) if v is None else (0, v)

def pick(rows, keys, features, ttl, entity_key, at):
    """rows: dicts with key columns, 'ts' (int µs or None), 'created' (int µs or None), features.
    Returns the winning row or None."""
    if at is None or any(v is None for v in entity_key):
        return None
    cands = [r for r in rows
             if r["ts"] is not None and all(r[k] is not None for k in keys)
             and tuple(r[k] for k in keys) == tuple(entity_key) and r["ts"] <= at
             and (ttl is None or at - r["ts"] <= ttl)]
    if not cands:
        return None
    latest = max(r["ts"] for r in cands)
    group = [r for r in cands if r["ts"] == latest]
    group.sort(key=lambda r: (_null_last_desc(r.get("created")), *(_null_last_asc(r[f]) for f in features)))
    return group[0]


def _micros_to_ts(m):
    return None if m is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=m)


@st.composite
def view_rows(draw, keys, features, base, with_created):
    n = draw(st.integers(0, 14)) if draw(st.integers(0, 5)) == 0 else draw(st.integers(4, 14))
    slots = draw(st.lists(st.integers(-4, 4), min_size=1, max_size=3, unique=True))  # few instants: ties
    rows = []
    for _ in range(n):
        r = {}
        for k in keys:
            r[k] = draw(st.sampled_from([1, 2, None] if k == "k1" else ["a", "b", None]) if draw(st.integers(0, 9)) == 0
                        else st.sampled_from([1, 2] if k == "k1" else ["a", "b"]))
        r["ts"] = None if draw(st.integers(0, 14)) == 0 else \
            base + draw(st.sampled_from(slots)) * 30 * MIN + draw(st.sampled_from([0, 0, 0, 1]))
        r["created"] = draw(st.sampled_from([None, 0, 1, 2])) if with_created else None
        if r["created"] is not None and r["ts"] is not None:
            r["created"] = r["ts"] + r["created"] * MIN
        elif r["created"] is not None:
            r["created"] = base
        for f in features:
            r[f] = draw(st.sampled_from([None, -1.0, 0.0, 1.0]))
        rows.append(r)
    return rows


def _entity(draw, rows_by_view, ttls, base):
    """Mostly an entity built from a feature row (its keys, a time placed relative to its event)."""
    anchored = [(v, r) for v, rows in rows_by_view.items() for r in rows if r["ts"] is not None]
    k1 = draw(st.sampled_from([1, 2, 3, None]))
    k2 = draw(st.sampled_from(["a", "b", "zz", None]))
    kind = draw(st.sampled_from(["event", "event", "ttl", "ttl", "ttl+1", "event-1", "before", "future", "grid",
                                 "null"]))
    if kind in ("event", "ttl", "ttl+1", "event-1") and anchored:
        v, r = draw(st.sampled_from(anchored))
        if draw(st.integers(0, 4)):  # usually the row's own keys (sometimes with one part made NULL)
            k1 = r.get("k1", k1)
            k2 = r.get("k2", k2)
            if draw(st.integers(0, 7)) == 0:
                if draw(st.booleans()):
                    k1 = None
                else:
                    k2 = None
        ts, ttl = r["ts"], ttls[v]
        if kind == "event":
            return k1, k2, ts, kind
        if kind == "event-1":
            return k1, k2, ts - 1, kind
        if ttl is not None:
            return k1, k2, ts + ttl + (kind == "ttl+1"), kind
        kind = "grid"
    if kind == "before":
        return k1, k2, base - 24 * 60 * MIN, kind
    if kind == "future":
        return k1, k2, base + 24 * 60 * MIN, kind
    if kind == "null":
        return k1, k2, None, kind
    return k1, k2, base + draw(st.integers(-10, 10)) * 15 * MIN, "grid"


def _render_times(micros, how):
    if how == "utc":
        return pd.Series(pd.to_datetime([_micros_to_ts(m) for m in micros], utc=True))
    if how == "naive":
        return pd.Series(pd.to_datetime([_micros_to_ts(m) for m in micros], utc=True)).dt.tz_localize(None)
    if how == "ny64":
        return pd.Series(pd.to_datetime([_micros_to_ts(m) for m in micros], utc=True)).dt.tz_convert("America/New_York")
    if how == "kolkata64":
        return pd.Series(pd.to_datetime([_micros_to_ts(m) for m in micros], utc=True)).dt.tz_convert("Asia/Kolkata")
    if how == "ny_objects":  # Python datetimes in New York; fold=1 on the second 01:xx of the fall-back
        return pd.Series([None if m is None else _micros_to_ts(m).astimezone(NY) for m in micros], dtype=object)
    if how == "ny_iso":  # ISO text with the local offset
        return pd.Series([None if m is None else _micros_to_ts(m).astimezone(NY).isoformat() for m in micros],
                         dtype=object)
    raise AssertionError(how)


def _create_views(con, store, views, rows, ttls, with_created, naive):
    """A table ``t_<view>`` of each view's drawn rows, and the view registered over it; the
    timestamps of the ``naive`` views as TIMESTAMP (UTC wall time), which the store must read as
    UTC whatever the connection's zone, the others as TIMESTAMPTZ."""
    for v, (keys, feats) in views.items():
        cols = {k: pa.array([r[k] for r in rows[v]], pa.int64() if k == "k1" else pa.string()) for k in keys}
        for name in ("ts", "created"):
            cols[name] = pa.array([r[name] for r in rows[v]], pa.timestamp("us", tz="UTC"))
            if naive[v]:
                cols[name] = cols[name].cast(pa.timestamp("us"))
        for f in feats:
            cols[f] = pa.array([r[f] for r in rows[v]], pa.float64())
        con.register("arrow_rows", pa.table(cols))
        con.execute(f"create table t_{v} as select * from arrow_rows")
        con.unregister("arrow_rows")
        store.register(FeatureView(v, f"t_{v}", keys, "ts", tuple(Feature(f) for f in feats),
                                   ttl=None if ttls[v] is None else timedelta(microseconds=ttls[v]),
                                   created_timestamp="created" if with_created[v] else None))


def _plain(v):
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else v


@settings(max_examples=OFFLINE_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_historical_matches_reference(data):
    base = BASES[data.draw(st.sampled_from(sorted(BASES)), label="dst")]
    with_created = {v: data.draw(st.booleans()) for v in VIEWS}
    ttls = {v: data.draw(st.sampled_from(TTLS)) for v in VIEWS}
    rows = {v: data.draw(view_rows(keys, feats, base, with_created[v]), label=v) for v, (keys, feats) in VIEWS.items()}

    con = duckdb.connect()
    con.execute("set TimeZone='America/New_York'")  # the store must read as UTC whatever the caller's zone
    store = FeatureStore(":memory:")
    _create_views(con, store, VIEWS, rows, ttls, with_created, {v: data.draw(st.booleans(), label=f"{v} naive")
                                                                for v in VIEWS})

    n = data.draw(st.integers(1, 16), label="entities")
    ents = []
    for _ in range(n):
        k1, k2, at, kind = _entity(data.draw, rows, ttls, base)
        event(f"entity time: {kind}")
        ents.append({"k1": k1, "k2": k2, "at": at})
    if data.draw(st.booleans()):
        ents += [dict(e) for e in ents[: data.draw(st.integers(1, len(ents)))]]
    how = data.draw(st.sampled_from(["utc", "naive", "ny64", "kolkata64", "ny_objects", "ny_iso"]), label="tz")
    frame = pd.DataFrame({"k1": pd.array([e["k1"] for e in ents], dtype="Int64"),
                          "k2": pd.array([e["k2"] for e in ents], dtype="string"),
                          "event_timestamp": _render_times([e["at"] for e in ents], how)})
    full = data.draw(st.booleans(), label="full names")
    all_refs = [f"{v}:{f}" for v, (_, feats) in VIEWS.items() for f in feats]
    refs = data.draw(st.lists(st.sampled_from(all_refs), min_size=1, max_size=5, unique=True), label="refs")
    names = [r.split(":")[1] for r in refs]
    collide = len(set(names)) < len(names)
    if collide and not full and data.draw(st.integers(0, 3)):
        refs = list({r.split(":")[1]: r for r in refs}.values())  # one view per name
        names = [r.split(":")[1] for r in refs]
        collide = False
    if collide and not full:
        with pytest.raises(ValueError, match="full_feature_names=True"):
            store.get_historical_features(frame, refs, connection=con)
        event("colliding names refused")
        return
    # Small frames have the views' rows narrowed to their keys in DuckDB first; large ones do not.
    narrowed = data.draw(st.booleans(), label="keys narrowed")
    event(f"keys narrowed in DuckDB: {narrowed}")
    with patch.object(store_module, "FEW_ENTITY_ROWS", store_module.FEW_ENTITY_ROWS if narrowed else 0):
        out = store.get_historical_features(frame, refs, full_feature_names=full, connection=con)
    assert con.execute("select current_setting('TimeZone')").fetchall()[0][0] == "America/New_York"
    assert len(out) == len(frame)
    assert out.columns.tolist() == [*frame.columns, *[r.replace(":", "__") if full else r.split(":")[1] for r in refs]]
    event(f"views per call: {len({r.split(':')[0] for r in refs})}")
    event(f"entity times: {how}")
    nonnull = 0
    for i, e in enumerate(ents):
        for ref in refs:
            v, f = ref.split(":")
            keys, feats = VIEWS[v]
            win = pick(rows[v], keys, feats, ttls[v], tuple(e[k] for k in keys), e["at"])
            expected = None if win is None else win[f]
            got = _plain(out[ref.replace(":", "__") if full else f].iloc[i])
            assert got == expected, (ref, e, how, got, expected, ttls[v])
            nonnull += expected is not None
    event("expects only nulls" if nonnull == 0 else "expects values")


@settings(max_examples=ONLINE_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_online_equals_offline_and_reference(data):
    base = BASES[data.draw(st.sampled_from(sorted(BASES)))]
    with_created = {v: data.draw(st.booleans()) for v in ONLINE_VIEWS}
    ttls = {v: data.draw(st.sampled_from(TTLS)) for v in ONLINE_VIEWS}
    rows = {v: data.draw(view_rows(keys, feats, base, with_created[v])) for v, (keys, feats) in ONLINE_VIEWS.items()}
    tmp = tempfile.mkdtemp()
    try:
        db = os.path.join(tmp, "off.duckdb")
        store = FeatureStore(db, online_path=os.path.join(tmp, "on.sqlite"))
        with duckdb.connect(db) as con:
            _create_views(con, store, ONLINE_VIEWS, rows, ttls, with_created,
                          {v: data.draw(st.booleans()) for v in ONLINE_VIEWS})
        anchored = [(v, r) for v, rs in rows.items() for r in rs if r["ts"] is not None]

        def instant():
            kind = data.draw(st.sampled_from(["event", "ttl", "ttl+1", "event-1", "grid"]))
            if kind != "grid" and anchored:
                v, r = data.draw(st.sampled_from(anchored))
                if kind == "event":
                    return r["ts"], kind
                if kind == "event-1":
                    return r["ts"] - 1, kind
                if ttls[v] is not None:
                    return r["ts"] + ttls[v] + (kind == "ttl+1"), kind
            return base + data.draw(st.integers(-8, 8)) * 15 * MIN, "grid"

        drawn = [instant() for _ in range(data.draw(st.integers(1, 4)))]
        instants = sorted(drawn)
        if data.draw(st.booleans()):
            instants.append(instants[-1])  # the same instant again: nothing new
        go_back = data.draw(st.booleans()) and len(instants) > 1
        if go_back:
            instants.append((instants[0][0], "full refresh back"))
        refs = ["a:x", "a:y", "b:x", "b:z"]
        for step, (t, kind) in enumerate(instants):
            how = data.draw(st.sampled_from(["utc", "ny", "iso", "naive"]))
            at = pd.Timestamp(_micros_to_ts(t))
            end = {"utc": at, "ny": at.tz_convert("America/New_York"), "iso": at.astimezone(NY).isoformat(),
                   "naive": at.tz_localize(None)}[how]
            store.materialize_online(end_ts=end, full_refresh=(kind == "full refresh back"))
            ents = []
            for _ in range(data.draw(st.integers(1, 10))):
                if anchored and data.draw(st.integers(0, 3)):
                    _, r = data.draw(st.sampled_from(anchored))
                    k1, k2 = r.get("k1"), r.get("k2", data.draw(st.sampled_from(["a", "b", None])))
                else:
                    k1 = data.draw(st.sampled_from([1, 2, 3, None]))
                    k2 = data.draw(st.sampled_from(["a", "b", "zz", None]))
                ents.append((k1, k2))
            frame = pd.DataFrame({"k1": pd.array([e[0] for e in ents], dtype="Int64"),
                                  "k2": pd.array([e[1] for e in ents], dtype="string")})
            online = store.get_online_features(frame, refs, full_feature_names=True)
            offline = store.get_historical_features(frame.assign(event_timestamp=at), refs, full_feature_names=True)
            cols = [r.replace(":", "__") for r in refs]
            pd.testing.assert_frame_equal(online[cols], offline[cols])
            nonnull = 0
            for i, (k1, k2) in enumerate(ents):
                e = {"k1": k1, "k2": k2}
                for ref in refs:
                    v, f = ref.split(":")
                    keys, feats = ONLINE_VIEWS[v]
                    win = pick(rows[v], keys, feats, ttls[v], tuple(e[k] for k in keys), t)
                    expected = None if win is None else win[f]
                    got = _plain(online[ref.replace(":", "__")].iloc[i])
                    assert got == expected, (step, kind, ref, e, t, got, expected)
                    nonnull += expected is not None
            event("lookup expects only nulls" if nonnull == 0 else "lookup expects values")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
