"""Views applied from Python (FeatureStore.apply): recorded in the warehouse's registry, found by
every later store, the CLI included; checked against their source before anything is written."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_pipelines.cli import main
from mlops_pipelines.features.store import FeatureStore, _files_named
from mlops_pipelines.features.views import Feature, FeatureView

T = pd.Timestamp


def _view(tmp_path, name: str = "trips", ttl: timedelta | None = timedelta(milliseconds=400), **changes) -> FeatureView:
    declaration = dict(name=name, source=f"read_parquet('{tmp_path / 'trips.parquet'}')", entities=("city", "line"),
                       event_timestamp="ts", created_timestamp="created", ttl=ttl, owner="team-trips",
                       description="trips per line",
                       features=(Feature("trips", "int", "trips that hour"),
                                 Feature("late_share", "float", owner="ops")))
    return FeatureView(**{**declaration, **changes})


@pytest.fixture()
def warehouse(tmp_path, monkeypatch):
    """A warehouse file and a parquet file of trips (two rows tied on event time: the later
    created wins), with MLOPS_DATA_DIR at the folder for the CLI."""
    stamps = pa.array([T("2024-03-01 10:00:00", tz="UTC"), T("2024-03-01 10:00:00", tz="UTC"),
                       T("2024-03-01 10:00:01", tz="UTC"), T("2024-03-01 09:00:00", tz="UTC")],
                      pa.timestamp("us", tz="UTC"))
    created = pa.array([T("2024-03-01 10:00:00", tz="UTC"), T("2024-03-01 10:05:00", tz="UTC"),
                        T("2024-03-01 10:00:01", tz="UTC"), T("2024-03-01 09:00:00", tz="UTC")],
                       pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"city": ["oslo", "oslo", "oslo", "rome"], "line": [1, 1, 2, 1], "ts": stamps,
                             "created": created, "trips": [5, 7, 3, 9], "late_share": [0.1, 0.2, 0.3, 0.4]}),
                   tmp_path / "trips.parquet")
    duckdb.connect(str(tmp_path / "warehouse.duckdb")).close()
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    return tmp_path / "warehouse.duckdb"


ENTITIES = pd.DataFrame({"city": ["oslo", "oslo", "oslo", "rome", "oslo"], "line": [1, 1, 2, 1, 1],
                         "event_timestamp": pd.to_datetime(["2024-03-01 10:00:00.4", "2024-03-01 10:00:00.400001",
                                                            "2024-03-01 10:00:01", "2024-03-01 10:00",
                                                            "2024-03-01 09:59:59"], utc=True, format="ISO8601")})


def test_an_applied_view_is_found_by_a_new_store_with_the_same_declaration_and_answers(warehouse, tmp_path):
    view = _view(tmp_path)
    first = FeatureStore(warehouse)
    assert first.apply(view) == [view]
    expected = first.get_historical_features(ENTITIES, ["trips:trips", "trips:late_share"])
    # 400 ms TTL inclusive; the tie at 10:00 goes to the later created row (7); rome's 09:00 row
    # is an hour old; nothing before 10:00 for oslo line 1.
    assert expected["trips"].tolist() == [7, pd.NA, 3, pd.NA, pd.NA]

    later = FeatureStore(warehouse)  # another process would see the same: only the file is shared
    assert later.views == {}
    out = later.get_historical_features(ENTITIES, ["trips:trips", "trips:late_share"])
    pd.testing.assert_frame_equal(out, expected)
    found = later.views["trips"]
    assert found == view and found.version == view.version and found.ttl == timedelta(milliseconds=400)
    assert found.features[0].owner == "" and found.features[1].owner == "ops"  # (the registry's column fills in)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        row = con.sql("select origin, version, row_count, materialized_at, applied_at is not null, retired_at "
                      "from features.registry").fetchall()
    assert row == [("python", view.version, None, None, True, None)]


def test_the_cli_lists_an_applied_view_and_joins_it(warehouse, tmp_path, capsys):
    FeatureStore(warehouse).apply(_view(tmp_path))
    assert main(["features", "list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("trips "))
    assert line.split()[:10] == ["trips", _view(tmp_path).version, "city,", "line", "ts", "created", "400ms",
                                 "team-trips", "-", "never"]
    assert "(applied from Python 20" in line
    # The same rows for the online_features asset's metadata (applied views have no asset).
    listed = FeatureStore(warehouse).registry()
    assert [row[:8] for row in listed] == [("trips", _view(tmp_path).version, "city, line", "ts", "created", "400ms",
                                            "team-trips", "-")]
    assert listed[0][8].startswith("never (applied from Python 20")
    ENTITIES.to_csv(tmp_path / "entities.csv", index=False)
    assert main(["features", "historical", "--entities", str(tmp_path / "entities.csv"),
                 "--features", "trips:trips", "--out", str(tmp_path / "out.csv")]) == 0
    assert pd.read_csv(tmp_path / "out.csv")["trips"].fillna(-1).tolist() == [7, -1, 3, -1, -1]


def test_the_cli_refuses_an_output_it_cannot_write_or_that_is_its_input_before_joining(warehouse, tmp_path,
                                                                                        capsys):
    """--out in a missing folder failed only after the join, with pandas' error naming no option;
    --out naming the entity file overwrote it."""
    FeatureStore(warehouse).apply(_view(tmp_path))
    entities = tmp_path / "entities.csv"
    ENTITIES.to_csv(entities, index=False)
    before = entities.read_bytes()
    for out, reason in ((tmp_path / "missing" / "out.csv", r"--out .*out\.csv: no folder .*missing to write it in"),
                        (entities, r"--out .*entities\.csv: the entity file itself")):
        code = main(["features", "historical", "--entities", str(entities), "--features", "trips:trips",
                     "--out", str(out)])
        assert code != 0 and re.search(reason, capsys.readouterr().err)
    assert entities.read_bytes() == before and not (tmp_path / "missing").exists()


def test_applying_again_replaces_the_view_and_a_new_declaration_is_a_new_version(warehouse, tmp_path):
    store = FeatureStore(warehouse)
    store.apply(_view(tmp_path))
    longer = _view(tmp_path, ttl=timedelta(hours=2))
    store.apply(longer)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.sql("select name, version, ttl_seconds from features.registry").fetchall() == [
            ("trips", longer.version, 7200.0)]
    assert longer.version != _view(tmp_path).version
    out = FeatureStore(warehouse).get_historical_features(ENTITIES, "trips:trips")
    assert out["trips"].tolist() == [7, 7, 3, 9, pd.NA]


@pytest.mark.parametrize(("changes", "message"), [
    ({"features": (Feature("trips", "str"),)}, r"feature view 'trips' over read_parquet\(.*\): trips: declared str "
                                               r"but the source produces BIGINT"),
    ({"features": (Feature("missing"),)}, r"feature view 'trips': feature 'missing' is declared but not a column "
                                           r"of read_parquet\(.*\) \(its columns: \['city', "),
    ({"entities": ("city", "tram")}, r"tram: join key not produced by the source"),
    ({"event_timestamp": "late_share", "features": (Feature("trips", "int"),)},
     r"late_share: event timestamp is DOUBLE, not a TIMESTAMP"),
    ({"created_timestamp": "nope"}, r"nope: created timestamp not produced by the source"),
    ({"source": "no_such_table"}, r"feature view 'trips': reading no_such_table: Catalog Error"),
])
def test_a_view_that_does_not_fit_its_source_is_refused_and_nothing_is_recorded(warehouse, tmp_path,
                                                                                changes, message):
    good = _view(tmp_path, name="good")
    bad = _view(tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        FeatureStore(warehouse).apply(good, bad)
    assert FeatureStore(warehouse).applied_views() == {}
    with duckdb.connect(str(warehouse), read_only=True) as con:  # (nothing written: not even the table)
        assert con.sql("select count(*) from information_schema.tables where table_schema = 'features'"
                       ).fetchall() == [(0,)]


def test_views_built_from_sql_keep_their_names_and_do_not_retire_applied_ones(warehouse, tmp_path):
    built = FeatureView("fv_built", "read_parquet('x.parquet')", ("city",), "ts", (Feature("trips"),))
    with duckdb.connect(str(warehouse)) as con:
        FeatureStore.record_materialization(con, built, 4, "run-1", declared=["fv_built"])
    store = FeatureStore(warehouse)
    with pytest.raises(ValueError, match="'fv_built' is built from dbt_like_sql/ in this warehouse"):
        store.apply(_view(tmp_path, name="FV_Built"))  # (names compared ignoring case, as DuckDB does)
    store.apply(_view(tmp_path))
    with duckdb.connect(str(warehouse)) as con:  # a later build, with its project's declared views
        FeatureStore.record_materialization(con, built, 5, "run-2", declared=["fv_built"])
        assert con.sql("select name, origin, retired_at is null from features.registry order by name").fetchall() == [
            ("fv_built", "sql", True), ("trips", "python", True)]
    assert list(FeatureStore(warehouse).applied_views()) == ["trips"]
    with duckdb.connect(str(warehouse)) as con:  # fv_built's YAML removed: retired, its name still refused
        FeatureStore.record_materialization(con, _view(tmp_path, name="fv_other"), 1, "run-3", declared=["fv_other"])
    with pytest.raises(ValueError, match="'fv_built' is built from dbt_like_sql/"):
        store.apply(_view(tmp_path, name="fv_built"))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.sql("select name, origin, retired_at is null from features.registry order by name").fetchall() == [
            ("fv_built", "sql", False), ("fv_other", "sql", True), ("trips", "python", True)]


def test_an_unknown_view_or_feature_names_the_closest_and_a_view_built_from_sql_says_how_to_pass_it(
        warehouse, tmp_path, capsys):
    """A store over the warehouse alone knows the views applied from Python: asked for a view
    that `mlops features list` shows (built from dbt_like_sql/), it said only "not registered
    (known: [...])". It now says how to give it the SQL project's views, and a misspelt view or
    feature gets the closest name (the same ignoring case first), offline, online and in the CLI."""
    built = FeatureView("fv_built", "read_parquet('x.parquet')", ("city",), "ts", (Feature("trips"),))
    with duckdb.connect(str(warehouse)) as con:
        FeatureStore.record_materialization(con, built, 4, "run-1", declared=["fv_built", "fv_gone"])
        FeatureStore.record_materialization(con, FeatureView("fv_gone", "x", ("city",), "ts", (Feature("t"),)), 1, "r")
        FeatureStore.record_materialization(con, built, 4, "run-2", declared=["fv_built"])  # (fv_gone retired)
    store = FeatureStore(warehouse, online_path=tmp_path / "online.sqlite")
    store.apply(_view(tmp_path))
    hint = (r"fv_built is a view of the SQL project \(dbt_like_sql/\), which this store was not given: "
            r"FeatureStore\(path, SqlProject\(\).feature_views\(\).values\(\)\)")
    cases = [("fv_built:trips", rf"feature view 'fv_built' is not registered \(known: \['trips'\]\); {hint}$"),
             ("fv_bulit:trips", rf"'fv_bulit': did you mean 'fv_built'\?; {hint}$"),
             ("TRIPS:trips", r"not registered \(known: \['trips'\]\); 'TRIPS': did you mean 'trips'\?$"),
             ("fv_gone:trips", r"feature view 'fv_gone' is not registered \(known: \['trips'\]\)$"),  # (retired)
             ("trips:late_shares", r"feature view 'trips' has no feature 'late_shares' \(has: \['trips', "
                                   r"'late_share'\]\); did you mean 'late_share'\?$"),
             ("trips:Trips", r"has no feature 'Trips' .*; did you mean 'trips'\?$"),
             ("trips:zzz", r"has no feature 'zzz' \(has: \['trips', 'late_share'\]\)$")]
    for reference, message in cases:
        with pytest.raises(KeyError) as raised:
            store.get_historical_features(ENTITIES, [reference])
        assert re.search(message, raised.value.args[0]), (reference, raised.value.args[0])
    with pytest.raises(KeyError) as raised:
        store.materialize_online(["fv_built", "trip"])
    assert re.search(rf"feature views \['fv_built', 'trip'\] are not registered .*'trip': did you mean 'trips'\?; "
                     rf"{hint}$", raised.value.args[0])
    ENTITIES.to_csv(tmp_path / "entities.csv", index=False)
    assert main(["features", "historical", "--entities", str(tmp_path / "entities.csv"), "--features",
                 "fv_bulit:trips", "--out", str(tmp_path / "out.csv")]) != 0
    assert re.search(rf"--features: feature view 'fv_bulit' is not registered .*did you mean 'fv_built'\?; {hint}",
                     capsys.readouterr().err)


def test_a_view_declared_otherwise_than_its_table_was_built_is_warned_of_offline_online_and_in_the_cli(
        warehouse, tmp_path, capsys):
    """A view's YAML edited (here its TTL) and not built again: `mlops features list` showed the
    built declaration while answers already followed the edited one, without a word. Each call
    now warns (a note in the CLI); a view as built, or one applied from Python, does not."""
    import dataclasses
    import warnings

    from mlops_pipelines.features.errors import DeclarationNotBuiltWarning
    from mlops_pipelines.features.sql_project import SqlProject

    declared = SqlProject().feature_views()["fv_origin_weather"]
    with duckdb.connect(str(warehouse)) as con:  # its table as built, with a TTL of 4 hours
        con.execute("create schema features")
        con.execute("create table features.fv_origin_weather as select 'JFK' as origin, "
                    "timestamp '2013-06-01 10:00' as available_at, "
                    + ", ".join(f"1.5::double as {f.name}" for f in declared.features))
        FeatureStore.record_materialization(con, dataclasses.replace(declared, ttl=timedelta(hours=4)), 1, "run-1")
    entities = pd.DataFrame({"origin": ["JFK"], "event_timestamp": [T("2013-06-01 13:30", tz="UTC")]})
    store = FeatureStore(warehouse, [declared], online_path=tmp_path / "online.sqlite")
    with pytest.warns(DeclarationNotBuiltWarning, match=r"feature view 'fv_origin_weather': its declaration "
                                                        rf"\(version {declared.version}\) is not the one its table "
                                                        r"was built with .*--select "
                                                        r"fv_origin_weather,online_features`\)$") as caught:
        out = store.get_historical_features(entities, ["fv_origin_weather:temp_f"])
    assert {record.filename for record in caught} == {__file__}  # (the caller's line, not the store's)
    assert pd.isna(out["temp_f"][0])  # (3 h 30 min after: beyond the declared 3 hours, within the built 4)
    with pytest.warns(DeclarationNotBuiltWarning, match="'fv_origin_weather': its declaration"):
        store.materialize_online(end_ts="2013-06-01 12:00")
    assert main(["features", "historical", "--entities", _csv(tmp_path, entities), "--features",
                 "fv_origin_weather:temp_f", "--out", str(tmp_path / "out.csv")]) == 0
    assert "note: feature view 'fv_origin_weather': its declaration" in capsys.readouterr().err
    with duckdb.connect(str(warehouse)) as con:  # built again as declared: no word
        FeatureStore.record_materialization(con, declared, 1, "run-2")
    documented = dataclasses.replace(declared, description="edited", owner="someone else")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeclarationNotBuiltWarning)
        store.get_historical_features(entities, ["fv_origin_weather:temp_f"])
        store.materialize_online(end_ts="2013-06-01 12:00")
        # (documentation edited since: no answer changes)
        FeatureStore(warehouse, [documented]).get_historical_features(entities, ["fv_origin_weather:temp_f"])
        store.apply(_view(tmp_path))  # (applied from Python: the registry's declaration is the view's)
        other = FeatureStore(warehouse, [_view(tmp_path, ttl=timedelta(hours=1))])  # (given: wins, as documented)
        other.get_historical_features(ENTITIES, ["trips:trips"])
    assert main(["features", "historical", "--entities", _csv(tmp_path, entities), "--features",
                 "fv_origin_weather:temp_f", "--out", str(tmp_path / "out.csv")]) == 0
    assert "its declaration" not in capsys.readouterr().err
    with duckdb.connect(str(warehouse)) as con:  # a registry row of an earlier version: the whole versions
        con.execute("update features.registry set serving_version = null")
    with pytest.warns(DeclarationNotBuiltWarning):
        FeatureStore(warehouse, [documented]).get_historical_features(entities, ["fv_origin_weather:temp_f"])


def test_a_registered_feature_of_the_default_type_over_no_number_is_served_with_a_warning(warehouse, tmp_path):
    """Feature("x") has the type float, the default: over a text column, a view only registered
    served text without a word, where apply() refuses it. It is still served, with a warning
    naming the caller's line; a number of any type, or a declared type, gets none."""
    import warnings

    from mlops_pipelines.features.errors import FeatureTypeWarning

    with duckdb.connect(str(warehouse)) as con:
        con.execute("create table t as select 'oslo' as city, timestamp '2024-03-01' as ts, '1.5' as label, "
                    "2::bigint as n, 0.5::decimal(4, 2) as share")
    entities = pd.DataFrame({"city": ["oslo"], "event_timestamp": [T("2024-03-02", tz="UTC")]})
    view = FeatureView("v", "t", ("city",), "ts", (Feature("label"), Feature("n"), Feature("share")))
    with pytest.warns(FeatureTypeWarning, match=r"feature view 'v': feature 'label' has the type float \(the "
                                                r"default\), but t gives VARCHAR: it is served as VARCHAR; "
                                                r"declare its type, Feature\('label', 'str'\)") as caught:
        out = FeatureStore(warehouse, [view]).get_historical_features(entities, ["v:label", "v:n", "v:share"])
    assert len(caught) == 1 and caught[0].filename == __file__
    assert out[["label", "n", "share"]].values.tolist() == [["1.5", 2, 0.5]]
    typed = FeatureView("v", "t", ("city",), "ts", (Feature("label", "str"), Feature("n"), Feature("share")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureTypeWarning)
        FeatureStore(warehouse, [typed]).get_historical_features(entities, ["v:label", "v:n", "v:share"])
    with pytest.raises(ValueError, match="label: declared float but the source produces VARCHAR"):
        FeatureStore(warehouse).apply(view)


def _csv(tmp_path, frame: pd.DataFrame) -> str:
    path = tmp_path / "entities.csv"
    frame.to_csv(path, index=False)
    return str(path)


def test_the_cli_names_colliding_feature_names_of_two_views_as_the_request_s_fault(warehouse, tmp_path, capsys):
    """Two views' features making one column was reported as the entity file's fault
    ('entities.csv: feature name ...'); it is the request's, found before the file is read."""
    store = FeatureStore(warehouse)
    store.apply(_view(tmp_path), _view(tmp_path, name="again"))
    argv = ["features", "historical", "--entities", str(tmp_path / "missing.csv"), "--features",
            "trips:trips,again:trips", "--out", str(tmp_path / "out.csv")]
    assert main(argv) == 2
    assert ("--features: feature name 'trips' is in views 'trips' and 'again': pass --full-feature-names"
            in capsys.readouterr().err)


def test_a_join_key_the_source_lacks_too_is_the_view_s_error_not_the_entity_frame_s(warehouse, tmp_path):
    """A view registered (not applied: not checked against its source) with a misspelt key
    ('cty') was reported as the entity frame's fault: "entity frame lacks join keys ['cty']"."""
    from mlops_pipelines.features.store import ViewReadError

    store = FeatureStore(warehouse, [_view(tmp_path, name="typo", entities=("cty", "line"))])
    with pytest.raises(ViewReadError, match=r"feature view 'typo': join key 'cty' is not a column of its source "
                                            r"read_parquet\('.*trips.parquet'\) \(its columns: \['city', 'line', "
                                            r"'ts', 'created', 'trips', 'late_share'\]\); did you mean 'city'\?"):
        store.get_historical_features(ENTITIES, ["typo:trips"])
    # A key the source has: the entity frame's error, as before.
    with pytest.raises(KeyError, match=r"entity frame lacks join keys \['line'\] of view 'trips'"):
        FeatureStore(warehouse, [_view(tmp_path)]).get_historical_features(ENTITIES.drop(columns="line"),
                                                                           ["trips:trips"])


def test_a_retired_view_is_kept_in_the_registry_but_no_longer_found(warehouse, tmp_path, capsys):
    store = FeatureStore(warehouse)
    store.apply(_view(tmp_path))
    store.retire("trips")
    assert "trips" not in store.views and FeatureStore(warehouse).applied_views() == {}
    with pytest.raises(KeyError, match="feature view 'trips' is not registered"):
        FeatureStore(warehouse).get_historical_features(ENTITIES, "trips:trips")
    with pytest.raises(KeyError, match="no feature view 'trips' applied from Python"):
        store.retire("trips")
    assert main(["features", "list"]) == 0
    assert ", retired 20" in capsys.readouterr().out
    store.apply(_view(tmp_path))  # applied again: current again
    assert list(FeatureStore(warehouse).applied_views()) == ["trips"]


def test_a_view_in_this_store_is_not_replaced_by_an_applied_one_of_the_same_name(warehouse, tmp_path):
    FeatureStore(warehouse).apply(_view(tmp_path))
    mine = _view(tmp_path, ttl=None)
    store = FeatureStore(warehouse, [mine])
    store.get_historical_features(ENTITIES, ["trips:trips"])
    assert store.views["trips"] is mine


def test_an_in_memory_store_has_no_registry_to_apply_to(tmp_path):
    with pytest.raises(ValueError, match="an in-memory store keeps no registry"):
        FeatureStore(":memory:").apply(_view(tmp_path))


def test_an_applied_view_is_materialized_online_by_name(warehouse, tmp_path):
    FeatureStore(warehouse).apply(_view(tmp_path, ttl=None))
    store = FeatureStore(warehouse, online_path=tmp_path / "online.sqlite")
    assert store.materialize_online("trips", end_ts="2024-03-01T10:00:02Z") == {"trips": 3}
    served = store.get_online_features({"city": ["oslo", "oslo", "rome"], "line": [1, 2, 1]}, "trips:trips")
    assert served["trips"].tolist() == [7, 3, 9]
    assert json.loads(FeatureStore(warehouse).applied_views()["trips"].to_json())["ttl"] is None


def test_a_view_no_path_can_serve_is_refused_by_apply_not_recorded_to_block_every_use(warehouse, tmp_path):
    """apply() ran the join's type checks with no feature to check: a TIME WITH TIME ZONE feature
    (declared 'any') was recorded, failed every lookup, and blocked materialize_online() of every
    applied view, which runs them in one transaction."""
    timetz = _view(tmp_path, name="tz", features=(Feature("tod", "any"),),
                   source=f"(select *, '10:00+01'::timetz as tod from read_parquet('{tmp_path / 'trips.parquet'}'))")
    store = FeatureStore(warehouse)
    with pytest.raises(ValueError, match=r"feature view 'tz': feature 'tod' is a TIME WITH TIME ZONE"):
        store.apply(_view(tmp_path, ttl=None), timetz)
    assert FeatureStore(warehouse).applied_views() == {}
    FeatureStore(warehouse).apply(_view(tmp_path, ttl=None))
    online = FeatureStore(warehouse, online_path=tmp_path / "online.sqlite")
    assert online.materialize_online(end_ts="2024-03-01T10:00:02Z") == {"trips": 3}


def test_a_view_given_to_materialize_that_differs_from_the_registered_one_is_refused(warehouse, tmp_path):
    """Views differing only in their SQL are equal (the SQL is left out of equality) but of other
    versions: materialize_online([view]) wrote the registered declaration under the caller's view."""
    registered = _view(tmp_path, ttl=None, sql="select 1")
    other = _view(tmp_path, ttl=None, sql="select 2")
    assert registered == other and registered.version != other.version
    store = FeatureStore(warehouse, [registered], online_path=tmp_path / "online.sqlite")
    with pytest.raises(ValueError, match=r"feature view 'trips': not the view registered under that name"):
        store.materialize_online([other], end_ts="2024-03-01T10:00:02Z")
    assert store.materialize_online([registered], end_ts="2024-03-01T10:00:02Z") == {"trips": 3}


def test_a_connection_given_is_the_one_the_registry_is_read_through(warehouse, tmp_path):
    """DuckDB refuses a read-only connection beside a writable one in the same process: a
    writer's connection finds applied views through itself. Without it the store says to pass it."""
    FeatureStore(warehouse).apply(_view(tmp_path))
    with duckdb.connect(str(warehouse)) as writer:
        out = FeatureStore(warehouse).get_historical_features(ENTITIES, "trips:trips", connection=writer)
        assert out["trips"].fillna(-1).tolist() == [7, -1, 3, -1, -1]
        with pytest.raises(ValueError, match=r"this process holds .*warehouse.duckdb open for writing, beside which "
                                             r"DuckDB opens no read-only connection: pass that connection"):
            FeatureStore(warehouse).get_historical_features(ENTITIES, "trips:trips")


def test_the_cli_notes_a_view_whose_features_are_missing_in_every_row(warehouse, tmp_path, capsys):
    """Keys are matched as written: ' oslo' in a CSV matches nothing, quietly but for this note.
    It says where to look, not why: the values found may be missing too."""
    FeatureStore(warehouse).apply(_view(tmp_path), _view(tmp_path, name="again", ttl=None))
    argv = ["features", "historical", "--entities", str(tmp_path / "entities.csv"),
            "--features", "trips:trips,again:late_share", "--out", str(tmp_path / "out.parquet")]
    (tmp_path / "entities.csv").write_text("city,line,event_timestamp\n oslo,1,2024-03-01T11:00Z\n")
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(";")[0] for line in err] == ["note: every value of trips asked for is missing",
                                                     "note: every value of again asked for is missing"]
    assert "check the keys (city, line: matched as written, ' JFK' and 'jfk' are not 'JFK')" in err[0]
    (tmp_path / "entities.csv").write_text("city,line,event_timestamp\noslo,1,2024-03-01T11:00Z\n")
    assert main(argv) == 0
    # "again" (no TTL) finds the 10:00 row; "trips" (a 400 ms TTL) nothing an hour later: noted
    assert capsys.readouterr().err.splitlines() == [line for line in err if "value of trips" in line]


