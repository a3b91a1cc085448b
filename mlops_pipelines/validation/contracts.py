"""The data contract of each source table: columns and types, and the rules its rows must keep.

Each rule is a Great Expectations 1.x expectation with a one-line reason. ``level="row"`` rules send
the rows that break them to quarantine; ``level="table"`` rules (schema, emptiness, null shares)
fail the blocking check and stop the partition from being published.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

LOCAL_TIMEZONE = "America/New_York"
CARRIERS = (
    "9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV",
)
NYC_AIRPORTS = ("EWR", "JFK", "LGA")

# DuckDB column types for each contract type.
DUCKDB_TYPES = {"int": "BIGINT", "float": "DOUBLE", "str": "VARCHAR", "timestamp": "TIMESTAMPTZ"}


@dataclass(frozen=True)
class Column:
    """A declared column: its type (int, float, str, timestamp in UTC) and whether it may be null."""

    name: str
    type: str
    nullable: bool = True


@dataclass(frozen=True)
class Rule:
    """One expectation and why it exists; ``column`` is the column a quarantined row is blamed on."""

    name: str
    expectation: gxe.Expectation
    reason: str
    level: str = "row"
    column: str | None = None


@dataclass(frozen=True)
class TableContract:
    """Everything that makes one table's rows acceptable.

    ``derive`` adds helper columns (prefixed ``_``) that pair rules compare against; it receives the
    typed frame and the partition key.
    """

    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    rules: tuple[Rule, ...]
    derive: Callable[[pd.DataFrame, str | None], pd.DataFrame] | None = None
    # Largest share of rows that may be quarantined before the whole partition is refused.
    max_error_rate: float = 0.05
    extra_rules: Callable[[str | None], tuple[Rule, ...]] = field(default=lambda _p: ())

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def all_rules(self, partition: str | None) -> tuple[Rule, ...]:
        not_null = tuple(
            Rule(
                f"not_null_{c.name}",
                gxe.ExpectColumnValuesToNotBeNull(column=c.name),
                f"{c.name} is required",
                column=c.name,
            )
            for c in self.columns
            if not c.nullable
        )
        unique = (
            Rule(
                "unique_key",
                gxe.ExpectCompoundColumnsToBeUnique(column_list=list(self.key))
                if len(self.key) > 1
                else gxe.ExpectColumnValuesToBeUnique(column=self.key[0]),
                f"({', '.join(self.key)}) identifies a row; duplicates cannot both be true",
                column=",".join(self.key),
            ),
        )
        return not_null + unique + self.rules + self.extra_rules(partition)


def _between(name: str, column: str, low: float, high: float, reason: str) -> Rule:
    return Rule(
        name,
        gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high),
        reason,
        column=column,
    )


def _in_set(name: str, column: str, values: tuple, reason: str) -> Rule:
    return Rule(
        name, gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values)), reason,
        column=column,
    )


def _mostly_present(column: str, share: float, reason: str) -> Rule:
    return Rule(
        f"{column}_mostly_present",
        gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=share),
        reason,
        level="table",
        column=column,
    )


def _local_hour_as_utc(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """year/month/day/hour read as New York local time, as UTC; both readings of a DST-ambiguous hour."""
    local = pd.to_datetime(
        dict(year=frame["year"], month=frame["month"], day=frame["day"], hour=frame["hour"]),
        errors="coerce",
    )
    as_dst = local.dt.tz_localize(
        LOCAL_TIMEZONE, ambiguous=np.ones(len(local), dtype=bool), nonexistent="NaT"
    ).dt.tz_convert("UTC")
    as_std = local.dt.tz_localize(
        LOCAL_TIMEZONE, ambiguous=np.zeros(len(local), dtype=bool), nonexistent="NaT"
    ).dt.tz_convert("UTC")
    return as_dst, as_std


def _time_hour_matches_local(frame: pd.DataFrame) -> pd.Series:
    as_dst, as_std = _local_hour_as_utc(frame)
    return ((frame["time_hour"] == as_dst) | (frame["time_hour"] == as_std)).fillna(False)


_TIME_HOUR_RULE = Rule(
    "time_hour_matches_local_time",
    gxe.ExpectColumnValuesToBeInSet(column="_time_hour_matches_local", value_set=[True]),
    "time_hour (UTC) must be year/month/day/hour read as America/New_York local time",
    column="time_hour",
)


def _derive_flights(frame: pd.DataFrame, partition: str | None) -> pd.DataFrame:
    out = frame.copy()
    out["_expected_hour"] = out["sched_dep_time"] // 100
    out["_expected_minute"] = out["sched_dep_time"] % 100
    out["_time_hour_matches_local"] = _time_hour_matches_local(out)
    return out


def _flights_partition_rules(partition: str | None) -> tuple[Rule, ...]:
    if partition is None:
        return ()
    year, month = (int(p) for p in partition.split("-"))
    return (
        _in_set("year_in_partition", "year", (year,), f"a row of partition {partition} is from {year}"),
        _in_set("month_in_partition", "month", (month,), f"a row of partition {partition} is from month {month}"),
    )


FLIGHTS = TableContract(
    table="flights",
    columns=(
        Column("year", "int", False), Column("month", "int", False), Column("day", "int", False),
        Column("dep_time", "int"), Column("sched_dep_time", "int", False),
        Column("dep_delay", "float"), Column("arr_time", "int"),
        Column("sched_arr_time", "int", False), Column("arr_delay", "float"),
        Column("carrier", "str", False), Column("flight", "int", False), Column("tailnum", "str"),
        Column("origin", "str", False), Column("dest", "str", False),
        Column("air_time", "float"), Column("distance", "float", False),
        Column("hour", "int", False), Column("minute", "int", False),
        Column("time_hour", "timestamp", False),
    ),
    key=("year", "month", "day", "hour", "minute", "carrier", "flight", "origin"),
    rules=(
        _between("day_of_month", "day", 1, 31, "a day of the month is 1..31"),
        _between("sched_dep_time_hhmm", "sched_dep_time", 0, 2359, "scheduled times are local HHMM, 0000..2359"),
        _between("sched_arr_time_hhmm", "sched_arr_time", 0, 2359, "scheduled times are local HHMM, 0000..2359"),
        _between("dep_time_hhmm", "dep_time", 1, 2400, "actual times are local HHMM, 0001..2400 (2400 is midnight)"),
        _between("arr_time_hhmm", "arr_time", 1, 2400, "actual times are local HHMM, 0001..2400 (2400 is midnight)"),
        _between("hour_of_day", "hour", 0, 23, "hour is the scheduled departure hour, 0..23"),
        _between("minute_of_hour", "minute", 0, 59, "minute is the scheduled departure minute, 0..59"),
        Rule(
            "hour_matches_sched_dep_time",
            gxe.ExpectColumnPairValuesToBeEqual(column_A="hour", column_B="_expected_hour"),
            "hour must be the hours of sched_dep_time (HHMM)",
            column="hour",
        ),
        Rule(
            "minute_matches_sched_dep_time",
            gxe.ExpectColumnPairValuesToBeEqual(column_A="minute", column_B="_expected_minute"),
            "minute must be the minutes of sched_dep_time (HHMM)",
            column="minute",
        ),
        _between("dep_delay_range", "dep_delay", -120, 1440, "a departure delay is between -2 h and 24 h"),
        _between("arr_delay_range", "arr_delay", -120, 1440, "an arrival delay is between -2 h and 24 h"),
        _between("air_time_range", "air_time", 10, 720, "air time is 10 minutes to 12 hours"),
        _between("distance_range", "distance", 10, 5000, "distances from NYC are 10..5000 miles"),
        _in_set("carrier_known", "carrier", CARRIERS, "carrier must be one of the 16 carriers of the airlines table"),
        _in_set("origin_is_nyc", "origin", NYC_AIRPORTS, "flights depart from EWR, JFK or LGA"),
        Rule(
            "dest_is_iata_code",
            gxe.ExpectColumnValuesToMatchRegex(column="dest", regex=r"^[A-Z]{3}$"),
            "a destination is a three-letter IATA code",
            column="dest",
        ),
        Rule(
            "tailnum_format",
            gxe.ExpectColumnValuesToMatchRegex(column="tailnum", regex=r"^[A-Z0-9]{2,7}$"),
            "a tail number is 2..7 upper-case letters and digits",
            column="tailnum",
        ),
        _TIME_HOUR_RULE,
        Rule(
            "non_empty",
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            "a month with no flights is a broken delivery",
            level="table",
        ),
        # Cancelled and diverted flights have no arrival delay: a few percent each month (5.4% at
        # most in 2013). A month where most are missing is a broken feed, not weather.
        _mostly_present("arr_delay", 0.85, "at most 15% of flights may lack an arrival delay"),
        _mostly_present("dep_time", 0.85, "at most 15% of flights may lack a departure time"),
    ),
    derive=_derive_flights,
    extra_rules=_flights_partition_rules,
)


def _derive_weather(frame: pd.DataFrame, partition: str | None) -> pd.DataFrame:
    out = frame.copy()
    out["_time_hour_matches_local"] = _time_hour_matches_local(out)
    return out


WEATHER = TableContract(
    table="weather",
    columns=(
        Column("origin", "str", False), Column("year", "int", False), Column("month", "int", False),
        Column("day", "int", False), Column("hour", "int", False),
        Column("temp", "float"), Column("dewp", "float"), Column("humid", "float"),
        Column("wind_dir", "float"), Column("wind_speed", "float"), Column("wind_gust", "float"),
        Column("precip", "float"), Column("pressure", "float"), Column("visib", "float"),
        Column("time_hour", "timestamp", False),
    ),
    # The UTC instant, not the local hour: 1 a.m. happens twice when daylight saving time ends.
    key=("origin", "time_hour"),
    rules=(
        _in_set("origin_is_nyc", "origin", NYC_AIRPORTS, "weather is observed at EWR, JFK and LGA"),
        _between("temp_range", "temp", -40, 130, "air temperature in °F"),
        _between("dewp_range", "dewp", -60, 100, "dew point in °F"),
        _between("humid_range", "humid", 0, 100, "relative humidity is a percentage"),
        _between("wind_dir_range", "wind_dir", 0, 360, "wind direction in degrees"),
        _between("wind_speed_range", "wind_speed", 0, 150, "wind speed in mph; above 150 is a sensor fault"),
        _between("wind_gust_range", "wind_gust", 0, 200, "gust speed in mph"),
        _between("precip_range", "precip", 0, 10, "hourly precipitation in inches"),
        _between("pressure_range", "pressure", 900, 1100, "sea-level pressure in millibars"),
        _between("visib_range", "visib", 0, 10, "visibility in miles, capped at 10"),
        _between("hour_of_day", "hour", 0, 23, "hour of the observation, 0..23"),
        _TIME_HOUR_RULE,
        Rule("non_empty", gxe.ExpectTableRowCountToBeBetween(min_value=1), "weather cannot be empty", level="table"),
        _mostly_present("temp", 0.95, "at most 5% of observations may lack a temperature"),
    ),
    derive=_derive_weather,
)

PLANES = TableContract(
    table="planes",
    columns=(
        Column("tailnum", "str", False), Column("year", "int"), Column("type", "str"),
        Column("manufacturer", "str"), Column("model", "str"), Column("engines", "int"),
        Column("seats", "int"), Column("speed", "float"), Column("engine", "str"),
    ),
    key=("tailnum",),
    rules=(
        _between("year_built", "year", 1900, 2014, "a plane is built between 1900 and 2014"),
        _between("engines_count", "engines", 1, 8, "a plane has 1..8 engines"),
        _between("seats_count", "seats", 1, 1000, "a plane has 1..1000 seats"),
        Rule("non_empty", gxe.ExpectTableRowCountToBeBetween(min_value=1), "planes cannot be empty", level="table"),
    ),
)

AIRPORTS = TableContract(
    table="airports",
    columns=(
        Column("faa", "str", False), Column("name", "str"), Column("lat", "float", False),
        Column("lon", "float", False), Column("alt", "float"), Column("tz", "float"),
        Column("dst", "str"), Column("tzone", "str"),
    ),
    key=("faa",),
    rules=(
        _between("latitude", "lat", -90, 90, "latitude in degrees"),
        _between("longitude", "lon", -180, 180, "longitude in degrees"),
        _between("utc_offset", "tz", -12, 14, "offset from UTC in hours"),
        _in_set("dst_code", "dst", ("A", "U", "N"), "A = US DST, U = unknown, N = none"),
        Rule("non_empty", gxe.ExpectTableRowCountToBeBetween(min_value=1), "airports cannot be empty", level="table"),
    ),
)

AIRLINES = TableContract(
    table="airlines",
    columns=(Column("carrier", "str", False), Column("name", "str", False)),
    key=("carrier",),
    rules=(
        Rule("non_empty", gxe.ExpectTableRowCountToBeBetween(min_value=1), "airlines cannot be empty", level="table"),
    ),
)

CONTRACTS: dict[str, TableContract] = {
    c.table: c for c in (FLIGHTS, WEATHER, PLANES, AIRPORTS, AIRLINES)
}
