-- Logbook's open layout, version 1 (DuckDB).
-- The files: <location>/logbook-parquet/v1/account_id=<id>/region=<region>/dt=<YYYY-MM-DD>/*.parquet
-- Replace <location> with the bucket and key prefix (s3://my-bucket/my-prefix).
-- Columns are only ever added at the end; see docs/open-layout.md.
-- For s3:// locations: INSTALL httpfs; LOAD httpfs; and a CREATE SECRET for the bucket.
-- hive_types keeps account_id text (auto-detection would make it a number).
-- The partition columns go last, in path order, as in the other engines' tables.
CREATE OR REPLACE VIEW invocations AS
SELECT * EXCLUDE (account_id, region, dt), account_id, region, dt
FROM read_parquet(
  '<location>/logbook-parquet/v1/*/*/*/*.parquet',
  hive_partitioning = true,
  hive_types = {'account_id': 'VARCHAR', 'region': 'VARCHAR', 'dt': 'DATE'}
);
