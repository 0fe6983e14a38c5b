-- Logbook's open layout, version 1 (Trino / Presto, Hive connector; catalog hive, schema logbook).
-- The files: <location>/logbook-parquet/v1/account_id=<id>/region=<region>/dt=<YYYY-MM-DD>/*.parquet
-- Replace <location> with the bucket and key prefix (s3://my-bucket/my-prefix).
-- Columns are only ever added at the end; see docs/open-layout.md.
-- The Hive connector wants the partition columns last.
CREATE TABLE IF NOT EXISTS hive.logbook.invocations (
  "timestamp"                     timestamp(3),
  "request_id"                    varchar,
  "operation"                     varchar,
  "model_id"                      varchar,
  "schema_type"                   varchar,
  "schema_version"                varchar,
  "identity_arn"                  varchar,
  "inference_region"              varchar,
  "error_code"                    varchar,
  "input_content_type"            varchar,
  "input_token_count"             bigint,
  "cache_read_input_token_count"  bigint,
  "cache_write_input_token_count" bigint,
  "input_body_json"               varchar,
  "input_body_s3_path"            varchar,
  "output_content_type"           varchar,
  "output_token_count"            bigint,
  "output_body_json"              varchar,
  "output_body_s3_path"           varchar,
  "request_metadata"              varchar,
  "latency_ms"                    bigint,
  "time_to_first_token_ms"        bigint,
  "http_status"                   bigint,
  "stream"                        boolean,
  "provider"                      varchar,
  "api"                           varchar,
  "error_message"                 varchar,
  "cost"                          decimal(38,12),
  "price_catalog"                 varchar,
  "unpriced"                      varchar,
  "principal_tags"                varchar,
  "log_group"                     varchar,
  "record"                        varchar,
  "account_id"  varchar,
  "region"      varchar,
  "dt"          varchar
)
WITH (
  format = 'PARQUET',
  external_location = '<location>/logbook-parquet/v1/',
  partitioned_by = ARRAY['account_id', 'region', 'dt']
);

-- Register the partitions that exist (again after new days appear).
CALL hive.system.sync_partition_metadata('logbook', 'invocations', 'ADD');