def test_an_applied_source_read_by_a_relative_or_home_path_is_refused(warehouse, tmp_path, monkeypatch):
    """The registry keeps the source as written: 'trips.parquet' (or ~/trips.parquet) would be
    another file, or none, for a process started elsewhere (or by another user). DuckDB's parser
    finds the files: comments, other text and named options are no files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for source, named in [("read_parquet('trips.parquet')", "trips.parquet"),
                          ("read_parquet(['trips.parquet'])", "trips.parquet"),
                          ('"trips.parquet"', "trips.parquet"), ("'trips.parquet'", "trips.parquet"),
                          ("(-- the city's trips\n select * from read_parquet('./*.parquet'))", "./*.parquet"),
                          ("read_parquet('~/trips.parquet')", "~/trips.parquet"),
                          ("trips.parquet", "trips.parquet"),  # (unquoted: schema trips, table parquet)
                          ("read_parquet(ARRAY['trips.parquet'])", "trips.parquet"),
                          ("read_parquet('trips.parquet'::VARCHAR)", "trips.parquet")]:
        whole = re.escape(str(tmp_path / named.removeprefix("~/").removeprefix("./")))
        with pytest.raises(ValueError, match=rf"feature view 'trips': its source reads '{re.escape(named)}', which "
                                             rf"each process would find from its own working \(or home\) folder; "
                                             rf"give the path whole \('{whole}'\)"):
            FeatureStore(warehouse).apply(_view(tmp_path, source=source))
    assert FeatureStore(warehouse).applied_views() == {}
    whole = tmp_path / "trips.parquet"
    # Text that names no file: a filter on '%.csv', a file name compared, a named option.
    for source in (f"(select * from read_parquet('{whole}') where city not like '%.csv' and city != 'a.parquet')",
                   f"read_parquet('{whole}', filename = 'x.parquet')"):
        FeatureStore(warehouse).apply(_view(tmp_path, source=source))
    # Tables of the warehouse and CTEs named like files are no files; a path DuckDB could read
    # from no home folder is refused all the same.
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"create schema raw; create table raw.\"trips.csv\" as from '{whole}'")
        con.execute(f"create table \"trips/2024\" as from '{whole}'; create table \"daily.parquet\" as from '{whole}'")
        con.execute(f"create macro read_city(c) as table from read_parquet('{whole}') where city = c")
    cte = f"(with \"daily/trips\" as (from '{whole}') from \"daily/trips\")"
    for source in ('raw."trips.csv"', 'warehouse."daily.parquet"', '"trips/2024"', cte, "read_city('oslo')"):
        FeatureStore(warehouse).apply(_view(tmp_path, source=source))
    # (a table of that name in another schema is not what a bare name reads: the file is)
    with pytest.raises(ValueError, match="its source reads 'trips.csv'"):
        FeatureStore(warehouse).apply(_view(tmp_path, source='"trips.csv"'))
    with pytest.raises(ValueError, match=r"its source reads '~nobody_here/t.parquet', .* \('its absolute path'\)"):
        FeatureStore(warehouse).apply(_view(tmp_path, source="read_parquet('~nobody_here/t.parquet')"))
    deep = "(select city, line, ts, created, trips" + " + 0" * 3000 + " as trips, late_share from 'x')"
    assert _files_named(deep) == []  # (too deep to walk: not checked, and no RecursionError)
    store = FeatureStore(warehouse)  # (register() keeps it in this process only: as written)
    store.register(_view(tmp_path, source="read_parquet('trips.parquet')"))
    assert store.get_historical_features(ENTITIES, "trips:trips")["trips"].fillna(-1).tolist() == [7, -1, 3, -1, -1]


def test_a_name_declared_in_dbt_like_sql_is_refused_before_it_is_built(warehouse, tmp_path):
    """Else the project's stores would read the SQL declaration, and every build would refuse the
    applied one."""
    with pytest.raises(ValueError, match=r"feature view 'FV_plane': 'fv_plane' is a model of dbt_like_sql/"):
        FeatureStore(warehouse).apply(_view(tmp_path, name="FV_plane"))
    assert FeatureStore(warehouse).applied_views() == {}


def test_materializing_every_view_takes_the_applied_ones_whatever_was_looked_up(warehouse, tmp_path):
    FeatureStore(warehouse).apply(_view(tmp_path, ttl=None))
    store = FeatureStore(warehouse, online_path=tmp_path / "online.sqlite")
    assert store.materialize_online(end_ts="2024-03-01T10:00:02Z") == {"trips": 3}


def test_a_sql_build_does_not_replace_a_live_applied_view_of_its_name(warehouse, tmp_path):
    FeatureStore(warehouse).apply(_view(tmp_path, name="fv_x"))
    built = FeatureView("FV_X", "t", ("city",), "ts", (Feature("trips"),))
    with duckdb.connect(str(warehouse)) as con:
        with pytest.raises(ValueError, match=r"feature view 'FV_X': 'fv_x' was applied to this warehouse from Python "
                                             r"on 20.* retire it \(FeatureStore.retire\('fv_x'\)\)"):
            FeatureStore.record_materialization(con, built, 4, "run-1", declared=["FV_X"])
    assert list(FeatureStore(warehouse).applied_views()) == ["fv_x"]
    FeatureStore(warehouse).retire("fv_x")
    with duckdb.connect(str(warehouse)) as con:  # retired: the name is the build's again
        FeatureStore.record_materialization(con, built.__class__(**{**built.__dict__, "name": "fv_x"}), 4, "run-2")
        assert con.sql("select name, origin, row_count from features.registry").fetchall() == [("fv_x", "sql", 4)]


def test_a_process_writing_the_warehouse_finds_applied_views_without_handing_its_connection(warehouse, tmp_path):
    """DuckDB refuses a read-only connection beside this process's writable one: the lookup then
    shares the writer's database."""
    FeatureStore(warehouse).apply(_view(tmp_path))
    with duckdb.connect(str(warehouse)) as writer:
        writer.execute("create table held (x int)")
        assert FeatureStore(warehouse).resolve_features("trips:trips") == {"trips": ["trips"]}


