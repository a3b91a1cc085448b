-- The latest hourly weather report at each NYC origin, as of when it was available.
-- time_hour labels the hour a report belongs to, but the report is taken at about :51 and its
-- precipitation is summed up to then: it is available at the end of its hour, not the start.
with weather as (
    select * from {{ ref('stg_weather') }}
),

final as (
    select
        origin,
        observed_at,
        observed_at + interval 1 hour as available_at,
        temp_f,
        dewpoint_f,
        humidity_pct,
        wind_dir_deg,
        wind_speed_mph,
        wind_gust_mph,
        precip_in,
        pressure_mb,
        visibility_miles
    from weather
)

select * from final
