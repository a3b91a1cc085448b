"""The Definitions load, and hold the lifecycle's assets, checks, jobs and schedules."""

from __future__ import annotations

from dagster import AssetKey, Definitions

from mlops_pipelines.definitions import defs
from mlops_pipelines.features.sql_project import SqlProject


def test_definitions_load_and_validate():
    Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    expected = {
        "raw_flights", "raw_weather", "raw_planes", "raw_airports", "raw_airlines",
        "validated_flights", "validated_weather", "stg_flights", "int_flight_outcomes",
        "fv_origin_weather", "fv_plane", "training_dataset", "trained_model", "evaluated_model",
        "promoted_model",
    }
    assert expected <= keys
    # Every SQL file is one asset.
    assert set(SqlProject().models) <= keys


def test_jobs_schedules_and_blocking_checks():
    for name in ("ingest_flights", "ingest_reference", "build_features", "training"):
        assert defs.resolve_job_def(name).name == name
    assert {s.name for s in defs.schedules} == {"monthly_ingestion", "features_after_ingestion", "monthly_training"}
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("validated_flights", "table_contract") in checks
    spec = next(s for s in defs.resolve_assets_def(AssetKey("validated_flights")).check_specs
                if s.name == "table_contract")
    assert spec.blocking


def test_training_job_targets_training_dataset_to_promoted_model():
    job = defs.resolve_job_def("training")
    assert {n.name for n in job.graph.nodes} == {
        "training_dataset", "trained_model", "evaluated_model", "promoted_model"}


def test_sql_refs_resolve_to_schema_qualified_tables():
    project = SqlProject()
    rendered = project.render(project.models["int_flight_outcomes"])
    assert "staging.stg_flights" in rendered and "{{" not in rendered
    assert project.upstream_assets(project.models["stg_flights"]) == ["validated_flights"]
    assert set(project.feature_views()) == {
        "fv_origin_weather", "fv_plane", "fv_carrier_arrival_delays", "fv_route_arrival_delays",
        "fv_origin_departure_delays", "fv_tail_departures"}


def test_the_online_store_is_refreshed_after_a_feature_view_built_on_its_own():
    """online_features ran only inside build_features: a view materialized alone (a new version)
    left serving without it. Its automation asks for it once every view has been built with its
    blocking column tests passed and one is newer than the online store, and not again until a
    view changes; a view whose tests failed asks for nothing."""
    from dagster import AssetCheckEvaluation, AssetMaterialization, DagsterInstance, evaluate_automation_conditions

    views = sorted(SqlProject().feature_views())
    sensor = next(s for s in defs.sensors if s.name == "online_features_after_feature_views")
    assert sensor.default_status.value == "RUNNING"
    with DagsterInstance.ephemeral() as instance:
        def requested(cursor=None):
            result = evaluate_automation_conditions(defs, instance, cursor=cursor)
            return result.get_num_requested(AssetKey("online_features")), result.cursor

        def build(view: str, passed: bool = True) -> None:
            instance.report_runless_asset_event(AssetMaterialization(view))
            instance.report_runless_asset_event(
                AssetCheckEvaluation(asset_key=AssetKey(view), check_name="column_tests", passed=passed))

        count, cursor = requested()
        assert count == 0  # (no view built yet)
        for view in views[:-1]:
            build(view)
        count, cursor = requested(cursor)
        assert count == 0  # (one view still missing)
        build(views[-1])
        count, cursor = requested(cursor)
        assert count == 1
        instance.report_runless_asset_event(AssetMaterialization("online_features"))
        count, cursor = requested(cursor)
        assert count == 0
        build(views[0])  # (one view rebuilt alone)
        count, cursor = requested(cursor)
        assert count == 1
        instance.report_runless_asset_event(AssetMaterialization("online_features"))
        build(views[1], passed=False)
        count, cursor = requested(cursor)
        assert count == 0


def test_views_built_before_the_sensors_first_evaluation_refresh_the_online_store():
    """A view rebuilt by hand before the daemon ever ran (`dagster asset materialize --select
    fv_x`, then `make ui`): the automation compared with its previous evaluation, which there
    was none of, and never refreshed the store. Its first evaluation now asks once; a later one
    asks only after a view changes. Not before every view is there."""
    from dagster import AssetCheckEvaluation, AssetMaterialization, DagsterInstance, evaluate_automation_conditions

    views = sorted(SqlProject().feature_views())
    with DagsterInstance.ephemeral() as instance:
        def requested(cursor=None):
            result = evaluate_automation_conditions(defs, instance, cursor=cursor)
            return result.get_num_requested(AssetKey("online_features")), result.cursor

        for view in views:
            instance.report_runless_asset_event(AssetMaterialization(view))
            instance.report_runless_asset_event(
                AssetCheckEvaluation(asset_key=AssetKey(view), check_name="column_tests", passed=True))
        instance.report_runless_asset_event(AssetMaterialization("online_features"))
        instance.report_runless_asset_event(AssetMaterialization(views[0]))  # (rebuilt alone, by hand)
        count, cursor = requested()
        assert count == 1
        instance.report_runless_asset_event(AssetMaterialization("online_features"))
        count, cursor = requested(cursor)
        assert count == 0
    with DagsterInstance.ephemeral() as instance:  # (a first evaluation with a view missing: nothing)
        for view in views[:-1]:
            instance.report_runless_asset_event(AssetMaterialization(view))
        assert evaluate_automation_conditions(defs, instance).get_num_requested(AssetKey("online_features")) == 0