def test_retiring_in_a_missing_warehouse_creates_no_file(tmp_path):
    with pytest.raises(KeyError, match="no feature view 'trips' applied from Python: no warehouse at"):
        FeatureStore(tmp_path / "nowhere.duckdb").retire("trips")
    assert not (tmp_path / "nowhere.duckdb").exists()


def test_a_warehouse_held_by_another_process_is_said_to_be_in_use(warehouse, tmp_path, capsys):
    """Looking up an applied view while another process writes the warehouse: DuckDB's lock
    error, which the CLI says as "in use, try again", not "not registered"."""
    import subprocess
    import sys

    FeatureStore(warehouse).apply(_view(tmp_path))
    (tmp_path / "entities.csv").write_text("city,line,event_timestamp\noslo,1,2024-03-01T11:00Z\n")
    script = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", script, str(warehouse)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(duckdb.IOException, match="Could not set lock"):
            FeatureStore(warehouse).resolve_features("trips:trips")
        assert main(["features", "historical", "--entities", str(tmp_path / "entities.csv"),
                     "--features", "trips:trips", "--out", str(tmp_path / "out.csv")]) == 2
        assert capsys.readouterr().err.startswith("mlops features: the warehouse is in use by another process")
    finally:
        holder.kill()
        holder.wait()


