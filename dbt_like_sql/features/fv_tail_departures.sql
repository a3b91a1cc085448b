-- The most recent departure from NYC of the same aircraft: a late plane tends to stay late.
-- One row per instant the values changed: a departure became known, or left the 24-hour count.
-- None past the instant up to which every flight is loaded.
with departed as (
    select * from {{ ref('int_flight_outcomes') }}
    where dep_delay_minutes is not null and tailnum is not null
),

instants as (
    select * from (
        select tailnum, dep_known_at as known_at, dep_delay_minutes as delay, flight_id from departed
        union all
        -- (the window includes its first instant: a departure leaves 1 µs after its day)
        select tailnum, dep_known_at + interval 1 day + interval 1 microsecond, null, null from departed
    )
    where known_at <= (select complete_until from {{ ref('int_flights_complete_until') }})
),

latest as (
    select
        *,
        -- The latest departure (of several at one instant, the last flight's) and when it was known.
        last_value(delay ignore nulls) over up_to_here as last_delay,
        last_value(case when delay is not null then known_at end ignore nulls) over up_to_here as last_known_at
    from instants
    window up_to_here as (
        partition by tailnum order by known_at, flight_id nulls first
        rows between unbounded preceding and current row
    )
),

rolling as (
    select
        tailnum,
        known_at,
        -- The previous departure's delay for a day (inclusive), as the 24-hour count keeps it.
        case when last_known_at >= known_at - interval 1 day then last_delay end as tail_last_dep_delay,
        count(delay) over last_day as tail_departures_24h,
        row_number() over (partition by tailnum, known_at order by flight_id desc nulls last) as instant_row
    from latest
    window last_day as (
        partition by tailnum order by known_at
        range between interval 1 day preceding and current row
    )
),

final as (
    select * exclude (instant_row) from rolling where instant_row = 1
    union all
    -- A month missing before loaded ones: past its start every window is unknown (until it is
    -- loaded and the view rebuilt), rather than as of the last rows before it.
    select distinct tailnum,
        (select complete_until from {{ ref('int_flights_complete_until') }}) + interval 1 microsecond,
        null, null
    from departed where (select flights_after from {{ ref('int_flights_complete_until') }})
)

select * from final
