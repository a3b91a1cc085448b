"""The dbt-like SQL project's declarations: what is refused when loading them (by file, field and
line), and what the blocking column tests check against the SQL's output."""

import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from mlops_pipelines.features.sql_project import SqlProject, default_project_dir

T = pd.Timestamp

VIEW_SQL = """select * from (values
    ('JFK', '2013-01-01 10:00'::timestamp, '2013-01-01'::date, 1.5, 2, 'a'),
    ('LGA', '2013-01-01 11:00'::timestamp, '2013-01-01'::date, 2.5, 3, 'b')
) v(origin, known_at, known_on, x, n, label)
"""
VIEW_YAML = """description: A small view.
feature_view:
  entities: [origin]
  event_timestamp: known_at
  ttl: 2 hours
  owner: team-a
  features:
    - {name: x, type: float, description: "A value, in units"}
    - {name: n, type: int, description: A count}
"""


def project_with(tmp_path: Path, yaml_text: str = VIEW_YAML, sql: str = VIEW_SQL, name: str = "fv_x") -> Path:
    root = tmp_path / "sql"
    (root / "features").mkdir(parents=True)
    (root / "features" / f"{name}.sql").write_text(sql)
    (root / "features" / f"{name}.yml").write_text(yaml_text)
    return root


def test_the_shipped_declarations_load_whole():
    """Every description of the shipped project survives loading: unquoted commas inside a
    {...} entry once cut them short and turned the rest into stray keys."""
    views = SqlProject().feature_views()
    plane = {f.name: f for f in views["fv_plane"].features}
    assert plane["engine_type"].description == "Turbo-fan, turbo-jet, reciprocating, ..."
    assert plane["plane_age_years"].description == "Age in 2013, years"
    carrier = {f.name: f.description for f in views["fv_carrier_arrival_delays"].features}
    assert carrier["carrier_delayed_share_24h"] != carrier["carrier_delayed_share_7d"]


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        # A misspelt field would silently drop the TTL: refused, by its path.
        (("  ttl: 2 hours\n", "  tll: 2 hours\n"), r"fv_x\.yml: feature_view\.tll: unknown field"),
        (("type: int,", "typ: int,"), r"fv_x\.yml: feature_view\.features\[1\]\.typ: unknown field"),
        (("description: A small view.\n", "descripton: A small view.\n"), r"fv_x\.yml: descripton: unknown field"),
        # The second of two equal keys would replace the first.
        (("  ttl: 2 hours\n", "  ttl: 2 hours\n  ttl: 5 days\n"),
         r"fv_x\.yml: line 6, column 3: found key 'ttl' a second time \(while reading a mapping \(key 'ttl' first "
         r"given on line 5\) at line 3, column 3\)$"),
        # YAML 1.1 reads 3:00 as 180 (seconds, as a TTL).
        (("  ttl: 2 hours\n", "  ttl: 3:00\n"), r"'3:00' reads as a base-60 number"),
        # ... 0300 as octal (192), 0x10 as 16, 0b11 as 3.
        *[(("  ttl: 2 hours\n", f"  ttl: {text}\n"), rf"'{text}' is not a decimal number in YAML 1\.1")
          for text in ("0300", "010", "-010", "0x10", "0b11", "0_10")],
        (("type: int,", "type: integer,"),
         r"feature_view\.features\[1\]\.type: Input should be 'float', 'int'"),
        (("  entities: [origin]\n", "  entities: {origin: 1}\n"),
         r"feature_view\.entities: Input should be a valid list"),
        (("  entities: [origin]\n", "  entities: []\n"), r"feature_view\.entities: List should have at least 1 item"),
        (("  ttl: 2 hours\n", "  ttl: true\n"), r"feature_view\.ttl: True is not a duration"),
        (("    - {name: x,", "    - {nam: x,"), r"feature_view\.features\[0\]\.name: Field required"),
        (("  event_timestamp: known_at\n", "  event_timestamp: [known_at]\n"),
         r"feature_view\.event_timestamp: Input should be a valid string"),
        (("  entities: [origin]\n", "  entities: [origin\n"),
         r"fv_x\.yml: line \d+, column \d+: expected ',' or '\]', but got .* \(while parsing a flow sequence at "
         r"line 3, column \d+\)$"),
        # (PyYAML's own words for a tab and for indentation, with what to do)
        (("  ttl: 2 hours\n", "\tttl: 2 hours\n"), r"fv_x\.yml: line 5, column 1: found character '\\t' that cannot "
                                                  r"start any token \(while scanning for the next token\); YAML "
                                                  r"indents with spaces, not tabs$"),
        (("  ttl: 2 hours\n", "   ttl: 2 hours\n"), r"fv_x\.yml: line 5, column \d+: .*; check the indentation"),
        # Blank names loaded, to fail (or match nothing) at the first read.
        (("  entities: [origin]\n", "  entities: [' ']\n"), r"feature_view\.entities: an entity join key is empty"),
        (("  event_timestamp: known_at\n", "  event_timestamp: known_at\n  created_timestamp: ''\n"),
         r"feature_view\.created_timestamp: is empty"),
        (("  event_timestamp: known_at\n", "  event_timestamp: ' '\n"), r"feature_view\.event_timestamp: is empty"),
    ],
)
def test_a_declaration_that_would_be_misread_is_refused_by_file_and_field(tmp_path, edit, error):
    old, new = edit
    assert VIEW_YAML.count(old) == 1
    root = project_with(tmp_path, VIEW_YAML.replace(old, new))
    with pytest.raises(ValueError, match=error):
        SqlProject(root).feature_views()


