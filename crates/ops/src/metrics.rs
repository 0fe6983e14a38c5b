//! Bedrock's runtime metrics (namespace `AWS/Bedrock`, dimension `ModelId`), kept from the
//! records themselves and exposed in the Prometheus / OpenMetrics text format.
//!
//! Each Bedrock metric maps to one Prometheus metric, named by the usual conventions
//! (snake case, base units, `_total` on counters), labelled `model_id`:
//!
//! | Bedrock | Prometheus |
//! |---|---|
//! | `Invocations` | `bedrock_invocations_total` |
//! | `InvocationLatency` (ms) | `bedrock_invocation_latency_seconds` (histogram) |
//! | `InvocationClientErrors` | `bedrock_invocation_client_errors_total` |
//! | `InvocationServerErrors` | `bedrock_invocation_server_errors_total` |
//! | `InvocationThrottles` | `bedrock_invocation_throttles_total` |
//! | `InputTokenCount` / `OutputTokenCount` | `bedrock_input_tokens_total` / `bedrock_output_tokens_total` |
//! | `CacheReadInputTokens` / `CacheWriteInputTokens` | `bedrock_cache_read_input_tokens_total` / `bedrock_cache_write_input_tokens_total` |
//! | `TimeToFirstToken` (ms, streams) | `bedrock_time_to_first_token_seconds` (histogram) |
//! | `EstimatedTPMQuotaUsage` | `bedrock_estimated_tpm_quota_usage_total` |
//!
//! plus `logbook_cost_usd_total` and `logbook_unpriced_invocations_total` by model, and
//! the log-delivery metrics (no dimension) a [`DeliverySource`] reports at scrape time.
//! The server adds what it reads at scrape time itself: redactions per detector
//! ([`Metrics::add_counters`]) and the journal's fdatasync durations
//! (`logbook_journal_fsync_duration_seconds`, [`Metrics::add_histogram`]).
//!
//! Counting rules (Bedrock's newer definition): `Invocations` counts calls accepted for
//! processing, including those that failed later, and excludes throttled calls and calls
//! refused before a model was chosen (validation, authorization); a throttle counts only
//! as a throttle; 4xx other than 429 are client errors, 5xx server errors.

use logbook_record::InvocationRecord;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The `model_id` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// The model id as the caller sent it (Bedrock's `ModelId` dimension).
    pub model_id: String,
}

/// Most distinct model ids tracked; calls to further models count under `other`, so a
/// caller inventing model ids cannot grow the registry without bound.
pub const MAX_MODELS: usize = 1000;

type Hist = Family<ModelLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 10 ms .. ~2.6 min: model calls.
    Histogram::new([
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 160.0,
    ])
}

fn ttft_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// One log-delivery counter, read at scrape time.
#[derive(Debug, Clone)]
pub struct DeliverySample {
    /// Prometheus name without `_total` (e.g. `bedrock_model_invocation_logs_s3_delivery_success`).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Value.
    pub value: u64,
}

/// Where the log-delivery counters come from (the server's destinations).
pub type DeliverySource = Arc<dyn Fn() -> Vec<DeliverySample> + Send + Sync>;

#[derive(Clone)]
struct DeliveryCollector(DeliverySource);

impl std::fmt::Debug for DeliveryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeliveryCollector")
    }
}

impl prometheus_client::collector::Collector for DeliveryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for s in (self.0)() {
            let c = ConstCounter::new(s.value);
            let m = encoder.encode_descriptor(s.name, s.help, None, c.metric_type())?;
            c.encode(m)?;
        }
        Ok(())
    }
}

/// A labelled counter read at scrape time: (labels, value).
pub type LabelledSource = Arc<dyn Fn() -> Vec<(Vec<(String, String)>, u64)> + Send + Sync>;

struct LabelledCollector {
    name: &'static str,
    help: &'static str,
    source: LabelledSource,
}

impl std::fmt::Debug for LabelledCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LabelledCollector({})", self.name)
    }
}

impl prometheus_client::collector::Collector for LabelledCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = (self.source)();
        if samples.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            self.name,
            self.help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (labels, value) in samples {
            let c = ConstCounter::new(value);
            c.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A histogram read at scrape time: each bucket's upper bound (the last `f64::MAX`, no
/// bound) with the count in that bucket alone, and the sum of the observations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSample {
    /// (upper bound, count in this bucket alone), bounds ascending.
    pub buckets: Vec<(f64, u64)>,
    /// The sum of every observation, in the metric's unit.
    pub sum: f64,
}

/// Where a histogram read at scrape time comes from.
pub type HistogramSource = Arc<dyn Fn() -> HistogramSample + Send + Sync>;

