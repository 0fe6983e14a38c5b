//! Bedrock's runtime metrics (namespace `AWS/Bedrock`, dimension `ModelId`) computed from
//! the records in the log groups, for the CloudWatch API (`GetMetricStatistics`,
//! `GetMetricData`, `ListMetrics`). The records are the durable source, so the series
//! survive restarts and go back as far as the log groups' retention.
//!
//! Each record contributes one value to a metric when it qualifies: 1 for the counting
//! metrics, the measured quantity for the others. The rules match `ops::metrics` (the
//! Prometheus endpoint): throttles count only as throttles; a call refused before a model
//! was chosen is a client error, not an invocation.

use crate::QueryError;

/// The namespace.
pub const NAMESPACE: &str = "AWS/Bedrock";
/// The one dimension.
pub const DIMENSION: &str = "ModelId";

/// Logbook's governance metrics (no dimension).
pub const GOVERNANCE_NAMESPACE: &str = "Logbook/Governance";

/// The governance metrics: unpriced calls (from the records), regions where logging is
/// off, and how long the most stalled destination has waited (both live gauges).
pub const GOVERNANCE_METRICS: &[(&str, &str)] = &[
    ("UnpricedInvocations", "Count"),
    ("RegionsNotRecording", "Count"),
    ("StalledDestinationSeconds", "Seconds"),
];

/// Unpriced calls per period (epoch seconds, count).
pub fn unpriced_sql(period_s: i64) -> String {
    format!(
        "SELECT to_unixtime(date_bin(INTERVAL '{period_s} seconds', timestamp)) AS t, CAST(count(*) AS DOUBLE) \
         FROM invocations WHERE unpriced IS NOT NULL GROUP BY 1 ORDER BY 1"
    )
}

/// (name, CloudWatch unit, value expression, filter).
const INVOKED: &str = "provider IS NOT NULL AND coalesce(http_status, 0) <> 429 AND coalesce(error_code, '') <> 'ThrottlingException'";
const THROTTLED: &str = "(http_status = 429 OR error_code = 'ThrottlingException')";

/// Every metric: name and unit.
pub const METRICS: &[(&str, &str)] = &[
    ("Invocations", "Count"),
    ("InvocationLatency", "Milliseconds"),
    ("InvocationClientErrors", "Count"),
    ("InvocationServerErrors", "Count"),
    ("InvocationThrottles", "Count"),
    ("InputTokenCount", "Count"),
    ("OutputTokenCount", "Count"),
    ("CacheReadInputTokens", "Count"),
    ("CacheWriteInputTokens", "Count"),
    ("TimeToFirstToken", "Milliseconds"),
    ("EstimatedTPMQuotaUsage", "Count"),
];

fn definition(metric: &str) -> Option<(String, String)> {
    let tpm = "coalesce(input_token_count, 0) + coalesce(cache_write_input_token_count, 0) + \
               coalesce(output_token_count, 0) * (CASE WHEN model_id LIKE '%anthropic.claude-3-7%' \
               OR model_id LIKE '%anthropic.claude-sonnet-4%' OR model_id LIKE '%anthropic.claude-opus-4%' \
               OR model_id LIKE '%anthropic.claude-haiku-4%' THEN 5 ELSE 1 END)";
    let (v, f): (&str, String) = match metric {
        "Invocations" => ("1", INVOKED.into()),
        "InvocationClientErrors" => (
            "1",
            format!("http_status >= 400 AND http_status < 500 AND NOT {THROTTLED}"),
        ),
        "InvocationServerErrors" => ("1", "http_status >= 500".into()),
        "InvocationThrottles" => ("1", THROTTLED.into()),
        "InvocationLatency" => ("latency_ms", INVOKED.into()),
        "InputTokenCount" => (
            "input_token_count",
            format!("{INVOKED} AND input_token_count IS NOT NULL"),
        ),
        "OutputTokenCount" => (
            "output_token_count",
            format!("{INVOKED} AND output_token_count IS NOT NULL"),
        ),
        "CacheReadInputTokens" => (
            "cache_read_input_token_count",
            format!("{INVOKED} AND cache_read_input_token_count IS NOT NULL"),
        ),
        "CacheWriteInputTokens" => (
            "cache_write_input_token_count",
            format!("{INVOKED} AND cache_write_input_token_count IS NOT NULL"),
        ),
        "TimeToFirstToken" => (
            "time_to_first_token_ms",
            format!("{INVOKED} AND time_to_first_token_ms IS NOT NULL"),
        ),
        "EstimatedTPMQuotaUsage" => (tpm, INVOKED.into()),
        _ => return None,
    };
    Some((v.to_string(), f))
}

