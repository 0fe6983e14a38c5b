//! The disk's own floor: append N records of SIZE bytes to a file, each followed by
//! fdatasync, and report the fdatasync latency distribution (one JSON line).
//!
//! With `--rate R`, the appends are paced at R a second instead of back to back (the
//! load strict mode's journal puts on the disk at R calls a second, one commit each), so
//! it can run beside other traffic: `bench/hop.sh` with `BESIDE_FSYNC=1` runs targets
//! that record nothing with it, to tell the box's answer to fsyncs from Logbook's.
//!
//! With `--files F` (F ≥ 2), F threads do the same, each on its own file, and the line
//! also carries the **flush floor**: the wait that any server answering only after a
//! flush must have had at some instants of the run, whatever its design. At an instant
//! when every file has an fdatasync in flight, a flush asked for then cannot complete
//! before the first of those in flight does, if the device completes flushes in order;
//! so a call arriving then waits at least until that moment. The floor at an instant is
//! that wait (0 when some file had no fdatasync in flight); `floor_p99_ms` is its 99th
//! percentile over instants 10 µs apart across the run, which calls arriving at a steady
//! rate sample uniformly. The fdatasync p99 counts syncs, the floor counts time: one
//! 50 ms stall is one slow sync of thousands but holds every call of those 50 ms.
//! `escapes` counts what would break the premise: fdatasyncs that began and ended
//! inside another file's fdatasync of over 5 ms (a device whose flushes overtake each
//! other would show many).
//!
//! With `--group-commit` (and `--rate R`), the smallest strict journal there is: R
//! arrivals a second handed to one writer thread, which appends all that have arrived,
//! fdatasyncs and acknowledges them; the line's percentiles are then of each arrival's
//! wait until it was durable. Nothing of a gateway (HTTP, records, delivery) is in it:
//! its p99 is what strict mode's answers would wait for the disk at that rate if
//! Logbook's journal cost nothing.

use clap::Parser;
use hdrhistogram::Histogram;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Folder on the disk under test.
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Appends per file.
    #[arg(long, default_value_t = 2000)]
    n: usize,
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Appends a second, per file (0: back to back).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Files written at once, one thread each (2 or more adds the flush floor).
    #[arg(long, default_value_t = 1)]
    files: usize,
    /// A minimal group-commit journal fed at `--rate` (see the module's comment).
    #[arg(long)]
    group_commit: bool,
    /// The label of the JSON line.
    #[arg(long, default_value = "fdatasync")]
    label: String,
}

/// One fdatasync: start and end, nanoseconds since the common start.
type Sync = (u64, u64);

