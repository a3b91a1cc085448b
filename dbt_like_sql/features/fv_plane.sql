-- Static aircraft attributes. The registry is a snapshot with no history, so its rows are valid
-- from 2000-01-01 (before every flight of the data); age is counted at 2013.
with planes as (
    select * from {{ ref('stg_planes') }}
),

final as (
    select
        tailnum,
        timestamptz '2000-01-01 00:00:00+00' as valid_from,
        year_built,
        2013 - year_built as plane_age_years,
        seats,
        engines,
        aircraft_type,
        manufacturer,
        engine_type
    from planes
)

select * from final