@pytest.mark.parametrize(("text", "seconds"), [("0", None), ("-0", None), ("90", 90), ("1_000", 1000)])
def test_decimal_integers_are_read_as_written(tmp_path, text, seconds):
    """Only integers with a leading 0 are refused (YAML 1.1 reads them in other bases): 0 itself
    (no TTL) and digits grouped by '_' are decimal."""
    root = project_with(tmp_path, VIEW_YAML.replace("  ttl: 2 hours\n", f"  ttl: {text}\n"))
    ttl = SqlProject(root).feature_views()["fv_x"].ttl
    assert (ttl.total_seconds() if ttl else None) == seconds


def test_files_the_project_would_ignore_are_refused(tmp_path):
    root = project_with(tmp_path)
    (root / "features" / "fv_y.yml").write_text(VIEW_YAML)  # no fv_y.sql
    with pytest.raises(ValueError, match=r"fv_y\.yml: documents no model \(fv_y\.sql does not exist\)"):
        _ = SqlProject(root).models
    (root / "features" / "fv_y.yml").unlink()
    (root / "features" / "deeper").mkdir()
    (root / "features" / "deeper" / "fv_z.sql").write_text(VIEW_SQL)
    with pytest.raises(ValueError, match=r"fv_z\.sql: a model must be <schema folder>/<model>\.sql"):
        _ = SqlProject(root).models


def test_a_view_cannot_go_missing_without_a_word(tmp_path):
    """An emptied YAML, a ``feature_view:`` left empty or an extension in capitals (fv_x.YML,
    which the project did not read) took the model's view away quietly, and the next build
    retired it in the registry."""
    root = project_with(tmp_path)
    yml = root / "features" / "fv_x.yml"
    for text, error in (("", r"fv_x\.yml: is empty: document the model"),
                        ("description: x\nfeature_view:\n", r"fv_x\.yml: feature_view: is empty")):
        yml.write_text(text)
        with pytest.raises(ValueError, match=error):
            SqlProject(root).feature_views()
    yml.write_text(VIEW_YAML)
    assert list(SqlProject(root).feature_views()) == ["fv_x"]
    yml.rename(root / "features" / "fv_x.YML")
    with pytest.raises(ValueError, match=r"fv_x\.YML: not read \(the project reads \.yml files, in lower case: "
                                         r"rename it fv_x\.yml\)"):
        SqlProject(root).feature_views()
    (root / "features" / "fv_x.YML").rename(yml)
    (root / "features" / "fv_x.sql").rename(root / "features" / "fv_x.SQL")
    with pytest.raises(ValueError, match=r"fv_x\.SQL: not read"):
        _ = SqlProject(root).models


def test_a_yaml_extension_is_read_like_yml(tmp_path):
    root = project_with(tmp_path)
    (root / "features" / "fv_x.yml").rename(root / "features" / "fv_x.yaml")
    view = SqlProject(root).feature_views()["fv_x"]
    assert (view.ttl_micros, view.owner, [f.type for f in view.features]) == (7_200_000_000, "team-a", ["float", "int"])
    (root / "features" / "fv_x.yml").write_text(VIEW_YAML)
    with pytest.raises(ValueError, match=r"fv_x\.sql: both fv_x\.yml and fv_x\.yaml document it"):
        _ = SqlProject(root).models