struct HistogramCollector {
    name: &'static str,
    help: &'static str,
    source: HistogramSource,
}

impl std::fmt::Debug for HistogramCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HistogramCollector({})", self.name)
    }
}

impl prometheus_client::collector::Collector for HistogramCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let h = (self.source)();
        let mut metric = encoder.encode_descriptor(
            self.name,
            self.help,
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        // The count from the buckets read, so the two always agree.
        let count = h.buckets.iter().map(|(_, n)| n).sum();
        metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum, count, &h.buckets, None,
        )
    }
}

/// The metrics of the calls served.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    models: std::sync::Mutex<std::collections::HashSet<String>>,
    invocations: Family<ModelLabel, Counter>,
    latency: Hist,
    client_errors: Family<ModelLabel, Counter>,
    server_errors: Family<ModelLabel, Counter>,
    throttles: Family<ModelLabel, Counter>,
    input_tokens: Family<ModelLabel, Counter>,
    output_tokens: Family<ModelLabel, Counter>,
    cache_read: Family<ModelLabel, Counter>,
    cache_write: Family<ModelLabel, Counter>,
    ttft: Hist,
    tpm: Family<ModelLabel, Counter>,
    cost: Family<ModelLabel, Counter<f64, AtomicU64>>,
    unpriced: Family<ModelLabel, Counter>,
    /// One-minute aggregates of the series alarms watch.
    series: crate::series::MinuteSeries,
}

