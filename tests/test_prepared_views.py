"""Prepared copies of views over files (FeatureStore.prepare): the same answers as reading the
source, used only while the files and the declaration are as they were, refused with a reason
for sources whose rows are not a function of their files."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from unittest import mock

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_pipelines.features import prepared
from mlops_pipelines.features.errors import PreparedCopyStaleWarning
from mlops_pipelines.features.store import FeatureStore, ViewReadError
from mlops_pipelines.features.views import Feature, FeatureView

BASE = pd.Timestamp("2013-03-10 00:00", tz="UTC")  # (the spring-forward day in New York)


def _write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_parquet(path, index=False)
    return path


def _rows(values: list[tuple[int, int, int, float]]) -> pd.DataFrame:
    """(key, event minute, created minute, x) rows of a view."""
    return pd.DataFrame({
        "k": pd.Series([v[0] for v in values], dtype="int64"),
        "ts": pd.to_datetime([BASE + pd.Timedelta(minutes=v[1]) for v in values], utc=True),
        "created": pd.to_datetime([BASE + pd.Timedelta(minutes=v[2]) for v in values], utc=True),
        "x": pd.Series([v[3] for v in values], dtype="float64"),
    })


def _view(name: str, path: Path, ttl: timedelta | None = None, **kw) -> FeatureView:
    return FeatureView(name, f"read_parquet('{path}')", ("k",), "ts", (Feature("x"),), ttl=ttl,
                       created_timestamp="created", **kw)


def _entities(pairs: list[tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame({"k": [p[0] for p in pairs],
                         "event_timestamp": [BASE + pd.Timedelta(minutes=p[1]) for p in pairs]})


def _stores(tmp_path: Path, views: list[FeatureView]) -> tuple[FeatureStore, FeatureStore]:
    """A store with prepared copies (prepared) and one without, over the same views."""
    with_copies = FeatureStore(":memory:", views, prepared_dir=tmp_path / "prepared")
    without = FeatureStore(":memory:", views)
    return with_copies, without


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_prepared_copies_answer_as_the_sources(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("views")
    views = []
    for index in range(data.draw(st.integers(1, 2), label="views")):
        rows = data.draw(st.lists(st.tuples(st.integers(1, 3), st.sampled_from([0, 30, 30, 60, 600]),
                                            st.integers(0, 3), st.integers(-3, 3).map(float)),
                                  max_size=20), label=f"rows {index}")
        frame = _rows([(k, ts, ts + c, x) for k, ts, c, x in rows])
        ttl = data.draw(st.sampled_from([None, timedelta(minutes=30), timedelta(hours=2)]), label=f"ttl {index}")
        view = _view(f"v{index}", _write(folder / f"v{index}.parquet", frame), ttl)
        if data.draw(st.booleans(), label=f"more features {index}"):
            # DOUBLE features the copy also keeps row by row (NULL, NaN and -0.0 among them), and a REAL one
            more = data.draw(st.lists(st.sampled_from([None, float("nan"), -0.0, 0.0, 1.5, -2.0]),
                                      min_size=len(frame), max_size=len(frame)), label=f"y {index}")
            frame["y"] = pd.Series(more, dtype="float64")
            frame["z"] = (frame["x"] * 3).astype("float32")
            frame.loc[frame["y"].isna(), "x"] = None
            view = FeatureView(view.name, view.source, ("k",), "ts", (Feature("x"), Feature("y"), Feature("z")),
                               ttl=ttl, created_timestamp="created")
            _write(folder / f"v{index}.parquet", frame)
        views.append(view)
    asked = data.draw(st.lists(st.tuples(st.integers(0, 4), st.sampled_from([-60, 0, 29, 30, 60, 90, 600, 780])),
                               min_size=1, max_size=15), label="entity rows")
    zone = data.draw(st.sampled_from(["UTC", "America/New_York"]), label="zone")
    entities = _entities(asked)
    entities["event_timestamp"] = entities["event_timestamp"].dt.tz_convert(zone)
    with_copies, without = _stores(folder, views)
    assert set(with_copies.prepare().values()) == {f"prepared: {text}" for text in _sizes(views)}
    features = []
    for view in views:
        names = data.draw(st.sampled_from([("x",), ("x", "y"), ("y", "z", "x"), ("z",)] if len(view.features) > 1
                                          else [("x",)]), label=f"asked of {view.name}")
        features += [f"{view.name}:{name}" for name in names]
    with warnings.catch_warnings(), mock.patch("mlops_pipelines.features.store.read_view_rows",
                                                side_effect=AssertionError("a source was read, not its copy")):
        warnings.simplefilter("error", PreparedCopyStaleWarning)  # (the copies are used: none is stale)
        got = with_copies.get_historical_features(entities, features, full_feature_names=True)
    pd.testing.assert_frame_equal(got, without.get_historical_features(entities, features, full_feature_names=True))


def _sizes(views: list[FeatureView]) -> set[str]:
    """What prepare() says of each view, read back from the copies it wrote."""
    out = set()
    for view in views:
        path = view.source.split("'")[1]
        copy = Path(path).parent / "prepared" / prepared.file_name(view.name)
        read, kept = pq.read_metadata(path).num_rows, pa.ipc.open_file(pa.memory_map(str(copy))).read_all().num_rows
        left_out = f" ({read - kept:,} that lose a tie left out)" if read > kept else ""
        out.add(f"{read:,} rows{left_out}, {copy.stat().st_size / 1e6:,.1f} MB")
    return out


def test_a_copy_is_read_from_its_file_without_the_source(tmp_path, monkeypatch):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0), (1, 60, 60, 2.0), (2, 0, 0, 5.0)]))
    store = FeatureStore(":memory:", [_view("v", path)], prepared_dir=tmp_path / "prepared")
    assert store.prepare()["v"].startswith("prepared: 3 rows, ")
    # The copy alone answers: the source is not read.
    def not_read(*args, **kwargs):
        raise AssertionError("the source was read")

    monkeypatch.setattr("mlops_pipelines.features.store.read_view_rows", not_read)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreparedCopyStaleWarning)
        out = store.get_historical_features(_entities([(1, 90), (1, 30), (2, 0), (3, 0)]), ["v:x"])
    assert out["x"].tolist()[:3] == [2.0, 1.0, 5.0] and pd.isna(out["x"].iloc[3])
    monkeypatch.undo()
    # A file moved away and back has a new change time: the copy is no longer trusted.
    path.rename(tmp_path / "moved").rename(path)
    with pytest.warns(PreparedCopyStaleWarning):
        assert store.get_historical_features(_entities([(1, 90)]), ["v:x"])["x"].tolist() == [2.0]


def test_a_changed_file_is_read_again_with_a_warning(tmp_path):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)]))
    store = FeatureStore(":memory:", [_view("v", path)], prepared_dir=tmp_path / "prepared")
    store.prepare()
    # Same size, new values: the file's times and inode tell.
    _write(path, _rows([(1, 0, 0, 7.0)]))
    with pytest.warns(PreparedCopyStaleWarning, match=r"feature view 'v': its prepared copy .* prepare it again"):
        out = store.get_historical_features(_entities([(1, 5)]), ["v:x"])
    assert out["x"].tolist() == [7.0]
    store.prepare(["v"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreparedCopyStaleWarning)
        assert store.get_historical_features(_entities([(1, 5)]), ["v:x"])["x"].tolist() == [7.0]


def test_a_new_file_of_a_glob_makes_the_copy_stale(tmp_path):
    (tmp_path / "parts").mkdir()
    _write(tmp_path / "parts" / "a.parquet", _rows([(1, 0, 0, 1.0)]))
    view = FeatureView("v", f"read_parquet('{tmp_path}/parts/*.parquet')", ("k",), "ts", (Feature("x"),),
                       created_timestamp="created")
    store = FeatureStore(":memory:", [view], prepared_dir=tmp_path / "prepared")
    assert store.prepare()["v"].startswith("prepared: 1 rows")
    _write(tmp_path / "parts" / "b.parquet", _rows([(1, 10, 10, 3.0)]))
    with pytest.warns(PreparedCopyStaleWarning):
        assert store.get_historical_features(_entities([(1, 20)]), ["v:x"])["x"].tolist() == [3.0]


def test_a_new_declaration_makes_the_copy_stale_but_not_a_new_description(tmp_path):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)]))
    folder = tmp_path / "prepared"
    FeatureStore(":memory:", [_view("v", path)], prepared_dir=folder).prepare()
    described = FeatureStore(":memory:", [_view("v", path, description="new words")], prepared_dir=folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreparedCopyStaleWarning)
        assert described.get_historical_features(_entities([(1, 120)]), ["v:x"])["x"].tolist() == [1.0]
    shorter = FeatureStore(":memory:", [_view("v", path, ttl=timedelta(minutes=60))], prepared_dir=folder)
    with pytest.warns(PreparedCopyStaleWarning):
        out = shorter.get_historical_features(_entities([(1, 120)]), ["v:x"])
    assert pd.isna(out["x"].iloc[0])  # (the TTL of the new declaration: 120 min > 60 min)


def test_a_damaged_copy_is_not_used(tmp_path):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)]))
    store = FeatureStore(":memory:", [_view("v", path)], prepared_dir=tmp_path / "prepared")
    store.prepare()
    copy = tmp_path / "prepared" / prepared.file_name("v")
    copy.write_bytes(copy.read_bytes()[:100])
    with pytest.warns(PreparedCopyStaleWarning):
        assert store.get_historical_features(_entities([(1, 5)]), ["v:x"])["x"].tolist() == [1.0]


@pytest.mark.parametrize(("source", "reason"), [
    ("t", "it reads the table 't'"),
    ("(select * from read_parquet('{path}') where ts < now())", "it calls now()"),
    ("(select * from read_parquet('{path}') where ts < current_timestamp)", "it reads current_timestamp"),
    ("(select k, ts, created, x + random() as x from read_parquet('{path}'))", "it calls random()"),
    ("(select * from read_parquet('{path}') using sample 50%)", "it samples rows"),
    ("read_parquet('https://example.org/v.parquet')", "not a local file"),
    ("read_parquet('v.parquet')", "by a relative path"),
    ("read_parquet('{folder}/' || 'v.parquet')", "reads paths it computes"),
    ("(select * from read_parquet('{path}') join t using (k))", "it reads the table 't'"),
    ("range(3)", "it reads range()"),
])
def test_sources_not_of_files_alone_are_not_prepared(tmp_path, source, reason):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)]))
    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"create table t as select * from read_parquet('{path}')")
    view = FeatureView("v", source.format(path=path, folder=tmp_path), ("k",), "ts", (Feature("x"),))
    store = FeatureStore(warehouse, [view])
    done = store.prepare()
    assert done["v"].startswith("not prepared: ") and reason in done["v"], done
    assert not (Path(f"{warehouse}.prepared") / prepared.file_name("v")).exists()


def test_sql_of_files_and_consistent_functions_is_prepared(tmp_path):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0), (2, 0, 0, -4.0)]))
    source = (f"(with raw as (select * from read_parquet(['{path}'])) "
              "select k, ts, created, abs(x) * 2 as x from raw where k in (select k from raw))")
    view = FeatureView("v", source, ("k",), "ts", (Feature("x"),), created_timestamp="created")
    with_copies, without = _stores(tmp_path, [view])
    assert with_copies.prepare()["v"].startswith("prepared: 2 rows")
    entities = _entities([(2, 1), (1, 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreparedCopyStaleWarning)
        got = with_copies.get_historical_features(entities, ["v:x"])
    assert got["x"].tolist() == [8.0, 2.0]
    pd.testing.assert_frame_equal(got, without.get_historical_features(entities, ["v:x"]))


def test_values_of_many_types_come_back_the_same(tmp_path):
    """Keys and features of types that travel through Arrow's metadata or special paths (UUID
    and HUGEINT keys, decimals, lists, structs, enums, dates, text) answer as from the source."""
    path = tmp_path / "typed.parquet"
    with duckdb.connect() as con:
        con.execute("set TimeZone='UTC'")
        con.execute(f"""copy (select * from (values
            ('0b8a3b8e-1111-4a8e-9d2b-000000000001'::uuid, 1180591620717411303424::hugeint,
             timestamptz '2013-03-10 01:00:00+00', 1.25::decimal(12, 3), [1, 2], {{'a': 1, 'b': 'x'}},
             date '2013-03-09', 'one', true),
            ('0b8a3b8e-1111-4a8e-9d2b-000000000002'::uuid, -5::hugeint,
             timestamptz '2013-03-10 02:00:00+00', -7.5::decimal(12, 3), [], {{'a': null, 'b': 'y'}},
             date '2013-03-10', 'two', null)
            ) t(id, big, ts, amount, items, pair, day, label, flag)) to '{path}' (format parquet)""")
    view = FeatureView("typed", f"read_parquet('{path}')", ("id",), "ts",
                       (Feature("big", "any"), Feature("amount", "any"), Feature("items", "any"),
                        Feature("pair", "any"), Feature("day", "any"), Feature("label", "str"),
                        Feature("flag", "any")))
    by_big = FeatureView("by_big", f"(select big as b, ts, label from read_parquet('{path}'))", ("b",), "ts",
                         (Feature("label", "str"),))
    with_copies, without = _stores(tmp_path, [view, by_big])
    assert all(text.startswith("prepared: 2 rows") for text in with_copies.prepare().values())
    entities = pd.DataFrame({
        "id": ["0B8A3B8E-1111-4A8E-9D2B-000000000002", "0b8a3b8e-1111-4a8e-9d2b-000000000001", None],
        "b": [-5, 2**70, 3],  # (parquet holds a HUGEINT as a DOUBLE: 2**70 is one exactly)
        "event_timestamp": [pd.Timestamp("2013-03-11", tz="UTC")] * 3})
    features = [f"typed:{f.name}" for f in view.features] + ["by_big:label"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreparedCopyStaleWarning)
        got = with_copies.get_historical_features(entities, features, full_feature_names=True)
    expected = without.get_historical_features(entities, features, full_feature_names=True)
    pd.testing.assert_frame_equal(got, expected)
    assert got["typed__label"].tolist()[:2] == ["two", "one"] and got["by_big__label"].tolist()[:2] == ["two", "one"]


def test_a_type_problem_is_refused_from_the_copy_as_from_the_source(tmp_path):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)]))
    source = f"(select *, '10:00:00+02'::timetz as clock from read_parquet('{path}'))"
    view = FeatureView("v", source, ("k",), "ts", (Feature("x"), Feature("clock", "any")))
    with_copies, without = _stores(tmp_path, [view])
    assert with_copies.prepare()["v"].startswith("prepared: 1 rows")
    messages = []
    for store in (with_copies, without):
        with pytest.raises(ViewReadError, match="feature 'clock' is a TIME WITH TIME ZONE") as caught:
            store.get_historical_features(_entities([(1, 5)]), ["v:clock"])
        messages.append(str(caught.value))
        assert store.get_historical_features(_entities([(1, 5)]), ["v:x"])["x"].tolist() == [1.0]
    assert messages[0] == messages[1]


def test_prepare_refuses_what_it_cannot_do(tmp_path):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)]))
    with pytest.raises(ValueError, match="in-memory store has no folder for prepared copies"):
        FeatureStore(":memory:", [_view("v", path)]).prepare()
    store = FeatureStore(":memory:", [_view("v", path)], prepared_dir=tmp_path / "prepared")
    with pytest.raises(KeyError, match="'w' is not registered"):
        store.prepare(["w"])
    missing = FeatureStore(":memory:", [_view("v", tmp_path / "none.parquet"), _view("w", path)],
                           prepared_dir=tmp_path / "prepared")
    done = missing.prepare()
    assert done["v"] == f"not prepared: DuckDB's glob() finds no file for '{tmp_path / 'none.parquet'}' (no file)"
    assert done["w"].startswith("prepared: 1 rows")
    (tmp_path / "prepared" / prepared.file_name("w")).unlink()
    # A row no retrieval has reached may hold what the source's SQL cannot cast: that view only.
    _write(tmp_path / "text.parquet", pd.DataFrame({"k": [1, 1], "ts": pd.to_datetime([BASE, BASE + pd.Timedelta(
        days=30)], utc=True), "x": ["1.5", "abc"]}))
    cast = FeatureView("cast", f"(select k, ts, x::double as x from read_parquet('{tmp_path / 'text.parquet'}'))",
                       ("k",), "ts", (Feature("x"),))
    folder = FeatureStore(":memory:", [cast, _view("w", path)], prepared_dir=tmp_path / "prepared").prepare()
    assert folder["cast"].startswith("not prepared: feature view 'cast': reading") and "abc" in folder["cast"]
    assert folder["w"].startswith("prepared: 1 rows")
    (tmp_path / "prepared" / prepared.file_name("w")).unlink()
    parts = tmp_path / "parts"
    parts.mkdir()
    _write(parts / "a.parquet", _rows([(1, 0, 0, 1.0)]))
    whole = FeatureStore(":memory:", [FeatureView("d", f"read_parquet('{parts}')", ("k",), "ts", (Feature("x"),))],
                         prepared_dir=tmp_path / "prepared")
    assert "a folder, which DuckDB reads but glob() lists no file of" in whole.prepare()["d"]
    assert not (tmp_path / "prepared").exists() or not list((tmp_path / "prepared").iterdir())  # (nothing half written)


def test_file_names_of_views_do_not_collide():
    names = ["a/b", "a_b", "A_b", "..", "x" * 300, "ü"]
    files = [prepared.file_name(name) for name in names]
    assert len({f.casefold() for f in files}) == len(names)  # (apart on a case-blind file system too)
    assert all("/" not in f and not f.startswith(".") and len(f) < 100 for f in files)


def test_cli_prepares_views_applied_to_the_warehouse(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0), (1, 60, 60, 2.0)]))
    warehouse = data / "warehouse.duckdb"
    store = FeatureStore(warehouse)
    store.apply(_view("from_files", path))
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"create table t as select * from read_parquet('{path}')")
    store.apply(FeatureView("from_table", "t", ("k",), "ts", (Feature("x"),)))
    env = {**os.environ, "MLOPS_DATA_DIR": str(data)}
    run = subprocess.run([sys.executable, "-m", "mlops_pipelines.cli", "features", "prepare"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("from_files") and "prepared: 2 rows" in line for line in lines), lines
    assert any(line.startswith("from_table") and "not prepared: it reads the table 't'" in line for line in lines)
    assert (Path(f"{warehouse}.prepared") / prepared.file_name("from_files")).is_file()
    named = subprocess.run([sys.executable, "-m", "mlops_pipelines.cli", "features", "prepare", "from_table"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert named.returncode == 1 and "not prepared: from_table" in named.stderr, named
    unknown = subprocess.run([sys.executable, "-m", "mlops_pipelines.cli", "features", "prepare", "nope"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode != 0 and "'nope' is not registered" in unknown.stderr
    # The CLI's retrieval uses the copy: the same rows.
    entities = tmp_path / "e.parquet"
    _entities([(1, 90)]).to_parquet(entities)
    out = tmp_path / "out.parquet"
    run = subprocess.run([sys.executable, "-m", "mlops_pipelines.cli", "features", "historical", "--entities",
                          str(entities), "--features", "from_files:x", "--out", str(out)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "note" not in run.stderr, run.stderr
    assert pd.read_parquet(out)["x"].tolist() == [2.0]


def test_a_copy_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)]))
    store = FeatureStore(":memory:", [_view("v", path)], prepared_dir=tmp_path / "prepared")
    store.prepare()
    before = (tmp_path / "prepared" / prepared.file_name("v")).read_bytes()
    _write(path, _rows([(1, 0, 0, 9.0)]))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pa.ipc.RecordBatchFileWriter, "write_table", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.prepare()
    assert [p.name for p in (tmp_path / "prepared").iterdir()] == [prepared.file_name("v")]
    assert (tmp_path / "prepared" / prepared.file_name("v")).read_bytes() == before


def test_double_features_are_kept_row_by_row_too_and_taken_as_from_their_columns():
    """A copy's DOUBLE features (two or more) also form one column of rows; taking features
    from it gives what taking them column by column gives: NULL as NaN, -0.0 kept, rows that
    match nothing NaN, any subset of the features asked for."""
    from mlops_pipelines.features import point_in_time as pit

    table = pa.table({"k": [1, 2, 3, 4], "x": pa.array([1.5, None, -0.0, float("nan")], pa.float64()),
                      "y": pa.array([7.0, 8.0, None, 9.0], pa.float64()), "z": pa.array([1, 2, 3, 4], pa.float32()),
                      "w": pa.array([10.0, 11.0, 12.0, 13.0], pa.float64())})
    with_rows = pit.with_float_rows(table, ["x", "y", "z", "w"])
    field = with_rows.schema.field(pit.FLOAT_ROWS)
    assert json_names(field) == ["x", "y", "w"] and with_rows.num_rows == 4
    rows = with_rows.column(pit.FLOAT_ROWS).to_pylist()
    assert rows[0] == [1.5, 7.0, 10.0] and np.isnan(rows[1][0]) and np.isnan(rows[2][1])
    assert np.signbit(rows[2][0]) and np.isnan(rows[3][0])
    chosen = np.array([3, -1, 0, 2, 2, 1, -1], dtype=np.int64)
    for names in (["x", "y", "w"], ["w", "x"], ["y"], ["z", "x", "y"], ["x", "z"]):
        got = pit.take_pandas(with_rows, names, chosen.copy())
        expected = pit.take_pandas(table, names, chosen.copy())
        assert list(got) == names
        if sum(name in ("x", "y", "w") for name in names) >= 2:  # (taken from the rows: views of one array)
            assert np.may_share_memory(got["x"], got["w" if "w" in names else "y"])
        for name in names:
            assert got[name].dtype == expected[name].dtype
            assert got[name].tobytes() == expected[name].tobytes(), name  # (bit for bit: NaN, -0.0)
    assert pit.with_float_rows(table, ["x", "z"]) is table  # (one DOUBLE feature: no rows)
    named_so = table.append_column(pit.FLOAT_ROWS, pa.array([1.0, 2.0, 3.0, 4.0]))
    assert pit.with_float_rows(named_so, ["x", "y"]) is named_so  # (a feature of that name is left alone)
    assert pit.take_pandas(named_so, ["x", "y"], chosen.copy())["y"].tobytes() == \
        pit.take_pandas(table, ["x", "y"], chosen.copy())["y"].tobytes()


@pytest.mark.parametrize("spread", ["grid", "wide"])
def test_a_copys_codes_are_the_joins_own_and_are_left_when_they_do_not_fit(spread):
    """A copy's rows keep the codes the join would make (integer key, event times on a grid);
    the join answers the same from them (in order, and after a shuffle: read only, they are
    copied to be sorted), and where they would not fit beside the entity rows' positions (times
    spread over 2**47 µs on a grid of 1 µs) it makes its own."""
    from mlops_pipelines.features import point_in_time as pit
    from mlops_pipelines.features.store import entity_rows

    rng = np.random.default_rng(3)
    n = 400
    start = pd.Timestamp("2013-01-01", tz="UTC").value // 1000
    if spread == "wide":  # (steps of 1 µs over 2**47 µs: 48 bits, more than the 46 left beside keys and positions)
        span, ttl = 2**47, 2**43
        micros = start + np.sort(rng.integers(0, span, n))
    else:  # (whole minutes over ten days)
        span, ttl = 10 * 86_400 * 10**6, 3_600 * 10**6
        micros = start + np.sort(rng.integers(0, span // 60_000_000, n)) * 60_000_000
    table = pa.table({"k": pa.array(rng.integers(-5, 40, n), pa.int32()),
                      pit.TS: pa.array(micros, pa.timestamp("us", tz="UTC")),
                      "x": rng.normal(size=n)})
    laid = pit.laid_out_for_joins(table, ["k"], ["x"])
    assert pit.CODES in laid.column_names
    grid = json.loads(laid.schema.field(pit.CODES).metadata[pit.CODES_KEY])
    assert (grid["low"], grid["high"], grid["first"]) == (-5, 39, int(micros.min()))
    plain = laid.drop_columns([pit.CODES])
    asked = 3_000
    when = pd.Series(pd.to_datetime(start + rng.integers(-10**9, span + 10**9, asked), unit="us", utc=True))
    entities = entity_rows({"k": pd.Series(rng.integers(-7, 42, asked))}, when)
    for limit in (None, ttl):
        chosen = pit.match_rows(laid, entities, ["k"], ["x"], limit, False)
        assert (chosen >= 0).sum() > (100 if limit else 1_000)  # (rows match: the comparison is not of -1s)
        expected = pit.match_rows(plain, entities, ["k"], ["x"], limit, False).copy()
        assert chosen.tolist() == expected.tolist()
        shuffle = rng.permutation(n)
        mixed = pit.match_rows(laid.take(pa.array(shuffle)), entities, ["k"], ["x"], limit, False)
        assert np.where(mixed >= 0, shuffle[np.maximum(mixed, 0)], -1).tolist() == expected.tolist()
    used = pit._stored_codes(laid, ["k"], asked)
    assert (used is None) == (spread == "wide")
    if used is not None:
        values = used[0]
        assert values.dtype == np.uint64 and not values.flags.writeable
        assert (values[1:] >= values[:-1]).all()


def json_names(field: pa.Field) -> list[str]:
    import json

    from mlops_pipelines.features import point_in_time as pit

    return json.loads(field.metadata[pit.FLOAT_ROWS_KEY])


def test_values_already_in_order_keep_their_positions():
    from mlops_pipelines.features.point_in_time import _sorted_with_positions

    ordered = np.array([0, 1, 1, 4, 2**40], dtype=np.uint64)
    values, positions = _sorted_with_positions(ordered.copy(), 41, np.full(5, -1, dtype=np.int64))
    assert values.tolist() == ordered.tolist() and positions.tolist() == [0, 1, 2, 3, 4]
    given = ordered.copy()
    values, positions = _sorted_with_positions(given, 41, in_order_as_none=True)
    assert values is given and positions is None  # (in order: checked, not sorted, nor numbered)
    values, positions = _sorted_with_positions(np.array([3, 1, 3, 0], dtype=np.uint64), 2)
    assert values.tolist() == [0, 1, 3, 3] and positions.tolist() == [3, 1, 0, 2]  # (equal values: stable)
    values, positions = _sorted_with_positions(np.array([], dtype=np.uint64), 1)
    assert values.tolist() == [] and positions.tolist() == []


def test_rows_in_order_with_ties_still_get_each_tie_decided():
    """Rows already in key and time order (the join then numbers them by position, without a
    sort) that hold ties: each tie is still decided by the created timestamp, then the values."""
    from mlops_pipelines.features import point_in_time as pit
    from mlops_pipelines.features.store import entity_rows

    micros = pd.Timestamp("2013-01-01", tz="UTC").value // 1000
    table = pa.table({
        "k": pa.array([1, 1, 1, 2, 2, 3], pa.int64()),
        "__ts": pa.array([micros, micros + 10, micros + 10, micros, micros, micros], pa.timestamp("us", tz="UTC")),
        "__created": pa.array([micros, micros + 5, micros + 9, micros, micros, None], pa.timestamp("us", tz="UTC")),
        "x": [0.0, 1.0, 2.0, 7.0, 3.0, 4.0],
    })
    when = pd.Series(pd.to_datetime([micros + 20, micros + 5, micros, micros, micros - 1], unit="us", utc=True))
    entities = entity_rows({"k": pd.Series([1, 1, 2, 3, 1])}, when)
    chosen = pit.match_rows(table, entities, ["k"], ["x"], None, True)
    # key 1 at +20: the tie at +10 goes to the later created row (2); key 2: equal created
    # times, the smaller value (row 4); key 1 before its first row: nothing.
    assert chosen.tolist() == [2, 0, 4, 5, -1]


@given(st.lists(st.integers(0, 40), min_size=1, max_size=300), st.lists(st.integers(-2, 42), min_size=1, max_size=3000))
@settings(max_examples=60, deadline=None)
def test_blockwise_search_is_searchsorted(haystack, needles):
    """The join's block-by-block search of sorted needles answers as np.searchsorted(side="right"),
    with duplicates and needles before and after every value, across several blocks."""
    from mlops_pipelines.features.point_in_time import _searched

    hay = np.sort(np.array(haystack, dtype=np.uint64) * np.uint64(3))
    asked = np.sort(np.array([max(n, 0) for n in needles], dtype=np.uint64) * np.uint64(3) + np.uint64(1))
    asked = np.repeat(asked, 3 * 8_192 // len(asked) + 1)  # (more than three blocks of 8,192)
    found = _searched(hay, asked, np.full(len(asked), -7, dtype=np.int64))
    assert found.tolist() == np.searchsorted(hay, asked, side="right").tolist()
    exact = np.sort(np.array([max(n, 0) for n in needles], dtype=np.uint64)) * np.uint64(3)
    assert _searched(hay, exact, np.empty(len(exact), dtype=np.int64)).tolist() == \
        np.searchsorted(hay, exact, side="right").tolist()


def test_rows_that_lose_a_tie_are_left_out_and_answers_stay(tmp_path):
    """Ties decided by the created timestamp, then by the features' values (NaN, NULL, -0.0),
    and a nanosecond view (whose rows are all kept): the copy answers as the source."""
    frame = pd.DataFrame({
        "k": [1, 1, 1, 2, 2, 2, 3, 3],
        "ts": pd.to_datetime([BASE] * 8, utc=True),
        "created": pd.to_datetime([BASE, BASE + pd.Timedelta(minutes=1), BASE, BASE, BASE, BASE, None, None], utc=True),
        "x": [5.0, 4.0, 3.0, float("nan"), 2.0, None, -0.0, 0.0],
        "y": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0],
    })
    path = _write(tmp_path / "v.parquet", frame)
    view = FeatureView("v", f"read_parquet('{path}')", ("k",), "ts", (Feature("x"), Feature("y")),
                       created_timestamp="created")
    nanos = tmp_path / "ns.parquet"
    with duckdb.connect() as con:
        con.execute(f"copy (select k, make_timestamp_ns(epoch_ns(ts) + 250) as ts, x from read_parquet('{path}')) "
                    f"to '{nanos}' (format parquet)")
    ns_view = FeatureView("n", f"read_parquet('{nanos}')", ("k",), "ts", (Feature("x"),))
    with_copies, without = _stores(tmp_path, [view, ns_view])
    done = with_copies.prepare()
    assert done["v"].startswith("prepared: 8 rows (5 that lose a tie left out)"), done
    assert done["n"].startswith("prepared: 8 rows, "), done
    entities = _entities([(1, 0), (2, 0), (3, 0), (1, -1)])
    features = ["v:x", "v:y", "n:x"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreparedCopyStaleWarning)
        got = with_copies.get_historical_features(entities, features, full_feature_names=True)
    pd.testing.assert_frame_equal(got, without.get_historical_features(entities, features, full_feature_names=True))
    assert got["v__x"].tolist()[:3] == [4.0, 2.0, 0.0] and got["v__y"].tolist()[2] == 1.0


@pytest.mark.parametrize(("source", "reason"), [
    # A table named like a CTE, outside the CTE's scope or inside its own definition, is the table.
    ("(select * from (with t as (select * from read_parquet('{path}')) select * from t) union all select * from t)",
     "it reads the table 't'"),
    ("(with t as (select * from t union all select * from read_parquet('{path}')) select * from t)",
     "it reads the table 't'"),
    ("(select k, ts, created, extract(epoch from current_localtimestamp()) as x from read_parquet('{path}'))",
     "it calls current_localtimestamp()"),
    ("(select k, ts, created, extract(epoch from ago(interval 1 day)) as x from read_parquet('{path}'))",
     "it calls ago()"),
    ("(select k, ts, created, x::amount as x from read_parquet('{path}'))",
     "it casts to amount, a type of the warehouse"),
    ("read_csv('{folder}/v.csv', columns={{'k': 'amount'}})", "names column types by text (columns=)"),
    ("(with recursive r(n) as (select 1 union all select n + 1 from r where n < 2) "
     "select * from read_parquet('{path}'), r)", "recursive CTE"),
])
def test_sources_the_warehouse_can_change_are_not_prepared(tmp_path, source, reason):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)]))
    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"create table t as select * from read_parquet('{path}')")
        con.execute("create type amount as double")
    view = FeatureView("v", source.format(path=path, folder=tmp_path), ("k",), "ts", (Feature("x"),))
    done = FeatureStore(warehouse, [view]).prepare()
    assert done["v"].startswith("not prepared: ") and reason in done["v"], done


def test_a_macro_or_python_function_of_the_callers_connection_is_not_taken_for_duckdbs(tmp_path):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, -1.0)]))
    view = FeatureView("v", f"(select k, ts, abs(x) as x from read_parquet('{path}'))", ("k",), "ts", (Feature("x"),))
    store = FeatureStore(":memory:", [view], prepared_dir=tmp_path / "prepared")
    assert store.prepare()["v"].startswith("prepared: 1 rows")
    con = duckdb.connect()
    con.execute("create macro abs(v) as v * 10")  # (a macro under a built-in's name wins in DuckDB)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreparedCopyStaleWarning)
        out = store.get_historical_features(_entities([(1, 5)]), ["v:x"], connection=con)
    assert out["x"].tolist() == [-10.0]  # (the source, read with the connection's macro)
    assert store.get_historical_features(_entities([(1, 5)]), ["v:x"])["x"].tolist() == [1.0]
    done = store.prepare(connection=con)
    assert "defines otherwise than DuckDB" in done["v"], done


def test_a_copy_made_under_other_settings_is_not_used(tmp_path):
    path = _write(tmp_path / "v.parquet", pd.DataFrame({"k": [1], "ts": pd.to_datetime([BASE], utc=True),
                                                        "a": [7], "b": [2]}))
    view = FeatureView("v", f"(select k, ts, a / b as x from read_parquet('{path}'))", ("k",), "ts",
                       (Feature("x", "any"),))
    store = FeatureStore(":memory:", [view], prepared_dir=tmp_path / "prepared")
    store.prepare()
    con = duckdb.connect()
    # Settings that change no value (memory, threads) leave the copy in use: a caller's connection,
    # another store's memory limit.
    con.execute("set threads = 1")
    other = FeatureStore(":memory:", [view], memory_limit="2GB", prepared_dir=tmp_path / "prepared")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreparedCopyStaleWarning)
        assert store.get_historical_features(_entities([(1, 5)]), ["v:x"], connection=con)["x"].tolist() == [3.5]
        assert other.get_historical_features(_entities([(1, 5)]), ["v:x"])["x"].tolist() == [3.5]
    con.execute("set integer_division = true")
    with pytest.warns(PreparedCopyStaleWarning):
        out = store.get_historical_features(_entities([(1, 5)]), ["v:x"], connection=con)
    assert out["x"].tolist() == [3]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreparedCopyStaleWarning)
        assert store.get_historical_features(_entities([(1, 5)]), ["v:x"])["x"].tolist() == [3.5]


def test_a_copy_or_folder_that_cannot_be_read_is_passed_over(tmp_path, monkeypatch):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)]))
    store = FeatureStore(":memory:", [_view("v", path)], prepared_dir=tmp_path / "prepared")
    store.prepare()

    def refused(*args, **kwargs):  # (as for a copy another user made, mode 0600: root reads any file here)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(prepared.pa, "memory_map", refused)
    with pytest.warns(PreparedCopyStaleWarning, match=r"cannot be read \(Permission denied\)"):
        assert store.get_historical_features(_entities([(1, 5)]), ["v:x"])["x"].tolist() == [1.0]
    monkeypatch.undo()
    monkeypatch.setattr(Path, "is_file", refused)  # (a folder this user may not search)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreparedCopyStaleWarning)
        assert store.get_historical_features(_entities([(1, 5)]), ["v:x"])["x"].tolist() == [1.0]


def test_files_a_connection_may_not_read_fail_as_the_source_does(tmp_path):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)]))
    store = FeatureStore(":memory:", [_view("v", path)], prepared_dir=tmp_path / "prepared")
    store.prepare()
    con = duckdb.connect()
    con.execute("set enable_external_access = false")
    with pytest.raises(ViewReadError, match="feature view 'v': reading .*disabled by configuration"):
        store.get_historical_features(_entities([(1, 5)]), ["v:x"], connection=con)


def test_a_copy_warns_of_a_features_type_before_refusing_another(tmp_path):
    path = _write(tmp_path / "v.parquet", pd.DataFrame({"k": [1], "ts": pd.to_datetime([BASE], utc=True),
                                                        "s": ["a"]}))
    source = f"(select k, ts, s, '10:00:00+01'::timetz as t from read_parquet('{path}'))"
    view = FeatureView("v", source, ("k",), "ts", (Feature("s"), Feature("t", "any")))  # (s: float by default)
    with_copies, without = _stores(tmp_path, [view])
    with pytest.warns(UserWarning, match="feature 's' has the type float"):
        assert with_copies.prepare()["v"].startswith("prepared: 1 rows")
    for store in (with_copies, without):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(ViewReadError, match="feature 't' is a TIME WITH TIME ZONE"):
                store.get_historical_features(_entities([(1, 5)]), ["v:t"])
        assert [type(w.message).__name__ for w in caught] == ["FeatureTypeWarning"], caught


@pytest.mark.parametrize("first", [0.0, -0.0])
def test_a_tie_of_zeros_of_either_sign_goes_to_the_negative_one_in_any_order(tmp_path, first):
    """0.0 and -0.0 compare equal; the winner of their tie must not depend on which row is read
    first (a prepared copy, a narrowed read and DuckDB's threads read rows in other orders)."""
    path = _write(tmp_path / "v.parquet", pd.DataFrame({
        "k": [1, 1], "ts": pd.to_datetime([BASE, BASE], utc=True), "x": [first, -first]}))
    with_copies, without = _stores(tmp_path, [FeatureView("v", f"read_parquet('{path}')", ("k",), "ts",
                                                          (Feature("x"),))])
    with_copies.prepare()
    for store in (with_copies, without):
        got = store.get_historical_features(_entities([(1, 0)]), ["v:x"])["x"].iloc[0]
        assert got == 0.0 and np.signbit(got)


def test_the_sign_of_a_zero_decides_only_after_every_feature(tmp_path):
    path = _write(tmp_path / "v.parquet", pd.DataFrame({
        "k": [1, 1], "ts": pd.to_datetime([BASE, BASE], utc=True), "x": [-0.0, 0.0], "y": [float("inf"), -1.0]}))
    view = FeatureView("v", f"read_parquet('{path}')", ("k",), "ts", (Feature("x"), Feature("y")))
    with_copies, without = _stores(tmp_path, [view])
    with_copies.prepare()
    for store in (with_copies, without):
        out = store.get_historical_features(_entities([(1, 0)]), ["v:x", "v:y"])
        assert out["y"].tolist() == [-1.0] and not np.signbit(out["x"].iloc[0])  # (y decides: -1.0 < inf)


def test_a_macro_kept_in_the_warehouse_file_is_looked_for_too(tmp_path):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, -1.0)]))
    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create macro abs(v) as v * 10")
    view = FeatureView("v", f"(select k, ts, abs(x) as x from read_parquet('{path}'))", ("k",), "ts", (Feature("x"),))
    store = FeatureStore(warehouse, [view])
    assert "defines otherwise than DuckDB (a macro)" in store.prepare()["v"]
    assert store.get_historical_features(_entities([(1, 5)]), ["v:x"])["x"].tolist() == [-10.0]


