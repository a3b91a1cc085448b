"""Prepared copies of feature views over local files: the rows a point-in-time join reads, kept
as uncompressed Arrow IPC files and memory-mapped when a join needs them.

Reading a view is most of what a retrieval costs: DuckDB decodes its parquet into fresh memory
on every call (on the benchmark, 0.1-0.17 s and ~40,000 page faults a view of 2,000,000 rows).
A prepared copy is already in the form the join reads, so its pages come from the page cache
as they are touched, and nothing is decoded (see benchmarks/RESULTS.md, session 19).

A copy is used only while it is certainly the view's rows: it carries a *stamp* of what it was
read from (the view's serving version; each file the source reads, found by DuckDB's own
``glob``, with its size, modification and change times and inode; DuckDB's and Arrow's
versions), and the stamp is taken again before every use. So only a source whose rows are a
function of its files is prepared: file readers (``read_parquet``, ``read_csv``, ...) over
literal, local paths, and SQL around them whose every function DuckDB calls consistent. A
table, a macro, a URL, ``now()``, ``random()`` or a sample is not prepared (with the reason).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
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
_FILE_SUFFIXES = (".parquet", ".csv", ".tsv", ".json", ".ndjson", ".jsonl", ".gz", ".zst")
# SQL's special values written without parentheses: a column reference to the parser.
_SPECIAL_VALUES = frozenset(("current_date", "current_time", "current_timestamp", "localtime", "localtimestamp",
                             "current_user", "session_user", "user", "current_role", "current_catalog",
                             "current_schema"))
# DuckDB settings that change the rows or Arrow types a read hands over.
_READ_SETTINGS = ("binary_as_string", "calendar", "arrow_large_buffer_size", "produce_arrow_string_view",
                  "arrow_lossless_conversion", "arrow_output_list_view", "default_null_order", "default_order")


@dataclass(frozen=True)
class SourceFiles:
    """What a view's source reads: the file patterns (``patterns``), or why it cannot be
    prepared (``reason``)."""

    patterns: tuple[str, ...] = ()
    reason: str | None = None


def file_name(view_name: str) -> str:
    """The prepared copy's file name for a view (any text without ':'): readable, and unique
    among views whose names differ only in characters a file name cannot hold, or in case."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", view_name)[:60].lstrip(".") or "view"
    return f"{readable}-{hashlib.sha256(view_name.encode()).hexdigest()[:12]}{SUFFIX}"


def _literal_texts(expression: Mapping) -> list[str] | None:
    """The texts of a literal file argument (a text, a cast text, a list or array of them), or
    None for anything computed."""
    literal = expression.get("literal") or {}  # (DuckDB 2; 1.x keeps a typed "value")
    value = expression.get("value") or {}
    if expression.get("class") == "CONSTANT" and literal.get("kind") == "STRING":
        return [literal["text"]]
    if expression.get("class") == "CONSTANT" and (value.get("type") or {}).get("id") == "VARCHAR" \
            and not value.get("is_null"):
        return [value["value"]]
    if expression.get("class") == "CAST":
        return _literal_texts(expression.get("child") or {})
    if expression.get("type") == "ARRAY_CONSTRUCTOR" or (
            expression.get("class") == "FUNCTION" and expression.get("function_name") == "list_value"):
        texts: list[str] = []
        for argument in expression.get("arguments") or expression.get("children") or []:
            found = _literal_texts(argument.get("expression", argument))
            if found is None:
                return None
            texts.extend(found)
        return texts
    return None