def test_model_names_are_identifiers_unique_ignoring_case(tmp_path):
    root = project_with(tmp_path)
    (root / "features" / "FV_X.sql").write_text(VIEW_SQL)  # DuckDB: the same table as fv_x
    with pytest.raises(ValueError,
                       match=r"model name fv_x is defined twice \(.*FV_X\.sql; names are compared ignoring case"):
        _ = SqlProject(root).models
    (root / "features" / "FV_X.sql").unlink()
    (root / "features" / "fv-y.sql").write_text(VIEW_SQL)
    with pytest.raises(ValueError, match=r"fv-y\.sql: model name 'fv-y' is not a plain identifier"):
        _ = SqlProject(root).models


def build(root: Path, con: duckdb.DuckDBPyConnection) -> tuple[int, list[str]]:
    project = SqlProject(root)
    return project.build(con, project.models["fv_x"])


@pytest.mark.parametrize(
    ("edit", "failure"),
    [
        # A DATE is its midnight: rows of the day would be shown to the day's earlier entity rows.
        (("event_timestamp: known_at", "event_timestamp: known_on"),
         "fv_x.known_on: event timestamp is DATE, not a TIMESTAMP (a date would be read as its midnight"),
        (("event_timestamp: known_at", "event_timestamp: label"),
         "fv_x.label: event timestamp is VARCHAR, not a TIMESTAMP (cast it to the instant"),
        (("  event_timestamp: known_at\n", "  event_timestamp: known_at\n  created_timestamp: label\n"),
         "fv_x.label: created timestamp is VARCHAR, not a TIMESTAMP"),
        (("entities: [origin]", "entities: [origin, dest]"), "fv_x.dest: join key not produced by the SQL"),
        (("event_timestamp: known_at", "event_timestamp: seen_at"),
         "fv_x.seen_at: event timestamp not produced by the SQL"),
        (("name: n, type: int", "name: n, type: str"), "fv_x.n: declared str but the SQL produces INTEGER"),
        (("name: x, type: float", "name: label, type: float"),
         "fv_x.label: declared float but the SQL produces VARCHAR"),
    ],
)
def test_column_tests_check_a_views_keys_timestamps_and_types(tmp_path, edit, failure):
    old, new = edit
    assert VIEW_YAML.count(old) == 1
    con = duckdb.connect()
    rows, failures = build(project_with(tmp_path, VIEW_YAML.replace(old, new)), con)
    assert rows == 2 and len(failures) == 1 and failures[0].startswith(failure), failures
    # The candidate was dropped and no table replaced: nothing of the failed build is left.
    assert con.sql("select count(*) from duckdb_tables() where schema_name = 'features'").fetchall() == [(0,)]


def test_column_tests_find_columns_whatever_their_case(tmp_path):
    """DuckDB resolves names ignoring case, and so does the store; so do the column tests."""
    con = duckdb.connect()
    sql = VIEW_SQL.replace("v(origin, known_at, known_on, x, n, label)", "v(Origin, Known_At, known_on, X, N, label)")
    assert build(project_with(tmp_path, sql=sql), con) == (2, [])
    assert con.sql("select count(*) from features.fv_x").fetchall() == [(2,)]


def test_shipped_project_builds_its_own_copy(tmp_path):
    """The shipped declarations load and pass the loader's checks from a copy too (the layout
    rules read the folder, not the package)."""
    root = tmp_path / "sql"
    shutil.copytree(default_project_dir(), root)
    assert set(SqlProject(root).feature_views()) == set(SqlProject().feature_views())


def test_what_the_strict_reading_still_accepts(tmp_path):
    """Empty descriptions and owners, numbers declared float (a count left to the default type),
    integers as DECIMAL(18, 0), UUIDs as text."""
    yaml_text = """description:
feature_view:
  entities: [origin]
  event_timestamp: known_at
  ttl: 5 days
  owner:
  features:
    - {name: x, description: A value}
    - {name: n, description: }
    - {name: d, type: int}
    - {name: u, type: str}
"""
    sql = f"select *, 7::decimal(18, 0) as d, uuid() as u from ({VIEW_SQL}) t"
    root = project_with(tmp_path, yaml_text, sql=sql)
    view = SqlProject(root).feature_views()["fv_x"]
    assert (view.ttl_micros, view.owner, view.description) == (5 * 86_400 * 10**6, "", "")
    assert [(f.type, f.description) for f in view.features] == [("float", "A value"), ("float", ""), ("int", ""),
                                                                  ("str", "")]
    assert build(root, duckdb.connect()) == (2, [])


