-- Aircraft registry attributes, one row per tail number.
with source as (
    select * from {{ source('validated', 'planes') }}
),

final as (
    select
        tailnum,
        cast(year as integer) as year_built,
        type as aircraft_type,
        manufacturer,
        model,
        cast(engines as integer) as engines,
        cast(seats as integer) as seats,
        speed as cruise_speed_mph,
        engine as engine_type
    from source
)

select * from final
