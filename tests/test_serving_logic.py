"""Serving's pure parts: the fast scorer, sticky routing, the sequential test, the controller."""

import math
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import RunRequest, SkipReason, build_sensor_context

from mlops_pipelines.serving.assets import ServingFiles, prediction_log_sensor
from mlops_pipelines.serving.controller import ArmStats, DeliveryPolicy, decide
from mlops_pipelines.serving.deployment import Deployment, challenger_answers, routing_point, shadow_scores
from mlops_pipelines.serving.predictor import LoadedModel
from mlops_pipelines.serving.sequential import ArmOutcomes, msprt
from mlops_pipelines.training.model import ModelParams, build_pipeline

COLUMNS = {"carrier": "str", "origin": "str", "hour": "float", "temp": "float", "delay_mean": "float"}


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(7)
    n = 4000
    frame = pd.DataFrame({
        "carrier": rng.choice(["AA", "B6", "DL", "UA", None], n),
        "origin": rng.choice(["EWR", "JFK", "LGA"], n),
        "hour": rng.integers(5, 23, n).astype(float),
        "temp": np.where(rng.random(n) < 0.1, np.nan, rng.normal(50, 15, n)),
        "delay_mean": rng.normal(10, 20, n),
    })
    logit = 0.08 * (frame["hour"] - 12) + 0.04 * frame["delay_mean"] + (frame["carrier"] == "B6") * 0.7
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    pipeline = build_pipeline(COLUMNS, ModelParams(max_iter=60, seed=3)).fit(frame, labels)
    return pipeline, frame


def test_fast_scoring_equals_the_pipeline_bit_for_bit(fitted):
    pipeline, frame = fitted
    model = LoadedModel("champion", "1", None, list(COLUMNS), ["origin", "hour"], pipeline)
    assert model._forest is not None  # the fast path is the one under test
    probe = pd.concat([frame.head(300), pd.DataFrame([
        # an unseen carrier, a missing one, a missing number, an unseen airport
        {"carrier": "ZZ", "origin": "JFK", "hour": 7.0, "temp": np.nan, "delay_mean": 3.0},
        {"carrier": None, "origin": "EWR", "hour": 22.0, "temp": 80.0, "delay_mean": -5.0},
        {"carrier": "AA", "origin": "XXX", "hour": 0.0, "temp": np.nan, "delay_mean": np.nan},
    ])], ignore_index=True)
    rows = probe.astype(object).where(probe.notna(), None).to_dict("records")
    expected = pipeline.predict_proba(probe)[:, 1]
    assert np.array_equal(model.predict(rows), expected)  # batch (> 16 rows)
    assert [model.predict([row])[0] for row in rows[-20:]] == expected[-20:].tolist()  # one by one


def test_a_required_input_missing_names_row_and_column(fitted):
    pipeline, _ = fitted
    model = LoadedModel("champion", "1", None, list(COLUMNS), ["carrier", "origin", "hour"], pipeline)
    with pytest.raises(KeyError, match=r"row 1: required model input \['hour'\]"):
        model.predict([{"carrier": "AA", "origin": "JFK", "hour": 5.0}, {"carrier": "AA", "origin": "JFK"}])


def test_canary_share_is_close_to_target_and_sticky():
    deployment = Deployment("canary", challenger_alias="challenger", share=0.1, deployment_id="d1")
    keys = [f"flight-{i}" for i in range(10_000)]
    arms = [challenger_answers(deployment, k) for k in keys]
    share = sum(arms) / len(keys)
    # 4 standard deviations of a binomial share at n=10,000: 0.012.
    assert abs(share - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 10_000)
    assert arms == [challenger_answers(deployment, k) for k in keys]  # the same key, the same arm
    # Ramping up keeps every key that already had the challenger.
    wider = Deployment("canary", challenger_alias="challenger", share=0.25, deployment_id="d1")
    assert all(challenger_answers(wider, k) for k, a in zip(keys, arms, strict=True) if a)
    # A new deployment reshuffles.
    other = Deployment("canary", challenger_alias="challenger", share=0.1, deployment_id="d2")
    assert arms != [challenger_answers(other, k) for k in keys]


