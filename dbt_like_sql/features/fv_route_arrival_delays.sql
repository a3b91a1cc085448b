-- Trailing 28-day arrival-delay statistics per route (origin, dest), from arrived flights.
with arrived as (
    select * from {{ ref('int_flight_outcomes') }}
    where arr_delay_minutes is not null
),

rolling as (
    select
        origin,
        dest,
        arr_known_at as known_at,
        avg(arr_delay_minutes) over last_4_weeks as route_arr_delay_mean_28d,
        avg(case when arr_delay_minutes > 15 then 1.0 else 0.0 end) over last_4_weeks
            as route_delayed_share_28d,
        count(*) over last_4_weeks as route_arrivals_28d,
        row_number() over (partition by origin, dest, arr_known_at order by flight_id) as instant_row
    from arrived
    window last_4_weeks as (
        partition by origin, dest order by arr_known_at
        range between interval 28 days preceding and current row
    )
),

final as (
    select * exclude (instant_row) from rolling where instant_row = 1
)

select * from final
