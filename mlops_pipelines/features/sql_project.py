"""The dbt-like SQL project: discover models, resolve ``ref()``/``source()``, run them in DuckDB.

Layout: ``dbt_like_sql/<layer>/<model>.sql`` with ``<model>.yml`` beside it; the layer folder is
the DuckDB schema the model is built in (staging, intermediate, features). ``sources.yml`` maps
each source table to the Dagster asset that writes it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import duckdb
import yaml

from mlops_pipelines.features.views import FeatureView

REF = re.compile(r"\{\{\s*ref\(\s*['\"](\w+)['\"]\s*\)\s*\}\}")
SOURCE = re.compile(r"\{\{\s*source\(\s*['\"](\w+)['\"]\s*,\s*['\"](\w+)['\"]\s*\)\s*\}\}")


def default_project_dir() -> Path:
    """``dbt_like_sql/`` at the repository root (beside the package)."""
    return Path(__file__).resolve().parents[2] / "dbt_like_sql"


@dataclass(frozen=True)
class Source:
    schema: str
    table: str
    dagster_asset: str


@dataclass(frozen=True)
class SqlModel:
    """One ``.sql`` file: its name, schema, raw SQL, declared docs, and what it reads."""

    name: str
    schema: str
    path: Path
    sql: str
    doc: dict = field(compare=False)
    refs: tuple[str, ...] = ()
    sources: tuple[tuple[str, str], ...] = ()

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def version(self) -> str:
        return hashlib.sha256((self.sql + yaml.safe_dump(self.doc, sort_keys=True)).encode()).hexdigest()[:16]

    @property
    def documented_columns(self) -> list[str]:
        columns = [c["name"] for c in self.doc.get("columns", [])]
        view = self.doc.get("feature_view") or {}
        return columns + [f["name"] for f in view.get("features", []) if f["name"] not in columns]

    def feature_view(self) -> FeatureView | None:
        block = self.doc.get("feature_view")
        if not block:
            return None
        try:
            return FeatureView.from_yaml(self.name, self.relation, block, self.doc.get("description", ""), self.sql)
        except ValueError as exc:
            raise ValueError(f"{self.path.with_suffix('.yml')}: {exc}") from None


class SqlProject:
    """All models and sources of a dbt-like SQL folder."""

    def __init__(self, project_dir: Path | None = None) -> None:
        self.project_dir = Path(project_dir or default_project_dir())
        if not self.project_dir.is_dir():
            raise FileNotFoundError(f"SQL project folder {self.project_dir} does not exist")

    @cached_property
    def sources(self) -> dict[tuple[str, str], Source]:
        path = self.project_dir / "sources.yml"
        declared = yaml.safe_load(path.read_text()) if path.exists() else {}
        found = {}
        for block in declared.get("sources", []):
            for table in block.get("tables", []):
                found[(block["name"], table["name"])] = Source(
                    block["name"], table["name"], table.get("dagster_asset", f"{block['name']}_{table['name']}")
                )
        return found

    @cached_property
    def models(self) -> dict[str, SqlModel]:
        found: dict[str, SqlModel] = {}
        for path in sorted(self.project_dir.glob("*/*.sql")):
            sql = path.read_text()
            doc_path = path.with_suffix(".yml")
            doc = yaml.safe_load(doc_path.read_text()) if doc_path.exists() else {}
            if path.stem in found:
                raise ValueError(f"{path}: model name {path.stem} is defined twice")
            found[path.stem] = SqlModel(
                name=path.stem,
                schema=path.parent.name,
                path=path,
                sql=sql,
                doc=doc or {},
                refs=tuple(dict.fromkeys(REF.findall(sql))),
                sources=tuple(dict.fromkeys(SOURCE.findall(sql))),
            )
        for model in found.values():
            for ref in model.refs:
                if ref not in found:
                    raise ValueError(f"{model.path}: ref('{ref}') names no model in {self.project_dir}")
            for source in model.sources:
                if source not in self.sources:
                    raise ValueError(f"{model.path}: source{source} is not declared in sources.yml")
        return found

    def feature_views(self) -> dict[str, FeatureView]:
        return {name: view for name, m in self.models.items() if (view := m.feature_view())}

    def upstream_assets(self, model: SqlModel) -> list[str]:
        """Dagster asset names a model depends on: the models it refs and the sources' producers."""
        return [*model.refs, *(self.sources[s].dagster_asset for s in model.sources)]

    def render(self, model: SqlModel) -> str:
        """The model's SQL with ``ref()`` and ``source()`` replaced by schema-qualified tables."""
        sql = REF.sub(lambda m: self.models[m.group(1)].relation, model.sql)
        return SOURCE.sub(lambda m: f"{m.group(1)}.{m.group(2)}", sql)

    def build(self, connection: duckdb.DuckDBPyConnection, model: SqlModel) -> tuple[int, list[str]]:
        """Build the model into a candidate table, run its column tests there, and replace the
        model's table only if they all pass. Returns the row count and the failures (empty when
        the table was replaced; otherwise the previous table is left as it was)."""
        connection.execute(f"create schema if not exists {model.schema}")
        candidate = f'{model.schema}."__candidate_{model.name}"'
        connection.execute(f"create or replace table {candidate} as {self.render(model)}")
        failures = self.column_test_failures(connection, model, candidate)
        rows = int(connection.execute(f"select count(*) from {candidate}").fetchall()[0][0])
        if failures:
            connection.execute(f"drop table {candidate}")
            return rows, failures
        connection.execute("begin transaction")
        try:
            connection.execute(f"drop table if exists {model.relation}")
            connection.execute(f'alter table {candidate} rename to "{model.name}"')
            connection.execute("commit")
        except Exception:
            connection.execute("rollback")
            raise
        return rows, []

    def column_test_failures(
        self, connection: duckdb.DuckDBPyConnection, model: SqlModel, relation: str | None = None
    ) -> list[str]:
        """Run the YAML column tests (not_null, unique, accepted_values) on ``relation`` (the model's
        table by default); one line per failure, naming the model, column, test and row count."""
        failures = []
        relation = relation or model.relation
        actual = {row[0] for row in connection.execute(f"describe {relation}").fetchall()}
        for column in model.documented_columns:
            if column not in actual:
                failures.append(f"{model.name}.{column}: documented but not produced by the SQL")
        for column in model.doc.get("columns", []):
            name = column["name"]
            if name not in actual:
                continue
            for test in column.get("tests", []):
                if test == "not_null":
                    sql = f'select count(*) from {relation} where "{name}" is null'
                elif test == "unique":
                    sql = (f'select count(*) from (select "{name}" from {relation} '
                           f'where "{name}" is not null group by 1 having count(*) > 1)')
                elif isinstance(test, dict) and "accepted_values" in test:
                    values = ", ".join(f"'{v}'" for v in test["accepted_values"])
                    sql = f'select count(*) from {relation} where "{name}" not in ({values})'
                else:
                    raise ValueError(f"{model.path}: unknown column test {test!r} on {name}")
                bad = int(connection.execute(sql).fetchall()[0][0])
                if bad:
                    label = test if isinstance(test, str) else "accepted_values"
                    failures.append(f"{model.name}.{name}: {label} failed for {bad} rows")
        return failures
