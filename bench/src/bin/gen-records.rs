//! Generate realistic Bedrock invocation logs for the query benchmark: gzipped JSON Lines
//! in Bedrock's S3 layout, one object per hour.
//!
//!   gen-records --out DIR [--records 1000000] [--days 30] [--seed 1]
//!
//! 20 models, 500 identities, 30 teams (requestMetadata.team), prompts and responses of
//! 200–4,000 characters, errors in about 2% of calls, and a needle ("rare-phrase") in
//! exactly 3 prompts. Each call carries a cost (`logbook.cost`, priced per model as the
//! gateway would) and its caller's principal tag `team` (for the chargeback benchmark).

use anyhow::Context;
use flate2::write::GzEncoder;
use flate2::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;

const OPERATIONS: &[&str] = &["Converse", "ConverseStream", "InvokeModel"];

const WORDS: &[&str] = &[
    "the",
    "model",
    "answer",
    "question",
    "customer",
    "invoice",
    "summary",
    "please",
    "report",
    "table",
    "policy",
    "quarterly",
    "revenue",
    "shipping",
    "delay",
    "refund",
    "account",
    "error",
    "deploy",
    "service",
    "latency",
    "token",
    "budget",
    "contract",
    "review",
    "draft",
    "email",
    "translate",
    "german",
    "python",
    "function",
    "returns",
    "value",
    "list",
    "data",
    "graph",
    "meeting",
    "notes",
    "action",
    "items",
    "risk",
    "compliance",
    "audit",
    "security",
    "access",
    "role",
    "team",
    "search",
    "ranking",
    "query",
    "index",
    "vector",
    "embedding",
    "retrieval",
];

fn text(rng: &mut StdRng, min: usize, max: usize) -> String {
    let want = rng.random_range(min..=max);
    let mut s = String::with_capacity(want + 16);
    while s.len() < want {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    s.truncate(want);
    s
}

fn main() -> anyhow::Result<()> {
    let mut out: Option<PathBuf> = None;
    let (mut n, mut days, mut seed) = (1_000_000u64, 30u64, 1u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().context("missing value")?;
        match a.as_str() {
            "--out" => out = Some(v.into()),
            "--records" => n = v.parse()?,
            "--days" => days = v.parse()?,
            "--seed" => seed = v.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let out = out.context("--out DIR is required")?;
    let end: i64 = 1_793_491_200; // 2026-11-01T00:00:00Z
    let start = end - (days as i64) * 86_400;
    let hours = (days * 24) as i64;
    let models: Vec<String> = (0..20)
        .map(|i| match i % 4 {
            0 => format!("anthropic.claude-model-{i}-v1:0"),
            1 => format!("amazon.nova-model-{i}-v1:0"),
            2 => format!("meta.llama-model-{i}-v1:0"),
            _ => format!("mistral.model-{i}-v1:0"),
        })
        .collect();
    let needles: Vec<u64> = vec![n / 7, n / 2, n - 3];
    let per_hour = n.div_ceil(hours as u64);
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get()) as i64;
    let mut handles = Vec::new();
    for t in 0..threads {
        let out = out.clone();
        let models = models.clone();
        let needles = needles.clone();
        handles.push(std::thread::spawn(move || -> anyhow::Result<()> {
            for h in (0..hours).filter(|h| h % threads == t) {
                let mut rng = StdRng::seed_from_u64(seed * 1_000_003 + h as u64);
                let first = h as u64 * per_hour;
                let last = ((h as u64 + 1) * per_hour).min(n);
                if first >= last {
                    continue;
                }
                let hour_start = start + h * 3600;
                let tm = time::OffsetDateTime::from_unix_timestamp(hour_start)?;
                let dir = out.join(format!(
                    "AWSLogs/123456789012/BedrockModelInvocationLogs/us-east-1/{:04}/{:02}/{:02}/{:02}",
                    tm.year(), u8::from(tm.month()), tm.day(), tm.hour()
                ));
                std::fs::create_dir_all(&dir)?;
                let mut offsets: Vec<i64> = (first..last).map(|_| rng.random_range(0..3600)).collect();
                offsets.sort_unstable();
                let mut gz = GzEncoder::new(Vec::new(), Compression::default());
                for (i, off) in (first..last).zip(offsets) {
                    let ts = time::OffsetDateTime::from_unix_timestamp(hour_start + off)?;
                    let model = &models[rng.random_range(0..models.len())];
                    let who = rng.random_range(0..500);
                    let arn = if who % 3 == 0 {
                        format!("arn:aws:iam::123456789012:user/user-{who}")
                    } else {
                        format!("arn:aws:sts::123456789012:assumed-role/role-{}/session-{who}", who % 40)
                    };
                    let mut prompt = text(&mut rng, 200, 4000);
                    if needles.contains(&i) {
                        prompt.push_str(" rare-phrase");
                    }
                    let answer = text(&mut rng, 200, 4000);
                    let (tin, tout) = (prompt.len() / 4 + 3, answer.len() / 4 + 1);
                    let mut rec = serde_json::json!({
                        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0",
                        "timestamp": format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", ts.year(), u8::from(ts.month()), ts.day(), ts.hour(), ts.minute(), ts.second()),
                        "accountId": "123456789012", "identity": {"arn": arn}, "region": "us-east-1",
                        "requestId": format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", i, rng.random::<u16>(), rng.random_range(0..4096u16), rng.random_range(0..4096u16), rng.random::<u64>() & 0xffff_ffff_ffff),
                        "operation": OPERATIONS[rng.random_range(0..3)],
                        "modelId": model,
                        "input": {"inputContentType": "application/json", "inputTokenCount": tin,
                                  "inputBodyJson": {"messages": [{"role": "user", "content": [{"text": prompt}]}], "inferenceConfig": {"maxTokens": 1024}}},
                        "output": {"outputContentType": "application/json", "outputTokenCount": tout,
                                   "outputBodyJson": {"output": {"message": {"role": "assistant", "content": [{"text": answer}]}}, "stopReason": "end_turn",
                                                      "metrics": {"latencyMs": rng.random_range(80..9000)}, "usage": {"inputTokens": tin, "outputTokens": tout, "totalTokens": tin + tout}}},
                        "requestMetadata": {"team": format!("team-{:02}", rng.random_range(0..30))}
                    });
                    // Prices in 1e-6 USD per 1M tokens, so tokens × price is in 1e-12 USD.
                    let idx = models.iter().position(|m| m == model).unwrap_or(0) as i128;
                    let (pin, pout) = (60_000 + idx * 37_000, 240_000 + idx * 150_000);
                    let mut cost = tin as i128 * pin + tout as i128 * pout;
                    if rng.random_range(0..100) < 2 {
                        rec["errorCode"] = serde_json::json!("ThrottlingException");
                        rec.as_object_mut().map(|o| o.remove("output"));
                        cost = 0;
                    }
                    rec["logbook"] = serde_json::json!({
                        "cost": format!("{}.{:012}", cost / 1_000_000_000_000, cost % 1_000_000_000_000),
                        "principalTags": {"team": format!("team-{:02}", who % 30)},
                    });
                    serde_json::to_writer(&mut gz, &rec)?;
                    gz.write_all(b"\n")?;
                }
                let name = format!(
                    "{:04}{:02}{:02}T{:02}0000000Z_{:016x}.json.gz",
                    tm.year(), u8::from(tm.month()), tm.day(), tm.hour(), h
                );
                std::fs::write(dir.join(name), gz.finish()?)?;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
    }
    println!(
        "{n} records in {hours} hourly objects under {}",
        out.display()
    );
    Ok(())
}
