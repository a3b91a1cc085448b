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
from typing import Any, Literal

import duckdb
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlops_pipelines.features.views import (
    FEATURE_TYPES,
    FeatureView,
    quoted,
)

REF = re.compile(r"\{\{\s*ref\(\s*['\"](\w+)['\"]\s*\)\s*\}\}")
SOURCE = re.compile(r"\{\{\s*source\(\s*['\"](\w+)['\"]\s*,\s*['\"](\w+)['\"]\s*\)\s*\}\}")
MODEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a model is a table: its file name must be a plain identifier


_MERGE = type("MergeKey", (), {"__repr__": lambda _: "'<<'"})()  # (a merge key: not the text '<<')


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses what would silently change a declaration: a key given twice (the
    second would replace the first), base-60 numbers (YAML 1.1 reads ``ttl: 3:00`` as 180) and
    integers that are not decimal (``010`` is 8, ``0x10`` 16)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Mark] = {}
        # The mapping's own keys, before merge keys (<<: *base) add theirs, which it may override;
        # two merge keys are two equal keys (<<: [*a, *b] merges several).
        for key_node, _ in node.value:
            merge = key_node.tag == "tag:yaml.org,2002:merge"
            key = _MERGE if merge else self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # (an unhashable key: the base class says so)
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    f"while reading a mapping (key {key!r} first given on line {first.line + 1})", node.start_mark,
                    f"found key {key!r} a second time", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)  # (which flattens the merge keys)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        self._refuse_base_60(node)
        digits = node.value.lstrip("+-").replace("_", "")
        if len(digits) > 1 and digits[0] == "0":
            # YAML 1.1 reads 010 as octal (8), 0x10 as 16 and 0b11 as 3: a TTL of seconds that
            # quietly differs from the digits written.
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a decimal number in YAML 1.1 (010 reads as 8, 0x10 as 16); "
                "write it without a leading 0, or quote it if it is text (a TTL is written '3 hours')",
                node.start_mark)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        self._refuse_base_60(node)
        return super().construct_yaml_float(node)

    @staticmethod
    def _refuse_base_60(node: yaml.ScalarNode) -> None:
        if ":" in node.value:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} reads as a base-60 number in YAML 1.1 (3:00 is 180); quote it "
                "(a TTL is written '3 hours')", node.start_mark)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)