def test_the_cli_blames_the_view_not_the_entity_file_for_a_source_gone(warehouse, tmp_path, capsys):
    FeatureStore(warehouse).apply(_view(tmp_path))
    (tmp_path / "trips.parquet").unlink()
    (tmp_path / "entities.csv").write_text("city,line,event_timestamp\noslo,1,2024-03-01T11:00Z\n")
    assert main(["features", "historical", "--entities", str(tmp_path / "entities.csv"),
                 "--features", "trips:trips", "--out", str(tmp_path / "out.csv")]) == 2
    assert capsys.readouterr().err.startswith("mlops features: feature view 'trips': reading read_parquet(")


def test_apply_and_retire_beside_a_read_only_connection_of_this_process(warehouse, tmp_path):
    store = FeatureStore(warehouse)
    with duckdb.connect(str(warehouse), read_only=True):
        for call in (lambda: store.apply(_view(tmp_path)), lambda: store.retire("trips")):
            with pytest.raises(ValueError, match=r"this process holds .* open with another configuration \(read-only, "
                                                 r"or other settings\), .*: close it, or pass a writable one"):
                call()


OLD_REGISTRY = """create schema features; create table features.registry (
    name varchar primary key, version varchar, source varchar, entities varchar, event_timestamp varchar,
    created_timestamp varchar, ttl_seconds double, features varchar, owner varchar, description varchar,
    row_count bigint, materialized_at timestamptz, dagster_run_id varchar, retired_at timestamptz);
    insert into features.registry values ('fv_old', 'v1', 't', '["city"]', 'ts', null, null, '[]', 'team-a', '',
    3, '2026-11-01 10:00+00', 'run-0', null)"""