impl Metrics {
    /// Empty metrics; `delivery` adds the log-delivery counters at each scrape.
    pub fn new(delivery: Option<DeliverySource>) -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            models: Default::default(),
            invocations: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            client_errors: Family::default(),
            server_errors: Family::default(),
            throttles: Family::default(),
            input_tokens: Family::default(),
            output_tokens: Family::default(),
            cache_read: Family::default(),
            cache_write: Family::default(),
            ttft: Family::new_with_constructor(ttft_histogram),
            tpm: Family::default(),
            cost: Family::default(),
            unpriced: Family::default(),
            series: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "bedrock_invocations",
            "Calls accepted for processing (Bedrock Invocations)",
            m.invocations.clone(),
        );
        registry.register(
            "bedrock_invocation_latency_seconds",
            "Request received to last token (Bedrock InvocationLatency)",
            m.latency.clone(),
        );
        registry.register(
            "bedrock_invocation_client_errors",
            "Calls that failed with a client error, 4xx other than throttling (Bedrock InvocationClientErrors)",
            m.client_errors.clone(),
        );
        registry.register(
            "bedrock_invocation_server_errors",
            "Calls that failed with a server error, 5xx (Bedrock InvocationServerErrors)",
            m.server_errors.clone(),
        );
        registry.register(
            "bedrock_invocation_throttles",
            "Throttled calls (Bedrock InvocationThrottles)",
            m.throttles.clone(),
        );
        registry.register(
            "bedrock_input_tokens",
            "Uncached input tokens (Bedrock InputTokenCount)",
            m.input_tokens.clone(),
        );
        registry.register(
            "bedrock_output_tokens",
            "Output tokens (Bedrock OutputTokenCount)",
            m.output_tokens.clone(),
        );
        registry.register(
            "bedrock_cache_read_input_tokens",
            "Prompt-cache read tokens (Bedrock CacheReadInputTokens)",
            m.cache_read.clone(),
        );
        registry.register(
            "bedrock_cache_write_input_tokens",
            "Prompt-cache write tokens (Bedrock CacheWriteInputTokens)",
            m.cache_write.clone(),
        );
        registry.register(
            "bedrock_time_to_first_token_seconds",
            "Request received to first streamed output, streams only (Bedrock TimeToFirstToken)",
            m.ttft.clone(),
        );
        registry.register(
            "bedrock_estimated_tpm_quota_usage",
            "Approximate tokens-per-minute quota used: input + cache writes + output x burndown (Bedrock EstimatedTPMQuotaUsage)",
            m.tpm.clone(),
        );
        registry.register(
            "logbook_cost_usd",
            "Cost of priced calls in USD at catalog prices (float here; exact in the records)",
            m.cost.clone(),
        );
        registry.register(
            "logbook_unpriced_invocations",
            "Calls that could not be priced (no price for the model, usage unknown)",
            m.unpriced.clone(),
        );
        if let Some(d) = delivery {
            registry.register_collector(Box::new(DeliveryCollector(d)));
        }
        Metrics { registry, ..m }
    }

    /// Add a counter family whose samples `source` reads at each scrape (`name` without
    /// `_total`).
    pub fn add_counters(&mut self, name: &'static str, help: &'static str, source: LabelledSource) {
        self.registry
            .register_collector(Box::new(LabelledCollector { name, help, source }));
    }

    /// Add a histogram (no labels) whose buckets `source` reads at each scrape; `name`
    /// with its unit (`..._seconds`), as the other histograms here.
    pub fn add_histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        source: HistogramSource,
    ) {
        self.registry
            .register_collector(Box::new(HistogramCollector { name, help, source }));
    }

    fn label(&self, model: &str) -> ModelLabel {
        let mut seen = self.models.lock().unwrap_or_else(|e| e.into_inner());
        let model_id = if seen.contains(model) {
            model.to_string()
        } else if seen.len() < MAX_MODELS {
            seen.insert(model.to_string());
            model.to_string()
        } else {
            "other".to_string()
        };
        ModelLabel { model_id }
    }

    /// The one-minute series alarms watch (fed by [`Metrics::observe`]).
    pub fn series(&self) -> &crate::series::MinuteSeries {
        &self.series
    }

    /// Count one finished call from its record.
    pub fn observe(&self, r: &InvocationRecord) {
        self.series.observe(r);
        let l = self.label(&r.model_id);
        let outcome =
            logbook_record::CallOutcome::of(r.logbook.http_status, r.error_code.as_deref());
        let counter = match outcome {
            logbook_record::CallOutcome::Throttled => Some(&self.throttles),
            logbook_record::CallOutcome::ClientError => Some(&self.client_errors),
            logbook_record::CallOutcome::ServerError => Some(&self.server_errors),
            logbook_record::CallOutcome::Ok => None,
        };
        if let Some(c) = counter {
            c.get_or_create(&l).inc();
        }
        if !outcome.invoked(r.logbook.provider.is_some()) {
            return;
        }
        self.invocations.get_or_create(&l).inc();
        self.latency
            .get_or_create(&l)
            .observe(r.logbook.latency_ms as f64 / 1000.0);
        if let Some(t) = r.logbook.time_to_first_token_ms {
            self.ttft.get_or_create(&l).observe(t as f64 / 1000.0);
        }
        let input = r.input.input_token_count.unwrap_or(0);
        let output = r
            .output
            .as_ref()
            .and_then(|o| o.output_token_count)
            .unwrap_or(0);
        let cr = r.input.cache_read_input_token_count.unwrap_or(0);
        let cw = r.input.cache_write_input_token_count.unwrap_or(0);
        for (f, n) in [
            (&self.input_tokens, input),
            (&self.output_tokens, output),
            (&self.cache_read, cr),
            (&self.cache_write, cw),
        ] {
            if n > 0 {
                f.get_or_create(&l).inc_by(n);
            }
        }
        let tpm = input + cw + output * output_burndown(&r.model_id);
        if tpm > 0 {
            self.tpm.get_or_create(&l).inc_by(tpm);
        }
        match r.logbook.cost.as_deref().map(str::parse::<f64>) {
            Some(Ok(c)) => {
                self.cost.get_or_create(&l).inc_by(c);
            }
            _ => {
                if r.logbook.unpriced.is_some() {
                    self.unpriced.get_or_create(&l).inc();
                }
            }
        }
    }

    /// The OpenMetrics text exposition (Prometheus reads it).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How many quota tokens one output token burns: 5 for Anthropic Claude 3.7 and later
