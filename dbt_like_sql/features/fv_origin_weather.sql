-- The latest hourly weather observation at each NYC origin.
with weather as (
    select * from {{ ref('stg_weather') }}
),

final as (
    select
        origin,
        observed_at,
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
