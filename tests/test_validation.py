"""Validation: each contract run by Great Expectations on real rows, clean and corrupted."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from mlops_pipelines.validation.contracts import CONTRACTS
from mlops_pipelines.validation.runner import validate_table
from tests.conftest import first_days


def _replace(table: pa.Table, column: str, values: list) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.string()))


@pytest.fixture(scope="module")
def january(flights_by_month) -> pa.Table:
    return first_days(flights_by_month["2013-01"], ("1",))  # 842 real flights of 2013-01-01


def test_real_month_passes_with_nothing_quarantined(january):
    outcome = validate_table(january, CONTRACTS["flights"], "2013-01", "raw.parquet")
    assert outcome.passed
    assert outcome.rows_in == len(outcome.valid) == 842
    assert outcome.rows_quarantined == 0
    # Cancelled flights stay: their missing times are real, not errors.
    assert outcome.valid["dep_time"].isna().sum() == 4
    assert str(outcome.valid["time_hour"].dt.tz) == "UTC"


def test_real_weather_quarantines_the_1048_mph_wind(reference_tables):
    outcome = validate_table(reference_tables["weather"], CONTRACTS["weather"], None, "weather.parquet")
    assert outcome.passed
    assert outcome.quarantined_by_rule() == {"wind_speed_range": 1}
    record = outcome.quarantine.iloc[0]
    assert (record.row_number, record.column_name, record.value) == (1010, "wind_speed", "1048.36058")
    assert json.loads(record.row_json)["origin"] == "EWR"
    # Nothing is lost: published + quarantined = delivered.
    assert len(outcome.valid) + outcome.rows_quarantined == 26115


@pytest.mark.parametrize(
    ("corrupt", "rule", "count", "message"),
    [
        # A renamed column is a schema change: the whole partition is refused.
        (lambda t: t.rename_columns(["arr_del" if c == "arr_delay" else c for c in t.column_names]),
         "schema", 2, "missing columns ['arr_delay'], unexpected columns ['arr_del']"),
        # Every arrival delay null: a broken feed, far above the 15% that cancellations explain.
        (lambda t: _replace(t, "arr_delay", [None] * t.num_rows),
         "arr_delay_mostly_present", 842, "on column arr_delay: 842 of 842 rows"),
        # An empty delivery.
        (lambda t: t.slice(0, 0), "non_empty", 0, "rule non_empty failed"),
        # A month delivered in the wrong partition: every row breaks month_in_partition.
        (lambda t: _replace(t, "month", ["2"] * t.num_rows),
         "error_rate", 842, "842 of 842 rows quarantined"),
    ],
    ids=["renamed-column", "all-arr-delay-null", "empty", "wrong-month"],
)
def test_table_level_failures_block_and_name_table_rule_count(january, corrupt, rule, count, message):
    outcome = validate_table(corrupt(january), CONTRACTS["flights"], "2013-01", "raw.parquet")
    assert not outcome.passed
    failure = next(f for f in outcome.table_failures if f.rule == rule)
    assert failure.count == count
    assert "table flights partition 2013-01" in failure.message
    assert message in failure.message


def test_row_level_failures_go_to_quarantine_with_rule_and_reason(january):
    values = january["dep_delay"].to_pylist()
    values[0] = "abc"          # not a number
    values[1] = "5000"         # over 24 hours
    hours = january["hour"].to_pylist()
    hours[2] = "9"             # disagrees with sched_dep_time
    corrupted = _replace(_replace(january, "dep_delay", values), "hour", hours)
    outcome = validate_table(corrupted, CONTRACTS["flights"], "2013-01", "raw.parquet")
    assert outcome.passed  # 3 of 842 rows is under the 5% error rate
    got = {(r.row_number, r.rule, r.column_name) for r in outcome.quarantine.itertuples()}
    assert (1, "type_dep_delay", "dep_delay") in got
    assert (2, "dep_delay_range", "dep_delay") in got
    assert (3, "hour_matches_sched_dep_time", "hour") in got
    assert len(outcome.valid) == 839
    assert 1 not in set(outcome.valid["_source_row"])


def test_time_hour_must_match_local_time(january):
    stamps = january["time_hour"].to_pylist()
    stamps[0] = "2013-01-01T05:00:00Z"  # the local hour, mislabelled as UTC
    outcome = validate_table(_replace(january, "time_hour", stamps), CONTRACTS["flights"], "2013-01", "x")
    assert outcome.quarantined_by_rule() == {"time_hour_matches_local_time": 1}


def test_duplicate_keys_are_both_quarantined(reference_tables):
    planes = reference_tables["planes"].slice(0, 50)
    doubled = pa.concat_tables([planes, planes.slice(0, 1)])
    outcome = validate_table(doubled, CONTRACTS["planes"], None, "planes.parquet")
    assert outcome.quarantined_by_rule() == {"unique_key": 2}
    assert sorted(outcome.quarantine["row_number"]) == [1, 51]
    assert set(outcome.quarantine["column_name"]) == {"tailnum"}
    assert set(outcome.quarantine["value"]) == {planes["tailnum"][0].as_py()}


def test_a_rule_that_cannot_be_evaluated_is_an_error_not_a_pass(january):
    import great_expectations.expectations as gxe

    from mlops_pipelines.validation.contracts import Rule
    from mlops_pipelines.validation.runner import _run_expectations

    broken = Rule("ghost_range", gxe.ExpectColumnValuesToBeBetween(column="ghost", min_value=0, max_value=1),
                  "a rule on a column that does not exist", column="ghost")
    with pytest.raises(RuntimeError, match="table flights: rule ghost_range on column ghost could not be evaluated"):
        _run_expectations(january.to_pandas(), [broken], "table flights")


def test_error_rate_threshold_is_configurable(january):
    values = january["carrier"].to_pylist()
    values[:10] = ["ZZ"] * 10  # 10 of 842 = 1.2%
    corrupted = _replace(january, "carrier", values)
    assert validate_table(corrupted, CONTRACTS["flights"], "2013-01", "x").passed
    strict = validate_table(corrupted, CONTRACTS["flights"], "2013-01", "x", max_error_rate=0.01)
    assert [f.rule for f in strict.table_failures] == ["error_rate"]
