-- The most recent departure from NYC of the same aircraft: a late plane tends to stay late.
with departed as (
    select * from {{ ref('int_flight_outcomes') }}
    where dep_delay_minutes is not null and tailnum is not null
),

rolling as (
    select
        tailnum,
        dep_known_at as known_at,
        dep_delay_minutes as tail_last_dep_delay,
        count(*) over last_day as tail_departures_24h,
        row_number() over (partition by tailnum, dep_known_at order by flight_id desc) as instant_row
    from departed
    window last_day as (
        partition by tailnum order by dep_known_at
        range between interval 1 day preceding and current row
    )
),

final as (
    select * exclude (instant_row) from rolling where instant_row = 1
)

select * from final
