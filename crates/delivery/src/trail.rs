//! The trail format: CloudTrail events (journal entries with `eventVersion`) to
//! `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<16 hex>.json.gz`,
//! each object `{"Records": [...]}`. Keys follow the same exactly-once rule as the archive.

use crate::{DeliveryError, Format};
use flate2::write::GzEncoder;
use flate2::Compression;
use logbook_journal::Entry;
use logbook_record::trail::trail_object_key;
use std::collections::BTreeMap;
use std::io::Write;
use time::OffsetDateTime;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    event_version: Option<String>,
    recipient_account_id: Option<String>,
    aws_region: Option<String>,
}

struct Group {
    first_seq: u64,
    first_time_ms: u64,
    gz: GzEncoder<Vec<u8>>,
    n: usize,
}

/// CloudTrail objects.
pub struct TrailFormat {
    node_id: String,
    groups: BTreeMap<(String, String), Group>,
}

impl TrailFormat {
    /// A trail for this node.
    pub fn new(node_id: &str) -> Self {
        TrailFormat {
            node_id: node_id.into(),
            groups: BTreeMap::new(),
        }
    }
}

impl Format for TrailFormat {
    type Item = (String, Vec<u8>);

    fn add(&mut self, e: Entry) -> Result<usize, DeliveryError> {
        let Ok(head) = serde_json::from_slice::<Head>(&e.payload) else {
            return Ok(0);
        };
        if head.event_version.is_none() {
            return Ok(0);
        }
        let account = head
            .recipient_account_id
            .unwrap_or_else(|| "000000000000".into());
        let region = head.aws_region.unwrap_or_else(|| "us-east-1".into());
        let g = self.groups.entry((account, region)).or_insert_with(|| {
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            let _ = gz.write_all(b"{\"Records\":[");
            Group {
                first_seq: e.seq,
                first_time_ms: e.time_ms,
                gz,
                n: 0,
            }
        });
        if g.n > 0 {
            g.gz.write_all(b",")?;
        }
        g.gz.write_all(&e.payload)?;
        g.n += 1;
        Ok(e.payload.len() + 1)
    }

    fn take(&mut self) -> Result<Vec<(String, Vec<u8>)>, DeliveryError> {
        let mut out = Vec::new();
        for ((account, region), mut g) in std::mem::take(&mut self.groups) {
            g.gz.write_all(b"]}")?;
            let t =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(g.first_time_ms) * 1_000_000)
                    .unwrap_or_else(|_| OffsetDateTime::now_utc());
            out.push((
                trail_object_key(&account, &region, t, &self.node_id, g.first_seq),
                g.gz.finish()?,
            ));
        }
        Ok(out)
    }

    fn reset(&mut self) {
        self.groups.clear();
    }
}
