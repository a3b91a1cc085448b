"""Prepared copies of feature views over local files: the rows a point-in-time join reads, kept
as uncompressed Arrow IPC files and memory-mapped when a join needs them.

Reading a view is most of what a retrieval costs: DuckDB decodes its parquet into fresh memory
on every call (on the benchmark, 0.1-0.17 s and ~35,000 page faults a view of 2,000,000 rows).
A prepared copy is already in the form the join reads, so its pages come from the page cache
as they are touched, and nothing is decoded (see benchmarks/RESULTS.md, session 19).

A copy is used only while it is certainly the view's rows: it carries a *stamp* of what it was
read from (the view's serving version; each file the source reads, found by DuckDB's own
``glob``, with its size, modification and change times and inode; DuckDB's and Arrow's
versions; the connection's settings but those of resources and logs), and the stamp is taken
again before every use. So only a source whose rows are a function of its files is prepared:
file readers (``read_parquet``, ``read_csv``, ...) over literal, local paths, and SQL around
them (CTEs read in their scope) calling only DuckDB's own functions that answer the same for
the same arguments. A table, a macro or Python function of the connection, a type of the
warehouse, a URL, ``now()``, ``random()`` or a sample is not prepared (with the reason).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

FORMAT = 1  # (the layout of a prepared copy: a new number makes every older copy stale)
STAMP_KEY = b"mlops_pipelines.prepared"
SUFFIX = ".arrow"

# Table functions whose rows are a function of the files named by their first argument.
FILE_READERS = frozenset((
    "read_parquet", "parquet_scan", "read_csv", "read_csv_auto", "read_json", "read_json_auto", "read_ndjson",
    "read_ndjson_auto", "read_json_objects", "read_json_objects_auto", "read_ndjson_objects", "read_text",
    "read_blob",
))
FILE_SUFFIXES = (".parquet", ".csv", ".tsv", ".json", ".ndjson", ".jsonl", ".gz", ".zst")
# SQL's special values written without parentheses: a column reference to the parser.
_SPECIAL_VALUES = frozenset(("current_date", "current_time", "current_timestamp", "localtime", "localtimestamp",
                             "current_user", "session_user", "user", "current_role", "current_catalog",
                             "current_schema"))
# DuckDB settings that change the values a read hands over (casts, arithmetic, collation and
# order, Arrow's types, how parquet is decoded, how names resolve): those of the read that made
# a copy are in its stamp. Resources, threads, caches and logs are not: they change no value.
_READ_SETTINGS = (
    "TimeZone", "Calendar", "binary_as_string", "integer_division", "default_collation", "default_null_order",
    "default_order", "null_order", "order_by_non_integer_literal", "ieee_floating_point_ops",
    "error_on_division_by_zero", "regex_match_operator_semantics", "arrow_large_buffer_size",
    "arrow_lossless_conversion", "arrow_output_list_view", "arrow_output_version", "produce_arrow_string_view",
    "disable_timestamptz_casts", "scalar_subquery_error_on_multiple_rows", "preserve_identifier_case",
    "enable_geoparquet_conversion", "ignore_unknown_crs", "json_geometry_format", "legacy_disable_null_type",
    "search_path", "schema", "file_search_path", "dialect_compatibility_mode", "current_dialect",
    "table_function_identifier_conversion",
)


@dataclass(frozen=True)
class SourceFiles:
    """What a view's source reads: the file patterns (``patterns``), or why it cannot be
    prepared (``reason``)."""

    patterns: tuple[str, ...] = ()
    reason: str | None = None
    functions: tuple[str, ...] = ()  # (the functions and readers it calls, checked on each connection)
    tables: tuple[str, ...] = ()  # (files named as tables, "/data/x.parquet": a table of that name wins)


def file_name(view_name: str) -> str:
    """The prepared copy's file name for a view (any text without ':'): readable, and unique
    among views whose names differ only in characters a file name cannot hold, or in case."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", view_name)[:60].lstrip(".") or "view"
    return f"{readable}-{hashlib.sha256(view_name.encode()).hexdigest()[:12]}{SUFFIX}"