def test_a_table_named_like_the_file_is_the_table(tmp_path):
    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)]))
    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f'create table "{path}" as select k, ts, created, 2.0 as x from read_parquet(\'{path}\')')
    view = FeatureView("v", f'"{path}"', ("k",), "ts", (Feature("x"),))
    store = FeatureStore(warehouse, [view])
    assert "which is a table or view of this connection" in store.prepare()["v"]
    assert store.get_historical_features(_entities([(1, 5)]), ["v:x"])["x"].tolist() == [2.0]
    plain = FeatureStore(":memory:", [view], prepared_dir=tmp_path / "prepared")  # (no such table: the file)
    assert plain.prepare()["v"].startswith("prepared: 1 rows")


def test_type_warnings_follow_the_callers_filters_when_preparing(tmp_path):
    path = _write(tmp_path / "v.parquet", pd.DataFrame({"k": [1], "ts": pd.to_datetime([BASE], utc=True),
                                                        "s": ["a"]}))
    view = FeatureView("v", f"read_parquet('{path}')", ("k",), "ts", (Feature("s"),))  # (s: float by default)
    store = FeatureStore(":memory:", [view], prepared_dir=tmp_path / "prepared")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="feature 's' has the type float"):  # (as a retrieval would)
            store.prepare()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        assert store.prepare()["v"].startswith("prepared: 1 rows")
    assert caught == []
    with pytest.warns(UserWarning, match="feature 's' has the type float"):  # (the copy warns as the source did)
        assert store.get_historical_features(_entities([(1, 5)]), ["v:s"])["s"].tolist() == ["a"]


