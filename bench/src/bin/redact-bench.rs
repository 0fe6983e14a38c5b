//! Redaction throughput and recall on a labelled corpus (see bench/redaction.py, which
//! writes it): `redact-bench CORPUS LABELS` prints JSON: MB/s over the corpus (best of 3)
//! and, per kind, how many labelled values no longer appear in the masked line.

use anyhow::Context;
use std::collections::BTreeMap;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let corpus = std::fs::read_to_string(args.next().context("CORPUS")?)?;
    let labels: Vec<Vec<(String, String)>> =
        serde_json::from_str(&std::fs::read_to_string(args.next().context("LABELS")?)?)?;
    let r = logbook_redact::Redactor::new(&["all".into()], &[])?;
    let lines: Vec<&str> = corpus.lines().collect();
    let mut best = f64::MAX;
    let mut out: Vec<String> = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        out = lines
            .iter()
            .map(|l| r.redact_text(l).into_owned())
            .collect();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mut found: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (line, labels) in out.iter().zip(&labels) {
        for (kind, value) in labels {
            let e = found.entry(kind.clone()).or_default();
            e.1 += 1;
            if !line.contains(value.as_str()) {
                e.0 += 1;
            }
        }
    }
    let recall: BTreeMap<String, f64> = found
        .iter()
        .map(|(k, (hit, n))| (k.clone(), *hit as f64 / (*n).max(1) as f64))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "mb_per_s": corpus.len() as f64 / 1e6 / best,
            "seconds": best,
            "recall": recall,
        })
    );
    Ok(())
}
