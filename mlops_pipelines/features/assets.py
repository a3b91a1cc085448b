"""One Dagster asset per SQL model of dbt_like_sql/, with its column tests as a blocking check."""

import re
from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)
from pydantic import Field

from mlops_pipelines.features.resource import FeatureStoreResource, store_warnings_logged
from mlops_pipelines.features.sql_project import SqlModel, SqlProject
from mlops_pipelines.features.store import REGISTRY_HEADER, FeatureStore, watermark_text
from mlops_pipelines.features.views import ttl_text
from mlops_pipelines.validation.store import SCHEMA as VALIDATED_SCHEMA
from mlops_pipelines.validation.store import refuse_failed_validations
from mlops_pipelines.warehouse import WAREHOUSE_POOL, DuckDBWarehouse


def _sql_model_asset(project: SqlProject, model: SqlModel) -> AssetsDefinition:
    view = model.feature_view()

    @asset(
        name=model.name,
        group_name=model.schema,
        deps=project.upstream_assets(model),
        check_specs=[
            AssetCheckSpec(
                "column_tests",
                asset=model.name,
                blocking=True,
                description="Every documented column exists and keeps its YAML tests.",
            )
        ],
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "sql"},
        code_version=model.version,
        description=model.doc.get("description", ""),
        metadata={"sql_file": MetadataValue.path(str(model.path))},
    )
    def _model(context: AssetExecutionContext, warehouse: DuckDBWarehouse) -> Iterator:
        with warehouse.connect() as connection:
            refuse_failed_validations(
                connection, [t for s, t in model.sources if s == VALIDATED_SCHEMA], model.name
            )
            if view is not None:  # (before the build: a refused run leaves the table as it was)
                FeatureStore.refuse_if_applied(connection, view)
            rows, failures = project.build(connection, model)
            if failures:
                # The candidate was dropped and the previous table kept: no materialization, whose
                # metadata (version, row count, schema) would describe a table that is not there.
                yield _column_tests_result(failures)
                raise Failure(description=f"{model.relation}: column tests failed, the previous table is kept: "
                                          + "; ".join(failures))
            described = connection.execute(f"describe {model.relation}").fetchall()
            if view is not None:
                FeatureStore.record_materialization(connection, view, rows, context.run.run_id,
                                                    declared=project.feature_views())
        docs = {c["name"]: c.get("description", "") for c in model.doc.get("columns", [])}
        if view is not None:
            docs.update({f.name: f.description for f in view.features})
        metadata = {
            "dagster/row_count": MetadataValue.int(rows),
            "dagster/column_schema": MetadataValue.table_schema(
                TableSchema(columns=[TableColumn(n, t, description=docs.get(n)) for n, t, *_ in described])
            ),
            "relation": MetadataValue.text(model.relation),
            "sql": MetadataValue.md(f"```sql\n{project.render(model)}\n```"),
        }
        if view is not None:
            metadata.update(
                {
                    "feature_view/version": MetadataValue.text(view.version),
                    "feature_view/entities": MetadataValue.text(", ".join(view.entities)),
                    "feature_view/event_timestamp": MetadataValue.text(view.event_timestamp),
                    "feature_view/created_timestamp": MetadataValue.text(view.created_timestamp or "none"),
                    # As `mlops features list` prints it (7d, 400ms, none), and in seconds (no
                    # TTL: null, where 0.0 would read as "expires at once").
                    "feature_view/ttl": MetadataValue.text(ttl_text(view.ttl)),
                    "feature_view/ttl_seconds": (MetadataValue.float(view.ttl.total_seconds()) if view.ttl
                                                 else MetadataValue.null()),
                    "feature_view/owner": MetadataValue.text(view.owner or "none"),
                    "feature_view/description": MetadataValue.text(view.description),
                    "feature_view/features": MetadataValue.md(
                        "| feature | type | description | owner |\n|---|---|---|---|\n"
                        + "\n".join(f"| {_cell(f.name)} | {f.type} | {_cell(f.description)} | "
                                     f"{_cell(f.owner or view.owner)} |" for f in view.features)
                    ),
                }
            )
        yield MaterializeResult(metadata=metadata, check_results=[_column_tests_result(failures)])

    return _model