def test_an_in_memory_store_answers_calls_from_several_threads_at_once(tmp_path):
    """An in-memory store keeps one DuckDB database for its life and reads each call through its
    own cursor: calls running at once, with and without prepared copies, give the same answers
    as one call alone, and none leaves a setting of another behind."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    frame = _rows([(int(k), int(m), int(m), float(i)) for i, (k, m) in
                   enumerate(zip(rng.integers(1, 40, 3_000), rng.integers(0, 5_000, 3_000), strict=True))])
    path = _write(tmp_path / "v.parquet", frame)
    with_copies, without = _stores(tmp_path, [_view("v", path, ttl=timedelta(minutes=600))])
    with_copies.prepare()
    entities = _entities([(int(k), int(m)) for k, m in zip(rng.integers(0, 42, 2_000), rng.integers(-60, 5_600, 2_000),
                                                           strict=True)])
    alone = without.get_historical_features(entities, ["v:x"])["x"]
    assert alone.notna().sum() > 1_000  # (most rows match: the comparison is not of NaNs)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda store: store.get_historical_features(entities, ["v:x"])["x"],
                                [with_copies, without] * 4))
    for answer in answers:
        pd.testing.assert_series_equal(answer, alone)


def test_parquet_is_prefetched_only_while_a_view_reads_remote_files(tmp_path):
    """Local files are read page by page (no prefetching); once a view over an https:// file is
    registered, the store's own database prefetches again."""
    store = FeatureStore(":memory:", [_view("v", _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.0)])))])

    def prefetching() -> bool:
        with store._connection(None) as con:
            return con.execute("select current_setting('disable_parquet_prefetching')").fetchall()[0][0] is False

    assert not prefetching()
    store.register(FeatureView("remote", "read_parquet('https://example.org/v.parquet')", ("k",), "ts",
                               (Feature("x"),)))
    assert prefetching()


