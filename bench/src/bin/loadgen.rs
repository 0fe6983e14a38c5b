//! Open-loop load generator. Requests are scheduled at a fixed rate; each latency is
//! measured from its *scheduled* start, so a slow server cannot hide queueing delay
//! (no coordinated omission). Prints one JSON line of results.

use clap::Parser;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Parser)]
struct Args {
    /// Full URL to POST to.
    #[arg(long)]
    url: String,
    /// Body shape: openai-chat or bedrock-converse.
    #[arg(long, default_value = "openai-chat")]
    kind: String,
    /// Requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up at the same rate, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Most requests in flight.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Label in the output.
    #[arg(long, default_value = "")]
    label: String,
    /// Speak HTTP/2 over cleartext with prior knowledge (as the AWS SDK for JavaScript
    /// does against an http:// endpoint) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
}

fn body(kind: &str) -> Vec<u8> {
    let prompt = logbook_bench::kilobyte_text("question");
    let v = match kind {
        "bedrock-converse" => {
            serde_json::json!({"messages": [{"role": "user", "content": [{"text": prompt}]}]})
        }
        _ => {
            serde_json::json!({"model": "bench-model", "messages": [{"role": "user", "content": prompt}]})
        }
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

struct Stats {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
}

async fn phase(
    client: &reqwest::Client,
    args: &Args,
    body: &Arc<Vec<u8>>,
    secs: u64,
    stats: Option<Arc<Mutex<Stats>>>,
) -> (u64, Duration) {
    let sem = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight));
    let total = args.rate * secs;
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut handles = Vec::with_capacity(total as usize);
    let mut dropped = 0u64;
    for i in 0..total {
        let at = start + interval * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            dropped += 1;
            if let Some(s) = &stats {
                s.lock().await.errors += 1;
            }
            continue;
        };
        let client = client.clone();
        let body = body.clone();
        let url = args.url.clone();
        let stats = stats.clone();
        handles.push(tokio::spawn(async move {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .header("authorization", "Bearer sk-bench")
                .body(body.to_vec())
                .send()
                .await;
            let ok = match r {
                Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                Err(_) => false,
            };
            let us = at.elapsed().as_micros() as u64;
            if let Some(s) = stats {
                let mut s = s.lock().await;
                if ok {
                    s.ok += 1;
                    let _ = s.hist.record(us.max(1));
                } else {
                    s.errors += 1;
                }
            }
            drop(permit);
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    (dropped, start.elapsed())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut builder = reqwest::Client::builder().pool_max_idle_per_host(args.max_in_flight);
        if args.http2 {
            builder = builder.http2_prior_knowledge();
        }
        let client = builder.build()?;
        let body = Arc::new(body(&args.kind));
        if args.warmup > 0 {
            phase(&client, &args, &body, args.warmup, None).await;
        }
        let stats = Arc::new(Mutex::new(Stats { hist: Histogram::new_with_bounds(1, 60_000_000, 3)?, ok: 0, errors: 0 }));
        let (_dropped, elapsed) = phase(&client, &args, &body, args.duration, Some(stats.clone())).await;
        let s = stats.lock().await;
        let q = |p: f64| s.hist.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "{}",
            serde_json::json!({
                "label": args.label, "rate": args.rate, "ok": s.ok, "errors": s.errors,
                "achieved_rps": (s.ok as f64 / elapsed.as_secs_f64()).round(),
                "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": s.hist.max() as f64 / 1000.0
            })
        );
        Ok(())
    })
}
