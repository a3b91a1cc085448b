-- The instant up to which every flight's departure and arrival events are in the warehouse: the
-- start (New York time) of the first month without flights, counting from the first month
-- loaded. A flight scheduled later becomes known only after it; one scheduled earlier is loaded.
-- Trailing-window features stop here: past it a window would count only the flights loaded so
-- far (a month ingested out of order, or the next month not yet in).
with months as (
    select distinct make_date(year, month, 1) as month from {{ ref('stg_flights') }}
),

gaps as (
    select month + interval 1 month as month from months
    where month + interval 1 month not in (select month from months)
)

select timezone('America/New_York', min(month)) as complete_until from gaps