def test_an_in_memory_store_opens_its_database_when_needed_and_copies_and_pickles(tmp_path):
    """An in-memory store opens its database on the first call, not when made; a copy or a
    pickled store opens one of its own; a closed store opens a new one; and a database left
    unusable by a fatal error is replaced by the next call."""
    import copy
    import pickle

    path = _write(tmp_path / "v.parquet", _rows([(1, 0, 0, 1.5)]))
    store = FeatureStore(":memory:", [_view("v", path)])
    assert store._memory is None
    entities = _entities([(1, 5)])
    assert store.get_historical_features(entities, ["v:x"])["x"].tolist() == [1.5]
    opened = store._memory
    assert opened is not None
    for other in (copy.deepcopy(store), pickle.loads(pickle.dumps(store))):
        assert other._memory is None and other.views.keys() == store.views.keys()
        assert other.get_historical_features(entities, ["v:x"])["x"].tolist() == [1.5]
        assert other._memory is not None and other._memory is not opened
    store.close()
    assert store.get_historical_features(entities, ["v:x"])["x"].tolist() == [1.5]
    from mlops_pipelines.features.store import _reading

    for wrapped in (False, True):  # (as DuckDB raises it; as a view's read names it, a ViewReadError)
        broken = store._memory
        with pytest.raises(ViewReadError if wrapped else duckdb.FatalException), store._connection(None), \
                (_reading(store.views["v"]) if wrapped else contextlib.nullcontext()):
            raise duckdb.FatalException("database has been invalidated")
        assert store._memory is None
        assert store.get_historical_features(entities, ["v:x"])["x"].tolist() == [1.5]
        assert store._memory is not None and store._memory is not broken