def test_merge_keys_may_be_overridden_and_a_hidden_folder_above_changes_nothing(tmp_path):
    root = project_with(tmp_path / ".cache", VIEW_YAML.replace("feature_view:\n", "feature_view: &v\n")
                        + "other: *v\n")
    with pytest.raises(ValueError, match=r"other: unknown field"):
        SqlProject(root).feature_views()
    text = VIEW_YAML.replace("description: A small view.\n", "description: A small view.\ncolumns: []\n")
    override = text.replace("feature_view:\n  entities", "feature_view:\n  <<: {ttl: 5 days, owner: x}\n  entities")
    (root / "features" / "fv_x.yml").write_text(override)
    view = SqlProject(root).feature_views()["fv_x"]
    assert (view.ttl_micros, view.owner) == (7_200_000_000, "team-a")  # (the block's own keys win)
    (root / "features" / "fv_y.yml").write_text(VIEW_YAML)  # no fv_y.sql, under a hidden folder
    with pytest.raises(ValueError, match=r"fv_y\.yml: documents no model"):
        _ = SqlProject(root).models


def test_a_build_that_cannot_run_names_its_file_and_leaves_nothing_behind(tmp_path):
    """A model giving a column twice was built with DuckDB's x_1 beside x (the view served the
    first); SQL errors named the candidate table, not the file; a column test DuckDB could not
    run (text values for an INTEGER column) raised its error and left the candidate table; an
    unquoted ref() was no dependency at all; yes/no in accepted_values were booleans."""
    con = duckdb.connect()
    root = project_with(tmp_path / "a", sql=f"select *, 2.0 as X from ({VIEW_SQL})")
    with pytest.raises(ValueError, match=r"fv_x\.sql: the SQL gives column 'X' twice \(as 'x' before"):
        build(root, con)
    root = project_with(tmp_path / "b", sql=VIEW_SQL + " where no_such_column = 1")
    with pytest.raises(ValueError, match=r"fv_x\.sql: Binder Error: .*no_such_column"):
        build(root, con)
    yaml_text = VIEW_YAML + "columns:\n  - {name: n, tests: [{accepted_values: ['one', 'two']}]}\n"
    failures = build(project_with(tmp_path / "c", yaml_text), con)[1]
    assert len(failures) == 1 and failures[0].startswith("fv_x.n: accepted_values could not run on its INTEGER "
                                                         "values (Conversion Error:")
    assert con.execute("select count(*) from duckdb_tables() where table_name like '%candidate%'").fetchone() == (0,)
    root = project_with(tmp_path / "d", sql=VIEW_SQL + "\n-- from {{ ref(stg_x) }}")
    with pytest.raises(ValueError, match=r"fv_x\.sql: line \d+: '\{\{ ref\(stg_x\) \}\}' is neither"):
        _ = SqlProject(root).models
    # yes/no are booleans in YAML 1.1: against text they are refused by name; against a BOOLEAN
    # column, true/false are what they mean.
    yaml_text = VIEW_YAML + "columns:\n  - {name: label, tests: [{accepted_values: [yes, no]}]}\n"
    assert build(project_with(tmp_path / "e", yaml_text), con)[1] == [
        "fv_x.label: accepted_values [True, False]: YAML read a value as a boolean, but the column is VARCHAR; "
        "quote it ('yes')"]
    flag = f"select *, x > 2 as flag from ({VIEW_SQL})"
    yaml_text = VIEW_YAML + "columns:\n  - {name: flag, tests: [{accepted_values: [true, false]}]}\n"
    assert build(project_with(tmp_path / "f", yaml_text, sql=flag), con) == (2, [])
    # A ref() over two lines is read whole, as before.
    split = f"select * from ({VIEW_SQL}) where origin in (select origin from {{{{ ref(\n'fv_y') }}}})"
    root = project_with(tmp_path / "g", sql=split)
    (root / "features" / "fv_y.sql").write_text(VIEW_SQL)
    assert SqlProject(root).models["fv_x"].refs == ("fv_y",)


