//! Write a folder of Bedrock log objects (e.g. from `gen-records`) in the open layout, as
//! a bucket with `parquet = true` receives it: every line an entry fed to the product's
//! `ParquetFormat`, a batch taken every `--batch-bytes` of records (the default of
//! `[archive] parquet_max_object_bytes`, 64 MiB). For the open-layout benchmark; the product writes these files as it delivers.
//!
//!   open-layout --src DIR --out DIR [--batch-bytes 67108864]

use anyhow::Context;
use flate2::read::GzDecoder;
use logbook_delivery::parquet::ParquetFormat;
use logbook_delivery::Format;
use logbook_journal::{Entry, Kind};
use std::io::Read;
use std::path::{Path, PathBuf};

fn write(out: &Path, items: Vec<(String, Vec<u8>)>) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for (key, data) in items {
        let p = out.join(&key);
        std::fs::create_dir_all(p.parent().context("key")?)?;
        bytes += data.len() as u64;
        std::fs::write(p, data)?;
    }
    Ok(bytes)
}

fn main() -> anyhow::Result<()> {
    let (mut src, mut out, mut batch) = (None::<PathBuf>, None::<PathBuf>, 64 * 1024 * 1024usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().context("missing value")?;
        match a.as_str() {
            "--src" => src = Some(v.into()),
            "--out" => out = Some(v.into()),
            "--batch-bytes" => batch = v.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let src = src.context("--src DIR is required")?;
    let out = out.context("--out DIR is required")?;
    let mut files = Vec::new();
    logbook_bench::log_objects(&src, &mut files)?;
    files.sort();
    let started = std::time::Instant::now();
    let mut f = ParquetFormat::new("bench", true, "", "bench-node");
    let (mut seq, mut pending, mut written) = (1u64, 0usize, 0u64);
    for path in &files {
        let mut text = Vec::new();
        GzDecoder::new(std::fs::File::open(path)?).read_to_end(&mut text)?;
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            pending += f.add(Entry {
                seq,
                time_ms: seq,
                kind: Kind::Record,
                version: 1,
                payload: line.to_vec(),
            })?;
            seq += 1;
            if pending >= batch {
                written += write(&out, f.take()?)?;
                pending = 0;
            }
        }
    }
    written += write(&out, f.take()?)?;
    let s = started.elapsed().as_secs_f64();
    println!(
        "{{\"records\": {}, \"seconds\": {s:.2}, \"records_per_s\": {:.0}, \"bytes\": {written}}}",
        seq - 1,
        (seq - 1) as f64 / s
    );
    Ok(())
}