def test_sql_is_read_by_the_process_parser_when_the_connection_given_fails():
    """What a view's SQL reads is kept for the process: a connection that fails (closed) is not
    taken for SQL DuckDB cannot read."""
    database = duckdb.connect()
    cursor = database.cursor()
    cursor.close()
    tree = prepared.serialized_select("read_parquet('/data/a.parquet')", cursor)
    assert tree is not None and tree == prepared.serialized_select("read_parquet('/data/a.parquet')")
    assert prepared.serialized_select("read_parquet('/data/a.parquet' where", database) is None  # (not SQL)


def test_a_view_read_from_a_home_folder_of_no_such_user_is_not_prepared(tmp_path):
    view = FeatureView("v", "read_parquet('~no_such_user_here_zz/v.parquet')", ("k",), "ts", (Feature("x"),))
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / prepared.file_name("v")).write_bytes(b"not a copy")
    store = FeatureStore(":memory:", [view], prepared_dir=tmp_path / "prepared")
    assert store.prepare()["v"] == ("not prepared: it reads '~no_such_user_here_zz/v.parquet', whose home folder "
                                    "is unknown here")
    with pytest.raises(Exception, match="no_such_user_here_zz"):  # (DuckDB's own error, reading the source)
        store.get_historical_features(_entities([(1, 5)]), ["v:x"])


