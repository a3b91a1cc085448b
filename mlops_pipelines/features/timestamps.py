"""Entity timestamps as UTC instants, and the rules that keep text from being misread.

pandas reads more than ISO 8601 says: "now" as the clock's time, "NaT" as no time, bare digits as
a year and a decimal number as a year and month. Each would make a row quietly match nothing (or
the wrong row), so each is refused by column, row and value. The same rules apply to entity
timestamps and to text given for a TIMESTAMP join key.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_pipelines.features.errors import EntityRowError


def _relative_to_clock(values: pd.Series) -> pd.Series:
    """The rows holding "now" or "today", which pandas reads as the clock's time (no result could
    be repeated). Text of any dtype: Arrow dictionaries and string views lack some of pandas' text
    methods, and are looked at as objects."""
    for candidate in (values, values.astype(object)):
        try:
            lengths = candidate.str.len()  # (NaN for what is not text; ISO 8601 text has 10 characters or more)
            short = candidate[(lengths >= 3) & (lengths < 10)]
            return short[short.str.strip().str.lower().isin(["now", "today"])]
        except (AttributeError, NotImplementedError, TypeError):  # (no text at all, or no .str here)
            continue
    return values.iloc[:0]


def to_utc(values: pd.Series, what: str = "timestamp column") -> pd.Series:
    """Timestamps as UTC instants: aware ones converted, naive ones read as UTC. Errors name the
    column (``what`` and the Series' name), the row (its index label), the value and the rule."""
    if isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_string_view(values.dtype.pyarrow_dtype):
        # (pandas' own type checks refuse string views, its astype included)
        text = pa.array(values.array).cast(pa.large_string())
        values = pd.Series(text, dtype=pd.ArrowDtype(pa.large_string()), index=values.index, name=values.name)
    _refuse_dates(values, what)
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    if values.empty:  # no rows, whatever dtype an empty column was given
        return pd.Series([], dtype="datetime64[us, UTC]", index=values.index, name=values.name)
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        hint = "" if pd.api.types.is_bool_dtype(values) else f"; {_EPOCH_HINT}"
        raise ValueError(
            f"{what} {values.name!r} holds {values.dtype} values, not timestamps "
            f"(datetimes or ISO 8601 strings{hint})"
        )
    moving = _relative_to_clock(values)
    if len(moving):
        raise EntityRowError(f"{what} {values.name!r} ", moving.index[0], f" ({moving.iloc[0]!r}): "
                             "give an instant, not a time relative to the clock")
    written = None
    try:
        parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError, NotImplementedError) as exc:
        failure = exc
        written = _readable_iso(values)
        if written is not None:
            try:
                parsed = pd.to_datetime(written, utc=True, format="ISO8601")
            except (ValueError, TypeError, NotImplementedError) as again:
                failure = again  # (what is wrong besides a form rewritten)
            else:
                return _read_as_written(values, parsed, what)
    else:
        return _read_as_written(values, parsed, what)
    if isinstance(failure, pd.errors.OutOfBoundsDatetime):
        # Beyond 2262 (pandas parsed the text in nanoseconds): as Python's datetimes, to 9999, in
        # microseconds (nanoseconds given with such a value are dropped).
        try:
            # (a missing value as None: numpy's NaT, of a unit, would make pandas read in nanoseconds again)
            parsed = pd.to_datetime(values.map(_iso_datetime, na_action="ignore").where(values.notna(), None),
                                    utc=True)
        except (ValueError, TypeError):
            # Name the first value that is no instant as Python reads them (pandas' coercion
            # below would blame the first value beyond 2262 instead).
            bad = values[values.map(_not_iso, na_action="ignore").fillna(False).astype(bool)]
            if len(bad):
                why = _impossible(bad.iloc[0]) or "not an instant (datetimes or ISO 8601 strings expected)"
                raise EntityRowError(f"{what} {values.name!r} ", bad.index[0], f" ({bad.iloc[0]!r}): {why}") \
                    from failure
        else:
            return _read_as_written(values, parsed, what)
    reason = str(failure).splitlines()[0].split(" You might want to try")[0]
    try:  # name the first row that does not parse (None/NaN stay missing and are fine)
        # (text as it was retried: a form rewritten is not what is wrong)
        parsed = pd.to_datetime(values if written is None else written, utc=True, format="ISO8601", errors="coerce")
        wrong = np.flatnonzero(parsed.isna().to_numpy() & values.notna().to_numpy())
        bad = values.iloc[wrong]
    except (ValueError, TypeError):
        bad = values.iloc[:0]
    if len(bad):
        if written is not None:  # (pandas quotes the text as rewritten: the user's own text instead)
            reason = reason.replace(f"Time data {written.iloc[wrong[0]]} ", f"Time data {bad.iloc[0]} ")
        why = _impossible(bad.iloc[0]) or f"{reason} (datetimes or ISO 8601 strings expected)"
        raise EntityRowError(f"{what} {values.name!r} ", bad.index[0], f" ({bad.iloc[0]!r}): {why}") from failure
    raise ValueError(f"{what} {values.name!r}: {reason} (datetimes or ISO 8601 strings expected)") from failure


