-- One row per validated flight: renamed, typed, and its scheduled departure as a UTC instant.
-- hour/minute and the HHMM columns are New York local time; time_hour is the UTC instant of the
-- scheduled local hour, so the scheduled departure instant is time_hour + minute.
with source as (
    select * from {{ source('validated', 'flights') }}
),

final as (
    select
        printf('%04d-%02d-%02dT%02d%02d_%s%d_%s', year, month, day, hour, minute, carrier, flight, origin)
            as flight_id,
        cast(year as integer) as year,
        cast(month as integer) as month,
        cast(day as integer) as day,
        carrier,
        cast(flight as integer) as flight_number,
        tailnum,
        origin,
        dest,
        distance as distance_miles,
        cast(hour as integer) as sched_dep_hour_local,
        cast(minute as integer) as sched_dep_minute_local,
        cast(sched_dep_time as integer) as sched_dep_hhmm_local,
        cast(sched_arr_time as integer) as sched_arr_hhmm_local,
        cast(dep_time as integer) as dep_hhmm_local,
        cast(arr_time as integer) as arr_hhmm_local,
        dep_delay as dep_delay_minutes,
        arr_delay as arr_delay_minutes,
        air_time as air_time_minutes,
        time_hour + to_minutes(cast(minute as bigint)) as sched_dep_utc,
        _partition as source_month
    from source
)

select * from final