fn run_file(args: &Args, index: usize, start: Instant) -> anyhow::Result<Vec<Sync>> {
    let path = args
        .dir
        .join(format!("fsync-probe-{}-{index}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&path)?;
    let buf = vec![b'x'; args.size];
    let gap = (args.rate > 0).then(|| Duration::from_secs(1) / args.rate);
    let mut syncs = Vec::with_capacity(args.n);
    for i in 0..args.n {
        if let Some(gap) = gap {
            let due = start + gap * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        f.write_all(&buf)?;
        let t = start.elapsed().as_nanos() as u64;
        f.sync_data()?;
        syncs.push((t, start.elapsed().as_nanos() as u64));
    }
    std::fs::remove_file(&path)?;
    Ok(syncs)
}

/// The floor at instants `step` ns apart (see the module's comment), and the escapes.
fn flush_floor(files: &[Vec<Sync>], step: u64) -> anyhow::Result<(Histogram<u64>, usize)> {
    let mut floor = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?;
    let from = files.iter().filter_map(|f| f.first()).map(|s| s.0).max();
    let to = files.iter().filter_map(|f| f.last()).map(|s| s.1).min();
    if let (Some(from), Some(to)) = (from, to) {
        let mut at = vec![0usize; files.len()];
        let mut t = from;
        while t < to {
            let mut first_end = Some(u64::MAX);
            for (f, i) in files.iter().zip(at.iter_mut()) {
                // The last sync of this file that began at or before t.
                while *i + 1 < f.len() && f[*i + 1].0 <= t {
                    *i += 1;
                }
                let (s, e) = f[*i];
                first_end = match first_end {
                    Some(m) if s <= t && e > t => Some(m.min(e)),
                    _ => None,
                };
            }
            floor.record(first_end.map_or(0, |e| e - t).max(1))?;
            t += step;
        }
    }
    let mut escapes = 0;
    for (a, long) in files.iter().enumerate() {
        for &(s, e) in long.iter().filter(|(s, e)| e - s > 5_000_000) {
            for (b, other) in files.iter().enumerate() {
                if a != b {
                    let first = other.partition_point(|o| o.0 <= s);
                    escapes += other[first..]
                        .iter()
                        .take_while(|o| o.0 < e)
                        .filter(|o| o.1 < e)
                        .count();
                }
            }
        }
    }
    Ok((floor, escapes))
}

/// Each arrival's wait, in µs, until a minimal group-commit writer made it durable.
fn group_commit(args: &Args) -> anyhow::Result<Histogram<u64>> {
    anyhow::ensure!(args.rate > 0, "--group-commit needs --rate");
    let path = args
        .dir
        .join(format!("fsync-probe-{}-gc.tmp", std::process::id()));
    let mut f = std::fs::File::create(&path)?;
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let size = args.size;
    let writer = std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
        let mut buf = Vec::new();
        while let Ok(first) = rx.recv() {
            let batch: Vec<Instant> = std::iter::once(first).chain(rx.try_iter()).collect();
            buf.clear();
            buf.resize(batch.len() * size, b'x');
            f.write_all(&buf)?;
            f.sync_data()?;
            for due in batch {
                h.record(due.elapsed().as_micros().max(1) as u64)?;
            }
        }
        Ok(h)
    });
    let start = Instant::now();
    let gap = Duration::from_secs(1) / args.rate;
    for i in 0..args.n {
        let due = start + gap * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if tx.send(due).is_err() {
            break;
        }
    }
    drop(tx);
    let h = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
    std::fs::remove_file(&path)?;
    Ok(h)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.files >= 1, "--files must be at least 1");
    std::fs::create_dir_all(&args.dir)?;
    if args.group_commit {
        let h = group_commit(&args)?;
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "{}",
            serde_json::json!({"label": args.label, "group_commit": true, "n": args.n, "size": args.size, "rate": args.rate, "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": h.max() as f64 / 1000.0})
        );
        return Ok(());
    }
    let start = Instant::now();
    let files = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.files)
            .map(|i| {
                scope.spawn({
                    let args = &args;
                    move || run_file(args, i, start)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a probe thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    for &(s, e) in files.iter().flatten() {
        h.record(((e - s) / 1000).max(1))?;
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let mut line = serde_json::json!({"label": args.label, "n": args.n, "size": args.size, "rate": args.rate, "files": args.files, "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": h.max() as f64 / 1000.0});
    if args.files >= 2 {
        let (floor, escapes) = flush_floor(&files, 10_000)?;
        let ms = |p: f64| floor.value_at_quantile(p) as f64 / 1e6;
        line["floor_p99_ms"] = ms(0.99).into();
        line["floor_p999_ms"] = ms(0.999).into();
        line["long_syncs"] = files
            .iter()
            .flatten()
            .filter(|(s, e)| e - s > 5_000_000)
            .count()
            .into();
        line["escapes"] = escapes.into();
    }
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_wait_for_the_first_flush_in_flight_when_every_file_is_in_one() {
        const MS: u64 = 1_000_000;
        // Two files; file 0 stalls 0-50 ms, file 1 is mid-sync 10-40 ms and 45-60 ms.
        let a = vec![(0, 50 * MS), (50 * MS, 100 * MS)];
        let b = vec![
            (0, MS),
            (10 * MS, 40 * MS),
            (45 * MS, 60 * MS),
            (99 * MS, 100 * MS),
        ];
        let (floor, escapes) = flush_floor(&[a, b], MS).unwrap();
        // Instants 0..99 ms: both in flight at 0 (first end 1 ms), 10..39 (ends at 40),
        // 45..59 (file 0 ends at 50, then file 0's next sync, covering to 60).
        assert_eq!(floor.len(), 100);
        assert_eq!(floor.max() / MS, 30);
        assert!(floor.value_at_quantile(0.5) <= 1);
        // File 1's 10-40 ms sync began and ended inside file 0's 0-50 ms one.
        assert_eq!(escapes, 1);
    }
}