def literal_texts(expression: Mapping, partial: bool = False) -> list[str] | None:
    """The texts of a literal file argument (a text, a cast text, a list or array of them), or
    None for anything computed; with ``partial``, the literal ones among them ([] for none)."""
    literal = expression.get("literal") or {}  # (DuckDB 2; 1.x keeps a typed "value")
    value = expression.get("value") or {}
    if expression.get("class") == "CONSTANT" and literal.get("kind") == "STRING":
        return [literal["text"]]
    if expression.get("class") == "CONSTANT" and (value.get("type") or {}).get("id") == "VARCHAR" \
            and not value.get("is_null"):
        return [value["value"]]
    if expression.get("class") == "CAST":
        return literal_texts(expression.get("child") or {}, partial)
    if expression.get("type") == "ARRAY_CONSTRUCTOR" or (
            expression.get("class") == "FUNCTION" and expression.get("function_name") == "list_value"):
        texts: list[str] = []
        for argument in expression.get("arguments") or expression.get("children") or []:
            found = literal_texts(argument.get("expression", argument), partial)
            if found is None:
                return None
            texts.extend(found)
        return texts
    return [] if partial else None


_SOURCE_FILES_BY_SQL: dict[str, SourceFiles] = {}  # (a view's source is read on every retrieval)


