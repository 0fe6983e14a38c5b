//! The `archive` table: Bedrock-format invocation logs (`.json.gz`, JSON Lines) read
//! straight from a folder (a local bucket), as Athena reads them from S3.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use flate2::read::MultiGzDecoder;
use logbook_store::schema;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every `.json.gz` record object under `root` (skipping `data/` offloads and the
/// permission-check marker), sorted.
pub fn record_objects(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "data") {
                    continue;
                }
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".json.gz") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Read the lines of one gzipped JSON Lines object.
pub fn read_lines(path: &Path) -> std::io::Result<impl Iterator<Item = std::io::Result<String>>> {
    let f = std::fs::File::open(path)?;
    Ok(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(f)).lines())
}

#[derive(Debug)]
struct Part {
    files: Vec<PathBuf>,
}

impl PartitionStream for Part {
    fn schema(&self) -> &SchemaRef {
        static S: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
        S.get_or_init(schema::schema)
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut b = RecordBatchReceiverStreamBuilder::new(schema::schema(), 2);
        let tx = b.tx();
        let files = self.files.clone();
        b.spawn_blocking(move || {
            let mut rows = Vec::with_capacity(8192);
            for f in files {
                let lines = read_lines(&f).map_err(|e| DataFusionError::External(Box::new(e)))?;
                for line in lines {
                    let line = line.map_err(|e| DataFusionError::External(Box::new(e)))?;
                    if let Ok(r) = schema::parse_row(&line) {
                        rows.push(r);
                    }
                    if rows.len() == 8192 {
                        let batch = schema::to_batch(&rows)?;
                        rows.clear();
                        if tx.blocking_send(Ok(batch)).is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            if !rows.is_empty() {
                let _ = tx.blocking_send(Ok(schema::to_batch(&rows)?));
            }
            Ok(())
        });
        b.build()
    }
}

/// The `archive` table over the record objects under `root`, read by `partitions`
/// parallel streams.
pub fn table(root: &Path, partitions: usize) -> Result<StreamingTable> {
    let files = record_objects(root);
    let n = partitions.max(1);
    let mut parts: Vec<Vec<PathBuf>> = vec![Vec::new(); n];
    for (i, f) in files.into_iter().enumerate() {
        parts[i % n].push(f);
    }
    let parts: Vec<Arc<dyn PartitionStream>> = parts
        .into_iter()
        .map(|files| Arc::new(Part { files }) as Arc<dyn PartitionStream>)
        .collect();
    StreamingTable::try_new(schema::schema(), parts)
}
