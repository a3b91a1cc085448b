-- The instant up to which every flight's departure and arrival events are in the warehouse: the
-- start (New York time) of the first month without flights, counting from the first month
-- loaded. A flight scheduled later becomes known only after it; one scheduled earlier is loaded.
-- Trailing-window features stop here: past it a window would count only the flights loaded so
-- far. NULL when no flight is loaded. flights_after: months past that one are loaded (a month
-- missing or ingested out of order), so what lies past it is unknown, not merely not yet known.
with months as (
    select distinct make_date(year, month, 1) as month from {{ ref('stg_flights') }}
),

first_missing as (
    select min(month + interval 1 month) as month from months
    where month + interval 1 month not in (select month from months)
)

select
    timezone('America/New_York', first_missing.month) as complete_until,
    exists (select 1 from months where months.month > first_missing.month) as flights_after
from first_missing
