"""drift_sensor evaluated from known cursors with public builders, on a real (temporary) instance."""

from __future__ import annotations

import json

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    build_sensor_context,
)

from mlops_pipelines.monitoring.sensors import build_drift_sensor

SENSOR = build_drift_sensor(share_threshold=0.3, auc_drop_threshold=0.03, cooldown_seconds=3600)


@pytest.fixture()
def instance():
    with DagsterInstance.ephemeral() as instance:
        yield instance


def report(instance, month: str, share: float, drop: float = 0.0, champion: int = 1) -> None:
    instance.report_runless_asset_event(AssetMaterialization(
        asset_key="drift_report", partition=month,
        metadata={"share_drifted": share, "roc_auc_drop": drop, "champion_version": champion,
                  "top_drifted": "temp_f, visibility_miles"}))


def tick(instance, cursor=None):
    return SENSOR.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))


def test_nothing_new_is_a_skip(instance):
    result = tick(instance)
    assert result.run_requests == [] and "no new drift report" in result.skip_message


def test_small_drift_advances_the_cursor_without_a_run(instance):
    report(instance, "2013-04", share=0.1)
    result = tick(instance)
    assert result.run_requests == []
    assert json.loads(result.cursor)["storage_id"] > 0 and "fired_at" not in json.loads(result.cursor)


def test_drift_requests_one_retrain_with_its_evidence_and_never_twice(instance):
    report(instance, "2013-05", share=0.45, drop=0.01)
    first = tick(instance)
    (request,) = first.run_requests
    assert request.run_key == "drift:2013-05:champion-v1"
    assert request.tags["mlops/drift_share"] == "0.4500"
    assert request.tags["mlops/reason"] == "drift share 0.45 >= 0.3"
    assert request.tags["mlops/top_drifted"] == "temp_f, visibility_miles"
    assert request.run_config["ops"]["trained_model"]["config"] == {"train_end": "2013-05", "holdout_end": "2013-06"}
    again = tick(instance, first.cursor)
    assert again.run_requests == []  # same evidence: nothing new to act on


def test_new_evidence_waits_for_the_cooldown_then_fires(instance):
    report(instance, "2013-05", share=0.45)
    first = tick(instance)
    report(instance, "2013-06", share=0.1, drop=0.05)  # performance dropped
    during = tick(instance, first.cursor)
    assert during.run_requests == [] and "cooldown" in during.skip_message
    assert during.cursor in (None, first.cursor)  # the evidence stays unread
    expired = json.dumps({**json.loads(first.cursor), "fired_at": 0.0})
    after = tick(instance, expired)
    (request,) = after.run_requests
    assert request.run_key == "drift:2013-06:champion-v1"
    assert request.tags["mlops/reason"] == "ROC AUC drop 0.050 >= 0.03"


def test_a_new_champion_makes_the_same_month_new_evidence(instance):
    report(instance, "2013-05", share=0.45, champion=1)
    first = tick(instance)
    report(instance, "2013-05", share=0.45, champion=2)
    second = tick(instance, json.dumps({**json.loads(first.cursor), "fired_at": 0.0}))
    assert [r.run_key for r in second.run_requests] == ["drift:2013-05:champion-v2"]


def test_failed_blocking_check_upstream_means_no_retrain(instance):
    instance.report_runless_asset_event(AssetCheckEvaluation(
        asset_key=AssetKey("validated_flights"), check_name="table_contract", passed=False,
        severity=AssetCheckSeverity.ERROR))
    report(instance, "2013-05", share=0.9)
    result = tick(instance)
    assert result.run_requests == [] and "table_contract check failed" in result.skip_message


def test_sensor_is_registered_and_stopped_by_default():
    from dagster import DefaultSensorStatus

    from mlops_pipelines.definitions import defs

    sensor = defs.resolve_sensor_def("drift_sensor")
    assert sensor.job_name == "training" and sensor.default_status == DefaultSensorStatus.STOPPED


def test_simulate_empties_only_a_replays_folder_and_checks_its_arguments_first(tmp_path, monkeypatch, capsys):
    """`mlops simulate --data-dir DIR` deleted DIR whatever it held, and before it checked its
    arguments: `--data-dir data --start 2013-13` lost the demo's warehouse and registry."""
    from mlops_pipelines.cli import main
    from mlops_pipelines.monitoring.replay import REPLAY_MARKER, empty_replay_folder

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "warehouse.duckdb").write_text("precious")
    for args, error in ((["--start", "2013-13"], "--start 2013-13 --end 2013-12: need months in 2013-01..2013-12"),
                        (["--initial-months", "0"], "--initial-months 0: at least 2"),
                        ([], f"--data-dir {victim}: holds files no replay wrote (no {REPLAY_MARKER})")):
        assert main(["simulate", "--data-dir", str(victim), *args]) == 2
        assert error in capsys.readouterr().err
        assert (victim / "warehouse.duckdb").read_text() == "precious"
    # A replay's own folder (marked), the default one and an empty one are emptied and marked.
    default = tmp_path / "data" / "replay"
    for folder in (tmp_path / "empty", default, tmp_path / "new" / "deeper"):
        if folder != tmp_path / "new" / "deeper":
            folder.mkdir(parents=True)
            if folder == default:
                (folder / "old_run.txt").write_text("from an earlier replay")
        empty_replay_folder(folder, default)
        assert [p.name for p in folder.iterdir()] == [REPLAY_MARKER]
        (folder / "warehouse.duckdb").write_text("a replay's")
        empty_replay_folder(folder, default)
        assert [p.name for p in folder.iterdir()] == [REPLAY_MARKER]
    # The default folder as a link to a folder of other files is not the replay's own.
    import shutil

    shutil.rmtree(default)
    default.symlink_to(victim)
    with pytest.raises(ValueError, match="holds files no replay wrote"):
        empty_replay_folder(default.resolve(), default)
    assert (victim / "warehouse.duckdb").read_text() == "precious"
