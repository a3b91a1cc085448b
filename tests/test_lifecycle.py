"""The lifecycle through real Dagster runs on a small slice of the real data.

Four months, the first four days each (14,511 flights); training window 2013-01..2013-02,
holdout 2013-03..2013-04. Each module run owns its data folder, DuckDB file, MLflow store and
Dagster instance in a temporary directory. The tests run in file order and build on each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from mlops_pipelines.features.sql_project import SqlProject
from mlops_pipelines.monitoring.profile import ReferenceProfile
from mlops_pipelines.resources import build_resources
from tests.conftest import SLICE_MONTHS, SMALL_TRAINING, Lifecycle, first_days, write_landing_month


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory, flights_by_month):
    root = tmp_path_factory.mktemp("lifecycle")
    life = Lifecycle(root)
    for month, table in flights_by_month.items():
        write_landing_month(life.paths.landing_dir, month, first_days(table))
    result = life.run()
    assert result.success, [s.errors for s in result.stages]
    life.first_result = result
    return life


@pytest.fixture(scope="module")
def package_flights(package_csv_dir):
    frame = pd.read_csv(package_csv_dir / "flights.csv.zip")
    return frame[frame["month"].isin([1, 2, 3, 4]) & frame["day"].isin([1, 2, 3, 4])]


def test_every_stage_ran_and_rows_per_layer(lifecycle, package_flights):
    stages = [s.name for s in lifecycle.first_result.stages]
    assert stages == ["reference tables", *(f"flights {m}" for m in SLICE_MONTHS),
                      "SQL models and feature views", "train, evaluate, promote"]
    counts = lifecycle.table_counts()
    assert counts["validated.flights"] == len(package_flights) == 14511
    assert counts["staging.stg_flights"] == 14511
    assert counts["validated.weather"] == 26114  # one row quarantined
    labelled = int(package_flights["arr_delay"].notna().sum())
    assert counts["training.training_dataset"] == labelled
    quarantine = lifecycle.query("select table_name, rule, count(*) n from validated.quarantine group by all")
    assert quarantine.values.tolist() == [["weather", "wind_speed_range", 1]]


def test_documented_columns_exist_in_every_model(lifecycle):
    project = SqlProject()
    with duckdb.connect(str(lifecycle.paths.warehouse_path), read_only=True) as con:
        failures = {name: project.column_test_failures(con, model) for name, model in project.models.items()}
    assert failures == {name: [] for name in project.models} and len(failures) == 12
    registry = lifecycle.query("select name, version, row_count from features.registry order by name")
    assert len(registry) == 6 and (registry["row_count"] > 0).all()


def test_champion_loads_in_a_separate_process_and_predicts(lifecycle, tmp_path):
    champion = lifecycle.registry.version_by_alias("champion")
    assert str(champion.version) == "1"
    assert champion.tags["train_window"] == "2013-01..2013-02"
    assert champion.tags["holdout_window"] == "2013-03..2013-04"
    ledger = lifecycle.query("select decision, challenger_version from governance.promotion_ledger")
    assert ledger.values.tolist() == [["promoted", "1"]]
    # The reference profile for monitoring travels with the model.
    local = lifecycle.registry.client().download_artifacts(champion.run_id, "reference_profile.json", str(tmp_path))
    profile = ReferenceProfile.from_json(open(local).read())
    assert {"prediction", "temp_f", "origin_dep_delay_mean_1h"} <= set(profile.numeric)
    assert set(profile.categorical) == {"carrier", "origin", "dest", "engine_type", "manufacturer"}
    assert sum(profile.categorical["origin"].counts.values()) == profile.numeric["prediction"].count
    script = (
        "import json, sys, duckdb, mlflow\n"
        "model = mlflow.pyfunc.load_model('models:/flight_delay_15@champion')\n"
        f"con = duckdb.connect({str(lifecycle.paths.warehouse_path)!r}, read_only=True)\n"
        # Rows with missing feature values (no plane record, no weather in TTL) included.
        "rows = con.execute('select * from training.training_dataset "
        "order by seats is null desc, flight_id limit 25').df()\n"
        "p = model.predict(rows)\n"
        "print(json.dumps({'shape': list(p.shape), 'min': float(p.min()), 'max': float(p.max()),"
        " 'nulls': int(rows['seats'].isna().sum())}))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": lifecycle.paths.mlflow_tracking_uri}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=lifecycle.paths.data_dir, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["shape"] == [25, 2] and 0.0 <= out["min"] <= out["max"] <= 1.0
    assert out["nulls"] > 0


def test_one_point_in_time_row_by_hand(lifecycle, package_flights, package_csv_dir):
    """Recompute one training row's weather and origin-congestion features from the raw CSVs.

    B6 9, JFK, scheduled 18:00 New York time on 2013-02-03, left 9 minutes early: its own early
    departure must not count among what was known at its scheduled departure.
    """
    flight_id = "2013-02-03T1800_B69_JFK"
    row = lifecycle.query(f"select * from training.training_dataset where flight_id = '{flight_id}'")
    assert len(row) == 1
    f = package_flights.copy()
    f["sched_utc"] = pd.to_datetime(f["time_hour"], utc=True) + pd.to_timedelta(f["minute"], unit="m")
    me = f[(f.month == 2) & (f.day == 3) & (f.carrier == "B6") & (f.flight == 9) & (f.origin == "JFK")].iloc[0]
    at = me["sched_utc"]
    assert row["sched_dep_utc"].iloc[0] == at == pd.Timestamp("2013-02-03 23:00", tz="UTC")
    # Weather: the latest JFK report available (end of its hour) by 23:00 UTC, at most 3 hours
    # old: the 22:00 report, not the one for the 23:00 hour, taken at about 23:51.
    weather = pd.read_csv(package_csv_dir / "weather.csv")
    weather["available"] = pd.to_datetime(weather["time_hour"], utc=True) + pd.Timedelta(hours=1)
    seen = weather[(weather.origin == "JFK") & (weather.available <= at)
                   & (weather.available >= at - pd.Timedelta(hours=3))].sort_values("available")
    assert seen.iloc[-1]["time_hour"] == "2013-02-03T22:00:00Z"
    assert row["temp_f"].iloc[0] == seen.iloc[-1]["temp"]
    # Congestion: departures from JFK known (1 minute after max(departure, schedule)) in the
    # hour up to 23:00 (not the hour before the latest such departure, which may be long past).
    jfk = f[(f.origin == "JFK") & f.dep_delay.notna()].copy()
    jfk["dep_utc"] = jfk["sched_utc"] + pd.to_timedelta(jfk["dep_delay"], unit="m")
    jfk["known"] = jfk[["dep_utc", "sched_utc"]].max(axis=1) + pd.Timedelta(minutes=1)
    known = jfk[jfk.known <= at]
    window = known[known.known >= at - pd.Timedelta(hours=1)]
    # The last departure was known at 22:56: the hour before it gives another mean.
    assert len(window) == 28 and known.known.max() == pd.Timestamp("2013-02-03 22:56", tz="UTC")
    stale = known[known.known >= known.known.max() - pd.Timedelta(hours=1)]
    assert stale.dep_delay.mean() != pytest.approx(window.dep_delay.mean())
    assert row["origin_dep_delay_mean_1h"].iloc[0] == pytest.approx(window.dep_delay.mean())
    assert row["origin_departures_1h"].iloc[0] == len(window)
    # The flight's own departure is never among what is known at its own prediction time.
    assert me["dep_delay"] == -9
    assert not ((known.carrier == "B6") & (known.flight == 9) & (known.sched_utc == at)).any()
    assert row["is_delayed"].iloc[0] == int(me["arr_delay"] > 15)


def test_window_features_cover_the_window_up_to_each_prediction(lifecycle):
    """'Last hour' / 'last 24 h' features of every training row equal a count over the window
    ending at its scheduled departure, and the aircraft's previous delay is kept for a day. They
    were the window before the latest event: hours stale at a quiet airport (8,334 of 20,000
    sampled demo rows had another departure count)."""
    checked = lifecycle.query("""
        select count(*) as rows,
               count(*) filter (where coalesce(t.origin_departures_1h, 0) != (
                   select count(*) from intermediate.int_flight_outcomes o
                   where o.origin = t.origin and o.dep_delay_minutes is not null
                     and o.dep_known_at between t.sched_dep_utc - interval 1 hour and t.sched_dep_utc)
               ) as departures_off,
               count(*) filter (where round(t.carrier_delayed_share_24h, 9) is distinct from round((
                   select avg((o.arr_delay_minutes > 15)::double) from intermediate.int_flight_outcomes o
                   where o.carrier = t.carrier and o.arr_delay_minutes is not null
                     and o.arr_known_at between t.sched_dep_utc - interval 1 day and t.sched_dep_utc), 9)
               ) as share_off,
               count(*) filter (where t.tail_last_dep_delay is distinct from (
                   select case when max(o.dep_known_at) >= t.sched_dep_utc - interval 1 day
                               then max_by(o.dep_delay_minutes, (o.dep_known_at, o.flight_id)) end
                   from intermediate.int_flight_outcomes o
                   where o.tailnum = f.tailnum and o.dep_delay_minutes is not null
                     and o.dep_known_at <= t.sched_dep_utc)
               ) as last_delay_off,
               count(*) filter (where t.origin_departures_1h = 0) as quiet_hours
        from training.training_dataset t join intermediate.int_flight_outcomes f on f.flight_id = t.flight_id
    """).iloc[0]
    assert checked["rows"] > 1000 and checked["quiet_hours"] > 0
    assert (checked["departures_off"], checked["share_off"], checked["last_delay_off"]) == (0, 0, 0)
    # A count is missing only before the origin's first departure known (no TTL turns a 0 into
    # a missing value after a quiet spell).
    assert lifecycle.query("""
        select count(*) n from training.training_dataset t
        where t.origin_departures_1h is null and exists (
            select 1 from intermediate.int_flight_outcomes o where o.origin = t.origin
            and o.dep_delay_minutes is not null and o.dep_known_at <= t.sched_dep_utc)""")["n"].iloc[0] == 0


def test_the_online_store_serves_windows_as_of_the_loaded_data(lifecycle):
    """The online store is current as of each view's latest row; the window views' rows stop
    where every flight is loaded (exit rows past the data made every window online look empty,
    as of hours or days after the data ended; rows past the month loaded undercounted)."""
    store = build_resources(lifecycle.paths)["feature_store"].store()
    origins = ["EWR", "JFK", "LGA"]
    online = store.get_online_features({"origin": origins}, ["fv_origin_departure_delays:origin_departures_1h",
                                                             "fv_origin_departure_delays:origin_dep_delay_mean_3h"])
    horizon = lifecycle.query("select max(known_at) t from features.fv_origin_departure_delays")["t"].iloc[0]
    complete = lifecycle.query("select complete_until t from intermediate.int_flights_complete_until")["t"].iloc[0]
    last_month = lifecycle.query("select max(make_date(year, month, 1)) m from staging.stg_flights")["m"].iloc[0]
    # (the start of the month after the last one loaded, New York time: EST, UTC-5, in winter)
    assert complete == pd.Timestamp(last_month + pd.DateOffset(months=1)).tz_localize("America/New_York")
    # The latest departure, or its leaving one of the windows, at or before that instant.
    assert horizon == lifecycle.query(f"""
        select max(t) t from intermediate.int_flight_outcomes,
             unnest([dep_known_at, dep_known_at + interval 1 hour + interval 1 microsecond,
                     dep_known_at + interval 3 hours + interval 1 microsecond]) as u(t)
        where dep_delay_minutes is not null and t <= '{complete}'::timestamptz""")["t"].iloc[0]
    expected = lifecycle.query(f"""
        select origin,
               count(*) filter (where dep_known_at >= '{horizon}'::timestamptz - interval 1 hour) as n_1h,
               avg(dep_delay_minutes) filter (where dep_known_at >= '{horizon}'::timestamptz - interval 3 hours)
                   as mean_3h
        from intermediate.int_flight_outcomes
        where dep_delay_minutes is not null and dep_known_at <= '{horizon}'::timestamptz
        group by origin order by origin""")
    assert expected["origin"].tolist() == origins
    assert online["origin_departures_1h"].tolist() == expected["n_1h"].tolist()
    assert online["origin_dep_delay_mean_3h"].tolist() == pytest.approx(expected["mean_3h"].tolist(), nan_ok=True)
    # The 7-day arrivals per carrier, as of the carrier view's latest row.
    until = lifecycle.query("select max(known_at) t from features.fv_carrier_arrival_delays")["t"].iloc[0]
    assert until <= complete
    arrivals = lifecycle.query(f"""
        select carrier, count(*) filter (where arr_known_at >= '{until}'::timestamptz - interval 7 days) n
        from intermediate.int_flight_outcomes
        where arr_delay_minutes is not null and arr_known_at <= '{until}'::timestamptz
        group by carrier order by carrier""")
    served = store.get_online_features({"carrier": arrivals["carrier"].tolist()},
                                       ["fv_carrier_arrival_delays:carrier_arrivals_7d"])
    assert len(arrivals) > 5 and served["carrier_arrivals_7d"].tolist() == arrivals["n"].tolist()


def test_the_registry_lists_every_view_in_the_warehouse_the_ui_and_the_cli(lifecycle):
    """Each feature view's version (hash of its SQL and declaration) and row count, the same in
    features.registry, in its asset's metadata (the Dagster UI) and in `mlops features list`."""
    from dagster import AssetKey

    views = SqlProject().feature_views()
    registry = lifecycle.query("select name, version, row_count from features.registry order by name")
    assert registry["name"].tolist() == sorted(views)
    env = {**os.environ, "MLOPS_DATA_DIR": str(lifecycle.paths.data_dir)}
    listed = subprocess.run([sys.executable, "-m", "mlops_pipelines.cli", "features", "list"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    for name, version, rows in registry.itertuples(index=False):
        assert version == views[name].version
        assert rows == lifecycle.query(f"select count(*) n from features.{name}")["n"].iloc[0]
        event = lifecycle.instance.get_latest_materialization_event(AssetKey(name))
        assert event.asset_materialization.metadata["feature_view/version"].value == version
        line = next(line for line in listed.stdout.splitlines() if line.startswith(name + " "))
        assert version in line and f"{rows:,}" in line


def test_online_store_and_cli_agree_with_the_offline_store(lifecycle, tmp_path):
    store = build_resources(lifecycle.paths)["feature_store"].store()
    online = store.get_online_features([{"origin": "JFK"}, {"origin": "XXX"}], ["fv_origin_weather:temp_f"])
    latest = lifecycle.query(
        "select available_at, temp_f from features.fv_origin_weather where origin = 'JFK' "
        "order by available_at desc limit 1").iloc[0]
    assert online["temp_f"].iloc[0] == latest["temp_f"] and pd.isna(online["temp_f"].iloc[1])
    # The asset's metadata says which instant each view is current as of (its latest event).
    from dagster import AssetKey

    event = lifecycle.instance.get_latest_materialization_event(AssetKey("online_features"))
    metadata = event.asset_materialization.metadata
    newest = lifecycle.query("select max(available_at) t from features.fv_origin_weather")["t"].iloc[0]
    assert pd.Timestamp(metadata["watermark/fv_origin_weather"].value) == pd.Timestamp(newest).tz_convert("UTC")
    # ... and how each view got there (the lifecycle's single build: every view from scratch).
    assert {metadata[f"refresh/{name}"].value for name in SqlProject().feature_views()} == {
        "rebuilt: this version of the view was not materialized before"}
    # ... and the registry, as `mlops features list` prints it: a row per view with its version.
    table = metadata["registry"].value.splitlines()
    assert table[0].startswith("| view | version | entities |") and len(table) == 2 + len(SqlProject().feature_views())
    for name, view in SqlProject().feature_views().items():
        # (its last column: the instant the online store serves it as of, the run's watermark)
        assert any(line.startswith(f"| {name} | {view.version} | ")
                   and line.endswith(f" | {metadata[f'watermark/{name}'].value} |") for line in table[2:]), name
    entities = tmp_path / "entities.csv"
    pd.DataFrame({"origin": ["JFK", "JFK"], "event_timestamp": [str(latest["available_at"]), "2013-01-01T00:00:00Z"]}
                 ).to_csv(entities, index=False)
    out = tmp_path / "out.parquet"
    env = {**os.environ, "MLOPS_DATA_DIR": str(lifecycle.paths.data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "mlops_pipelines.cli", "features", "historical", "--entities", str(entities),
         "--features", "fv_origin_weather:temp_f", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    frame = pd.read_parquet(out)
    assert frame["temp_f"].iloc[0] == latest["temp_f"] and pd.isna(frame["temp_f"].iloc[1])
    bad = subprocess.run(
        [sys.executable, "-m", "mlops_pipelines.cli", "features", "historical", "--entities", str(entities),
         "--features", "fv_origin_weather:nope", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith(  # (named as --features' fault, not the file's)
        "mlops features: --features: feature view 'fv_origin_weather' has no")
    # A CSV row that is no timestamp is named by its line in the file (line 1: the header).
    entities.write_text("origin,event_timestamp\nJFK,2013-01-01T00:00:00Z\nJFK,soon\n")
    bad = subprocess.run(
        [sys.executable, "-m", "mlops_pipelines.cli", "features", "historical", "--entities", str(entities),
         "--features", "fv_origin_weather:temp_f", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert f"{entities}: timestamp column 'event_timestamp' line 3 ('soon')" in bad.stderr


def test_rerun_is_idempotent(lifecycle):
    lake_before, counts_before = lifecycle.lake_hashes(), lifecycle.table_counts()
    versions_before = len(lifecycle.registry.versions())
    result = lifecycle.run()
    assert result.success
    assert lifecycle.lake_hashes() == lake_before  # raw files byte-identical, no new snapshot
    counts_after = lifecycle.table_counts()
    appended = {"governance.promotion_ledger", "governance.gate_decisions"}
    assert {k: v for k, v in counts_after.items() if k not in appended} == \
           {k: v for k, v in counts_before.items() if k not in appended}
    assert len(lifecycle.registry.versions()) == versions_before == 1  # the identical model reused
    ledger = lifecycle.query("select decision, champion_after from governance.promotion_ledger order by decided_at")
    assert ledger.values.tolist() == [["promoted", "1"], ["unchanged", "1"]]
    duplicated = lifecycle.query(
        "select count(*) - count(distinct flight_id) d from training.training_dataset")["d"][0]
    assert duplicated == 0


def test_training_records_the_built_versions_and_refuses_views_declared_otherwise(lifecycle):
    """The model's feature view versions are those its tables were built with (the registry's);
    a view whose declaration was edited since its build (not built yet, or its build failed) is
    refused: the training set would follow neither declaration."""
    champion = lifecycle.registry.version_by_alias("champion")
    built = dict(lifecycle.query("select name, version from features.registry where name like 'fv_%'").values.tolist())
    recorded = json.loads(champion.tags["feature_view_versions"])
    assert recorded and recorded == {name: built[name] for name in recorded}
    versions_before = len(lifecycle.registry.versions())
    with duckdb.connect(str(lifecycle.paths.warehouse_path)) as con:  # (as if built from another declaration)
        con.execute("update features.registry set version = 'an0ther', serving_version = 'an0ther' "
                    "where name = 'fv_origin_weather'")
    try:
        result = lifecycle.run_job("training", SMALL_TRAINING)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert failure.step_key == "training_dataset"
        message = failure.event_specific_data.error.message
        assert "feature views declared otherwise than built: fv_origin_weather (declared " in message
        assert "built an0ther). Materialize them first (the build_features job), then train." in message
    finally:
        with duckdb.connect(str(lifecycle.paths.warehouse_path)) as con:
            con.execute("update features.registry set version = ?, serving_version = ? "
                        "where name = 'fv_origin_weather'",
                        [built["fv_origin_weather"], SqlProject().feature_views()["fv_origin_weather"].serving_version])
    assert len(lifecycle.registry.versions()) == versions_before
    assert lifecycle.registry.version_by_alias("champion").version == champion.version


def test_worse_challenger_is_refused_and_champion_kept(lifecycle):
    worse = json.loads(json.dumps(SMALL_TRAINING))
    worse["ops"]["trained_model"]["config"].update({"max_iter": 2, "learning_rate": 0.01, "max_leaf_nodes": 2})
    result = lifecycle.run_job("training", worse)
    assert result.success
    assert lifecycle.registry.version_number("champion") == "1"
    assert lifecycle.registry.version_number("challenger") == "2"
    last = lifecycle.query("select * from governance.promotion_ledger order by decided_at desc limit 1").iloc[0]
    assert last["decision"] == "refused" and last["champion_after"] == "1"
    assert "no_regression" in last["reason"]
    assert last["challenger_roc_auc"] < last["champion_roc_auc"] - 0.005
    gates = lifecycle.query(f"select gate, passed from governance.gate_decisions "
                            f"where dagster_run_id = '{result.run_id}' order by gate")
    assert set(gates["gate"]) == {"absolute_floor", "fold_stability", "no_regression"}
    assert not dict(gates.values.tolist())["no_regression"]
    # The summary shows the refused challenger's own window beside the decision (it showed only
    # the champion's, which could be taken for the run's).
    from mlops_pipelines.summary import collect_summary, format_summary

    challenger = lifecycle.registry.version_by_alias("challenger")
    text = format_summary(collect_summary(lifecycle.paths))
    assert "last promotion decision: refused (challenger v2, champion v1)" in text
    assert (f"challenger v2 trained on {challenger.tags['train_window']}, holdout "
            f"{challenger.tags['holdout_window']}") in text
    no_champion = format_summary({"rows": {}, "quarantine": {}, "status": [], "champion": None,
                                  "ledger": [("refused", "1", None, "absolute_floor")]})
    assert "(challenger v1, no champion)" in no_champion and "vNone" not in no_champion


def test_a_champion_is_not_scored_on_a_holdout_month_it_was_trained_on(lifecycle):
    """A window moved back in time (`mlops demo --months` makes it easy) scored the champion on
    rows it had learnt from: 0.91 against an honest challenger's 0.67 in the ledger."""
    back = json.loads(json.dumps(SMALL_TRAINING))
    back["ops"]["trained_model"]["config"].update({"train_end": "2013-02", "holdout_end": "2013-03"})
    result = lifecycle.run_job("training", back)
    assert result.success
    assert lifecycle.registry.version_number("champion") == "1"  # trained on 2013-01..2013-02
    gates = lifecycle.query(f"select gate, passed, reason from governance.gate_decisions "
                            f"where dagster_run_id = '{result.run_id}' and gate = 'no_regression'")
    assert gates["passed"].tolist() == [False]
    assert gates["reason"][0] == ("champion v1 was trained on 2013-02 of this holdout (2013-02..2013-02): "
                                  "no fair comparison on the same rows")


@pytest.mark.parametrize(("train_window", "split", "months"), [
    ("2013-01..2013-09", ("2013-01", "2013-10", "2014-01"), []),
    ("2013-01..2013-11", ("2013-01", "2013-10", "2014-01"), ["2013-10", "2013-11"]),
    ("2013-11..2013-12", ("2013-01", "2013-10", "2013-12"), ["2013-11"]),
    ("", ("2013-01", "2013-10", "2014-01"), []),  # (a model registered before the tag)
    ("2013-13..x", ("2013-01", "2013-10", "2014-01"), []),
])
def test_the_months_of_a_holdout_a_model_was_trained_on(train_window, split, months):
    from mlops_pipelines.training.assets import _months_trained_on
    from mlops_pipelines.training.model import TimeSplit

    assert _months_trained_on(train_window, TimeSplit(*split)) == months


def test_a_training_window_past_the_loaded_months_trains_and_stops_at_a_clear_error(lifecycle):
    """Training through a month with no rows (`mlops demo --months 2013-01 2013-03` did this with
    the default window) crashed in sklearn ('Found array with 0 sample(s)'): the importance tail
    was the 30 days before the window's end, which held no row."""
    window = json.loads(json.dumps(SMALL_TRAINING))
    window["ops"]["trained_model"]["config"].update({"train_end": "2013-06", "holdout_end": "2013-07"})
    result = lifecycle.run_job("training", window)
    assert not result.success
    assert [e.step_key for e in result.all_events if e.is_step_success] == ["training_dataset", "trained_model"]
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "evaluated_model"
    assert "holdout 2013-06..2013-07 has 0 rows" in failure.event_specific_data.error.cause.message
    assert lifecycle.registry.version_number("champion") == "1"


def test_drift_report_for_a_month(lifecycle):
    result = lifecycle.run_job("monitor_drift", partition_key="2013-04")
    assert result.success
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("drift_report")[0].metadata.items()}
    assert metadata["champion_version"] == 1
    assert 0.0 <= metadata["share_drifted"] <= 1.0
    assert 0.5 < metadata["roc_auc"] < 1.0 and metadata["label_coverage"] == 1.0
    html = (lifecycle.paths.data_dir / "reports" / "drift_2013-04.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "temp_f" in html
    summary = lifecycle.query("select * from monitoring.drift_summary")
    assert summary["partition_key"].tolist() == ["2013-04"] and summary["rows"][0] == metadata["rows"]
    columns = lifecycle.query("select \"column\", drift from monitoring.column_drift where partition_key = '2013-04'")
    assert "prediction" in set(columns["column"]) and int(columns["drift"].sum()) == metadata["drifted_column_count"]
    # A second run for the same month replaces its rows.
    assert lifecycle.run_job("monitor_drift", partition_key="2013-04").success
    assert len(lifecycle.query("select * from monitoring.drift_summary")) == 1


def test_corrupted_month_stops_at_the_blocking_check(lifecycle, flights_by_month):
    bad = first_days(flights_by_month["2013-02"])
    bad = bad.set_column(bad.schema.get_field_index("arr_delay"), "arr_delay", pa.nulls(bad.num_rows, pa.string()))
    write_landing_month(lifecycle.paths.landing_dir, "2013-02", bad)
    rows_before = lifecycle.table_counts()["validated.flights"]
    result = lifecycle.run()
    assert not result.success
    failed = result.failed
    assert failed.name == "flights 2013-02"
    assert [s.name for s in result.stages][-1] == "flights 2013-02"  # nothing downstream ran
    message = " ".join(failed.errors)
    assert "table_contract" in message
    status = lifecycle.query("select message from validated.validation_status where not passed")
    assert status["message"].tolist() == [
        "table flights partition 2013-02: rule arr_delay_mostly_present failed on column arr_delay: "
        f"{bad.num_rows} of {bad.num_rows} rows (at most 15% of flights may lack an arrival delay)"]
    check = lifecycle.instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [_check_key()])[_check_key()]
    assert check.status.value == "FAILED"
    # The last good delivery stays published; the champion did not move.
    assert lifecycle.table_counts()["validated.flights"] == rows_before
    assert lifecycle.registry.version_number("champion") == "1"
    # Building features by hand is refused too, naming the table, partition and rule.
    features = lifecycle.run_job("build_features")
    assert not features.success
    errors = " ".join(str(e.event_specific_data.error.message) for e in features.all_events if e.is_step_failure)
    assert "validated.flights has partitions that failed their blocking check (2013-02)" in errors
    assert "arr_delay_mostly_present" in errors


def _check_key():
    from dagster import AssetCheckKey, AssetKey

    return AssetCheckKey(AssetKey("validated_flights"), "table_contract")


@pytest.mark.parametrize(("months", "window"), [
    (["2013-01", "2013-03"], ("2013-01", "2013-03", "2013-04")),
    (["2013-11", "2013-12"], ("2013-11", "2013-12", "2014-01")),
    (["2013-10", "2013-11"], ("2013-10", "2013-11", "2013-12")),
])
def test_a_demo_over_some_months_trains_on_them_and_holds_out_the_last(months, window):
    from mlops_pipelines.lifecycle import training_window

    config = training_window(months)["ops"]["trained_model"]["config"]
    assert (config["train_start"], config["train_end"], config["holdout_end"]) == window


@pytest.mark.parametrize(("months", "error"), [
    (["2013-1"], "--months 2013-1: not a month of the data (YYYY-MM, 2013-01 to 2013-12)"),
    (["2014-01", "2013-02"], "--months 2014-01: not a month of the data"),
    (["2013-04"], "--months needs two months or more"),
    ([], "--months needs two months or more"),
])
def test_the_demo_refuses_months_it_cannot_train_on_before_running(months, error, tmp_path, monkeypatch, capsys):
    """A mistyped month was dropped silently (`--months 2013-1` ran on no month at all)."""
    from mlops_pipelines.cli import main

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    assert main(["demo", "--months", *months]) == 2
    assert error in capsys.readouterr().err
    assert not (tmp_path / "data" / "warehouse.duckdb").exists()


def test_the_demo_hands_the_months_window_to_the_lifecycle(tmp_path, monkeypatch):
    """The window reaches the training job: a spy in place of run_lifecycle (the real run is
    test_a_training_window_past_the_loaded_months_...; a whole demo takes ~25 s)."""
    import mlops_pipelines.lifecycle as lifecycle_module
    import mlops_pipelines.summary as summary_module
    from mlops_pipelines.cli import main
    from mlops_pipelines.lifecycle import LifecycleResult, training_window

    calls = []
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(lifecycle_module, "run_lifecycle",
                        lambda paths, months, run_config=None: calls.append((months, run_config)) or
                        LifecycleResult([]))
    monkeypatch.setattr(summary_module, "collect_summary", lambda paths: None)
    monkeypatch.setattr(summary_module, "format_summary", lambda summary: "")
    assert main(["demo", "--months", "2013-03", "2013-01"]) == 0
    assert calls == [(["2013-01", "2013-03"], {"training": training_window(["2013-01", "2013-03"])})]