# Valid ISO 8601 that pandas' parser refuses, rewritten to forms it reads (only after a first
# parse failed: no cost to columns it reads as they are):
# * RFC 3339 (ISO 8601's profile for the internet) allows "t" and "z" in lower case: only a
#   "t" between digits and a "z" ending the text after one;
_LOWER_SEPARATORS = re.compile(r"(?<=\d)t(?=\d)|(?<=\d)z(?=\s*$)", re.ASCII)
# * week dates (2013-W22-6, 2013W226) and ordinal dates (2013-152; 2013152 only before a time,
#   as seven bare digits could be anything), as the calendar date in the same format;
_WEEK_DATE = re.compile(r"^(\s*)(\d{4})(?:-W(\d{2})-(\d)|W(\d{2})(\d))(?=$|[Tt\s])", re.ASCII)
_ORDINAL_DATE = re.compile(r"^(\s*)(\d{4})(?:-(\d{3})(?=$|[Tt\s])|(\d{3})(?=[Tt]))", re.ASCII)
# * a comma before the seconds' fraction (12:00:00,5 or 120000,5).
_DECIMAL_COMMA = re.compile(r"(?:(?<=[Tt\s]\d\d:\d\d:\d\d)|(?<=[Tt]\d{6})),(?=\d)", re.ASCII)


def _calendar_date(match: re.Match) -> str:
    """A week or ordinal date's calendar date, in its format (extended or basic); the text as it
    was when no such day exists (2013-W54-1, 2013-366), so that the parse fails on it."""
    extended = match.group(3) is not None
    if match.re is _WEEK_DATE:
        week, day = (match.group(3), match.group(4)) if extended else (match.group(5), match.group(6))
        found = _day_of_week_date(match.group(2), week, day, extended)
    else:
        found = _day_of_ordinal_date(match.group(2), match.group(3) if extended else match.group(4), extended)
    return match.group(0) if found is None else match.group(1) + found


@lru_cache(maxsize=8192)  # (a column's rows share few days: a lookup costs less than strftime)
def _day_of_week_date(year: str, week: str, day: str, extended: bool) -> str | None:
    try:
        found = date.fromisocalendar(int(year), int(week), int(day))
    except ValueError:
        return None
    return _date_text(found, extended)


@lru_cache(maxsize=8192)
def _day_of_ordinal_date(year: str, ordinal: str, extended: bool) -> str | None:
    if int(year) < 1 or not 1 <= int(ordinal) <= (date(int(year), 12, 31) - date(int(year), 1, 1)).days + 1:
        return None  # (a year 0 is no year of Python's)
    return _date_text(date(int(year), 1, 1) + timedelta(days=int(ordinal) - 1), extended)


def _date_text(day: date, extended: bool) -> str:
    """``day`` in ISO 8601's extended or basic format, its year in four digits (strftime's ``%Y``
    gives year 1 as "1" here)."""
    separator = "-" if extended else ""
    return f"{day.year:04d}{separator}{day.month:02d}{separator}{day.day:02d}"