class ConnectionFacts:
    """What a connection defines that a prepared copy depends on: its macros and its settings,
    each read once (on first need) per retrieval or preparation, not per view (listing the
    functions is a query of ~11 ms)."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, empty: bool = False,
                 settings: dict[str, str] | None = None) -> None:
        """``empty``: the connection is to an in-memory database of the store's own, in which
        nothing makes macros (nor a registry of views). ``settings``: its :attr:`settings`, when
        known."""
        self.connection = connection
        self.empty = empty
        self._macros: frozenset[str] | None = frozenset() if empty else None
        self._settings: dict[str, str] | None = settings

    @property
    def macros(self) -> frozenset[str]:
        """The names of the functions made on the connection (macros, table macros: a Python
        function cannot take a built-in's name, and any other name is no built-in)."""
        if self._macros is None:
            self._macros = frozenset(name for (name,) in self.connection.execute(
                "select distinct lower(function_name) from duckdb_functions() where not internal").fetchall())
        return self._macros

    @property
    def settings(self) -> dict[str, str]:
        """The connection's settings that change the values a read hands over."""
        if self._settings is None:
            self._settings = dict(self.connection.execute(
                "select name, value from duckdb_settings() where list_contains(?, name)",
                [list(_READ_SETTINGS)]).fetchall())
        return self._settings


def source_files(source: str, facts: ConnectionFacts) -> SourceFiles:
    """The files a view's SQL ``source`` reads, when its rows are a function of them alone (see
    the module's text); else the reason it is not. The SQL is read once (kept by its text); the
    functions it calls are checked against the connection's own macros every time: one made
    under a built-in's name (or a reader's) would change the rows."""
    found = _SOURCE_FILES_BY_SQL.get(source)
    if found is None:
        # (the store's own in-memory database, no caller's, parses it: no transaction of the
        # caller's can fail the parse, whose answer is kept)
        found = _source_files(source, facts.connection if facts.empty else None)
        if len(_SOURCE_FILES_BY_SQL) > 1024:
            _SOURCE_FILES_BY_SQL.clear()
        _SOURCE_FILES_BY_SQL[source] = found
    if found.reason is None and found.functions:
        try:
            made_here = sorted(set(found.functions) & facts.macros)
        except duckdb.Error:
            return SourceFiles(reason="its functions could not be listed on this connection")
        if made_here:
            return SourceFiles(reason=f"it calls {made_here[0]}(), which this connection defines otherwise than "
                                      "DuckDB (a macro)")
    for name in found.tables:
        try:
            taken = facts.connection.execute(
                "select count(*) from (select table_name as name from duckdb_tables() union all "
                "select view_name from duckdb_views()) where lower(name) = lower(?)", [name]).fetchall()[0][0]
        except duckdb.Error:
            return SourceFiles(reason="its tables could not be listed on this connection")
        if taken:
            return SourceFiles(reason=f"it reads {name!r}, which is a table or view of this connection, not the file")
    return found


class _NotPrepared(Exception):
    """Why a source is not prepared (internal: becomes ``SourceFiles.reason``)."""


@functools.cache
def _builtin_types() -> frozenset[str]:
    """DuckDB's own type names, as a fresh connection lists them (read once)."""
    with duckdb.connect() as fresh:
        return frozenset(name.lower() for (name,) in fresh.execute("select type_name from duckdb_types()").fetchall())


@functools.cache
def _consistent() -> frozenset[str]:
    """The names of DuckDB's own functions that answer the same for the same arguments, in an
    expression (table functions aside): every scalar, aggregate and window overload CONSISTENT,
    and every built-in macro's SQL (``ago``: ``current_timestamp - i``) no less so (read once)."""
    with duckdb.connect() as fresh:
        rows = fresh.execute("select lower(function_name), function_type, stability, macro_definition "
                             "from duckdb_functions() where function_type in ('scalar', 'aggregate', 'window', "
                             "'macro')").fetchall()
        candidates: set[str] = set()
        unsure: set[str] = set()
        calls: dict[str, set[str]] = {}
        for name, kind, stability, definition in rows:
            candidates.add(name)
            if kind != "macro":
                if stability != "CONSISTENT" or name in _CLOCK_FUNCTIONS or name.startswith("current_"):
                    unsure.add(name)
                continue
            reads = _Reads()
            try:
                sql = "'" + f"select {definition}".replace("'", "''") + "'"
                tree = json.loads(fresh.execute(f"select json_serialize_sql({sql})").fetchall()[0][0])
                if tree.get("error"):
                    raise _NotPrepared("unread")
                _walk(tree.get("statements"), frozenset(), reads)
            except (_NotPrepared, duckdb.Error, ValueError, RecursionError, AttributeError):
                unsure.add(name)
                continue
            if reads.readers or reads.patterns:
                unsure.add(name)
            calls.setdefault(name, set()).update(reads.functions)
    consistent = candidates - unsure
    changed = True
    while changed:  # (a macro calling one that is not: neither is it)
        changed = False
        for name, called in calls.items():
            if name in consistent and not called <= consistent:
                consistent.discard(name)
                changed = True
    return frozenset(consistent)


# Functions DuckDB calls CONSISTENT that read the clock (DuckDB 2.0's current_localtimestamp).
_CLOCK_FUNCTIONS = frozenset(("now", "today", "get_current_time", "get_current_timestamp", "transaction_timestamp",
                              "localtime", "localtimestamp", "epoch_now"))
# A reader's options that name types by text: a type of the warehouse could be among them.
_TYPE_OPTIONS = frozenset(("columns", "types", "dtypes", "column_types", "auto_type_candidates"))


@dataclass
class _Reads:
    patterns: list[str] = field(default_factory=list)
    functions: set[str] = field(default_factory=set)  # scalar, aggregate and window functions
    readers: set[str] = field(default_factory=set)
    types: set[str] = field(default_factory=set)
    tables: list[str] = field(default_factory=list)  # (files named as tables)


_PARSING = threading.Lock()


@functools.cache
def _parser() -> duckdb.DuckDBPyConnection:
    """One in-memory connection a process that reads SQL (opening one takes ~20 ms)."""
    return duckdb.connect()


def serialized_select(source: str, connection: duckdb.DuckDBPyConnection | None = None) -> dict | None:
    """``select * from <source>`` as DuckDB's parser reads it (``json_serialize_sql``), or None
    when DuckDB cannot serialize it (a PIVOT, an error). The source ends its own line, so that
    a trailing comment comments out nothing after it. ``connection``: one to parse on (a
    store's in-memory database's cursor: no parser connection opened, ~12 ms); else the
    process's parser connection."""
    quoted_sql = "'" + f"select * from {source}\n".replace("'", "''") + "'"  # (DuckDB 1.1 binds no parameter here)
    query = f"select json_serialize_sql({quoted_sql})"
    text = None
    if connection is not None:
        # SQL DuckDB cannot read comes back as {"error": true}, not as an error: one raised is
        # the connection's (closed, its database unusable), and what is found of this SQL is
        # kept for the process, so the process's parser reads it then.
        with contextlib.suppress(duckdb.Error):
            text = connection.execute(query).fetchall()[0][0]
    try:
        if text is None:
            with _PARSING:
                text = _parser().execute(query).fetchall()[0][0]
        tree = json.loads(text)
    except (duckdb.Error, ValueError, RecursionError):
        return None
    return tree if isinstance(tree, dict) and not tree.get("error") else None


def _source_files(source: str, connection: duckdb.DuckDBPyConnection | None = None) -> SourceFiles:
    tree = serialized_select(source, connection)
    if tree is None:
        return SourceFiles(reason="DuckDB cannot serialize its SQL")
    reads = _Reads()
    try:
        _walk(tree.get("statements"), frozenset(), reads)
    except _NotPrepared as exc:
        return SourceFiles(reason=str(exc))
    except RecursionError:
        return SourceFiles(reason="its SQL is too deep to read")
    if not reads.patterns:
        return SourceFiles(reason="it reads no file")
    remote = [p for p in reads.patterns if "://" in p]
    if remote:
        return SourceFiles(reason=f"it reads {remote[0]!r}, not a local file")
    for pattern in reads.patterns:
        try:
            absolute = Path(pattern).expanduser().is_absolute()
        except RuntimeError:  # ('~someone/...' of no such user)
            return SourceFiles(reason=f"it reads {pattern!r}, whose home folder is unknown here")
        if not absolute:
            return SourceFiles(reason=f"it reads {pattern!r} by a relative path")
    consistent = _consistent() if reads.functions else frozenset()
    for name in sorted(reads.functions):
        if name not in consistent:
            return SourceFiles(reason=f"it calls {name}(), which DuckDB does not call consistent (it may answer "
                                      "otherwise on another read), or which is no built-in function")
    for name in sorted(reads.types):
        if name not in _builtin_types():
            return SourceFiles(reason=f"it casts to {name}, a type of the warehouse, not of DuckDB")
    return SourceFiles(patterns=tuple(reads.patterns), functions=tuple(sorted(reads.functions | reads.readers)),
                       tables=tuple(reads.tables))


def _option(argument: object) -> tuple[str, object]:
    """A table function's named argument (``header = true``: a comparison to the parser, or a
    named entry) as its lower-case name and value; ("", the argument) for a positional one."""
    if not isinstance(argument, dict):
        return "", argument
    expression = argument.get("expression", argument)
    left = expression.get("left") if isinstance(expression, dict) else None
    if isinstance(expression, dict) and expression.get("type") == "COMPARE_EQUAL" and isinstance(left, dict) \
            and left.get("class") == "COLUMN_REF" and len(left.get("column_names") or []) == 1:
        return str(left["column_names"][0]).lower(), expression.get("right")
    return str(argument.get("name") or "").lower(), expression


def _walk(node: object, ctes: frozenset[str], reads: _Reads) -> None:
    """Read a serialized SQL tree for what :func:`_source_files` needs; ``ctes``: the common
    table expressions in scope (a table reference by one of their names is that CTE)."""
    if isinstance(node, list):
        for item in node:
            _walk(item, ctes, reads)
        return
    if not isinstance(node, dict):
        return
    if node.get("sample"):
        raise _NotPrepared("it samples rows (a new draw on every read)")
    kind = node.get("type")
    if kind == "RECURSIVE_CTE_NODE":
        raise _NotPrepared("it has a recursive CTE")
    entries = (node.get("cte_map") or {}).get("map") or []
    if entries:
        visible = set(ctes)
        for entry in entries:  # (a CTE sees the ones before it, not itself)
            _walk(entry.get("value"), frozenset(visible), reads)
            visible.add(str(entry.get("key", "")).lower())
        ctes = frozenset(visible)
    if kind == "TABLE_FUNCTION":
        function = node.get("function") or {}
        name = str(function.get("function_name", "")).lower()
        arguments = function.get("arguments") or function.get("children") or []
        if name not in FILE_READERS or not arguments or function.get("schema") or function.get("catalog"):
            raise _NotPrepared(f"it reads {name}(), whose rows are not a function of files alone")
        files = literal_texts(arguments[0].get("expression", arguments[0]))
        if not files:
            raise _NotPrepared(f"its {name}() reads paths it computes")
        reads.patterns.extend(files)
        reads.readers.add(name)  # (checked on the connection: a table macro may take its name)
        for argument in arguments[1:]:
            option, value = _option(argument)
            if option in _TYPE_OPTIONS:
                raise _NotPrepared(f"its {name}() names column types by text ({option}=)")
            _walk(value, ctes, reads)
        _walk([value for key, value in node.items() if key not in ("function", "cte_map")], ctes, reads)
        return
    if kind == "BASE_TABLE":
        schema, table = node.get("schema_name"), str(node.get("table_name", ""))
        name = f"{schema}.{table}" if schema else table
        if not node.get("catalog_name") and not schema and table.lower() in ctes:
            return
        if node.get("catalog_name") or not (name.lower().endswith(FILE_SUFFIXES) or "/" in name):
            raise _NotPrepared(f"it reads the table {name!r}, which has no stamp to tell a change by")
        reads.patterns.append(name)
        reads.tables.append(name)
        return
    if node.get("class") == "FUNCTION" and not node.get("is_operator"):
        reads.functions.add(str(node.get("function_name", "")).lower())
    elif node.get("class") == "COLUMN_REF" and len(node.get("column_names") or []) == 1 \
            and str(node["column_names"][0]).lower() in _SPECIAL_VALUES:
        raise _NotPrepared(f"it reads {node['column_names'][0]}, which changes between reads")
    elif node.get("class") == "TYPE":
        if node.get("schema") or node.get("catalog"):
            raise _NotPrepared(f"it casts to {node.get('type_name')!r} of a schema")
        reads.types.add(str(node.get("type_name", "")).lower())
    for key, value in node.items():
        if key != "cte_map":
            _walk(value, ctes, reads)


def stamp(facts: ConnectionFacts, serving_version: str, patterns: Sequence[str]) -> str | None:
    """What a prepared copy of these files under this declaration, read through the connection
    of ``facts``, is a copy of, as text; None when a pattern names no file or cannot be looked
    at (the source's read fails, and says why)."""
    try:
        return _stamp(facts, serving_version, patterns)
    except duckdb.Error:  # (files this connection may not read: enable_external_access=false ...)
        return None


def why_no_stamp(connection: duckdb.DuckDBPyConnection, patterns: Sequence[str]) -> str:
    """Why :func:`stamp` found no stamp for ``patterns``: the first that lists no file."""
    for pattern in patterns:
        try:
            if not connection.execute("select file from glob(?) limit 1", [pattern]).fetchall():
                kind = "a folder, which DuckDB reads but glob() lists no file of: give a pattern (" \
                    f"'{pattern.rstrip('/')}/*.parquet')" if _is_folder(pattern) else "no file"
                return f"DuckDB's glob() finds no file for {pattern!r} ({kind})"
        except duckdb.Error as exc:
            return f"its files cannot be listed ({str(exc).splitlines()[0]})"
    return "its files changed while they were listed (prepare it again)"


def _is_folder(pattern: str) -> bool:
    try:
        return Path(pattern).expanduser().is_dir()
    except (RuntimeError, OSError):  # ('~someone/...' of no such user; a folder not to be looked in)
        return False


def _stamp(facts: ConnectionFacts, serving_version: str, patterns: Sequence[str]) -> str | None:
    files: list[list] = []
    for pattern in patterns:
        found = sorted(row[0] for row in facts.connection.execute("select file from glob(?)", [pattern]).fetchall())
        if not found:
            return None
        for path in found:
            try:
                status = os.stat(path)
            except OSError:
                return None
            files.append([path, status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino])
    return json.dumps({"format": FORMAT, "view": serving_version, "duckdb": duckdb.__version__,
                       "pyarrow": pa.__version__, "settings": facts.settings, "files": files}, sort_keys=True)


@dataclass(frozen=True)
class PreparedCopy:
    """A prepared copy's rows (memory-mapped) and what was found of their types when read:
    each feature's problem when served to pandas or handed over at all (see ``store``)."""

    table: pa.Table
    unserved: dict[str, str]
    misread: dict[str, str]
    warnings: list[str]


STALE = "is not of its files, declaration or DuckDB settings as they are now"


def open_copy(folder: Path, view_name: str, expected: str) -> PreparedCopy | None | str:
    """The prepared copy of a view when its stamp is ``expected``; None when there is none; else
    why it is not used (:data:`STALE`, or why it cannot be read)."""
    path = folder / file_name(view_name)
    try:
        source = pa.memory_map(str(path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # (a copy another user made, unreadable to this one)
        return f"cannot be read ({exc.strerror or exc})"
    try:
        reader = pa.ipc.open_file(source)
        metadata = json.loads((reader.schema.metadata or {}).get(STAMP_KEY, b"{}"))
        if metadata.get("stamp") != expected:
            return STALE
        table = reader.read_all()
    except (pa.ArrowInvalid, ValueError, OSError):
        return STALE  # (a copy cut short or of another layout: read from the source)
    table = table.replace_schema_metadata(None)
    return PreparedCopy(table, metadata.get("unserved", {}), metadata.get("misread", {}), metadata.get("warnings", []))


def write_copy(folder: Path, view_name: str, table: pa.Table, stamp_text: str, unserved: Mapping[str, str],
               misread: Mapping[str, str], warnings: Sequence[str]) -> Path:
    """Write a view's prepared copy (``table``, laid out by :func:`point_in_time.laid_out_for_joins`)
    whole (to a hidden file, then renamed over the old one: a reader holds either copy, never
    half of one). Returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(view_name)
    partial = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial"
    metadata = {"stamp": stamp_text, "unserved": dict(unserved), "misread": dict(misread),
                "warnings": list(warnings)}
    table = table.replace_schema_metadata({STAMP_KEY: json.dumps(metadata).encode()})
    try:
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path