/// models, 1 otherwise (Bedrock's documented burndown rates; approximate by design).
pub fn output_burndown(model_id: &str) -> u64 {
    let m = crate::pricing::bedrock_base_model(model_id);
    let newer = [
        "claude-3-7",
        "claude-sonnet-4",
        "claude-opus-4",
        "claude-haiku-4",
    ];
    if m.starts_with("anthropic.") && newer.iter().any(|n| m.contains(n)) {
        5
    } else {
        1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use logbook_record::{Identity, Input, LogbookExt, Output};

    fn rec(model: &str, status: u16, err: Option<&str>, routed: bool) -> InvocationRecord {
        InvocationRecord {
            schema_type: "ModelInvocationLog".into(),
            schema_version: "1.0".into(),
            timestamp: "2026-12-01T00:00:00Z".into(),
            account_id: "1".into(),
            identity: Identity { arn: "a".into() },
            region: "us-east-1".into(),
            request_id: "r".into(),
            operation: "ConverseStream".into(),
            model_id: model.into(),
            input: Input {
                input_token_count: Some(10),
                cache_write_input_token_count: Some(2),
                ..Default::default()
            },
            output: Some(Output {
                output_token_count: Some(4),
                ..Default::default()
            }),
            request_metadata: None,
            inference_region: None,
            error_code: err.map(str::to_string),
            performance_config: None,
            logbook: LogbookExt {
                http_status: status,
                provider: routed.then(|| "mock".to_string()),
                latency_ms: 1500,
                time_to_first_token_ms: Some(40),
                cost: Some("0.25".into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn records_count_by_bedrocks_rules_and_encode_as_openmetrics() {
        let delivery: DeliverySource = Arc::new(|| {
            vec![DeliverySample {
                name: "bedrock_model_invocation_logs_s3_delivery_success",
                help: "records delivered to S3",
                value: 7,
            }]
        });
        let m = Metrics::new(Some(delivery));
        m.observe(&rec(
            "anthropic.claude-sonnet-4-20250514-v1:0",
            200,
            None,
            true,
        ));
        m.observe(&rec(
            "anthropic.claude-sonnet-4-20250514-v1:0",
            429,
            Some("ThrottlingException"),
            true,
        ));
        m.observe(&rec(
            "anthropic.claude-sonnet-4-20250514-v1:0",
            400,
            Some("ValidationException"),
            false,
        ));
        m.observe(&rec(
            "anthropic.claude-sonnet-4-20250514-v1:0",
            500,
            Some("InternalServerException"),
            true,
        ));
        let text = m.encode().unwrap();
        let l = "{model_id=\"anthropic.claude-sonnet-4-20250514-v1:0\"}";
        for want in [
            format!("bedrock_invocations_total{l} 2"),
            format!("bedrock_invocation_throttles_total{l} 1"),
            format!("bedrock_invocation_client_errors_total{l} 1"),
            format!("bedrock_invocation_server_errors_total{l} 1"),
            format!("bedrock_input_tokens_total{l} 20"),
            format!("bedrock_cache_write_input_tokens_total{l} 4"),
            // (10 + 2 + 4 x 5) x 2 calls
            format!("bedrock_estimated_tpm_quota_usage_total{l} 64"),
            format!("bedrock_invocation_latency_seconds_count{l} 2"),
            "bedrock_time_to_first_token_seconds_bucket{le=\"0.05\",model_id=\"anthropic.claude-sonnet-4-20250514-v1:0\"} 2".to_string(),
            format!("logbook_cost_usd_total{l} 0.5"),
            "bedrock_model_invocation_logs_s3_delivery_success_total 7".to_string(),
            "# TYPE bedrock_invocations counter".to_string(),
        ] {
            assert!(text.contains(&want), "missing {want}\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_histogram_read_at_scrape_time_is_encoded_cumulative_with_its_sum_and_count() {
        let mut m = Metrics::new(None);
        m.add_histogram(
            "logbook_journal_fsync_duration_seconds",
            "fdatasync",
            Arc::new(|| HistogramSample {
                buckets: vec![(0.0001, 5), (0.001, 3), (0.01, 0), (f64::MAX, 2)],
                sum: 1.25,
            }),
        );
        let text = m.encode().unwrap();
        for want in [
            "# TYPE logbook_journal_fsync_duration_seconds histogram",
            "logbook_journal_fsync_duration_seconds_bucket{le=\"0.0001\"} 5",
            "logbook_journal_fsync_duration_seconds_bucket{le=\"0.001\"} 8",
            "logbook_journal_fsync_duration_seconds_bucket{le=\"0.01\"} 8",
            "logbook_journal_fsync_duration_seconds_bucket{le=\"+Inf\"} 10",
            "logbook_journal_fsync_duration_seconds_count 10",
            "logbook_journal_fsync_duration_seconds_sum 1.25",
        ] {
            assert!(text.contains(want), "missing {want}\n{text}");
        }
    }

    #[test]
    fn invented_model_ids_cannot_grow_the_registry_without_bound() {
        let m = Metrics::new(None);
        for i in 0..(MAX_MODELS + 50) {
            m.observe(&rec(&format!("m-{i}"), 200, None, true));
        }
        let text = m.encode().unwrap();
        assert!(text.contains("bedrock_invocations_total{model_id=\"other\"} 50"));
        assert_eq!(
            text.matches("bedrock_invocations_total{").count(),
            MAX_MODELS + 1
        );
    }

    #[test]
    fn burndown() {
        assert_eq!(
            output_burndown("us.anthropic.claude-3-7-sonnet-20250219-v1:0"),
            5
        );
        assert_eq!(output_burndown("anthropic.claude-3-haiku-20240307-v1:0"), 1);
        assert_eq!(output_burndown("amazon.nova-lite-v1:0"), 1);
    }
}
