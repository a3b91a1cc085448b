"""Features: the SQL models of dbt_like_sql/ in DuckDB, and the feature store built on them."""
