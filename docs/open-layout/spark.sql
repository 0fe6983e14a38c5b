-- Logbook's open layout, version 1 (Apache Spark SQL).
-- The files: <location>/logbook-parquet/v1/account_id=<id>/region=<region>/dt=<YYYY-MM-DD>/*.parquet
-- Replace <location> with the bucket and key prefix (s3://my-bucket/my-prefix).
-- Columns are only ever added at the end; see docs/open-layout.md.
-- The schema is given, not inferred: inference would read account_id as a number and lose
-- its leading zeros. Use s3a:// for <location> on Hadoop's S3 connector.
CREATE TABLE IF NOT EXISTS logbook_invocations (
  `timestamp`                     TIMESTAMP,
  `request_id`                    STRING,
  `operation`                     STRING,
  `model_id`                      STRING,
  `schema_type`                   STRING,
  `schema_version`                STRING,
  `identity_arn`                  STRING,
  `inference_region`              STRING,
  `error_code`                    STRING,
  `input_content_type`            STRING,
  `input_token_count`             BIGINT,
  `cache_read_input_token_count`  BIGINT,
  `cache_write_input_token_count` BIGINT,
  `input_body_json`               STRING,
  `input_body_s3_path`            STRING,
  `output_content_type`           STRING,
  `output_token_count`            BIGINT,
  `output_body_json`              STRING,
  `output_body_s3_path`           STRING,
  `request_metadata`              STRING,
  `latency_ms`                    BIGINT,
  `time_to_first_token_ms`        BIGINT,
  `http_status`                   BIGINT,
  `stream`                        BOOLEAN,
  `provider`                      STRING,
  `api`                           STRING,
  `error_message`                 STRING,
  `cost`                          DECIMAL(38,12),
  `price_catalog`                 STRING,
  `unpriced`                      STRING,
  `principal_tags`                STRING,
  `log_group`                     STRING,
  `record`                        STRING,
  `account_id`  STRING,
  `region`      STRING,
  `dt`          STRING
)
USING PARQUET
PARTITIONED BY (account_id, region, dt)
LOCATION '<location>/logbook-parquet/v1/';

MSCK REPAIR TABLE logbook_invocations;
