-- Trailing arrival-delay statistics per carrier, from flights that had already arrived.
-- One row per instant at which a carrier's statistics changed (arr_known_at).
with arrived as (
    select * from {{ ref('int_flight_outcomes') }}
    where arr_delay_minutes is not null
),

rolling as (
    select
        carrier,
        arr_known_at as known_at,
        avg(arr_delay_minutes) over last_day as carrier_arr_delay_mean_24h,
        avg(arr_delay_minutes) over last_week as carrier_arr_delay_mean_7d,
        avg(case when arr_delay_minutes > 15 then 1.0 else 0.0 end) over last_day
            as carrier_delayed_share_24h,
        avg(case when arr_delay_minutes > 15 then 1.0 else 0.0 end) over last_week
            as carrier_delayed_share_7d,
        count(*) over last_week as carrier_arrivals_7d,
        row_number() over (partition by carrier, arr_known_at order by flight_id) as instant_row
    from arrived
    window
        last_day as (
            partition by carrier order by arr_known_at
            range between interval 1 day preceding and current row
        ),
        last_week as (
            partition by carrier order by arr_known_at
            range between interval 7 days preceding and current row
        )
),

final as (
    select * exclude (instant_row) from rolling where instant_row = 1
)

select * from final
