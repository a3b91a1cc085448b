-- Airports with their IANA time zone (null for a few airports the FAA file leaves blank).
with source as (
    select * from {{ source('validated', 'airports') }}
),

final as (
    select
        faa as airport_code,
        name as airport_name,
        lat as latitude,
        lon as longitude,
        alt as altitude_ft,
        tz as utc_offset_hours,
        dst as dst_code,
        tzone as time_zone
    from source
)

select * from final
