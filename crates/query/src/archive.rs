//! The `archive` table: Bedrock-format invocation logs (`.json.gz`, JSON Lines) read
//! straight from a bucket through its object store (a local folder or S3), as Athena reads
//! them from S3.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use flate2::read::MultiGzDecoder;
use futures::TryStreamExt;
use logbook_store::schema;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use std::io::{BufRead, BufReader};
use std::sync::Arc;

/// Is this key a batch of records (not an offloaded body under `data/`, not the
/// permission-check marker, not a CloudTrail object)?
pub fn is_record_object(key: &str) -> bool {
    key.ends_with(".json.gz")
        && !key.split('/').any(|s| s == "data")
        && !key.contains("/CloudTrail/")
}

/// Every record object under `prefix` of `store`, sorted by key.
pub async fn record_objects(
    store: &dyn ObjectStore,
    prefix: Option<&StorePath>,
) -> object_store::Result<Vec<ObjectMeta>> {
    let mut out: Vec<ObjectMeta> = store
        .list(prefix)
        .try_filter(|m| std::future::ready(is_record_object(m.location.as_ref())))
        .try_collect()
        .await?;
    out.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(out)
}

/// The lines of one gzipped JSON Lines object.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = std::io::Result<String>> + '_ {
    BufReader::with_capacity(1 << 20, MultiGzDecoder::new(bytes)).lines()
}

struct Part {
    store: Arc<dyn ObjectStore>,
    objects: Vec<StorePath>,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("objects", &self.objects.len())
            .finish()
    }
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl PartitionStream for Part {
    fn schema(&self) -> &SchemaRef {
        static S: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
        S.get_or_init(schema::schema)
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut b = RecordBatchReceiverStreamBuilder::new(schema::schema(), 2);
        let tx = b.tx();
        let (store, objects) = (self.store.clone(), self.objects.clone());
        b.spawn(async move {
            let mut rows = Vec::with_capacity(8192);
            for o in objects {
                let bytes = store
                    .get(&o)
                    .await
                    .map_err(external)?
                    .bytes()
                    .await
                    .map_err(external)?;
                for line in lines(&bytes) {
                    let line = line.map_err(external)?;
                    if let Ok(r) = schema::parse_row(&line) {
                        rows.push(r);
                    }
                    if rows.len() == 8192 {
                        let batch = schema::to_batch(&rows)?;
                        rows.clear();
                        if tx.send(Ok(batch)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            if !rows.is_empty() {
                let _ = tx.send(Ok(schema::to_batch(&rows)?)).await;
            }
            Ok(())
        });
        b.build()
    }
}

/// The `archive` table over the record objects of `store`, read by `partitions` parallel
/// streams.
pub async fn table(store: Arc<dyn ObjectStore>, partitions: usize) -> Result<StreamingTable> {
    let objects = record_objects(&*store, None).await.map_err(external)?;
    let n = partitions.max(1);
    let mut parts: Vec<Vec<StorePath>> = vec![Vec::new(); n];
    for (i, o) in objects.into_iter().enumerate() {
        parts[i % n].push(o.location);
    }
    let parts: Vec<Arc<dyn PartitionStream>> = parts
        .into_iter()
        .map(|objects| {
            Arc::new(Part {
                store: store.clone(),
                objects,
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    StreamingTable::try_new(schema::schema(), parts)
}
