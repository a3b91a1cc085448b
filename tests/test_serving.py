"""Serving end to end: a real uvicorn server over the slice's registry and online store, real
requests, real Dagster runs of progressive delivery.

One module fixture builds the lifecycle on the slice (champion = version 1), materializes an online
store as of a past instant, and starts `mlops serve`'s app on a free port. The tests then run in
file order, each leaving the deployment back on `single`.
"""

import json
import math
import socket
import threading
import time

import duckdb
import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import uvicorn
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from mlops_pipelines.features.sql_project import SqlProject
from mlops_pipelines.features.store import FeatureStore
from mlops_pipelines.serving.app import ServingSettings, create_app
from mlops_pipelines.serving.control import DeploymentControl
from mlops_pipelines.serving.models import ModelManager
from mlops_pipelines.serving.schema import MAX_ITEMS
from mlops_pipelines.training.assets import SKOPS_TRUSTED_TYPES
from mlops_pipelines.training.dataset import FEATURE_REFS, LABEL, SCHEDULE_FEATURES, feature_columns
from mlops_pipelines.training.model import ModelParams, build_pipeline
from tests.conftest import Lifecycle, first_days, write_landing_month

TOKEN = "test-admin-token"
INSTANT = pd.Timestamp("2013-04-03 16:00", tz="UTC")
MODEL = "flight_delay_15"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, life: Lifecycle, online_path, port: int) -> None:
        self.life = life
        self.settings = ServingSettings.from_paths(life.paths, online_store_path=online_path, poll_seconds=0.2,
                                                   admin_token=TOKEN)
        self.app = create_app(self.settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.control = DeploymentControl(life.registry.tracking_uri, MODEL, life.paths.deployment_outbox)

    def reload(self) -> dict:
        answer = self.client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def flush_log(self) -> None:
        """Write the queued log rows once the server has been quiet for 0.5 s: the last response's
        rows are queued just after it is sent (after shadow scoring, which a loaded machine slows)."""
        quiet_since, deadline = time.time(), time.time() + 30
        while time.time() < deadline:
            if self.app.state.writer.flush():
                quiet_since = time.time()
            elif time.time() - quiet_since > 0.5:
                return
            time.sleep(0.05)

    def predict(self, flights, **extra) -> dict:
        answer = self.client.post("/predict", json={"flights": flights, **extra})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def register(self, pipeline, columns: dict[str, str], required: list[str]) -> str:
        """Log and register a pipeline as a new version of the model; returns its version."""
        mlflow.set_tracking_uri(self.life.registry.tracking_uri)
        mlflow.set_registry_uri(self.life.registry.tracking_uri)
        signature = ModelSignature(inputs=Schema([
            ColSpec("string" if kind == "str" else "double", name, required=name in required)
            for name, kind in columns.items()
        ]))
        with mlflow.start_run(experiment_id=self.life.registry._experiment_id()):
            info = mlflow.sklearn.log_model(pipeline, name="model", signature=signature, registered_model_name=MODEL,
                                            skops_trusted_types=SKOPS_TRUSTED_TYPES)
        return str(info.registered_model_version)

    def ledger(self) -> pd.DataFrame:
        return self.life.query("select * from governance.promotion_ledger where strategy is not null "
                               "order by decided_at, dagster_run_id")


@pytest.fixture(scope="module")
def served(tmp_path_factory, flights_by_month):
    life = Lifecycle(tmp_path_factory.mktemp("serving"))
    for month, table in flights_by_month.items():
        write_landing_month(life.paths.landing_dir, month, first_days(table))
    assert life.run().success
    # The online store as of a past instant, in its own file.
    online = life.paths.data_dir / "online_at_instant.sqlite"
    store = FeatureStore(life.paths.warehouse_path, SqlProject().feature_views().values(), online_path=online)
    store.materialize_online(end_ts=INSTANT)
    served = Served(life, online, _free_port())
    served.store = store
    served.thread.start()
    for _ in range(300):
        if served.server.started:
            break
        time.sleep(0.1)
    assert served.client.get("/ready").status_code == 200
    yield served
    served.server.should_exit = True
    served.thread.join(timeout=10)


def _flights(life: Lifecycle, where: str, limit: int) -> pd.DataFrame:
    return life.query(f"""
        select flight_id, carrier, flight_number, tailnum, origin, dest, distance_miles, sched_dep_utc,
               year, month, day, sched_dep_hour_local, sched_dep_minute_local,
               isodow(make_date(year, month, day)) as day_of_week
        from staging.stg_flights where {where} order by flight_id limit {limit}""")


def _requests(flights: pd.DataFrame) -> list[dict]:
    """Flights as a user knows them: local scheduled departure with its offset."""
    out = []
    for f in flights.itertuples(index=False):
        local = pd.Timestamp(year=f.year, month=f.month, day=f.day, hour=f.sched_dep_hour_local,
                             minute=f.sched_dep_minute_local).tz_localize("America/New_York")
        out.append({"carrier": f.carrier, "flight": int(f.flight_number),
                    "tailnum": None if pd.isna(f.tailnum) else f.tailnum, "origin": f.origin, "dest": f.dest,
                    "sched_dep": local.isoformat(), "distance": float(f.distance_miles)})
    return out


def _same(a, b) -> bool:
    missing = lambda v: v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    if missing(a) or missing(b):
        return missing(a) and missing(b)
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return float(a) == float(b)


def test_served_features_and_probabilities_equal_the_batch_path(served):
    flights = _flights(served.life, "sched_dep_utc > timestamptz '2013-04-03 16:00:00+00'", 80)
    answer = served.predict(_requests(flights), return_features=True)
    # The batch path: point-in-time features of the same flights at the same instant.
    entities = flights[["carrier", "origin", "dest", "tailnum"]].assign(event_timestamp=INSTANT)
    batch = served.store.get_historical_features(entities, list(FEATURE_REFS))
    batch["sched_dep_hour_local"] = flights["sched_dep_hour_local"].astype(float)
    batch["day_of_week"] = flights["day_of_week"].astype(float)
    batch["distance_miles"] = flights["distance_miles"].astype(float)
    columns = feature_columns()
    champion = served.life.registry.load_sklearn(served.life.registry.version_number("champion"))
    inputs = pd.DataFrame({c: batch[c].astype("object" if k == "str" else "float64") for c, k in columns.items()})
    expected = champion.predict_proba(inputs)[:, 1]
    predictions = answer["predictions"]
    assert [p["flight_id"] for p in predictions] == flights["flight_id"].tolist()
    mismatches = [(i, c, p["features"][c], batch[c].iloc[i]) for i, p in enumerate(predictions)
                  for c in columns if not _same(p["features"][c], batch[c].iloc[i])]
    assert mismatches == []
    assert [p["probability"] for p in predictions] == expected.tolist()
    # The online store held real values, not only nulls: weather and carrier delays are filled.
    assert sum(p["features"]["temp_f"] is not None for p in predictions) == len(predictions)
    assert all(p["model_version"] == "1" and p["arm"] == "champion" for p in predictions)


def test_bad_requests_get_clear_errors(served):
    flight = _requests(_flights(served.life, "true", 1))[0]
    naive = served.client.post("/predict", json={"flights": [{**flight, "sched_dep": "2013-04-03T09:00:00"}]})
    assert naive.status_code == 422
    assert naive.json()["detail"][0]["field"] == "flights.0.sched_dep"
    negative = served.client.post("/predict", json={"flights": [{**flight, "distance": -3}]})
    assert negative.json()["detail"][0]["field"] == "flights.0.distance"
    both = served.client.post("/predict", json={"flights": [flight], "features": [{}]})
    assert both.status_code == 422 and "exactly one" in both.json()["detail"][0]["message"]
    too_many = served.client.post("/predict", json={"flights": [flight] * (MAX_ITEMS + 1)})
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["field"] == "flights"
    huge = served.client.post("/predict", content=b"{" + b" " * 1_100_000 + b"}")
    assert huge.status_code == 413
    missing = served.client.post("/predict", json={"features": [{"carrier": "B6"}]})
    assert missing.status_code == 422 and "required model input" in missing.json()["detail"]
    # A ready row with a misspelt input was scored without it, and text for a number was a 503
    # blamed on the champion (its error count went up).
    good = served.client.post("/predict", json={"flights": [flight], "return_features": True})
    row = good.json()["predictions"][0]["features"]
    errors_before = served.client.get("/metrics").text.count("mlops_champion_errors_total{")
    for change, detail in (({"distance_miles": 10**400}, "model input 'distance_miles' is a finite number"),
                           ({"distance_miles": "abc"}, "model input 'distance_miles' is a finite number or null, "
                                                       "not 'abc'"),
                           ({"distance_miles": True}, "model input 'distance_miles' is a finite number"),
                           ({"carrier": 6}, "model input 'carrier' is text or null, not 6")):
        bad = served.client.post("/predict", json={"features": [{**row, **change}]})
        assert bad.status_code == 422 and detail in bad.json()["detail"], (change, bad.text)
    infinite = served.client.post("/predict", content=json.dumps({"features": [{**row, "distance_miles": math.inf}]}),
                                  headers={"content-type": "application/json"})  # (JSON Infinity, as Python writes)
    assert infinite.status_code == 422 and "not inf" in infinite.json()["detail"]
    assert served.client.get("/metrics").text.count("mlops_champion_errors_total{") == errors_before
    assert served.client.post("/predict", json={"features": [row]}).status_code == 200
    # NaN is a missing value (JSON writers give one for a missing float), and keys that are no
    # model input are the caller's own: both scored, as before.
    nan_row = json.dumps({"features": [{**row, "temp_f": math.nan, "engine_type": math.nan, "flight_id": "mine"}]})
    assert served.client.post("/predict", content=nan_row, headers={"content-type": "application/json"}
                              ).status_code == 200
    for path in ("/admin/reload", "/admin/rollback"):
        assert served.client.post(path).status_code == 403
        assert served.client.post(path, headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert served.client.post(path, headers={"Authorization": TOKEN}).status_code == 403  # no scheme
    # The scheme is case-insensitive.
    assert served.client.post("/admin/reload", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_a_stream_of_requests_sees_no_failure_across_promotion_and_rollback(served):
    registry = served.life.registry
    v1 = registry.version_by_alias("champion")
    # A second version (the same artifacts), made the challenger.
    v2 = registry.client().create_model_version(MODEL, v1.source, v1.run_id)
    registry.set_alias("challenger", v2.version)
    request = _requests(_flights(served.life, "true", 3))
    answers: list[tuple[int, int, list[str]]] = []  # (thread, status, versions)
    stop = threading.Event()

    def stream(thread: int) -> None:
        with httpx.Client(base_url=str(served.client.base_url), timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post("/predict", json={"flights": request})
                    answers.append((thread, r.status_code, [p["model_version"] for p in r.json()["predictions"]]
                                    if r.status_code == 200 else [r.text]))
                except httpx.HTTPError as error:
                    answers.append((thread, -1, [str(error)]))

    def every_thread_now_answers(version: str, since: int) -> bool:
        # Per thread, not the last answer overall: one slow request must not let the test move on
        # before that thread has seen the swap.
        latest = {thread: versions for thread, _, versions in answers[since:]}
        return all(latest.get(thread) == [version] * 3 for thread in range(3))

    def wait_until(done) -> None:
        deadline = time.time() + 30
        while time.time() < deadline and not done():
            time.sleep(0.05)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: every_thread_now_answers("1", 0) and len(answers) > 20)
    served.control.promote("challenger", "test promotion")
    promoted_at = len(answers)
    wait_until(lambda: every_thread_now_answers(str(v2.version), promoted_at) and len(answers) > promoted_at + 20)
    rolled_back_at = len(answers)
    served.control.rollback("test rollback")
    wait_until(lambda: every_thread_now_answers("1", rolled_back_at) and len(answers) > rolled_back_at + 20)
    stop.set()
    for t in threads:
        t.join()
    assert len(answers) > 50
    assert [a for a in answers if a[1] != 200] == []  # zero failed requests
    assert all(len(set(a[2])) == 1 for a in answers)  # one request, one model
    # Each client's requests are sequential: each saw v1, then v2 after the promotion, then v1 again
    # after the rollback (a swap never goes back and forth).
    for thread in range(3):
        versions = [a[2][0] for a in answers if a[0] == thread]
        compressed = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
        assert compressed == ["1", str(v2.version), "1"], (thread, compressed)
    assert registry.version_number("champion") == "1"
    # Rolling back again is refused, rather than swapping back to the version just rolled back
    # from (it did); that version stays previous_champion, serving's fallback.
    assert registry.version_number("previous_champion") == str(v2.version)
    with pytest.raises(LookupError, match=f"version {v2.version} is the one the last rollback left"):
        served.control.rollback("again")
    assert registry.version_number("champion") == "1"


def _training_frame(life: Lifecycle) -> pd.DataFrame:
    return life.query("select * from training.training_dataset")


def _flipped_model(life: Lifecycle):
    """A model that predicts badly: trained on inverted labels."""
    frame = _training_frame(life)
    columns = feature_columns()
    pipeline = build_pipeline(columns, ModelParams(max_iter=40, seed=1))
    return pipeline.fit(frame[list(columns)], 1 - frame[LABEL]), columns


def test_canary_splits_ten_percent_of_keys_stickily_and_shadow_never_changes_answers(served):
    registry = served.life.registry
    flipped, columns = _flipped_model(served.life)
    bad = served.register(flipped, columns, list(SCHEDULE_FEATURES))
    registry.set_alias("challenger", bad)
    vector = served.predict(_requests(_flights(served.life, "true", 1)), return_features=True)
    row = vector["predictions"][0]["features"]
    single = served.client.post("/predict", json={"features": [row]}).json()["predictions"][0]

    served.control.deploy("canary", "challenger", share=0.1)
    served.reload()
    keys = [f"key-{i}" for i in range(10_000)]
    arms: list[str] = []
    for start in range(0, len(keys), MAX_ITEMS):
        chunk = keys[start:start + MAX_ITEMS]
        answer = served.client.post("/predict", json={"features": [row] * len(chunk), "keys": chunk}).json()
        arms += [p["arm"] for p in answer["predictions"]]
    share = arms.count("challenger") / len(arms)
    assert abs(share - 0.1) < 4 * math.sqrt(0.1 * 0.9 / len(keys))
    again = served.client.post("/predict", json={"features": [row] * 1000, "keys": keys[:1000]}).json()
    assert [p["arm"] for p in again["predictions"]] == arms[:1000]
    challenger_answer = next(p for p in again["predictions"] if p["arm"] == "challenger")
    assert challenger_answer["model_version"] == bad and challenger_answer["probability"] != single["probability"]

    deployed = served.client.post("/admin/deploy", json={"strategy": "shadow", "challenger_alias": "challenger"},
                                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert deployed.status_code == 200 and deployed.json()["deployment"] == "shadow:champion+challenger@1"
    shadowed = served.client.post("/predict", json={"features": [row] * 200, "keys": keys[:200],
                                                    "request_id": "shadow-check"}).json()
    assert {(p["arm"], p["model_version"], p["probability"]) for p in shadowed["predictions"]} == {
        ("champion", single["model_version"], single["probability"])}
    served.flush_log()
    with duckdb.connect() as con:
        log = con.sql(f"select probability, model_ms, latency_ms, challenger_version, challenger_probability from "
                      f"read_parquet('{served.life.paths.prediction_log_dir}/*/*.parquet', hive_partitioning = false) "
                      f"where request_id = 'shadow-check'").df()
    assert len(log) == 200 and (log["probability"] == single["probability"]).all()
    # The answering model's own time is logged beside the request's, and is part of it.
    assert (log["model_ms"] > 0).all() and (log["model_ms"] <= log["latency_ms"]).all()
    assert (log["challenger_version"] == bad).all() and log["challenger_probability"].notna().all()
    assert (log["challenger_probability"] != log["probability"]).all()
    served.control.deploy("single")
    served.reload()


def _run_controller(served, **policy) -> tuple[bool, dict]:
    config = {"min_requests": 50, "min_outcomes": 100, **policy}
    result = served.life.run_job("progressive_delivery", run_config={
        "ops": {"deployment_controller": {"config": config}}})
    metadata = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == "deployment_controller":
            metadata = {k: v.value for k, v in materialization.metadata.items()}
    return result.success, metadata


def test_a_healthy_canary_is_ramped_to_the_next_step(served):
    registry = served.life.registry
    twin = registry.client().create_model_version(MODEL, registry.version_by_alias("champion").source,
                                                  registry.version_by_alias("champion").run_id)
    registry.set_alias("challenger", twin.version)
    served.control.deploy("canary", "challenger", share=0.25, ramp=(0.25, 0.5, 1.0))
    served.reload()
    flights = _requests(_flights(served.life, "day = 1 and month = 2", 400))
    for start in range(0, len(flights), 50):
        served.predict(flights[start:start + 50])
    served.flush_log()
    # The latency rule (tested on its own in test_serving_logic) is off here: over a few hundred
    # answers, one request stalled by a busy CI machine is the p99 and would roll back the twin.
    success, metadata = _run_controller(served, max_latency_ratio=1000.0)
    assert success and metadata["decision"] == "ramp" and metadata["share_after"] == 0.5, metadata
    assert served.control.deployment().share == 0.5
    last = served.ledger().iloc[-1]
    assert (last["decision"], last["share"], last["strategy"]) == ("ramped", 0.5, "canary")
    statistics = json.loads(last["statistics"])
    assert statistics["challenger"]["answered"] >= 50 and statistics["challenger"]["errors"] == 0
    # A retraining moves the alias while the experiment runs: `promote` promotes the version the
    # experiment tested (it promoted whatever the alias pointed at).
    champion = registry.version_number("champion")
    other = registry.client().create_model_version(MODEL, registry.version_by_alias("champion").source,
                                                   registry.version_by_alias("champion").run_id)
    registry.set_alias("challenger", other.version)
    event = served.control.promote("challenger", "the canary held")
    assert (event.champion_before, event.champion_after) == (champion, str(twin.version))
    assert registry.version_number("champion") == str(twin.version)
    served.control.rollback("back to the first")
    assert registry.version_number("champion") == champion
    # ... but not over a champion the experiment was never compared with (a retraining's).
    registry.set_alias("challenger", twin.version)
    served.control.deploy("canary", "challenger", share=0.25, ramp=(0.25, 0.5, 1.0))
    registry.set_alias("champion", other.version)
    with pytest.raises(ValueError, match=f"the champion changed from version {champion} to {other.version} since"):
        served.control.promote("challenger", "the canary held")
    assert registry.version_number("champion") == str(other.version)
    registry.set_alias("champion", champion)
    # A deployment without a ramp starts from the default one, not the last deployment's; a
    # canary or A/B test of share 0 (which would wait for answers forever) is refused; an
    # unreadable record is replaced by the next deployment and named by the others.
    registry.set_alias("challenger", twin.version)
    served.control.deploy("canary", "challenger", ramp=(0.5, 1.0))
    served.control.deploy("canary", "challenger")
    assert served.control.deployment().champion_version == champion  # (the arm it is compared with)
    assert (served.control.deployment().ramp, served.control.deployment().share) == ((0.05, 0.25, 0.5, 1.0), 0.05)
    with pytest.raises(ValueError, match="a canary deployment with share 0 sends the challenger nothing"):
        served.control.deploy("canary", "challenger", share=0.0)
    registry.client().set_registered_model_tag(MODEL, "deployment", '{"strategy": "canary", "sha')
    with pytest.raises(ValueError, match="'deployment' tag is no deployment record"):
        served.control.rollback("cannot read it")
    served.control.deploy("single")
    assert served.control.deployment().strategy == "single"


def test_a_challenger_that_raises_is_rolled_back_and_no_request_fails(served):
    frame = _training_frame(served.life)
    # A model that needs an input serving does not have: it raises on every request.
    columns = {**feature_columns(), "runway_condition": "float"}
    frame["runway_condition"] = np.random.default_rng(0).random(len(frame))
    broken = build_pipeline(columns, ModelParams(max_iter=10)).fit(frame[list(columns)], frame[LABEL])
    version = served.register(broken, columns, [*SCHEDULE_FEATURES, "runway_condition"])
    served.broken_version = version
    served.life.registry.set_alias("challenger", version)
    served.control.deploy("canary", "challenger", share=0.5)
    state = served.reload()
    assert state["models"]["challenger"] == version
    flights = _requests(_flights(served.life, "day = 2", 200))
    arms = []
    for start in range(0, len(flights), 20):
        arms += [p["arm"] for p in served.predict(flights[start:start + 20])["predictions"]]
    assert set(arms) == {"champion", "champion_fallback"} and 60 < arms.count("champion_fallback") < 140
    metrics = served.client.get("/metrics").text
    assert f'mlops_challenger_errors_total{{model_version="{version}"}} {arms.count("champion_fallback")}.0' in metrics
    served.flush_log()
    success, metadata = _run_controller(served)
    assert success and metadata["decision"] == "rollback"
    assert served.control.deployment().strategy == "single"
    last = served.ledger().iloc[-1]
    assert last["decision"] == "rolled_back" and last["challenger_version"] == version
    assert f"challenger failed {arms.count('champion_fallback')} of {arms.count('champion_fallback')}" \
        in last["reason"]
    assert json.loads(last["statistics"])["challenger_error_rate"] == 1.0


def test_a_champion_that_fails_to_predict_is_answered_for_by_the_previous_one(served):
    registry = served.life.registry
    registry.set_alias("champion", served.broken_version)  # e.g. promoted by hand, by mistake
    try:
        state = served.reload()
        assert state["models"]["champion"] == served.broken_version
        answer = served.predict(_requests(_flights(served.life, "true", 5)))
        assert {(p["arm"], p["model_version"]) for p in answer["predictions"]} == {("previous_champion", "1")}
        ready = served.client.get("/ready").json()
        assert ready["previous_champion"] == "1"
        assert "runway_condition" in ready["predict_errors"][f"champion v{served.broken_version}"]
        metrics = served.client.get("/metrics").text
        assert f'mlops_champion_errors_total{{model_version="{served.broken_version}"}} 5.0' in metrics
        # A process started now has seen no swap: it takes the registry's previous_champion instead.
        registry.set_alias("previous_champion", "1")
        fresh = ModelManager(registry.tracking_uri, MODEL).refresh()
        assert fresh.champion.version == served.broken_version and fresh.previous_champion.version == "1"
    finally:
        registry.set_alias("champion", "1")
        served.reload()


def test_a_challenger_that_predicts_badly_is_rolled_back_on_labelled_outcomes(served):
    flipped, columns = _flipped_model(served.life)
    version = served.register(flipped, columns, list(SCHEDULE_FEATURES))
    served.life.registry.set_alias("challenger", version)
    served.control.deploy("canary", "challenger", share=0.5, ramp=(0.5, 1.0))
    served.reload()
    flights = _requests(_flights(served.life, "day in (3, 4) and month = 3", 1200))
    for start in range(0, len(flights), 100):
        served.predict(flights[start:start + 100])
    served.flush_log()
    success, metadata = _run_controller(served, max_latency_ratio=1000.0)  # quality, not latency (see above)
    assert success and metadata["decision"] == "rollback", metadata
    assert "Brier score worse" in metadata["reason"]
    statistics = metadata["statistics"]
    assert statistics["quality_test"]["p_value"] < 0.05 and statistics["quality_test"]["difference"] > 0.05
    assert min(statistics["champion"]["losses"]["n"], statistics["challenger"]["losses"]["n"]) >= 100
    assert served.control.deployment().strategy == "single"
    assert served.life.registry.version_number("champion") == "1"
    last = served.ledger().iloc[-1]
    assert last["decision"] == "rolled_back" and "Brier score worse" in last["reason"]
    # Live monitoring saw it too: the flipped model's Brier on labelled answers is far worse.
    live = served.life.query("select model_version, arm, labelled, brier from serving.live_performance")
    challenger_brier = live[(live["model_version"] == version) & (live["arm"] == "challenger")]["brier"].iloc[0]
    champion_brier = live[(live["model_version"] == "1") & (live["arm"] == "champion")]["brier"].max()
    assert challenger_brier > champion_brier + 0.1
    drift = served.life.query('select "column", drift from serving.live_drift')
    assert "prediction" in drift["column"].tolist() and len(drift) == len(feature_columns()) + 1
    # The log reached the warehouse once: a second run loads nothing new.
    before = served.life.query("select count(*) n from serving.predictions")["n"][0]
    _run_controller(served)
    assert served.life.query("select count(*) n from serving.predictions")["n"][0] == before


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(served):
    registry = served.life.registry
    broken = registry.client().create_model_version(MODEL, str(served.life.paths.data_dir / "no-such-model"),
                                                    registry.version_by_alias("champion").run_id)
    registry.set_alias("champion", broken.version)
    try:
        state = served.reload()
        assert state["models"]["champion"] == "1" and "failed to load" in state["errors"]["champion"]
        ready = served.client.get("/ready")
        assert ready.status_code == 200 and "failed to load" in ready.json()["errors"]["champion"]
        metrics = served.client.get("/metrics").text
        assert f'mlops_model_load_failures_total{{alias="champion",model_version="{broken.version}"}} 1.0' in metrics
        answer = served.predict(_requests(_flights(served.life, "true", 2)))
        assert {p["model_version"] for p in answer["predictions"]} == {"1"}
    finally:
        registry.set_alias("champion", "1")
    # A canary whose challenger cannot load: its share is answered by the champion and logged as
    # challenger failures, which the controller then sees.
    registry.set_alias("challenger", broken.version)
    served.control.deploy("canary", "challenger", share=0.5)
    state = served.reload()
    assert "challenger" not in state["models"] and "failed to load" in state["errors"]["challenger"]
    answer = served.predict(_requests(_flights(served.life, "day = 4", 120)))
    arms = [p["arm"] for p in answer["predictions"]]
    assert set(arms) == {"champion", "champion_fallback"}
    assert {p["model_version"] for p in answer["predictions"]} == {"1"}
    served.flush_log()
    success, metadata = _run_controller(served)
    assert success and metadata["decision"] == "rollback" and "failed" in metadata["reason"], metadata
