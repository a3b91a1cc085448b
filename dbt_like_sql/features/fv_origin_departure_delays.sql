-- Congestion at each NYC origin: departure delays of flights that had already left.
-- One row per instant at which a window's value changed: when a departure became known, and
-- just after it left each window (1 h and 3 h later). Without the second kind a row would keep
-- serving "the last hour" as of the last departure, hours after that hour had passed. No row
-- lies past the instant up to which every flight is loaded (int_flights_complete_until): past it
-- a window would count only the flights loaded so far (the online store is current as of the
-- latest row).
with departed as (
    select * from {{ ref('int_flight_outcomes') }}
    where dep_delay_minutes is not null
),

exits as (
    -- (windows include their first instant: a departure leaves 1 µs after its hour)
    select origin, dep_known_at + interval 1 hour + interval 1 microsecond as known_at from departed
    union all
    select origin, dep_known_at + interval 3 hours + interval 1 microsecond from departed
),

instants as (
    select * from (
        select origin, dep_known_at as known_at, dep_delay_minutes as delay, flight_id from departed
        union all
        select origin, known_at, null, null from exits
    )
    where known_at <= (select complete_until from {{ ref('int_flights_complete_until') }})
),

rolling as (
    select
        origin,
        known_at,
        avg(delay) over last_hour as origin_dep_delay_mean_1h,
        avg(delay) over last_3_hours as origin_dep_delay_mean_3h,
        avg((delay > 15)::double) over last_hour as origin_dep_delayed_share_1h,
        count(delay) over last_hour as origin_departures_1h,
        row_number() over (partition by origin, known_at order by flight_id) as instant_row
    from instants
    window
        last_hour as (
            partition by origin order by known_at
            range between interval 1 hour preceding and current row
        ),
        last_3_hours as (
            partition by origin order by known_at
            range between interval 3 hours preceding and current row
        )
),

final as (
    select * exclude (instant_row) from rolling where instant_row = 1
    union all
    -- A month missing before loaded ones: past its start every window is unknown (until it is
    -- loaded and the view rebuilt), rather than as of the last rows before it.
    select distinct origin,
        (select complete_until from {{ ref('int_flights_complete_until') }}) + interval 1 microsecond,
        null, null, null, null
    from departed where (select flights_after from {{ ref('int_flights_complete_until') }})
)

select * from final