def _nodes(node: object) -> Iterator[dict]:
    """Every object of a serialized SQL tree, depth first (iteratively: no recursion limit)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            yield item
            stack.extend(reversed(list(item.values())))


_FOUND: dict[str, SourceFiles] = {}  # (by source text: a view's source is read on every retrieval)


def source_files(source: str, connection: duckdb.DuckDBPyConnection) -> SourceFiles:
    """The files a view's SQL ``source`` reads, when its rows are a function of them alone (see
    the module's text); else the reason it is not. (A function of the text and of DuckDB's
    functions, read through ``connection``; kept once found: a function the connection lacks
    fails the read anyway.)"""
    if source not in _FOUND:
        if len(_FOUND) > 1024:
            _FOUND.clear()
        _FOUND[source] = _source_files(source, connection)
    return _FOUND[source]


def _source_files(source: str, parser: duckdb.DuckDBPyConnection) -> SourceFiles:
    quoted_sql = "'" + f"select * from {source}\n".replace("'", "''") + "'"
    try:
        tree = json.loads(parser.execute(f"select json_serialize_sql({quoted_sql})").fetchall()[0][0])
    except (duckdb.Error, ValueError):
        return SourceFiles(reason="DuckDB cannot serialize its SQL")
    if not isinstance(tree, dict) or tree.get("error"):
        return SourceFiles(reason="DuckDB cannot serialize its SQL")
    nodes = list(_nodes(tree))
    ctes = {str(entry.get("key", "")).lower() for node in nodes
            for entry in (node.get("cte_map") or {}).get("map") or []}
    patterns: list[str] = []
    functions: set[str] = set()
    readers: set[int] = set()  # (a file reader's own node: a FUNCTION, checked as a reader)
    for node in nodes:
        kind = node.get("type")
        if node.get("sample"):
            return SourceFiles(reason="it samples rows (a new draw on every read)")
        if kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            readers.add(id(function))
            name = str(function.get("function_name", "")).lower()
            arguments = function.get("arguments") or function.get("children") or []
            if name not in FILE_READERS or not arguments:
                return SourceFiles(reason=f"it reads {name}(), whose rows are not a function of files alone")
            files = _literal_texts(arguments[0].get("expression", arguments[0]))
            if not files:
                return SourceFiles(reason=f"its {name}() reads paths it computes")
            patterns.extend(files)
        elif kind == "BASE_TABLE":
            schema, table = node.get("schema_name"), str(node.get("table_name", ""))
            name = f"{schema}.{table}" if schema else table
            if not node.get("catalog_name") and not schema and table.lower() in ctes:
                continue
            if node.get("catalog_name") or not (name.lower().endswith(_FILE_SUFFIXES) or "/" in name):
                return SourceFiles(reason=f"it reads the table {name!r}, which has no stamp to tell a change by")
            patterns.append(name)
        elif node.get("class") == "FUNCTION" and not node.get("is_operator") and id(node) not in readers:
            functions.add(str(node.get("function_name", "")).lower())
        elif node.get("class") == "COLUMN_REF" and len(node.get("column_names") or []) == 1 \
                and str(node["column_names"][0]).lower() in _SPECIAL_VALUES:
            return SourceFiles(reason=f"it reads {node['column_names'][0]}, which changes between reads")
    if not patterns:
        return SourceFiles(reason="it reads no file")
    remote = [p for p in patterns if "://" in p]
    if remote:
        return SourceFiles(reason=f"it reads {remote[0]!r}, not a local file")
    relative = [p for p in patterns if not Path(p).expanduser().is_absolute()]
    if relative:
        return SourceFiles(reason=f"it reads {relative[0]!r} by a relative path")
    if functions:
        stable = {name for (name,) in parser.execute(
            "select function_name from duckdb_functions() where function_name in "
            f"({', '.join('?' for _ in functions)}) group by function_name "
            "having bool_and(stability = 'CONSISTENT')", sorted(functions)).fetchall()}
        changing = sorted(functions - stable)
        if changing:
            return SourceFiles(reason=f"it calls {changing[0]}(), which DuckDB does not call consistent "
                                      "(or is no built-in function)")
    return SourceFiles(patterns=tuple(patterns))


def stamp(connection: duckdb.DuckDBPyConnection, serving_version: str, patterns: Sequence[str]) -> str | None:
    """What a prepared copy of these files under this declaration is a copy of, as text; None
    when a pattern names no file (DuckDB's read would fail, and says why)."""
    files: list[list] = []
    for pattern in patterns:
        found = sorted(row[0] for row in connection.execute("select file from glob(?)", [pattern]).fetchall())
        if not found:
            return None
        for path in found:
            try:
                status = os.stat(path)
            except OSError:
                return None
            files.append([path, status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino])
    settings = {}
    for setting in _READ_SETTINGS:
        try:
            settings[setting] = str(connection.execute("select current_setting(?)", [setting]).fetchall()[0][0])
        except duckdb.Error:  # (a DuckDB without the setting)
            pass
    return json.dumps({"format": FORMAT, "view": serving_version, "duckdb": duckdb.__version__,
                       "pyarrow": pa.__version__, "settings": settings, "files": files}, sort_keys=True)


@dataclass(frozen=True)
class PreparedCopy:
    """A prepared copy's rows (memory-mapped) and what was found of their types when read:
    each feature's problem when served to pandas or handed over at all (see ``store``)."""

    table: pa.Table
    unserved: dict[str, str]
    misread: dict[str, str]
    warnings: list[str]


def open_copy(folder: Path, view_name: str, expected: str) -> PreparedCopy | None | str:
    """The prepared copy of a view when its stamp is ``expected``; None when there is none; the
    text "stale" when there is one of other files or another declaration."""
    path = folder / file_name(view_name)
    try:
        source = pa.memory_map(str(path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        reader = pa.ipc.open_file(source)
        metadata = json.loads((reader.schema.metadata or {}).get(STAMP_KEY, b"{}"))
        if metadata.get("stamp") != expected:
            return "stale"
        table = reader.read_all()
    except (pa.ArrowInvalid, ValueError, OSError):
        return "stale"  # (a copy cut short or of another layout: read from the source)
    table = table.replace_schema_metadata(None)
    return PreparedCopy(table, metadata.get("unserved", {}), metadata.get("misread", {}), metadata.get("warnings", []))


def write_copy(folder: Path, view_name: str, table: pa.Table, stamp_text: str, unserved: Mapping[str, str],
               misread: Mapping[str, str], warnings: Sequence[str], order: Sequence[str] = ()) -> Path:
    """Write a view's prepared copy whole (to a hidden file, then renamed over the old one:
    a reader holds either copy, never half of one), its rows sorted by the columns of ``order``.
    Returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(view_name)
    partial = folder / f".{path.name}.{os.getpid()}.partial"
    try:
        table = table.unify_dictionaries().combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowCapacityError):
        pass  # (columns past 2 GiB of text stay in chunks: record batches of their own)
    if order:
        try:
            # Rows in the order of their keys and times: the join then finds its codes in order
            # and skips their sort (point_in_time._sorted_with_positions checks, whatever the order).
            table = table.sort_by([(column, "ascending") for column in order])
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass  # (keys Arrow does not sort: the join sorts their codes)
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