def test_project_files_that_cannot_be_read_are_named(tmp_path):
    """A YAML saved as cp1252 stopped every command with "'utf-8' codec can't decode byte 0xb0",
    naming no file; a malformed sources.yml raised TypeError (tables: flights) or KeyError."""
    root = project_with(tmp_path, VIEW_YAML.replace("A value, in units", "A value, in °F"))
    yml = root / "features" / "fv_x.yml"
    yml.write_bytes(yml.read_text(encoding="utf-8").encode("cp1252"))
    with pytest.raises(ValueError, match=r"fv_x\.yml: line 8: not UTF-8 text \(byte b'\\xb0'\); save the file as"):
        SqlProject(root).feature_views()
    yml.write_text(VIEW_YAML)
    sql = root / "features" / "fv_x.sql"
    sql.write_bytes(("-- é\n" + VIEW_SQL).encode("latin-1"))
    with pytest.raises(ValueError, match=r"fv_x\.sql: line 1: not UTF-8 text"):
        _ = SqlProject(root).models
    sql.write_text(VIEW_SQL)
    for text, error in (("sources:\n  - name: validated\n    tables: flights\n",
                         r"sources\.yml: sources\[0\]\.tables: Input should be a valid list"),
                        ("sources:\n  - name: validated\n    tables:\n      - nme: flights\n",
                         r"sources\[0\]\.tables\[0\]\.name: Field required$")):
        (root / "sources.yml").write_text(text)
        with pytest.raises(ValueError, match=error):
            _ = SqlProject(root).sources
    # A sources.yml written for dbt, with its other keys, is read.
    (root / "sources.yml").write_text(
        "version: 2\nsources:\n  - name: validated\n    schema: validated\n    loader: python\n"
        "    freshness: {warn_after: {count: 1, period: day}}\n    meta: {owner: a}\n    tables:\n"
        "      - name: flights\n        identifier: flights\n        columns: [{name: id}]\n        tags: [x]\n")
    assert list(SqlProject(root).sources) == [("validated", "flights")]
    # The line of a byte past the first chunk a stream decodes (a line 2,001 was called 157).
    yml.write_bytes(("description: x\n" + "# a comment\n" * 2000 + "# °F\n").encode("cp1252"))
    with pytest.raises(ValueError, match=r"fv_x\.yml: line 2002: not UTF-8 text"):
        SqlProject(root).feature_views()


def test_null_among_accepted_values_is_refused_by_file(tmp_path):
    """A YAML null in accepted_values was compared as the text 'None' (NULL rows pass the test
    whatever the list holds, as in dbt): refused, with the way to refuse NULLs."""
    yaml_text = VIEW_YAML + "columns:\n  - {name: label, tests: [{accepted_values: ['a', null]}]}\n"
    with pytest.raises(ValueError, match=r"fv_x\.yml: .*accepted_values \['a', None\]: null is not a value to "
                                         r"accept \(NULLs pass accepted_values; add not_null to refuse them\)"):
        _ = SqlProject(project_with(tmp_path, yaml_text)).models


def test_accepted_values_may_hold_quotes(tmp_path):
    yaml_text = VIEW_YAML.replace("description: A small view.\n", """description: A small view.
columns:
  - {name: label, tests: [{accepted_values: ["a", "O'Hare"]}]}
""")
    con = duckdb.connect()
    assert build(project_with(tmp_path, yaml_text), con) == (2, ["fv_x.label: accepted_values failed for 1 rows"])


