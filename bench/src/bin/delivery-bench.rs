//! Delivery throughput: a journal pre-filled with N records of about 2 KB, drained by one
//! real `Destination` to a local bucket, an S3-compatible bucket, a CloudWatch Logs
//! group, or the embedded log-group store (its records queryable in the tail at once,
//! flushed to Parquet at the store's default tail size). Prints one JSON line: records/s and
//! MB/s of record JSON delivered.
//!
//!   delivery-bench --target local --records 1000000
//!   delivery-bench --target store --records 1000000
//!   delivery-bench --target s3 --endpoint http://127.0.0.1:5000 --bucket bench --records 100000
//!   delivery-bench --target cloudwatch --endpoint http://127.0.0.1:5000 --group /bench --records 100000

use anyhow::Context;
use clap::Parser;
use logbook_bucket::{Bucket, BucketSpec, S3Spec};
use logbook_delivery::archive::ArchiveFormat;
use logbook_delivery::cloudwatch::{CloudWatchFormat, CloudWatchTarget};
use logbook_delivery::{Destination, DestinationConfig, DestinationStats, GcCoordinator};
use logbook_journal::{Journal, JournalConfig, SyncMode};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// local | s3 | cloudwatch | store
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long, default_value = "bench")]
    bucket: String,
    #[arg(long, default_value = "/bench")]
    group: String,
    /// Approximate size of one record's JSON.
    #[arg(long, default_value_t = 2048)]
    record_bytes: usize,
}

/// Prose-like text of `n` bytes (compresses about as well as real prompts do).
fn text(rng: &mut impl rand::Rng, n: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "answer",
        "customer",
        "invoice",
        "please",
        "summarize",
        "report",
        "quarterly",
        "revenue",
        "support",
        "ticket",
        "error",
        "retry",
        "database",
        "latency",
        "region",
        "account",
        "policy",
        "compliance",
        "audit",
        "record",
        "token",
        "budget",
        "team",
        "search",
        "analytics",
        "deploy",
        "release",
        "incident",
        "because",
        "which",
        "would",
        "could",
        "between",
        "during",
        "without",
        "against",
        "through",
        "about",
    ];
    let mut s = String::with_capacity(n + 16);
    while s.len() < n {
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        if rng.random_range(0..12) == 0 {
            s.push_str(&rng.random_range(0..100_000u32).to_string());
        }
        s.push(' ');
    }
    s.truncate(n);
    s
}