def _iso_text(text: str) -> str:
    """``text`` with the forms above rewritten as pandas and Python read them."""
    text = _LOWER_SEPARATORS.sub(_upper_cased_separator, text)
    # (each rule only where it can apply: a column of 1,000,000 texts goes through here)
    if match := (_WEEK_DATE.match(text) if "W" in text else _ORDINAL_DATE.match(text)):
        text = _calendar_date(match) + text[match.end():]
    return _DECIMAL_COMMA.sub(".", text, count=1) if "," in text else text


def _upper_cased_separator(match: re.Match) -> str:
    return match.group(0).upper()


def _readable_iso(values: pd.Series) -> pd.Series | None:
    """``values`` with each text's valid ISO 8601 forms that pandas refuses rewritten (see
    ``_iso_text``), or None when no text has one."""
    if values.dtype == object or (pd.api.types.is_string_dtype(values.dtype)
                                  and not isinstance(values.dtype, pd.CategoricalDtype)):
        written = values.map(lambda v: _iso_text(v) if isinstance(v, str) else v)
    else:
        return None
    changed = ((written != values) & values.notna()).fillna(False).to_numpy(dtype=bool)  # (None != None)
    return written if changed.any() else None


def _refuse_dates(values: pd.Series, what: str) -> None:
    """Values typed as dates (Python dates or periods, Arrow DATE columns, categories of them)
    name no instant: which zone's midnight? Read as UTC's, as pandas would, a New York day would
    start at 19:00 the day before. Refused, as a view's DATE event timestamp is. (Text is parsed
    as ISO 8601 says: a date alone, '2013-06-01', is read as naive text is, midnight UTC.)"""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    arrow = values.dtype.pyarrow_dtype if isinstance(values.dtype, pd.ArrowDtype) else None
    if arrow is not None and pa.types.is_dictionary(arrow):
        arrow = arrow.value_type
    if isinstance(values.dtype, pd.PeriodDtype) or (arrow is not None and pa.types.is_date(arrow)):
        dates = values.notna().to_numpy()
    elif values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("date", "period", "mixed"):
        # ("datetime": datetimes only, no date among them)
        dates = np.fromiter((isinstance(v, date | pd.Period) and not isinstance(v, datetime) for v in values), bool,
                            len(values))
    else:
        return
    if dates.any():
        first = int(dates.argmax())
        raise EntityRowError(f"{what} {values.name!r} ", values.index[first], f" ({values.iloc[first]!r}): "
                             "a date, not an instant (which zone's midnight?); give datetimes, e.g. "
                             "pd.to_datetime(column).dt.tz_localize('America/New_York')")


def _read_as_written(values: pd.Series, parsed: pd.Series, what: str) -> pd.Series:
    """``parsed``, unless pandas read a text as something else than written, and the row would
    then quietly match nothing: the texts "NaT", "nan", "NaN" and "" as no timestamp (only a
    missing value, None, NaN or an empty CSV cell, is missing), or a number as a year (and month)."""
    hidden = parsed.isna().to_numpy() & values.notna().to_numpy()
    if hidden.any():
        position = int(np.flatnonzero(hidden)[0])
        raise EntityRowError(
            f"{what} {values.name!r} ", values.index[position], f" ({values.iloc[position]!r}): "
            "not an instant (a row without a timestamp leaves it empty: None, or an empty CSV cell)")
    # pandas' ISO 8601 parser reads up to four bare digits as a year, and a decimal number as a
    # year and month: '1230' (a time as HHMM), '-1' (a sentinel) or '1230.5' would be 1 January
    # or 1 May 1230 and quietly match nothing. Only the first of a month at midnight can be one
    # ('20240101', eight digits, is a date in ISO 8601's basic format).
    month_start = (parsed.dt.day == 1) & (parsed.dt.hour == 0) & (parsed.dt.minute == 0)
    if month_start.any():
        texts = values[month_start.to_numpy()]
        try:
            arrow = pa.array(texts, from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError):
            arrow = None  # (texts mixed with other objects, numpy datetimes of any unit...)
        if arrow is not None and (pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type)):
            numbers = pc.fill_null(pc.match_substring_regex(arrow, _NUMBER.pattern), False)  # (in C: fast)
            bare = texts[numbers.to_numpy(zero_copy_only=False)]
        else:
            bare = texts[texts.map(lambda v: isinstance(v, str) and _NUMBER.fullmatch(v) is not None).to_numpy(bool)]
        if len(bare):
            raise EntityRowError(f"{what} {values.name!r} ", bare.index[0], f" ({bare.iloc[0]!r}): a number, not an "
                                 "instant (it would be read as a year, or a year and month; give a date and time)")
    return parsed


