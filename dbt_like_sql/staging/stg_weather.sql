-- Hourly weather observations at the three NYC airports; observed_at is a UTC instant.
with source as (
    select * from {{ source('validated', 'weather') }}
),

final as (
    select
        origin,
        time_hour as observed_at,
        temp as temp_f,
        dewp as dewpoint_f,
        humid as humidity_pct,
        wind_dir as wind_dir_deg,
        wind_speed as wind_speed_mph,
        wind_gust as wind_gust_mph,
        precip as precip_in,
        pressure as pressure_mb,
        visib as visibility_miles
    from source
)

select * from final