def test_window_rows_stop_where_every_flight_is_loaded(tmp_path):
    """Months 2013-01 and 2013-03 loaded, February not: the window views have no row past
    2013-02-01 00:00 New York time (05:00 UTC) but one that makes every window unknown from
    there. A March departure's windows would count only what was loaded so far, and February's
    exits would claim an empty hour nobody saw."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("create schema staging; create schema intermediate")
    con.execute("create table staging.stg_flights as select * from (values (2013, 1), (2013, 3)) v(year, month)")
    con.execute("""create table intermediate.int_flight_outcomes as select * from (values
        ('a', 'JFK', '2013-01-31 23:30+00'::timestamptz, 5.0),
        ('b', 'JFK', '2013-02-01 04:30+00'::timestamptz, 7.0),   -- a January flight, departed late
        ('c', 'JFK', '2013-03-02 12:00+00'::timestamptz, 9.0)
    ) v(flight_id, origin, dep_known_at, dep_delay_minutes)""")
    project = SqlProject()
    for name in ("int_flights_complete_until", "fv_origin_departure_delays"):
        assert project.build(con, project.models[name])[1] == []
    complete = con.sql("select complete_until from intermediate.int_flights_complete_until").fetchall()[0][0]
    assert complete == T("2013-02-01 05:00", tz="UTC")
    rows = con.sql("select known_at, origin_departures_1h from features.fv_origin_departure_delays "
                   "order by known_at").fetchall()
    # a leaves the hour at 00:30:00.000001 and the 3 hours at 02:30:00.000001; b's leavings and
    # c lie past 05:00 (not known: March is loaded, February is not)
    assert [(T(t).isoformat(), n) for t, n in rows] == [
        ("2013-01-31T23:30:00+00:00", 1), ("2013-02-01T00:30:00.000001+00:00", 0),
        ("2013-02-01T02:30:00.000001+00:00", 0), ("2013-02-01T04:30:00+00:00", 1),
        ("2013-02-01T05:00:00.000001+00:00", None)]
    # February loaded: the windows are known again, and nothing is unknown.
    con.execute("insert into staging.stg_flights values (2013, 2)")
    for name in ("int_flights_complete_until", "fv_origin_departure_delays"):
        assert project.build(con, project.models[name])[1] == []
    assert con.sql("select count(*) filter (where origin_departures_1h is null), max(known_at) "
                   "from features.fv_origin_departure_delays").fetchall() == [(0, T("2013-03-02 15:00:00.000001",
                                                                                    tz="UTC"))]
    # No flight loaded: no instant is complete, and the views are empty (their builds pass).
    con.execute("delete from staging.stg_flights")
    for name in ("int_flights_complete_until", "fv_origin_departure_delays"):
        assert project.build(con, project.models[name])[1] == []
    assert con.sql("select count(*) from features.fv_origin_departure_delays").fetchall() == [(0,)]


def test_two_merge_keys_in_one_mapping_are_two_equal_keys(tmp_path):
    yaml_text = VIEW_YAML.replace("feature_view:\n", "a: &a {ttl: 1 day}\nb: &b {ttl: 3 hours}\nfeature_view:\n"
                                  "  <<: *a\n  <<: *b\n").replace("  ttl: 2 hours\n", "")
    with pytest.raises(ValueError, match=r"(?s)found key '<<' a second time"):
        SqlProject(project_with(tmp_path, yaml_text)).feature_views()
    # The text '<<', quoted, is a key like any other, not a second merge key.
    from mlops_pipelines.features.sql_project import read_yaml

    path = tmp_path / "plain.yml"
    path.write_text("base: &b {x: 1}\nm:\n  <<: *b\n  '<<': literal\n")
    assert read_yaml(path)["m"] == {"x": 1, "<<": "literal"}


@pytest.mark.parametrize(("view", "keys", "features"), [
    ("fv_origin_departure_delays", ["origin"], 4),
    ("fv_carrier_arrival_delays", ["carrier"], 5),
    ("fv_route_arrival_delays", ["origin", "dest"], 3),
    ("fv_tail_departures", ["tailnum"], 2),
])
def test_every_window_view_is_unknown_past_a_missing_month(view, keys, features):
    """January and March loaded: each view's last row per entity is 1 µs past 2013-02-01 05:00 UTC,
    every feature missing; nothing of March is in it. With February loaded, no such row."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("create schema staging; create schema intermediate")
    con.execute("create table staging.stg_flights as select * from (values (2013, 1), (2013, 3)) v(year, month)")
    con.execute("""create table intermediate.int_flight_outcomes as select * from (values
        ('a', 'JFK', 'LAX', 'AA', 'N1', '2013-01-30 12:00+00', '2013-01-30 18:00+00', 5.0, 9.0),
        ('c', 'JFK', 'LAX', 'AA', 'N1', '2013-03-02 12:00+00', '2013-03-02 18:00+00', 1.0, 2.0)
    ) v(flight_id, origin, dest, carrier, tailnum, dep_known_at, arr_known_at, dep_delay_minutes, arr_delay_minutes)""")
    for column in ("dep_known_at", "arr_known_at"):
        con.execute(f"alter table intermediate.int_flight_outcomes alter {column} type timestamptz")
    project = SqlProject()
    for name in ("int_flights_complete_until", view):
        assert project.build(con, project.models[name])[1] == []
    last = con.sql(f"select * from features.{view} order by known_at desc limit 1").fetchall()[0]
    key_values = {"origin": "JFK", "dest": "LAX", "carrier": "AA", "tailnum": "N1"}
    assert last[:len(keys) + 1] == (*(key_values[k] for k in keys), T("2013-02-01 05:00:00.000001", tz="UTC"))
    assert last[len(keys) + 1:] == (None,) * features
    assert con.sql(f"select count(*) from features.{view} where known_at >= '2013-03-01'").fetchall() == [(0,)]
    con.execute("insert into staging.stg_flights values (2013, 2)")
    for name in ("int_flights_complete_until", view):
        assert project.build(con, project.models[name])[1] == []
    values = con.sql(f"select * exclude ({', '.join(keys)}, known_at) from features.{view}").fetchall()
    assert values and all(any(v is not None for v in row) for row in values)