def test_routing_point_is_uniform():
    points = np.array([routing_point("x", str(i)) for i in range(20_000)])
    assert points.min() >= 0 and points.max() < 1
    counts, _ = np.histogram(points, bins=10, range=(0, 1))
    assert counts.min() > 1800 and counts.max() < 2200


def test_shadow_never_routes_and_single_never_scores_a_challenger():
    shadow = Deployment("shadow", challenger_alias="challenger", share=1.0)
    assert not any(challenger_answers(shadow, str(i)) for i in range(1000))
    assert all(shadow_scores(shadow, str(i)) for i in range(1000))
    single = Deployment()
    assert not any(challenger_answers(single, str(i)) or shadow_scores(single, str(i)) for i in range(1000))


@pytest.mark.parametrize("bad, message", [
    ({"strategy": "blue"}, "expected one of"),
    ({"strategy": "canary"}, "needs a challenger alias"),
    ({"strategy": "canary", "challenger_alias": "c", "share": 1.5}, "expected a fraction"),
    ({"strategy": "ab", "challenger_alias": "c", "share": 0.5}, "planned sample size"),
    ({"ramp": (0.5, 0.25)}, "increasing fractions"),
    # A step twice never moves; a ramp past 1 was blamed on the share it starts from; a boolean
    # share was a 100% canary; a sample size of 1.9 was cut to 1.
    ({"ramp": (0.25, 0.25, 1.0)}, r"canary ramp \(0\.25, 0\.25, 1\.0\): expected strictly increasing"),
    ({"strategy": "canary", "challenger_alias": "c", "share": 1.5, "ramp": (1.5,)}, r"canary ramp \(1\.5,\)"),
    ({"strategy": "canary", "challenger_alias": "c", "share": True}, "deployment share True"),
    ({"strategy": "ab", "challenger_alias": "c", "share": 0.5, "sample_size": 1.9},
     "sample size 1.9: expected a whole"),
])
def test_bad_deployment_records_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        Deployment(**bad)


def test_deployment_record_round_trips_through_tags():
    record = Deployment("canary", challenger_alias="challenger", share=0.25, ramp=(0.1, 0.5, 1.0),
                        deployment_id="abc", updated_at="2026-01-01T00:00:00+00:00", updated_by="cli")
    assert Deployment.from_tags({**record.to_tags(), "unrelated": "x"}) == record
    assert Deployment.from_tags({}) == Deployment()


def _null_looks(rng: random.Random, looks: int, per_look: int, naive: bool) -> bool:
    """One experiment with no true difference, checked after every batch: did it ever reject?"""
    a: list[float] = []
    b: list[float] = []
    for _ in range(looks):
        a += [float(rng.random() < 0.2) for _ in range(per_look)]
        b += [float(rng.random() < 0.2) for _ in range(per_look)]
        arm_a, arm_b = ArmOutcomes.of(a), ArmOutcomes.of(b)
        if naive:
            z = (arm_b.mean - arm_a.mean) / math.sqrt(arm_a.variance / arm_a.n + arm_b.variance / arm_b.n)
            if abs(z) > 1.96:
                return True
        elif msprt(arm_a, arm_b, tau=0.05).p_value < 0.05:
            return True
    return False


def test_msprt_keeps_its_error_rate_under_repeated_looks_where_a_z_test_does_not():
    rng = random.Random(11)
    runs = 300
    sequential = sum(_null_looks(rng, 30, 40, naive=False) for _ in range(runs)) / runs
    naive = sum(_null_looks(rng, 30, 40, naive=True) for _ in range(runs)) / runs
    assert sequential <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs)
    assert naive > 0.15  # the same data, checked 30 times with a fixed-sample test


