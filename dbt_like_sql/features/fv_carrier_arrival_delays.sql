-- Trailing arrival-delay statistics per carrier, from flights that had already arrived.
-- One row per instant at which a carrier's statistics changed: when an arrival became known,
-- and just after it left each window (24 h and 7 days later), so that a quiet carrier's
-- "last 24 h" is not the last 24 h before its last arrival. None past the instant up to which
-- every flight is loaded (int_flights_complete_until).
with arrived as (
    select * from {{ ref('int_flight_outcomes') }}
    where arr_delay_minutes is not null
),

exits as (
    -- (windows include their first instant: an arrival leaves 1 µs after its day)
    select carrier, arr_known_at + interval 1 day + interval 1 microsecond as known_at from arrived
    union all
    select carrier, arr_known_at + interval 7 days + interval 1 microsecond from arrived
),

instants as (
    select * from (
        select carrier, arr_known_at as known_at, arr_delay_minutes as delay, flight_id from arrived
        union all
        select carrier, known_at, null, null from exits
    )
    where known_at <= (select complete_until from {{ ref('int_flights_complete_until') }})
),

rolling as (
    select
        carrier,
        known_at,
        avg(delay) over last_day as carrier_arr_delay_mean_24h,
        avg(delay) over last_week as carrier_arr_delay_mean_7d,
        avg((delay > 15)::double) over last_day as carrier_delayed_share_24h,
        avg((delay > 15)::double) over last_week as carrier_delayed_share_7d,
        count(delay) over last_week as carrier_arrivals_7d,
        row_number() over (partition by carrier, known_at order by flight_id) as instant_row
    from instants
    window
        last_day as (
            partition by carrier order by known_at
            range between interval 1 day preceding and current row
        ),
        last_week as (
            partition by carrier order by known_at
            range between interval 7 days preceding and current row
        )
),

final as (
    select * exclude (instant_row) from rolling where instant_row = 1
    union all
    -- A month missing before loaded ones: past its start every window is unknown (until it is
    -- loaded and the view rebuilt), rather than as of the last rows before it.
    select distinct carrier,
        (select complete_until from {{ ref('int_flights_complete_until') }}) + interval 1 microsecond,
        null, null, null, null, null
    from arrived where (select flights_after from {{ ref('int_flights_complete_until') }})
)

select * from final