def test_a_build_its_column_tests_block_records_no_materialization(tmp_path):
    """A build whose column tests failed kept the previous table but was still recorded in Dagster
    as a materialization, with the rejected candidate's version, row count and an empty schema."""
    from dagster import AssetKey, DagsterInstance, materialize

    from mlops_pipelines.features.assets import build_sql_assets
    from mlops_pipelines.warehouse import DuckDBWarehouse

    root = project_with(tmp_path)
    warehouse = DuckDBWarehouse(database_path=str(tmp_path / "w.duckdb"))
    instance = DagsterInstance.ephemeral()
    assets = build_sql_assets(SqlProject(root))
    assert materialize(assets, resources={"warehouse": warehouse}, instance=instance).success
    first = instance.get_latest_materialization_event(AssetKey("fv_x")).asset_materialization.metadata
    (root / "features" / "fv_x.sql").write_text(VIEW_SQL.replace("('LGA',", "(null,"))  # a NULL join key
    (root / "features" / "fv_x.yml").write_text(VIEW_YAML.replace(
        "feature_view:", "columns:\n  - {name: origin, tests: [not_null]}\nfeature_view:"))
    result = materialize(build_sql_assets(SqlProject(root)), resources={"warehouse": warehouse}, instance=instance,
                         raise_on_error=False)
    assert not result.success
    # (the lifecycle's FAIL line: without Dagster's class path, dagster._core.definitions.events.Failure)
    from mlops_pipelines.lifecycle import _errors

    assert [e.split(": column tests failed")[0] for e in _errors(result)] == ["fv_x: features.fv_x"]
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and "origin" in evaluation.description
    latest = instance.get_latest_materialization_event(AssetKey("fv_x")).asset_materialization.metadata
    assert latest["feature_view/version"] == first["feature_view/version"]
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        assert con.sql("select count(*) from features.fv_x where origin = 'LGA'").fetchall() == [(1,)]
        assert con.sql("select version from features.registry").fetchall() == [(first["feature_view/version"].value,)]


def test_a_build_named_as_a_view_applied_from_python_changes_nothing(tmp_path):
    """The registry row of a view applied from Python would be replaced by the build's: the run
    fails before building, naming the view, and the table, registry and Dagster stay as they were."""
    from dagster import AssetKey, DagsterInstance, materialize

    from mlops_pipelines.features.assets import build_sql_assets
    from mlops_pipelines.features.store import FeatureStore
    from mlops_pipelines.features.views import Feature, FeatureView
    from mlops_pipelines.lifecycle import _errors
    from mlops_pipelines.warehouse import DuckDBWarehouse

    root = project_with(tmp_path)
    path = tmp_path / "w.duckdb"
    FeatureStore(path).apply(FeatureView("FV_X", f"({VIEW_SQL})", ("origin",), "known_at", (Feature("x"),)))
    instance = DagsterInstance.ephemeral()
    result = materialize(build_sql_assets(SqlProject(root)), resources={"warehouse": DuckDBWarehouse(
        database_path=str(path))}, instance=instance, raise_on_error=False)
    assert not result.success
    assert any("feature view 'fv_x': 'FV_X' was applied to this warehouse from Python on 20" in e
               and "retire it (FeatureStore.retire('FV_X'))" in e for e in _errors(result))
    assert instance.get_latest_materialization_event(AssetKey("fv_x")) is None
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.sql("select name, origin from features.registry").fetchall() == [("FV_X", "python")]
        assert con.sql("select count(*) from information_schema.tables where table_name ilike 'fv_x'"
                       ).fetchall() == [(0,)]


