"""One Dagster asset per SQL model of dbt_like_sql/, with its column tests as a blocking check."""


from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)

from mlops_pipelines.features.sql_project import SqlModel, SqlProject
from mlops_pipelines.features.store import FeatureStore
from mlops_pipelines.validation.store import SCHEMA as VALIDATED_SCHEMA
from mlops_pipelines.validation.store import failing_partitions
from mlops_pipelines.warehouse import WAREHOUSE_POOL, DuckDBWarehouse


def _refuse_failed_sources(connection, model: SqlModel) -> None:
    """Stop before building on a validated table whose latest delivery failed its contract."""
    for schema, table in model.sources:
        if schema != VALIDATED_SCHEMA:
            continue
        failed = failing_partitions(connection, table)
        if len(failed):
            lines = "; ".join(failed["message"].tolist())
            raise Failure(
                description=f"{model.name} not built: validated.{table} has partitions that failed "
                f"their blocking check ({', '.join(failed['partition_key'].astype(str))}): {lines}",
            )


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
    def _model(context: AssetExecutionContext, warehouse: DuckDBWarehouse) -> MaterializeResult:
        with warehouse.connect() as connection:
            _refuse_failed_sources(connection, model)
            rows = project.build(connection, model)
            failures = project.column_test_failures(connection, model)
            described = connection.execute(f"describe {model.relation}").fetchall()
            if view is not None:
                FeatureStore.record_materialization(connection, view, rows, context.run.run_id)
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
                    "feature_view/ttl_seconds": MetadataValue.float(
                        view.ttl.total_seconds() if view.ttl else 0.0
                    ),
                    "feature_view/features": MetadataValue.md(
                        "| feature | type | description |\n|---|---|---|\n"
                        + "\n".join(f"| {f.name} | {f.type} | {f.description} |" for f in view.features)
                    ),
                }
            )
        return MaterializeResult(
            metadata=metadata,
            check_results=[
                AssetCheckResult(
                    check_name="column_tests",
                    passed=not failures,
                    severity=AssetCheckSeverity.ERROR,
                    description="; ".join(failures) or "all column tests passed",
                    metadata={"failures": MetadataValue.int(len(failures))},
                )
            ],
        )

    return _model


def build_sql_assets(project: SqlProject | None = None) -> list[AssetsDefinition]:
    """An asset for every model of the project (reads the folder; call it when building Definitions)."""
    project = project or SqlProject()
    return [_sql_model_asset(project, model) for model in project.models.values()]
