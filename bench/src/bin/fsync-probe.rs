//! The disk's own floor: append N records of SIZE bytes to a file, each followed by
//! fdatasync, and report the fdatasync latency distribution (one JSON line).

use clap::Parser;
use hdrhistogram::Histogram;
use std::io::Write;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Folder on the disk under test.
    #[arg(long)]
    dir: std::path::PathBuf,
    #[arg(long, default_value_t = 2000)]
    n: usize,
    #[arg(long, default_value_t = 2048)]
    size: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    let path = args.dir.join("fsync-probe.tmp");
    let mut f = std::fs::File::create(&path)?;
    let buf = vec![b'x'; args.size];
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    for _ in 0..args.n {
        f.write_all(&buf)?;
        let t = Instant::now();
        f.sync_data()?;
        h.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    std::fs::remove_file(&path)?;
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({"label": "fdatasync", "n": args.n, "size": args.size, "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": h.max() as f64 / 1000.0})
    );
    Ok(())
}