def test_the_dagster_metadata_of_a_view_shows_what_the_registry_holds(tmp_path):
    """The fv_* metadata lacked the owner, the created timestamp and the TTL as the CLI prints
    it, and gave ttl_seconds 0.0 for a view without a TTL (which reads as "expires at once")."""
    from dagster import AssetKey, DagsterInstance, materialize

    from mlops_pipelines.features.assets import build_sql_assets
    from mlops_pipelines.warehouse import DuckDBWarehouse

    owned = VIEW_YAML.replace("    - {name: n, type: int, description: A count}",
                              "    - {name: n, type: int, description: 'A count | of flights', owner: team-b}")
    root = project_with(tmp_path, owned)
    (root / "features" / "fv_y.sql").write_text(VIEW_SQL)
    (root / "features" / "fv_y.yml").write_text(
        VIEW_YAML.replace("  ttl: 2 hours\n", "  created_timestamp: known_at\n").replace("  owner: team-a\n", ""))
    instance = DagsterInstance.ephemeral()
    result = materialize(build_sql_assets(SqlProject(root)), instance=instance,
                         resources={"warehouse": DuckDBWarehouse(database_path=str(tmp_path / "w.duckdb"))})
    assert result.success

    def metadata(key: str) -> dict:
        found = instance.get_latest_materialization_event(AssetKey(key)).asset_materialization.metadata
        return {name: value.value for name, value in found.items() if name.startswith("feature_view/")}

    x, y = metadata("fv_x"), metadata("fv_y")
    assert (x["feature_view/ttl"], x["feature_view/ttl_seconds"]) == ("2h", 7200.0)
    assert (y["feature_view/ttl"], y["feature_view/ttl_seconds"]) == ("none", None)
    assert (x["feature_view/owner"], y["feature_view/owner"]) == ("team-a", "none")
    assert (x["feature_view/created_timestamp"], y["feature_view/created_timestamp"]) == ("none", "known_at")
    assert x["feature_view/description"] == "A small view."
    # each feature's owner (its own, else the view's); a '|' in a description stays in its cell
    assert x["feature_view/features"].splitlines()[2:] == [
        "| x | float | A value, in units | team-a |", "| n | int | A count \\| of flights | team-b |"]
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        registry = con.sql("select name, owner, created_timestamp, ttl_seconds from features.registry order by name")
        assert registry.fetchall() == [("fv_x", "team-a", None, 7200.0), ("fv_y", "", "known_at", None)]


def test_a_markdown_cell_keeps_its_row_whatever_the_text():
    from mlops_pipelines.features.assets import _cell

    assert _cell("a|b\r\nc\rd\ne `\\d+`") == "a\\|b c d e `\\d+`"
    # a backslash of the text's own before a '|' stays a backslash (the pipe is escaped after it)
    assert _cell("a\\|b") == "a\\\\\\|b"


def test_project_layout_errors_name_the_file_and_the_rule(tmp_path):
    """Each way a project's files can be wrong names the file (or folder) and what is expected."""
    with pytest.raises(FileNotFoundError, match=r"SQL project folder .*nowhere does not exist"):
        SqlProject(tmp_path / "nowhere")
    root = project_with(tmp_path / "a", sql="select * from {{ ref('int_nothing') }}")
    with pytest.raises(ValueError, match=r"fv_x\.sql: ref\('int_nothing'\) names no model in "):
        SqlProject(root).feature_views()
    root = project_with(tmp_path / "b", sql="select * from {{ source('lake', 'flights') }}")
    with pytest.raises(ValueError, match=r"fv_x\.sql: source\('lake', 'flights'\) is not declared in sources\.yml"):
        SqlProject(root).feature_views()
    root = project_with(tmp_path / "c")
    (root / "features" / "old").mkdir()
    (root / "features" / "old" / "fv_y.yml").write_text(VIEW_YAML)
    with pytest.raises(ValueError, match=r"old/fv_y\.yml: not read \(models are <schema folder>/<model>\.sql with "
                                         r"their \.yml beside\)"):
        SqlProject(root).feature_views()
    yaml_text = VIEW_YAML.replace("description: A small view.\n",
                                  "description: A small view.\ncolumns:\n  - {name: x, tests: [positive]}\n")
    root = project_with(tmp_path / "d", yaml_text)
    with pytest.raises(ValueError, match=r"fv_x\.yml.*unknown column test 'positive' \(not_null, unique, or "
                                         r"accepted_values: \[\.\.\.\]\)"):
        SqlProject(root).feature_views()
