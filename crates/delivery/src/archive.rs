//! The archive format: Bedrock invocation records to `<prefix>/AWSLogs/<account>/
//! BedrockModelInvocationLogs/<region>/YYYY/MM/DD/HH/<time>_<16 hex>.json.gz`, bodies over
//! 100 KB to `.../HH/data/`.
//!
//! One archive destination serves one bucket. A record names its bucket and key prefix in
//! `logbook.destination` (stamped at capture from the logging configuration in force);
//! records without one go to the default bucket with the default prefix. Each batch
//! writes one object per (prefix, account, region); its key is derived from the node id
//! and the sequence of its first record, and its time part from that record's journal
//! time, so re-delivery after a crash overwrites the same objects.

use crate::{DeliveryError, Format};
use base64::Engine;
use flate2::write::GzEncoder;
use flate2::Compression;
use logbook_journal::{Entry, Kind};
use logbook_notary::Notary;
use logbook_record::layout::{self, BodySide};
use logbook_record::raw::{text, RawRecord};
use logbook_record::{parse_timestamp, LARGE_BODY_BYTES};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use time::OffsetDateTime;

struct Group {
    first_seq: u64,
    first_time_ms: u64,
    gz: GzEncoder<Vec<u8>>,
    /// Leaf indices of its lines, when the archive keeps a tamper-evident log.
    leaves: Vec<u64>,
}

/// Bedrock invocation logs for one bucket.
pub struct ArchiveFormat {
    bucket: String,
    is_default: bool,
    default_prefix: String,
    node_id: String,
    groups: BTreeMap<(String, String, String), Group>,
    pub(crate) data_objects: Vec<(String, Vec<u8>)>,
    notary: Option<Notary>,
    redactor: Option<std::sync::Arc<logbook_redact::Redactor>>,
}

impl ArchiveFormat {
    /// The archive of `bucket`. When `is_default`, it also takes records that name no
    /// destination, under `default_prefix`.
    pub fn new(bucket: &str, is_default: bool, default_prefix: &str, node_id: &str) -> Self {
        ArchiveFormat {
            bucket: bucket.into(),
            is_default,
            default_prefix: default_prefix.into(),
            node_id: node_id.into(),
            groups: BTreeMap::new(),
            data_objects: Vec::new(),
            notary: None,
            redactor: None,
        }
    }

    /// Mask the bodies of what this bucket receives (`logbook_redact`), before they are
    /// written and hashed.
    pub fn with_redactor(mut self, r: std::sync::Arc<logbook_redact::Redactor>) -> Self {
        self.redactor = Some(r);
        self
    }

    /// Keep a tamper-evident log of every line written (see `logbook_notary`).
    pub fn with_notary(mut self, notary: Notary) -> Self {
        self.notary = Some(notary);
        self
    }

    /// Write the images, documents and videos of a Converse request to
    /// `.../HH/data/<requestId>_input_media_NN.<format>` and replace each block's `source`
    /// with `{"s3Uri": ...}`, as Bedrock does with S3 delivery.
    fn offload_media(
        &mut self,
        v: &mut Value,
        prefix: &str,
        account: &str,
        region: &str,
        t: OffsetDateTime,
        request_id: &str,
    ) {
        let Some(messages) = v
            .get_mut("input")
            .and_then(|i| i.get_mut("inputBodyJson"))
            .and_then(|b| b.get_mut("messages"))
            .and_then(Value::as_array_mut)
        else {
            return;
        };
        let mut n = 0usize;
        for m in messages {
            let Some(blocks) = m.get_mut("content").and_then(Value::as_array_mut) else {
                continue;
            };
            for b in blocks {
                for kind in ["image", "document", "video"] {
                    let Some(media) = b.get_mut(kind).and_then(Value::as_object_mut) else {
                        continue;
                    };
                    let format = media
                        .get("format")
                        .and_then(Value::as_str)
                        .unwrap_or("bin")
                        .to_string();
                    let Some(data) = media
                        .get("source")
                        .and_then(|s| s.get("bytes"))
                        .and_then(Value::as_str)
                        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                    else {
                        continue;
                    };
                    let ext: String = format
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric())
                        .take(8)
                        .collect();
                    let key = format!(
                        "{}/data/{request_id}_input_media_{n:02}.{ext}",
                        layout::hour_folder(prefix, account, region, t)
                    );
                    n += 1;
                    media.insert(
                        "source".into(),
                        serde_json::json!({ "s3Uri": layout::s3_uri(&self.bucket, &key) }),
                    );
                    self.data_objects.push((key, data));
                }
            }
        }
    }

    /// Move bodies over the limit into `data/` objects and point the record at them.
    pub(crate) fn offload(
        &mut self,
        payload: &[u8],
        prefix: &str,
        account: &str,
        region: &str,
    ) -> Result<Vec<u8>, DeliveryError> {
        let Ok(mut v) = serde_json::from_slice::<Value>(payload) else {
            return Ok(payload.to_vec());
        };
        let request_id = v
            .get("requestId")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let t = v
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(parse_timestamp)
            .unwrap_or_else(OffsetDateTime::now_utc);
        if matches!(
            v.get("operation").and_then(Value::as_str),
            Some("Converse" | "ConverseStream")
        ) {
            self.offload_media(&mut v, prefix, account, region, t, &request_id);
        }
        for (section, body_key, path_key, side) in [
            ("input", "inputBodyJson", "inputBodyS3Path", BodySide::Input),
            (
                "output",
                "outputBodyJson",
                "outputBodyS3Path",
                BodySide::Output,
            ),
        ] {
            let Some(sec) = v.get_mut(section).and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(body) = sec.get(body_key) else {
                continue;
            };
            let bytes = serde_json::to_vec(body).unwrap_or_default();
            if bytes.len() <= LARGE_BODY_BYTES {
                continue;
            }
            let key = layout::data_object_key(prefix, account, region, t, &request_id, side);
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(&bytes)?;
            self.data_objects.push((key.clone(), gz.finish()?));
            sec.remove(body_key);
            sec.insert(
                path_key.into(),
                Value::String(layout::s3_uri(&self.bucket, &key)),
            );
        }
        Ok(serde_json::to_vec(&v).unwrap_or_else(|_| payload.to_vec()))
    }
}