def test_msprt_detects_a_real_difference():
    rng = random.Random(5)
    champion = ArmOutcomes.of([float(rng.random() < 0.15) for _ in range(2000)])
    challenger = ArmOutcomes.of([float(rng.random() < 0.25) for _ in range(2000)])
    result = msprt(champion, challenger, tau=0.05)
    assert result.difference > 0.05 and result.p_value < 1e-6


def _arm(answered=0, attempts=None, errors=0, p99=2.0, losses=(), step=None):
    return ArmStats(answered=answered, attempts=answered if attempts is None else attempts, errors=errors,
                    p99_latency_ms=p99, losses=ArmOutcomes.of(list(losses)),
                    answered_this_step=answered if step is None else step)


CANARY = Deployment("canary", challenger_alias="challenger", share=0.05, deployment_id="d", ramp=(0.05, 0.25, 1.0))
GOOD = [0.1, 0.2, 0.15, 0.12] * 50  # 200 Brier losses around 0.14
BAD = [0.4, 0.5, 0.45, 0.35] * 50
MANY_GOOD = GOOD * 10  # non-inferiority within 0.005 needs more outcomes than spotting harm
BETTER = [v - 0.05 for v in MANY_GOOD]
SLIGHTLY_WORSE = [v + 0.003 for v in MANY_GOOD]  # worse, but within the 0.005 margin


@pytest.mark.parametrize("deployment, champion, challenger, action, share, reason", [
    # nothing running
    (Deployment(), _arm(), _arm(), "none", 0.0, "no experiment"),
    # every challenger attempt failed: roll back on errors before anything else
    (CANARY, _arm(500), _arm(0, attempts=30, errors=30), "rollback", 0.0, "failed 30 of 30"),
    # 1 failure in 200 attempts (0.5%) is within 1%: no rollback, and 199 answers are not yet a step
    (CANARY, _arm(500), _arm(199, attempts=200, errors=1), "hold", 0.05, "199 of 200"),
    # 3 failures in 200 attempts (1.5%) is not
    (CANARY, _arm(500), _arm(197, attempts=200, errors=3), "rollback", 0.0, "failed 3 of 200"),
    # slow challenger: p99 40 ms against 3 ms
    (CANARY, _arm(500, p99=3.0), _arm(300, p99=40.0), "rollback", 0.0, "p99 latency"),
    # clearly worse Brier once labelled
    (CANARY, _arm(500, losses=GOOD), _arm(300, losses=BAD), "rollback", 0.0, "Brier score worse"),
    # clearly better, or worse only within the margin: never a rollback
    (CANARY, _arm(5000, losses=MANY_GOOD), _arm(3000, losses=BETTER), "ramp", 0.25, "without a breach"),
    (CANARY, _arm(5000, losses=MANY_GOOD), _arm(3000, losses=SLIGHTLY_WORSE), "ramp", 0.25, "without a breach"),
    # enough answers at 5%, no harm: next step
    (CANARY, _arm(500, losses=GOOD), _arm(300, losses=GOOD), "ramp", 0.25, "300 answers at share 0.05"),
    # at the last step before 100%: 200 outcomes per arm cannot show non-inferiority yet, 2,000 can
    (Deployment("canary", challenger_alias="challenger", share=0.25, deployment_id="d", ramp=(0.05, 0.25, 1.0)),
     _arm(500, losses=GOOD), _arm(300, losses=GOOD), "hold", 0.25, "not yet shown non-inferior"),
    (Deployment("canary", challenger_alias="challenger", share=0.25, deployment_id="d", ramp=(0.05, 0.25, 1.0)),
     _arm(5000, losses=MANY_GOOD), _arm(3000, losses=MANY_GOOD), "promote", 1.0, "non-inferior"),
    # ...but without labels it waits
    (Deployment("canary", challenger_alias="challenger", share=0.25, deployment_id="d", ramp=(0.05, 0.25, 1.0)),
     _arm(500), _arm(300), "hold", 0.25, "waiting for 100 labelled"),
    # ab before its planned sample: hold; after it, no improvement: conclude (champion stays)
    (Deployment("ab", challenger_alias="challenger", share=0.5, sample_size=1000), _arm(300, losses=GOOD),
     _arm(300, losses=GOOD), "hold", 0.5, "of 1000 planned"),
    (Deployment("ab", challenger_alias="challenger", share=0.5, sample_size=150), _arm(300, losses=GOOD),
     _arm(300, losses=GOOD), "conclude", 0.0, "no significant improvement"),
    # shadow never promotes itself
    (Deployment("shadow", challenger_alias="challenger", share=1.0), _arm(300, losses=GOOD),
     _arm(300, losses=GOOD), "hold", 1.0, "never promoted automatically"),
])
def test_controller_decisions(deployment, champion, challenger, action, share, reason):
    decision = decide(deployment, champion, challenger, DeliveryPolicy())
    assert (decision.action, decision.share) == (action, share)
    assert reason in decision.reason


