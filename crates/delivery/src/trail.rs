//! The trail format: CloudTrail events (journal entries with `eventVersion`) to
//! `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<16 hex>.json.gz`,
//! each object `{"Records": [...]}`. Keys follow the same exactly-once rule as the archive.

use crate::{DeliveryError, Format};
use flate2::write::GzEncoder;
use flate2::Compression;
use logbook_journal::{Entry, Kind};
use logbook_notary::Notary;
use logbook_record::trail::{trail_object_key, TrailHead};
use std::collections::BTreeMap;
use std::io::Write;
use time::OffsetDateTime;

struct Group {
    first_seq: u64,
    first_time_ms: u64,
    gz: GzEncoder<Vec<u8>>,
    n: usize,
    leaves: Vec<u64>,
}

/// CloudTrail objects.
pub struct TrailFormat {
    node_id: String,
    groups: BTreeMap<(String, String), Group>,
    notary: Option<Notary>,
}

impl TrailFormat {
    /// A trail for this node.
    pub fn new(node_id: &str) -> Self {
        TrailFormat {
            node_id: node_id.into(),
            groups: BTreeMap::new(),
            notary: None,
        }
    }

    /// Keep a tamper-evident log of every event written (see `logbook_notary`).
    pub fn with_notary(mut self, notary: Notary) -> Self {
        self.notary = Some(notary);
        self
    }
}

impl Format for TrailFormat {
    type Item = (String, Vec<u8>);

    fn add(&mut self, e: Entry) -> Result<usize, DeliveryError> {
        if e.kind != Kind::TrailEvent {
            return Ok(0);
        }
        let Some(head) = TrailHead::parse(&e.payload) else {
            return Ok(0);
        };
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
                leaves: Vec::new(),
            }
        });
        if g.n > 0 {
            g.gz.write_all(b",")?;
        }
        g.gz.write_all(&e.payload)?;
        g.n += 1;
        if let Some(n) = &mut self.notary {
            g.leaves.push(n.leaf(&e.payload, e.time_ms));
        }
        Ok(e.payload.len() + 1)
    }

    fn take(&mut self) -> Result<Vec<(String, Vec<u8>)>, DeliveryError> {
        let mut out = Vec::new();
        for ((account, region), mut g) in std::mem::take(&mut self.groups) {
            g.gz.write_all(b"]}")?;
            let t =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(g.first_time_ms) * 1_000_000)
                    .unwrap_or_else(|_| OffsetDateTime::now_utc());
            let key = trail_object_key(&account, &region, t, &self.node_id, g.first_seq);
            let bytes = g.gz.finish()?;
            if let Some(n) = &mut self.notary {
                n.object(key.clone(), &bytes, &g.leaves);
            }
            out.push((key, bytes));
        }
        Ok(out)
    }

    fn reset(&mut self) {
        self.groups.clear();
        if let Some(n) = &mut self.notary {
            n.reset();
        }
    }

    crate::notarized_format!();
}