/// The key prefix under which `bucket` takes `record`, or `None` when the record is for
/// another bucket. A record names its bucket and prefix in `logbook.destination`; one that
/// names none goes to the default bucket (`is_default`) under `default_prefix`.
pub(crate) fn prefix_for(
    record: &RawRecord,
    bucket: &str,
    is_default: bool,
    default_prefix: &str,
) -> Option<String> {
    match record.destination() {
        Some(d) => (text(d.bucket).unwrap_or_default() == bucket)
            .then(|| text(d.key_prefix).unwrap_or_default()),
        None => is_default.then(|| default_prefix.to_string()),
    }
}

impl Format for ArchiveFormat {
    type Item = (String, Vec<u8>);

    fn add(&mut self, e: Entry) -> Result<usize, DeliveryError> {
        if e.kind != Kind::Record {
            return Ok(0); // other destinations take it
        }
        let Ok(head) = RawRecord::parse(&e.payload) else {
            return Ok(0);
        };
        let Some(prefix) = prefix_for(&head, &self.bucket, self.is_default, &self.default_prefix)
        else {
            return Ok(0); // another bucket's
        };
        let account = text(head.account_id).unwrap_or_else(|| "000000000000".into());
        let region = text(head.region).unwrap_or_else(|| "us-east-1".into());
        let payload = match &self.redactor {
            Some(r) => r.redact_record(&e.payload).into_owned(),
            None => e.payload,
        };
        let has_media = crate::has_media(&payload);
        let line = if payload.len() > LARGE_BODY_BYTES || has_media {
            self.offload(&payload, &prefix, &account, &region)?
        } else {
            payload
        };
        let group = self
            .groups
            .entry((prefix, account, region))
            .or_insert_with(|| Group {
                first_seq: e.seq,
                first_time_ms: e.time_ms,
                gz: GzEncoder::new(Vec::new(), Compression::fast()),
                leaves: Vec::new(),
            });
        if let Some(n) = &mut self.notary {
            group.leaves.push(n.leaf(&line, e.time_ms));
        }
        group.gz.write_all(&line)?;
        group.gz.write_all(b"\n")?;
        Ok(line.len() + 1)
    }

    fn take(&mut self) -> Result<Vec<(String, Vec<u8>)>, DeliveryError> {
        let mut out = std::mem::take(&mut self.data_objects);
        if let Some(n) = &mut self.notary {
            for (key, bytes) in &out {
                n.object(key.clone(), bytes, &[]);
            }
        }
        for ((prefix, account, region), g) in std::mem::take(&mut self.groups) {
            let t =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(g.first_time_ms) * 1_000_000)
                    .unwrap_or_else(|_| OffsetDateTime::now_utc());
            let key =
                layout::log_object_key(&prefix, &account, &region, t, &self.node_id, g.first_seq);
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
        self.data_objects.clear();
        if let Some(n) = &mut self.notary {
            n.reset();
        }
    }

    crate::notarized_format!();
}

#[cfg(test)]
pub(crate) mod tests;