/// The unit of a metric, if it is one.
pub fn unit(metric: &str) -> Option<&'static str> {
    METRICS.iter().find(|(m, _)| *m == metric).map(|(_, u)| *u)
}

/// A statistic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    /// Number of values.
    SampleCount,
    /// Sum.
    Sum,
    /// Mean.
    Average,
    /// Least.
    Minimum,
    /// Greatest.
    Maximum,
    /// `pNN` / `pNN.N`: an (approximate, t-digest) percentile.
    Percentile(f64),
}

impl Stat {
    /// Parse `Sum`, `p99`, `p99.9`, ...
    pub fn parse(s: &str) -> Result<Stat, QueryError> {
        Ok(match s {
            "SampleCount" => Stat::SampleCount,
            "Sum" => Stat::Sum,
            "Average" => Stat::Average,
            "Minimum" => Stat::Minimum,
            "Maximum" => Stat::Maximum,
            _ => match s.strip_prefix('p').and_then(|p| p.parse::<f64>().ok()) {
                Some(p) if (0.0..=100.0).contains(&p) && p.is_finite() => Stat::Percentile(p),
                _ => {
                    return Err(QueryError::Invalid(format!(
                        "The statistic {s:?} is not valid: use SampleCount, Sum, Average, Minimum, Maximum or pNN.NN"
                    )))
                }
            },
        })
    }

    fn sql(self) -> String {
        match self {
            Stat::SampleCount => "CAST(count(v) AS DOUBLE)".into(),
            Stat::Sum => "CAST(sum(v) AS DOUBLE)".into(),
            Stat::Average => "avg(v)".into(),
            Stat::Minimum => "CAST(min(v) AS DOUBLE)".into(),
            Stat::Maximum => "CAST(max(v) AS DOUBLE)".into(),
            Stat::Percentile(p) => format!("approx_percentile_cont(v, {})", p / 100.0),
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL over `invocations` giving one row per period that has data: the period's
/// start in epoch seconds, then one column per statistic. `model`: the `ModelId`
/// dimension's value.
pub fn statistics_sql(
    metric: &str,
    model: &str,
    period_s: i64,
    stats: &[Stat],
) -> Result<String, QueryError> {
    let (v, filter) = definition(metric)
        .ok_or_else(|| QueryError::Invalid(format!("no metric {metric:?} in {NAMESPACE}")))?;
    if period_s <= 0 {
        return Err(QueryError::Invalid("The period must be positive".into()));
    }
    let cols: Vec<String> = stats.iter().map(|s| s.sql()).collect();
    Ok(format!(
        "SELECT to_unixtime(date_bin(INTERVAL '{period_s} seconds', timestamp)) AS t, {} \
         FROM (SELECT timestamp, CAST({v} AS DOUBLE) AS v FROM invocations WHERE model_id = {} AND {filter}) \
         GROUP BY 1 ORDER BY 1",
        if cols.is_empty() { "count(v)".to_string() } else { cols.join(", ") },
        quote(model),
    ))
}

/// The SQL listing the models that have records (each has every metric).
pub fn models_sql() -> &'static str {
    "SELECT DISTINCT model_id FROM invocations WHERE model_id IS NOT NULL ORDER BY 1"
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_metrics() {
        assert_eq!(Stat::parse("p99.9").unwrap(), Stat::Percentile(99.9));
        assert!(Stat::parse("p101").is_err() && Stat::parse("Median").is_err());
        assert!(statistics_sql("Nope", "m", 60, &[Stat::Sum]).is_err());
        assert!(statistics_sql("Invocations", "m", 0, &[Stat::Sum]).is_err());
        let q = statistics_sql(
            "InvocationLatency",
            "it's",
            300,
            &[Stat::Sum, Stat::Percentile(99.0)],
        )
        .unwrap();
        assert!(
            q.contains("'it''s'") && q.contains("approx_percentile_cont(v, 0.99)"),
            "{q}"
        );
        assert!(METRICS.iter().all(|(m, _)| definition(m).is_some()));
    }
}
