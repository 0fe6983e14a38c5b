//! The disk's own floor: append N records of SIZE bytes to a file, each followed by
//! fdatasync, and report the fdatasync latency distribution (one JSON line).
//!
//! With `--rate R`, the appends are paced at R a second instead of back to back (the
//! load strict mode's journal puts on the disk at R calls a second, one commit each), so
//! it can run beside other traffic: `bench/hop.sh` with `BESIDE_FSYNC=1` runs targets
//! that record nothing with it, to tell the box's answer to fsyncs from Logbook's.

use clap::Parser;
use hdrhistogram::Histogram;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Folder on the disk under test.
    #[arg(long)]
    dir: std::path::PathBuf,
    #[arg(long, default_value_t = 2000)]
    n: usize,
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Appends a second (0: back to back).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// The label of the JSON line.
    #[arg(long, default_value = "fdatasync")]
    label: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    let path = args
        .dir
        .join(format!("fsync-probe-{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&path)?;
    let buf = vec![b'x'; args.size];
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    let start = Instant::now();
    let gap = (args.rate > 0).then(|| Duration::from_secs(1) / args.rate);
    for i in 0..args.n {
        if let Some(gap) = gap {
            let due = start + gap * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        f.write_all(&buf)?;
        let t = Instant::now();
        f.sync_data()?;
        h.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    std::fs::remove_file(&path)?;
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({"label": args.label, "n": args.n, "size": args.size, "rate": args.rate, "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": h.max() as f64 / 1000.0})
    );
    Ok(())
}
