-- Trailing 28-day arrival-delay statistics per route (origin, dest), from arrived flights.
-- One row per instant the statistics changed: an arrival became known, or left the window
-- (28 days later). None past the instant up to which every flight is loaded.
with arrived as (
    select * from {{ ref('int_flight_outcomes') }}
    where arr_delay_minutes is not null
),

instants as (
    select * from (
        select origin, dest, arr_known_at as known_at, arr_delay_minutes as delay, flight_id from arrived
        union all
        -- (the window includes its first instant: an arrival leaves 1 µs after its 28 days)
        select origin, dest, arr_known_at + interval 28 days + interval 1 microsecond, null, null from arrived
    )
    where known_at <= (select complete_until from {{ ref('int_flights_complete_until') }})
),

rolling as (
    select
        origin,
        dest,
        known_at,
        avg(delay) over last_4_weeks as route_arr_delay_mean_28d,
        avg((delay > 15)::double) over last_4_weeks as route_delayed_share_28d,
        count(delay) over last_4_weeks as route_arrivals_28d,
        row_number() over (partition by origin, dest, known_at order by flight_id) as instant_row
    from instants
    window last_4_weeks as (
        partition by origin, dest order by known_at
        range between interval 28 days preceding and current row
    )
),

final as (
    select * exclude (instant_row) from rolling where instant_row = 1
    union all
    -- A month missing before loaded ones: past its start every window is unknown (until it is
    -- loaded and the view rebuilt), rather than as of the last rows before it.
    select distinct origin, dest,
        (select complete_until from {{ ref('int_flights_complete_until') }}) + interval 1 microsecond,
        null, null, null
    from arrived where (select flights_after from {{ ref('int_flights_complete_until') }})
)

select * from final