def test_a_registry_written_before_views_could_be_applied(warehouse, tmp_path, capsys):
    """Its rows have no origin: listed as builds, refused as names to apply, and still recorded."""
    with duckdb.connect(str(warehouse)) as con:
        con.execute(OLD_REGISTRY)
    assert main(["features", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:9] == ["fv_old", "v1", "city", "ts", "-", "none",
                                                                   "team-a", "3", "2026-11-01"]
    with pytest.raises(ValueError, match="'fv_old' is built from dbt_like_sql/"):
        FeatureStore(warehouse).apply(_view(tmp_path, name="fv_old"))
    with pytest.raises(KeyError, match="no feature view 'fv_old' applied from Python"):
        FeatureStore(warehouse).retire("fv_old")
    built = FeatureView("fv_new", "t", ("city",), "ts", (Feature("trips"),))
    with duckdb.connect(str(warehouse)) as con:
        FeatureStore.record_materialization(con, built, 2, "run-1", declared=["fv_new"])
        assert con.sql("select name, origin, declaration, retired_at is null from features.registry order by name"
                       ).fetchall() == [("fv_new", "sql", None, True), ("fv_old", None, None, False)]
    with pytest.raises(KeyError, match="no feature view 'fv_new' applied from Python"):  # (a build's to retire)
        FeatureStore(warehouse).retire("fv_new")


def test_a_store_looks_up_only_the_views_it_lacks_and_keeps_its_own(warehouse, tmp_path):
    FeatureStore(warehouse).apply(_view(tmp_path, ttl=timedelta(hours=1)), _view(tmp_path, name="other"))
    mine = _view(tmp_path, ttl=None)
    store = FeatureStore(warehouse, [mine])
    assert store.resolve_features(["trips:trips", "other:trips"]) == {"trips": ["trips"], "other": ["trips"]}
    assert store.views["trips"] is mine and store.views["other"] == _view(tmp_path, name="other")


def test_materializing_through_a_writers_connection_finds_applied_views(warehouse, tmp_path):
    FeatureStore(warehouse).apply(_view(tmp_path, ttl=None))
    with duckdb.connect(str(warehouse)) as writer:
        store = FeatureStore(warehouse, online_path=tmp_path / "online.sqlite")
        assert store.materialize_online("trips", end_ts="2024-03-01T10:00:02Z", connection=writer) == {"trips": 3}


def test_declared_columns_are_found_whatever_their_case(warehouse, tmp_path):
    """DuckDB resolves names ignoring case: a key 'City' is the column city, and a feature 'Trips'
    is checked against the type of trips."""
    store = FeatureStore(warehouse)
    store.apply(_view(tmp_path, entities=("City", "LINE")))
    with pytest.raises(ValueError, match="Trips: declared str but the source produces BIGINT"):
        store.apply(_view(tmp_path, features=(Feature("Trips", "str"),)))


def test_an_arrow_dictionary_pandas_can_hold_stays_a_category(warehouse, tmp_path):
    FeatureStore(warehouse).apply(_view(tmp_path))
    entities = pa.table({"city": pa.array(["oslo", "rome"]).dictionary_encode(), "line": [1, 1],
                         "event_timestamp": pa.array([T("2024-03-01 10:00", tz="UTC")] * 2)})
    out = FeatureStore(warehouse).get_historical_features(entities, "trips:trips")
    assert out["city"].dtype == "category" and out["trips"].tolist() == [7, pd.NA]


def test_the_cli_notes_nothing_when_some_row_has_a_value_or_there_are_no_rows(warehouse, tmp_path, capsys):
    FeatureStore(warehouse).apply(_view(tmp_path, ttl=None))
    argv = ["features", "historical", "--entities", str(tmp_path / "entities.csv"),
            "--features", "trips:trips", "--out", str(tmp_path / "out.csv")]
    for rows in ("oslo,1,2024-03-01T11:00Z\ntokyo,1,2024-03-01T11:00Z\n", ""):
        (tmp_path / "entities.csv").write_text("city,line,event_timestamp\n" + rows)
        assert main(argv) == 0
        assert capsys.readouterr().err == ""


def test_apply_reads_only_the_model_names_of_dbt_like_sql(warehouse, tmp_path, monkeypatch):
    """A half-written YAML elsewhere in the project, or no project beside an installed package,
    is not the applied view's business."""
    import mlops_pipelines.features.store as store_module

    project = tmp_path / "project"
    (project / "features").mkdir(parents=True)
    (project / "features" / "fv_mine.sql").write_text("select 1")
    (project / "features" / "fv_mine.yml").write_text("feature_view:\n  ttl: 3:00\n")
    (project / "notes.yml").write_text("a: 1\n")
    monkeypatch.setattr(store_module, "default_project_dir", lambda: project)
    FeatureStore(warehouse).apply(_view(tmp_path))
    with pytest.raises(ValueError, match="'fv_mine' is a model of dbt_like_sql/"):
        FeatureStore(warehouse).apply(_view(tmp_path, name="fv_mine"))
    monkeypatch.setattr(store_module, "default_project_dir", lambda: tmp_path / "none")
    FeatureStore(warehouse).apply(_view(tmp_path, name="fv_mine"))


def test_a_data_file_or_folder_given_as_the_warehouse_or_online_store_is_refused_by_path(warehouse, tmp_path):
    """DuckDB opens an existing parquet file as an in-memory database: apply() said it recorded the
    view, which was gone with the store. The warehouse file or a folder as the online store gave
    SQLite's errors naming no path."""
    data = tmp_path / "trips.parquet"
    with pytest.raises(ValueError, match=re.escape(f"{data}: not a DuckDB database file, so it cannot be the "
                                                   "warehouse")):
        FeatureStore(data)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path}: the warehouse is a DuckDB file")):
        FeatureStore(tmp_path)
    database = tmp_path / "w.duckdb"
    FeatureStore(database).apply(_view(tmp_path))
    for online, error in ((database, f"{database}: not a SQLite database, so it cannot be the online store"),
                          (tmp_path, f"{tmp_path}: the online store is a SQLite file")):
        store = FeatureStore(database, online_path=online)
        with pytest.raises(ValueError, match=re.escape(error)):
            store.materialize_online(["trips"], end_ts="2024-03-02")
        with pytest.raises(ValueError, match=re.escape(error)):
            store.get_online_features({"city": ["Oslo"], "line": [1]}, ["trips:trips"])
    assert list(FeatureStore(database).applied_views()) == ["trips"]  # the warehouse is untouched
    assert data.read_bytes()[:4] == b"PAR1"


