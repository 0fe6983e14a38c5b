-- Logbook's open layout, version 1 (Amazon Athena).
-- The files: <location>/logbook-parquet/v1/account_id=<id>/region=<region>/dt=<YYYY-MM-DD>/*.parquet
-- Replace <location> with the bucket and key prefix (s3://my-bucket/my-prefix).
-- Columns are only ever added at the end; see docs/open-layout.md.
-- Partitions: MSCK REPAIR TABLE after new days appear, or the projection below
-- (uncomment it and the table needs no repair; queries must then name account_id).
CREATE EXTERNAL TABLE IF NOT EXISTS logbook_invocations (
  `timestamp`                     timestamp,
  `request_id`                    string,
  `operation`                     string,
  `model_id`                      string,
  `schema_type`                   string,
  `schema_version`                string,
  `identity_arn`                  string,
  `inference_region`              string,
  `error_code`                    string,
  `input_content_type`            string,
  `input_token_count`             bigint,
  `cache_read_input_token_count`  bigint,
  `cache_write_input_token_count` bigint,
  `input_body_json`               string,
  `input_body_s3_path`            string,
  `output_content_type`           string,
  `output_token_count`            bigint,
  `output_body_json`              string,
  `output_body_s3_path`           string,
  `request_metadata`              string,
  `latency_ms`                    bigint,
  `time_to_first_token_ms`        bigint,
  `http_status`                   bigint,
  `stream`                        boolean,
  `provider`                      string,
  `api`                           string,
  `error_message`                 string,
  `cost`                          decimal(38,12),
  `price_catalog`                 string,
  `unpriced`                      string,
  `principal_tags`                string,
  `log_group`                     string,
  `record`                        string
)
PARTITIONED BY (
  `account_id` string,
  `region`     string,
  `dt`         string
)
STORED AS PARQUET
LOCATION '<location>/logbook-parquet/v1/'
-- TBLPROPERTIES (
--   'projection.enabled' = 'true',
--   'projection.account_id.type' = 'injected',
--   'projection.region.type' = 'enum',
--   'projection.region.values' = 'us-east-1,us-west-2,eu-west-1,eu-central-1,ap-northeast-1',
--   'projection.dt.type' = 'date',
--   'projection.dt.format' = 'yyyy-MM-dd',
--   'projection.dt.range' = '2024-01-01,NOW',
--   'storage.location.template' = '<location>/logbook-parquet/v1/account_id=${account_id}/region=${region}/dt=${dt}/'
-- )
;

MSCK REPAIR TABLE logbook_invocations;