@pytest.mark.parametrize("processors", [1, 4, 16])
def test_views_joined_by_as_many_workers_as_processors_answer_the_same(tmp_path, monkeypatch, processors):
    """Views are joined by two to four worker threads, after the processors: any number gives
    the answers of two (each worker's scratch arrays handed on from view to view)."""
    from concurrent.futures import ThreadPoolExecutor

    from mlops_pipelines.features import store as store_module

    rng = np.random.default_rng(9)
    views = []
    for index in range(5):
        frame = _rows([(int(k), int(m), int(m) + int(c), float(i)) for i, (k, m, c) in enumerate(zip(
            rng.integers(1, 30, 2_000), rng.integers(0, 3_000, 2_000), rng.integers(0, 3, 2_000), strict=True))])
        frame["y"] = rng.normal(size=len(frame))
        path = _write(tmp_path / f"v{index}.parquet", frame)
        views.append(FeatureView(f"v{index}", f"read_parquet('{path}')", ("k",), "ts", (Feature("x"), Feature("y")),
                                 ttl=timedelta(minutes=400), created_timestamp="created"))
    entities = _entities([(int(k), int(m)) for k, m in zip(rng.integers(0, 32, 3_000), rng.integers(-60, 3_400, 3_000),
                                                           strict=True)])
    features = [f"v{i}:{name}" for i in range(5) for name in ("x", "y")]
    expected = FeatureStore(":memory:", views).get_historical_features(entities, features, full_feature_names=True)
    assert expected["v0__x"].notna().sum() > 1_000  # (rows match: the comparison is not of NaNs)
    used = []
    pool = ThreadPoolExecutor

    def counted(max_workers):
        used.append(max_workers)
        return pool(max_workers=max_workers)

    monkeypatch.setattr(store_module, "_processors", lambda: processors)
    monkeypatch.setattr(store_module, "ThreadPoolExecutor", counted)
    with_copies, without = _stores(tmp_path, views)
    with_copies.prepare()
    for store in (with_copies, without):
        got = store.get_historical_features(entities, features, full_feature_names=True)
        pd.testing.assert_frame_equal(got, expected)
    assert used == [{1: 2, 4: 4, 16: 4}[processors]] * 2