def _cell(text: str) -> str:
    """``text`` as one cell of a markdown table: a '|' or a line break would end the cell or the
    row. Backslashes are doubled only before a '|' (elsewhere, inside a code span, the escape
    would show), so that the text's own backslash before a '|' is not read as escaping it."""
    escaped = re.sub(r"(\\*)\|", lambda match: match.group(1) * 2 + "\\|", text)
    return escaped.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def _column_tests_result(failures: list[str]) -> AssetCheckResult:
    return AssetCheckResult(
        check_name="column_tests",
        passed=not failures,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(failures) or "all column tests passed",
        metadata={"failures": MetadataValue.int(len(failures))},
    )


class OnlineMaterializationConfig(Config):
    end_ts: str | None = Field(
        default=None,
        description="Materialize as of this instant (ISO 8601; naive = UTC). Unset: each view's "
        "latest event timestamp, the data's own 'now'.",
    )
    full_refresh: bool = Field(
        default=False,
        description="Rebuild every view from all its rows up to end_ts, which may then be earlier than "
        "the last one (incremental runs already rebuild a view whose earlier rows changed).",
    )


# When a feature view was materialized, once every view is there with its blocking checks
# passed. ``eager()`` compares with the sensor's previous evaluation, so a view built before its
# first evaluation (the daemon started after a view was rebuilt by hand) would never be served:
# that first evaluation refreshes the store too (incrementally: nothing new, little work).
ONLINE_AFTER_FEATURE_VIEWS = (
    (AutomationCondition.eager()
     | (AutomationCondition.initial_evaluation() & ~AutomationCondition.any_deps_missing()
        & ~AutomationCondition.any_deps_in_progress() & ~AutomationCondition.in_progress()))
    & AutomationCondition.all_deps_blocking_checks_passed()
)


def online_features_asset(project: SqlProject | None = None) -> AssetsDefinition:
    """The online store, refreshed after every feature view (incrementally)."""
    project = project or SqlProject()
    views = sorted(project.feature_views())

    @asset(
        name="online_features",
        group_name="features",
        deps=views,
        pool=WAREHOUSE_POOL,
        kinds={"sqlite"},
        description="The latest row per entity of every feature view, in a SQLite file in WAL "
        "mode that the serving process reads.",
        # Also after a feature view materialized on its own (the UI's "Materialize" on one
        # view): a new version would leave serving without it until the next build_features run.
        automation_condition=ONLINE_AFTER_FEATURE_VIEWS,
    )
    def _online(
        context: AssetExecutionContext, config: OnlineMaterializationConfig, feature_store: FeatureStoreResource
    ) -> MaterializeResult:
        store = feature_store.store(project)
        with store_warnings_logged(context.log):
            processed = store.materialize_online(views, end_ts=config.end_ts, full_refresh=config.full_refresh)
        context.log.info(f"online store {feature_store.online_path}: entities written per view {processed}")
        online = store.online
        with online.connect() as lite:  # (the instant each view is now current as of, and how it got there)
            marks = {name: online.watermark(lite, store.views[name]) for name in views}
            refreshes = {name: online.last_refresh(lite, store.views[name]) for name in views}
        # Every view of the registry, those applied from Python too (no asset of their own), as
        # `mlops features list` prints it.
        listed = store.registry()
        registry = {"registry": MetadataValue.md(
            "\n".join("| " + " | ".join(_cell(cell) for cell in line) + " |"
                      for line in (REGISTRY_HEADER, ("---",) * len(REGISTRY_HEADER), *listed)))} if listed else {}
        return MaterializeResult(
            metadata={
                "path": MetadataValue.path(feature_store.online_path),
                "rows_processed": MetadataValue.int(sum(processed.values())),
                "full_refresh": MetadataValue.bool(config.full_refresh),
                **{f"rows_processed/{name}": MetadataValue.int(n) for name, n in processed.items()},
                **{f"watermark/{name}": MetadataValue.text(watermark_text(mark))
                   for name, mark in marks.items() if mark is not None},
                **{f"refresh/{name}": MetadataValue.text(how) for name, how in refreshes.items() if how},
                **registry,
            }
        )

    return _online


def build_sql_assets(project: SqlProject | None = None) -> list[AssetsDefinition]:
    """An asset for every model of the project (reads the folder; call it when building Definitions)."""
    project = project or SqlProject()
    return [_sql_model_asset(project, model) for model in project.models.values()]