def read_yaml(path: Path) -> Any:
    """A YAML file's content, or a ValueError naming the file, line and problem."""
    try:
        with path.open(encoding="utf-8") as stream:  # (a named stream: YAML's errors then name the file)
            return yaml.load(stream, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: {_not_utf8(path, exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where, what, and in what (PyYAML's own text spans two to four
    lines, each naming the file again)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return " ".join(str(exc).split())
    mark = exc.problem_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context:
        where = exc.context_mark
        text += f" ({exc.context}" + (f" at line {where.line + 1}, column {where.column + 1}" if where else "") + ")"
    if "'\\t'" in (exc.problem or ""):
        text += "; YAML indents with spaces, not tabs"
    elif (exc.problem or "").startswith(("expected <block end>", "mapping values are not allowed")):
        text += "; check the indentation (and quote a value holding ': ')"
    return text


def _refuse_unread_references(path: Path, sql: str) -> None:
    """A ``{{ ref(...) }}`` or ``{{ source(...) }}`` that :data:`REF` and :data:`SOURCE` do not
    read (an unquoted name) would stay in the SQL, and the model would not depend on it."""
    left = SOURCE.sub(lambda m: " " * len(m.group(0)), REF.sub(lambda m: " " * len(m.group(0)), sql))
    odd = re.search(r"\{\{\s*(ref|source)\b[^}]*(\}\})?", left)
    if odd:
        line = sql.count("\n", 0, odd.start()) + 1
        raise ValueError(f"{path}: line {line}: {odd.group(0)!r} is neither {{{{ ref('model') }}}} "
                         "nor {{ source('schema', 'table') }} (names in quotes)")


def read_sql(path: Path) -> str:
    """A model's SQL, or a ValueError naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: {_not_utf8(path, exc)}") from None


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> str:
    raw = path.read_bytes()
    try:  # (the position in the whole file: a stream's error counts from the chunk it was decoding)
        raw.decode("utf-8")
    except UnicodeDecodeError as whole:
        exc = whole
    line = raw[:exc.start].count(b"\n") + 1
    return f"line {line}: not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r}); save the file as UTF-8"


# What a model's YAML may hold. Unknown fields are refused: a misspelt ``tll:`` would otherwise
# leave a view without its TTL.
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("description", "owner", mode="before", check_fields=False)
    @classmethod
    def _empty_text(cls, value: Any) -> Any:
        return "" if value is None else value  # (``description:`` left empty)


class _ColumnDoc(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    tests: list[Any] = []

    @field_validator("tests")
    @classmethod
    def _known_tests(cls, tests: list[Any]) -> list[Any]:
        for test in tests:
            accepted = isinstance(test, dict) and list(test) == ["accepted_values"] \
                and isinstance(test["accepted_values"], list)
            if test not in ("not_null", "unique") and not accepted:
                raise ValueError(f"unknown column test {test!r} (not_null, unique, or accepted_values: [...])")
            if accepted and any(v is None for v in test["accepted_values"]):
                # (it would be compared as the text 'None'; NULL rows pass accepted_values anyway, as in dbt)
                raise ValueError(f"accepted_values {test['accepted_values']!r}: null is not a value to accept "
                                 "(NULLs pass accepted_values; add not_null to refuse them)")
        return tests


class _FeatureDoc(_Strict):
    name: str = Field(min_length=1)
    type: Literal[tuple(FEATURE_TYPES)] = "float"  # type: ignore[valid-type]
    description: str = ""
    owner: str = ""


class _FeatureViewDoc(_Strict):
    entities: list[str] = Field(min_length=1)
    event_timestamp: str = Field(min_length=1)
    created_timestamp: str | None = None
    ttl: Any = None
    owner: str = ""
    features: list[_FeatureDoc] = Field(min_length=1)

    @field_validator("entities", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("entities")
    @classmethod
    def _named(cls, value: list[str]) -> list[str]:
        if not all(name.strip() for name in value):
            raise ValueError("an entity join key is empty")
        return value

    @field_validator("event_timestamp", "created_timestamp")
    @classmethod
    def _a_column(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty (a column of the model; leave created_timestamp out when there is none)")
        return value

    @field_validator("ttl")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | float)):
            raise ValueError(f"{value!r} is not a duration ('2 hours', or a number of seconds)")
        return value


class _ModelDoc(_Strict):
    description: str = ""
    columns: list[_ColumnDoc] = []
    feature_view: _FeatureViewDoc | None = None


# sources.yml: what this project reads is checked; dbt's other keys (version, schema, loader,
# freshness, columns, meta...) are allowed, as a sources.yml written for dbt has them.
class _DbtDoc(_Strict):
    model_config = ConfigDict(extra="allow", strict=True)


class _SourceTableDoc(_DbtDoc):
    name: str = Field(min_length=1)
    description: str = ""
    dagster_asset: str = Field(default="", min_length=1)


class _SourceDoc(_DbtDoc):
    name: str = Field(min_length=1)
    description: str = ""
    tables: list[_SourceTableDoc] = []


class _SourcesDoc(_DbtDoc):
    sources: list[_SourceDoc] = []


def _checked_doc(path: Path, doc: Any) -> dict:
    """A model's YAML checked against ``_ModelDoc``: every problem named by its field's path."""
    if doc is None:
        # (An emptied file would quietly take the model's feature view away, and the next build
        # would retire it.)
        raise ValueError(f"{path}: is empty: document the model (description, columns, feature_view) "
                         "or delete the file")
    if isinstance(doc, dict) and "feature_view" in doc and not doc["feature_view"]:
        raise ValueError(f"{path}: feature_view: is empty (declare entities, event_timestamp and features, "
                         "or remove the key)")
    return _checked(path, doc, _ModelDoc)


def _checked(path: Path, doc: Any, model: type[_Strict]) -> dict:
    """``doc`` checked against ``model``: every problem named by its field's path."""
    try:
        model.model_validate(doc)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
            message = {"extra_forbidden": "unknown field", "model_type": "should be a mapping of fields",
                       "model_attributes_type": "should be a mapping of fields"}.get(error["type"], error["msg"])
            message = message.removeprefix("Value error, ")
            problems.append(f"{where or 'the document'}: {message}")
        raise ValueError(f"{path}: " + "; ".join(problems)) from None
    return doc


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
    doc_path: Path | None = None  # the .yml (or .yaml) beside it, if any
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
            return FeatureView.from_yaml(self.name, self.relation, block, self.doc.get("description") or "", self.sql)
        except ValueError as exc:
            raise ValueError(f"{self.doc_path}: {exc}") from None


class SqlProject:
    """All models and sources of a dbt-like SQL folder."""

    def __init__(self, project_dir: Path | None = None) -> None:
        self.project_dir = Path(project_dir or default_project_dir())
        if not self.project_dir.is_dir():
            raise FileNotFoundError(f"SQL project folder {self.project_dir} does not exist")

    @cached_property
    def sources(self) -> dict[tuple[str, str], Source]:
        path = self.project_dir / "sources.yml"
        declared = (read_yaml(path) or {}) if path.exists() else {}
        _checked(path, declared, _SourcesDoc)
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
        self._refuse_stray_files()
        for path in sorted(self.project_dir.glob("*/*.sql")):
            sql = read_sql(path)
            for name, what in ((path.stem, "model"), (path.parent.name, "schema")):
                if not MODEL_NAME.fullmatch(name):
                    raise ValueError(f"{path}: {what} name {name!r} is not a plain identifier "
                                     "(letters, digits and _; it names a DuckDB table or schema)")
            docs = [d for d in (path.with_suffix(".yml"), path.with_suffix(".yaml")) if d.exists()]
            if len(docs) > 1:
                raise ValueError(f"{path}: both {docs[0].name} and {docs[1].name} document it; keep one")
            doc = _checked_doc(docs[0], read_yaml(docs[0])) if docs else {}
            # DuckDB resolves names ignoring case: fv_a and FV_A would be one table.
            same = [m for m in found.values() if m.name.lower() == path.stem.lower()]
            if same:
                raise ValueError(f"{path}: model name {path.stem} is defined twice ({same[0].path}; "
                                 "names are compared ignoring case, as DuckDB does)")
            _refuse_unread_references(path, sql)
            found[path.stem] = SqlModel(
                name=path.stem,
                schema=path.parent.name,
                path=path,
                sql=sql,
                doc=doc or {},
                doc_path=docs[0] if docs else None,
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

    def _refuse_stray_files(self) -> None:
        """Files the project would otherwise ignore without a word: a model's YAML without its SQL,
        or SQL and YAML outside the ``<schema>/<model>`` layout."""
        for path in sorted(self.project_dir.rglob("*")):
            inside = path.relative_to(self.project_dir).parts
            if path.suffix.lower() not in (".sql", ".yml", ".yaml") or any(p.startswith(".") for p in inside):
                continue
            if path.suffix != path.suffix.lower():
                raise ValueError(f"{path}: not read (the project reads {path.suffix.lower()} files, in lower case: "
                                 f"rename it {path.with_suffix(path.suffix.lower()).name})")
            depth = len(inside)
            if path.suffix == ".sql" and depth != 2:
                raise ValueError(f"{path}: a model must be <schema folder>/<model>.sql directly under "
                                 f"{self.project_dir}")
            if path.suffix != ".sql" and depth == 2 and not path.with_suffix(".sql").exists():
                raise ValueError(f"{path}: documents no model ({path.with_suffix('.sql').name} does not exist)")
            if path.suffix != ".sql" and depth > 2:
                raise ValueError(f"{path}: not read (models are <schema folder>/<model>.sql with their .yml beside)")

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
        sql = self.render(model)
        try:
            columns = connection.sql(sql).columns
        except duckdb.Error as exc:  # (DuckDB's message names neither the file nor the model)
            raise ValueError(f"{model.path}: {str(exc).strip()}") from None
        seen: dict[str, str] = {}
        for column in columns:
            if column.lower() in seen:
                # (DuckDB would name the second x_1 and the view would serve the first)
                raise ValueError(f"{model.path}: the SQL gives column {column!r} twice (as {seen[column.lower()]!r} "
                                 "before; names are compared ignoring case, as DuckDB does)")
            seen[column.lower()] = column
        connection.execute(f"create or replace table {candidate} as {sql}")
        try:
            failures = self.column_test_failures(connection, model, candidate)
            rows = int(connection.execute(f"select count(*) from {candidate}").fetchall()[0][0])
        except BaseException:
            connection.execute(f"drop table if exists {candidate}")  # (nothing of a failed build stays)
            raise
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

    @staticmethod
    def _feature_view_failures(model: SqlModel, actual: dict[str, str]) -> list[str]:
        """A feature view's declared columns against the SQL's (name lowered -> DuckDB type)."""
        view = model.feature_view()
        return [f"{model.name}.{problem}" for problem in view.schema_problems(actual, "the SQL")] \
            if view is not None else []

    def column_test_failures(
        self, connection: duckdb.DuckDBPyConnection, model: SqlModel, relation: str | None = None
    ) -> list[str]:
        """Run the YAML column tests (not_null, unique, accepted_values) on ``relation`` (the model's
        table by default); one line per failure, naming the model, column, test and row count."""
        failures = []
        relation = relation or model.relation
        # Names as DuckDB resolves them: ignoring case.
        actual = {row[0].lower(): row[1] for row in connection.execute(f"describe {relation}").fetchall()}
        for column in model.documented_columns:
            if column.lower() not in actual:
                failures.append(f"{model.name}.{column}: documented but not produced by the SQL")
        failures += self._feature_view_failures(model, actual)
        for column in model.doc.get("columns", []):
            name = column["name"]
            if name.lower() not in actual:
                continue
            column_sql = quoted(name)
            for test in column.get("tests", []):
                if test == "not_null":
                    sql = f"select count(*) from {relation} where {column_sql} is null"
                elif test == "unique":
                    sql = (f"select count(*) from (select {column_sql} from {relation} "
                           f"where {column_sql} is not null group by 1 having count(*) > 1)")
                elif isinstance(test, dict) and "accepted_values" in test:
                    accepted = test["accepted_values"]
                    if actual[name.lower()] != "BOOLEAN" and any(isinstance(v, bool) for v in accepted):
                        # (YAML 1.1 reads yes, no, on, off, true and false as booleans: 'True' is no 'yes')
                        failures.append(f"{model.name}.{name}: accepted_values {accepted!r}: YAML read a value "
                                        f"as a boolean, but the column is {actual[name.lower()]}; quote it ('yes')")
                        continue
                    values = ", ".join("'" + str(v).replace("'", "''") + "'" for v in accepted)
                    sql = f"select count(*) from {relation} where {column_sql} not in ({values})"
                else:
                    raise ValueError(f"{model.path}: unknown column test {test!r} on {name}")
                label = test if isinstance(test, str) else "accepted_values"
                try:
                    bad = int(connection.execute(sql).fetchall()[0][0])
                except duckdb.Error as exc:  # (text values for an INTEGER column, say)
                    failures.append(f"{model.name}.{name}: {label} could not run on its "
                                    f"{actual[name.lower()]} values ({str(exc).splitlines()[0]})")
                    continue
                if bad:
                    failures.append(f"{model.name}.{name}: {label} failed for {bad} rows")
        return failures
