-- For every flight: when it departed and arrived as UTC instants, and when each fact became known.
-- arr_hhmm_local is local time at the destination: it is placed on the departure's date in the
-- destination's time zone, and on the next day when that would be before the departure.
-- Four destinations are missing from airports (BQN, PSE, SJU in Puerto Rico, STT in the US Virgin
-- Islands): their zones are supplied below. Any other destination without a zone gets an arrival
-- estimated late on purpose (departure + air time + 60 minutes), flagged, so that it is never
-- treated as known before it really landed.
-- A departure or arrival is known one minute after it happens, and never before the flight's own
-- scheduled departure: so no flight ever sees its own outcome at its prediction time. A label
-- without an arrival instant is known one day after the scheduled departure.
with flights as (
    select * from {{ ref('stg_flights') }}
),

airports as (
    select airport_code, time_zone from {{ ref('stg_airports') }}
),

missing_zones as (
    select * from (values
        ('BQN', 'America/Puerto_Rico'),
        ('PSE', 'America/Puerto_Rico'),
        ('SJU', 'America/Puerto_Rico'),
        ('STT', 'America/St_Thomas')
    ) as zones (airport_code, time_zone)
),

departed as (
    select
        flights.*,
        coalesce(airports.time_zone, missing_zones.time_zone) as dest_time_zone,
        case
            when dep_delay_minutes is not null
                then sched_dep_utc + to_minutes(cast(dep_delay_minutes as bigint))
        end as dep_utc
    from flights
    left join airports on airports.airport_code = flights.dest
    left join missing_zones on missing_zones.airport_code = flights.dest
),

arrival_candidates as (
    select
        *,
        case
            when arr_hhmm_local is not null and dest_time_zone is not null and dep_utc is not null
                then timezone(
                    dest_time_zone,
                    cast(cast(timezone(dest_time_zone, dep_utc) as date) as timestamp)
                    + to_hours(arr_hhmm_local // 100)
                    + to_minutes(arr_hhmm_local % 100)
                )
        end as arr_candidate_utc
    from departed
),

arrivals as (
    select
        *,
        case
            when arr_candidate_utc is null and dep_utc is not null and air_time_minutes is not null
                then dep_utc + to_minutes(cast(air_time_minutes as bigint) + 60)
            when arr_candidate_utc < dep_utc then arr_candidate_utc + interval 1 day
            else arr_candidate_utc
        end as arr_utc,
        arr_candidate_utc is null and arr_hhmm_local is not null as arr_utc_is_estimated
    from arrival_candidates
),

final as (
    select
        flight_id,
        carrier,
        tailnum,
        origin,
        dest,
        sched_dep_utc,
        dep_utc,
        arr_utc,
        arr_utc_is_estimated,
        dep_delay_minutes,
        arr_delay_minutes,
        dep_hhmm_local is null as is_cancelled,
        dep_hhmm_local is not null and arr_delay_minutes is null as is_diverted,
        case
            when dep_utc is not null then greatest(dep_utc, sched_dep_utc) + interval 1 minute
        end as dep_known_at,
        case
            when arr_delay_minutes is null then null
            when arr_utc is null then sched_dep_utc + interval 1 day
            else greatest(arr_utc, sched_dep_utc) + interval 1 minute
        end as arr_known_at
    from arrivals
)

select * from final