def test_prediction_log_sensor_runs_once_per_new_file(tmp_path):
    files = ServingFiles(prediction_log_dir=str(tmp_path / "log"), deployment_outbox=str(tmp_path / "out.jsonl"))
    empty = prediction_log_sensor(build_sensor_context(resources={"serving_files": files}))
    assert isinstance(empty, SkipReason)
    day = tmp_path / "log" / "date=2026-01-01"
    day.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), day / "a.parquet")
    (day / "b.parquet.tmp").write_bytes(b"half written")  # never counted
    context = build_sensor_context(resources={"serving_files": files})
    first = prediction_log_sensor(context)
    assert isinstance(first, RunRequest) and context.cursor == str((day / "a.parquet").stat().st_mtime_ns)
    again = prediction_log_sensor(build_sensor_context(cursor=context.cursor, resources={"serving_files": files}))
    assert isinstance(again, SkipReason)


def test_a_flight_is_read_in_new_york_time_whatever_offset_it_is_given_in():
    """The local hour and weekday were those of the offset given: 12:00Z, the instant of 07:00
    New York time, was scored as a noon flight (probability 0.243 against 0.139) under another
    flight id, which its label never joins."""
    from mlops_pipelines.serving.flight_features import schedule_features
    from mlops_pipelines.serving.schema import Flight

    def flight(sched_dep: str) -> Flight:
        return Flight(carrier="B6", flight=69, origin="JFK", dest="BOS", sched_dep=sched_dep, distance=187)

    for spellings, hour, day, flight_id in (
        (("2013-12-30T07:00:00-05:00", "2013-12-30T12:00:00Z", "2013-12-30T13:00:00+01:00"), 7.0, 1.0,
         "2013-12-30T0700_B669_JFK"),
        # Summer time (-04:00), and an instant past midnight UTC that is still the evening before.
        (("2013-07-01T22:30:00-04:00", "2013-07-02T02:30:00Z"), 22.0, 1.0, "2013-07-01T2230_B669_JFK"),
    ):
        for text in spellings:
            features = schedule_features(flight(text))
            assert (features["sched_dep_hour_local"], features["day_of_week"]) == (hour, day), text
            assert flight(text).flight_id == flight_id, text