# Numbers as text (seconds since 1970, say), and the one form of them that is a date (20240101)
_EPOCH_LIKE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)", re.ASCII)
_BASIC_DATE = re.compile(r"\d{8}", re.ASCII)
_EPOCH_HINT = ("if they count seconds or milliseconds since 1970, convert them: "
               "pd.to_datetime(column, unit='s', utc=True), or unit='ms'")

# Up to four bare digits, or digits with a decimal point ('20240101' is a date: not matched)
_NUMBER = re.compile(r"^\s*[+-]?(\d{1,4}|\d+\.\d*|\.\d+)\s*$")


def _impossible(value: object) -> str | None:
    """Why text in the form of an ISO 8601 instant names none (2013-02-30, 2013-W54-1, 2013-366,
    25:00, an offset of a day), or None. pandas says such text "is not ISO8601 format", which
    sends the user looking for another format."""
    if not isinstance(value, str) or not value.isascii():
        return None
    text = _LOWER_SEPARATORS.sub(_upper_cased_separator, value.strip())
    if re.fullmatch(r"\d{12}|\d{14}", text, re.ASCII) and _is_a_day(text[:4], text[4:6], text[6:8]):
        return f"not an instant: a date and time without ISO 8601's 'T'? (write {text[:8]}T{text[8:]})"
    if _EPOCH_LIKE.fullmatch(text) and not _BASIC_DATE.fullmatch(text):
        return f"a number, not an instant ({_EPOCH_HINT})"
    if (match := _WEEK_DATE.match(text) if "W" in text else _ORDINAL_DATE.match(text)) \
            and _calendar_date(match) == match.group(0):  # (left as written: no such day)
        return f"no such date ({_no_such_day(match)})"
    try:
        datetime.fromisoformat(_iso_text(text))
    except ValueError as exc:
        detail = str(exc).splitlines()[0]
        if detail.startswith(("year", "month", "day")):
            return f"no such date ({detail})"
        if detail.startswith(("hour", "minute", "second", "microsecond")):
            return f"no such time of day ({detail})"
        if detail.startswith("offset"):
            return "no such UTC offset (offsets are less than 24 hours)"
    return None  # (not in an instant's form at all, or a form Python reads and pandas does not)


def _is_a_day(year: str, month: str, day: str) -> bool:
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        return False
    return True


def _no_such_day(match: re.Match) -> str:
    """Why a week or ordinal date matched by ``_WEEK_DATE`` or ``_ORDINAL_DATE`` has no day."""
    year = int(match.group(2))
    if year < 1:
        return "year 0 is out of range"
    if match.re is _WEEK_DATE:
        week, day = (int(match.group(3)), int(match.group(4))) if match.group(3) else \
            (int(match.group(5)), int(match.group(6)))
        weeks = date(year, 12, 28).isocalendar()[1]  # (28 December is always in the year's last week)
        return "a week's days are 1 to 7" if not 1 <= day <= 7 else f"{year} has ISO weeks 1 to {weeks}"
    days = (date(year, 12, 31) - date(year, 1, 1)).days + 1
    return f"{year} has days 001 to {days}"


def _not_iso(value: object) -> bool:
    """Whether ``value`` is text Python does not read as ISO 8601."""
    try:
        _iso_datetime(value)
    except (ValueError, TypeError):
        return True
    return False


def _iso_datetime(value: object) -> object:
    """ISO 8601 text, a pandas Timestamp or a numpy datetime64 as a Python datetime (naive or
    aware; in microseconds, as the column beside an instant beyond 2262 is read: pandas would
    keep a Timestamp in nanoseconds, and fail on the other); anything else as it is."""
    if isinstance(value, str):
        return datetime.fromisoformat(_iso_text(value.strip()))
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime(warn=False)
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[us]").item()
    return value
