-- Congestion at each NYC origin: departure delays of flights that had already left.
with departed as (
    select * from {{ ref('int_flight_outcomes') }}
    where dep_delay_minutes is not null
),

rolling as (
    select
        origin,
        dep_known_at as known_at,
        avg(dep_delay_minutes) over last_hour as origin_dep_delay_mean_1h,
        avg(dep_delay_minutes) over last_3_hours as origin_dep_delay_mean_3h,
        avg(case when dep_delay_minutes > 15 then 1.0 else 0.0 end) over last_hour
            as origin_dep_delayed_share_1h,
        count(*) over last_hour as origin_departures_1h,
        row_number() over (partition by origin, dep_known_at order by flight_id) as instant_row
    from departed
    window
        last_hour as (
            partition by origin order by dep_known_at
            range between interval 1 hour preceding and current row
        ),
        last_3_hours as (
            partition by origin order by dep_known_at
            range between interval 3 hours preceding and current row
        )
),

final as (
    select * exclude (instant_row) from rolling where instant_row = 1
)

select * from final