fn record(i: u64, bucket: &str, group: &str, size: usize, rng: &mut impl rand::Rng) -> Vec<u8> {
    let pad = size.saturating_sub(700);
    let v = serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0",
        "timestamp": "2026-12-02T10:00:00Z", "accountId": "123456789012",
        "identity": {"arn": "arn:aws:iam::123456789012:user/bench"},
        "region": "us-east-1", "requestId": format!("00000000-0000-4000-8000-{i:012}"),
        "operation": "Converse", "modelId": "amazon.nova-lite-v1:0",
        "input": {"inputContentType": "application/json", "inputTokenCount": 42,
                  "inputBodyJson": {"messages": [{"role": "user", "content": [{"text": text(rng, pad / 2)}]}]}},
        "output": {"outputContentType": "application/json", "outputTokenCount": 42,
                   "outputBodyJson": {"output": {"message": {"role": "assistant", "content": [{"text": text(rng, pad / 2)}]}}}},
        "logbook": {"destination": {"bucket": bucket, "keyPrefix": "", "logGroup": group}}
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

async fn drain(
    stats: Arc<DestinationStats>,
    end: u64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while stats.cursor.load(Ordering::Relaxed) < end {
        if t.elapsed() > timeout {
            anyhow::bail!(
                "not drained after {timeout:?}: cursor {} of {end}, last error {:?}",
                stats.cursor.load(Ordering::Relaxed),
                stats.last_error()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(t.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dir = tempfile_dir()?;
    let mut jc = JournalConfig::new(dir.join("journal"));
    jc.mode = SyncMode::Async;
    jc.segment_bytes = 64 << 20;
    let journal = Journal::open(jc)?;
    let t = Instant::now();
    let mut bytes = 0u64;
    let mut pending = Vec::new();
    let mut rng = rand::rng();
    for i in 0..a.records {
        let r = record(i, &a.bucket, &a.group, a.record_bytes, &mut rng);
        bytes += r.len() as u64;
        pending.push(journal.submit(logbook_journal::Kind::Record, Box::new(move |_| r))?);
        if pending.len() >= 4096 {
            for mut p in pending.drain(..) {
                while p.try_result().is_none() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for mut p in pending.drain(..) {
        while p.try_result().is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let fill = t.elapsed();
    let end = a.records + 1;
    let gc = Arc::new(GcCoordinator::default());
    let cfg = DestinationConfig {
        name: format!("bench-{}", a.target),
        max_object_bytes: 5 << 20,
        max_object_age: Duration::from_millis(200),
        retry_base: Duration::from_millis(100),
        permanent_retry: Duration::from_secs(5),
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let s3 = |endpoint: &str| {
        BucketSpec::S3(S3Spec {
            bucket: a.bucket.clone(),
            region: "us-east-1".into(),
            endpoint: Some(endpoint.to_string()),
            path_style: true,
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            session_token: None,
            sse: None,
        })
    };
    let (stats, task) = match a.target.as_str() {
        "local" | "s3" => {
            let spec = if a.target == "local" {
                BucketSpec::Local(dir.join("bucket"))
            } else {
                s3(a.endpoint.as_deref().context("--endpoint")?)
            };
            let bucket = Bucket::open(&a.bucket, &spec, journal.disk().clone())?;
            let d = Destination::new(
                bucket,
                journal.clone(),
                cfg,
                ArchiveFormat::new(&a.bucket, true, "", "bench"),
                gc,
            )?;
            (d.stats(), tokio::spawn(d.run(rx)))
        }
        "cloudwatch" => {
            let client = logbook_cloudwatch::LogsClient::new(logbook_cloudwatch::LogsEndpoint {
                url: a.endpoint.clone().context("--endpoint")?,
                region: "us-east-1".into(),
                credentials: logbook_cloudwatch::LogsCredentials::Static(
                    logbook_cloudwatch::AwsCredentials {
                        access_key_id: "testing".into(),
                        secret_access_key: "testing".into(),
                        session_token: None,
                    },
                ),
                timeout: Duration::from_secs(60),
            })?;
            let mut c = cfg;
            c.max_object_bytes = logbook_cloudwatch::MAX_BATCH_BYTES;
            let target = CloudWatchTarget::new(&a.group, client, Default::default());
            let d = Destination::new(
                target,
                journal.clone(),
                c,
                CloudWatchFormat::new(&a.group, "bench"),
                gc,
            )?;
            (d.stats(), tokio::spawn(d.run(rx)))
        }
        "store" => {
            let store = Arc::new(logbook_store::Store::open(dir.join("store"))?);
            store.ensure_group(&a.group)?;
            let d = logbook_store::ingest::destination(
                store,
                journal.clone(),
                &logbook_store::ingest::IngestConfig {
                    // As the other targets: the last, partial batch is not held for long.
                    flush_age: Duration::from_millis(200),
                    ..Default::default()
                },
                gc,
            )?;
            (d.stats(), tokio::spawn(d.run(rx)))
        }
        other => anyhow::bail!("unknown target {other}"),
    };
    let took = drain(stats.clone(), end, Duration::from_secs(3600)).await?;
    let _ = tx.send(true);
    let _ = task.await;
    let secs = took.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "target": a.target,
            "records": a.records,
            "record_json_bytes": bytes,
            "fill_seconds": (fill.as_secs_f64() * 1000.0).round() / 1000.0,
            "drain_seconds": (secs * 1000.0).round() / 1000.0,
            "records_per_second": (a.records as f64 / secs).round(),
            "mb_per_second": ((bytes as f64 / 1e6 / secs) * 10.0).round() / 10.0,
            "writes": stats.objects.load(Ordering::Relaxed),
            "bytes_written": stats.bytes.load(Ordering::Relaxed),
            "failures": stats.failures.load(Ordering::Relaxed),
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("logbook-delivery-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