def test_a_source_ending_in_a_comment_is_read_whole(warehouse, tmp_path):
    """A source ending in a SQL comment (`... -- raw rows`) commented out the rest of each query:
    rows with null keys were read, and materialize_online failed with DuckDB's Parser Error."""
    view = _view(tmp_path, source=f"read_parquet('{tmp_path / 'trips.parquet'}') -- raw rows")
    store = FeatureStore(warehouse, online_path=tmp_path / "online.sqlite")
    store.apply(view)
    assert store.get_historical_features(ENTITIES, ["trips:trips"])["trips"].tolist() == [7, pd.NA, 3, pd.NA, pd.NA]
    assert store.materialize_online(["trips"], end_ts="2024-03-01 10:00:01") == {"trips": 3}
    online = store.get_online_features(ENTITIES[["city", "line"]], ["trips:trips"])["trips"]
    assert online.fillna(-1).tolist() == [-1, -1, 3, -1, -1]  # (the others are older than the TTL of 400 ms)


@pytest.mark.parametrize("field_name", ["owner", "description"])
@pytest.mark.parametrize("value", [5, None, ["team-a"]])
def test_an_owner_or_description_that_is_not_text_is_refused(field_name, value):
    """Recorded in the registry as text: the YAML path refused `owner: 42`, Python took it."""
    with pytest.raises(ValueError, match=rf"feature view 'v': {field_name} {re.escape(repr(value))} is not text"):
        FeatureView("v", "src", ("k",), "ts", (Feature("x"),), **{field_name: value})
    assert FeatureView("v", "src", ("k",), "ts", (Feature("x"),), **{field_name: "text"})


def test_a_source_ending_with_a_semicolon_is_refused_by_name():
    """Read inside the store's own queries, "src;" failed with a syntax error "at or near 'limit'",
    a word the user never wrote."""
    with pytest.raises(ValueError, match=r"feature view 'v': source 'select \* from src; ' ends with ';': give the "
                                         r"table or query without it"):
        FeatureView("v", "select * from src; ", ("k",), "ts", (Feature("x"),))


def test_a_view_recorded_with_an_owner_that_is_not_text_still_loads():
    """Earlier versions recorded any owner or description (None, 5); refusing them now made one
    such row of the registry fail every applied view."""
    recorded = json.loads(FeatureView("v", "src", ("k",), "ts", (Feature("x"),)).to_json())
    recorded.update(owner=None, description=5)
    view = FeatureView.from_json(json.dumps(recorded))
    assert (view.owner, view.description) == ("", "5")