def test_a_deployment_event_cut_short_neither_swallows_the_next_nor_stops_the_import(tmp_path):
    """A line a crash cut short glued itself to the next event, and every later import failed
    with a JSON error after the command had acted (the registry changed, the ledger did not)."""
    import duckdb

    from mlops_pipelines.serving.control import DeploymentControl, import_outbox
    from mlops_pipelines.serving.deployment import Deployment

    outbox = tmp_path / "serving" / "deployment_events.jsonl"
    control = DeploymentControl(f"sqlite:///{tmp_path / 'mlflow.db'}", "m", outbox)
    deployment = Deployment.from_tags({})
    control._event("deployed", "first", deployment, "1", "1", None, {}, "cli", "e1")
    with outbox.open("a") as out:
        out.write('{"event_id": "torn", "model_na')  # a write a crash cut short
    control._event("promoted", "second", deployment, "1", "2", "2", {}, "cli", "e2")
    with outbox.open("a") as out:  # JSON, but a value the ledger cannot hold
        out.write(outbox.read_text().splitlines()[0].replace('"e1"', '"e3"').replace('"share": 0.0', '"share": "lots"')
                  + "\n")
    with duckdb.connect() as con:
        with pytest.warns(UserWarning, match=r"deployment_events\.jsonl: line 2 is no deployment event"):
            assert import_outbox(con, outbox) == 2
        rows = con.execute("select dagster_run_id, decision from governance.promotion_ledger order by 1").fetchall()
    assert rows == [("e1", "deployed"), ("e2", "promoted")]


def test_flights_are_read_in_capitals_and_impossible_instants_are_refused():
    """'b6' was scored as an unknown carrier (its features null) and a lower-case tail number
    found no plane; a departure at year 1 or 9999 in another offset was a 500 (OverflowError)."""
    from pydantic import ValidationError

    from mlops_pipelines.serving.schema import Flight

    flight = Flight(carrier="b6", flight=69, tailnum=" n123jb ", origin="jfk", dest="bos",
                    sched_dep="2013-12-30T07:00:00-05:00", distance=187)
    assert (flight.carrier, flight.tailnum, flight.origin, flight.dest) == ("B6", "N123JB", "JFK", "BOS")
    for text in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        with pytest.raises(ValidationError, match="an instant of years 1 to 9999 in UTC and New York time"):
            Flight(carrier="B6", flight=69, origin="JFK", dest="BOS", sched_dep=text, distance=187)


def test_an_unreadable_deployment_record_names_the_tag_and_the_way_out():
    """A record cut short or holding an unknown field raised json's or Python's TypeError, naming
    neither the tag nor how to replace it."""
    from mlops_pipelines.serving.deployment import Deployment

    for text in ('{"strategy": "canary", "sha', '{"strategy": "single", "colour": "blue"}'):
        with pytest.raises(ValueError, match=r"the registered model's 'deployment' tag is no deployment record .*"
                                             r"`mlops deploy --strategy single` writes a new one"):
            Deployment.from_tags({"deployment": text})


def test_an_experiment_ends_when_another_model_becomes_champion():
    """A retraining that promoted a new champion during a canary left it running: the champion
    arm pooled the old and the new champion's answers, and a promotion could replace a model the
    challenger was never compared with."""
    from mlops_pipelines.serving.controller import ArmStats, decide
    from mlops_pipelines.serving.deployment import Deployment

    canary = Deployment(strategy="canary", challenger_alias="challenger", challenger_version="2",
                        champion_version="1", share=0.25)
    ended = decide(canary, ArmStats(), ArmStats(), champion_version="3")
    assert (ended.action, ended.share) == ("conclude", 0.0)
    assert "the champion changed from version 1 to 3 during the experiment" in ended.reason
    assert decide(canary, ArmStats(), ArmStats(), champion_version="1").action == "hold"
    older = Deployment(strategy="canary", challenger_alias="challenger", challenger_version="2", share=0.25)
    assert decide(older, ArmStats(), ArmStats(), champion_version="3").action == "hold"  # (a record from before)


def test_rollback_and_promote_against_a_real_registry_keep_to_what_was_tested_and_left(tmp_path):
    """A second rollback is refused only while the aliases are as the first left them (a stale
    mark refused a legitimate rollback after the training pipeline promoted twice); a record
    from before champions were pinned still promotes the version its experiment tests; a new
    champion gives an experiment a new id (its arms' statistics would pool two champions)."""
    from mlflow.tracking import MlflowClient

    from mlops_pipelines.serving.control import DeploymentControl
    from mlops_pipelines.serving.deployment import Deployment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", source=str(tmp_path), run_id=None)
    control = DeploymentControl(uri, "m", tmp_path / "events.jsonl")

    def aliases() -> tuple:
        return control.aliases().get("champion"), control.aliases().get("previous_champion")

    client.set_registered_model_alias("m", "champion", "1")
    control.promote(version="2")
    control.rollback()
    assert aliases() == ("1", "2")
    with pytest.raises(LookupError, match="version 2 is the one the last rollback left"):
        control.rollback()
    for champion, previous in (("2", "1"), ("3", "2")):  # the training pipeline's own promotions
        client.set_registered_model_alias("m", "previous_champion", previous)
        client.set_registered_model_alias("m", "champion", champion)
    control.rollback()
    assert aliases() == ("2", "3")
    # A canary on version 1 written before champion_version existed; the alias moved since.
    legacy = Deployment(strategy="canary", challenger_alias="challenger", challenger_version="1", share=0.25)
    client.set_registered_model_tag("m", "deployment", legacy.to_tags()["deployment"])
    client.set_registered_model_alias("m", "challenger", "3")
    assert control.promote("challenger").champion_after == "1"
    pinned = Deployment(strategy="canary", challenger_alias="challenger", challenger_version="1",
                        champion_version="2", share=0.25)
    assert pinned.renewed("x", champion_version="3").deployment_id != pinned.deployment_id
    assert pinned.renewed("x", share=0.5).deployment_id == pinned.deployment_id


def test_the_service_reads_the_online_store_as_get_online_features_does(tmp_path):
    """The HTTP service had its own online reader: no key casts, no served types (a BOOLEAN
    came back 1, a DATE as its day number 15706, a DECIMAL as SQLite's float) and no reason when
    a view was not materialized. It now reads through the library's lookup."""
    import duckdb

    from mlops_pipelines.features.store import FeatureStore
    from mlops_pipelines.features.views import Feature, FeatureView
    from mlops_pipelines.serving.flight_features import OnlineFeatureReader
    from mlops_pipelines.serving.schema import Flight

    warehouse, online = tmp_path / "w.duckdb", tmp_path / "online.sqlite"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create table t as select 'B6' as carrier, timestamp '2013-01-01' as ts, true as hub, "
                    "date '2013-01-01' as since, 0.942::decimal(4, 3) as score")
    view = FeatureView("fv_c", "t", ("carrier",), "ts",
                       (Feature("hub", "bool"), Feature("since", "date"), Feature("score")))
    store = FeatureStore(warehouse, [view], online_path=online)
    store.materialize_online()
    names = ["hub", "since", "score"]
    library = store.get_online_features([{"carrier": "B6"}, {"carrier": "AA"}], [f"fv_c:{n}" for n in names])
    flights = [Flight(carrier=c, flight=1, origin="JFK", dest="BOS", sched_dep="2013-02-03T07:00:00-05:00",
                      distance=187) for c in ("B6", "AA")]
    served = OnlineFeatureReader(online, [view]).rows(flights, names)
    assert [{n: row[n] for n in names} for row in served] == [
        {"hub": True, "since": pd.Timestamp("2013-01-01").date(), "score": 0.942},
        {"hub": None, "since": None, "score": None}]
    assert library.iloc[0][names].tolist() == [True, pd.Timestamp("2013-01-01").date(), 0.942]
    changed = FeatureView("fv_c", "t", ("carrier",), "ts", view.features, ttl="1 day")
    with pytest.raises(LookupError, match=r"'fv_c' .* is not materialized online: the online store holds rows of "
                                          r"another declaration of the view, which changed since"):
        OnlineFeatureReader(online, [changed]).rows(flights, names)
