//! CloudWatch Logs delivery: one log event per invocation record, in the log stream
//! `aws/bedrock/modelinvocations` of the record's `cloudWatchConfig.logGroupName`, as
//! Bedrock delivers them.
//!
//! * Bodies over 100 KB (and Converse media) go to the record's
//!   `largeDataDeliveryS3Config` bucket in the archive's `data/` layout, and the event
//!   carries `inputBodyS3Path` / `outputBodyS3Path`; those objects are written before the
//!   event that points at them. With no large-data bucket, such bodies are left out and
//!   `logbook.bodiesOmitted` says so (Bedrock does not deliver them either).
//! * Batches hold `PutLogEvents`' limits ([`logbook_cloudwatch::Batcher`]).
//! * **At least once.** `PutLogEvents` cannot be made idempotent: a crash after the
//!   service accepted a batch and before the cursor moved sends that batch again (at most
//!   one batch of `max_object_bytes` per crash). Readers de-duplicate on `requestId`.

use crate::archive::ArchiveFormat;
use crate::{Bucket, DeliveryError, Format, Target, Written};
use async_trait::async_trait;
use logbook_cloudwatch::{Batcher, LogEvent, LogsClient, MAX_EVENT_BYTES};
use logbook_journal::{Entry, Kind};
use logbook_record::raw::{text, RawRecord};
use logbook_record::{parse_timestamp, S3Location, LARGE_BODY_BYTES};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// One write of a CloudWatch destination.
#[derive(Debug)]
pub enum CloudWatchItem {
    /// A body too large for an event, to the large-data bucket.
    Offload {
        /// The bucket's name.
        bucket: String,
        /// The object's key.
        key: String,
        /// gz JSON (or media bytes).
        data: Vec<u8>,
    },
    /// One `PutLogEvents` batch.
    Events(Vec<LogEvent>),
}

/// Records for one log group, as `PutLogEvents` batches.
pub struct CloudWatchFormat {
    group: String,
    node_id: String,
    batcher: Batcher,
    offloads: Vec<CloudWatchItem>,
    redactor: Option<std::sync::Arc<logbook_redact::Redactor>>,
}

impl CloudWatchFormat {
    /// The records whose logging configuration names `group`.
    pub fn new(group: &str, node_id: &str) -> Self {
        CloudWatchFormat {
            group: group.into(),
            node_id: node_id.into(),
            batcher: Batcher::default(),
            offloads: Vec::new(),
            redactor: None,
        }
    }

    /// Mask the bodies of what this group receives (`logbook_redact`).
    pub fn with_redactor(mut self, r: std::sync::Arc<logbook_redact::Redactor>) -> Self {
        self.redactor = Some(r);
        self
    }

    /// The event's message: the record, its large bodies moved to the large-data bucket
    /// (or left out when there is none), small enough for one event.
    fn message(
        &mut self,
        payload: &[u8],
        large: Option<&S3Location>,
        account: &str,
        region: &str,
    ) -> Result<Vec<u8>, DeliveryError> {
        let has_media = crate::has_media(payload);
        if payload.len() <= LARGE_BODY_BYTES && !has_media {
            return Ok(payload.to_vec());
        }
        let msg = match large {
            Some(l) => {
                let mut off = ArchiveFormat::new(&l.bucket, false, "", &self.node_id);
                let msg = off.offload(payload, &l.key_prefix, account, region)?;
                for (key, data) in off.data_objects.drain(..) {
                    self.offloads.push(CloudWatchItem::Offload {
                        bucket: l.bucket.clone(),
                        key,
                        data,
                    });
                }
                msg
            }
            None => payload.to_vec(),
        };
        if msg.len() + logbook_cloudwatch::EVENT_OVERHEAD <= MAX_EVENT_BYTES
            && (large.is_some() || msg.len() <= LARGE_BODY_BYTES)
        {
            return Ok(msg);
        }
        // No large-data bucket (or still too big): the bodies stay out of the event.
        let Ok(mut v) = serde_json::from_slice::<Value>(&msg) else {
            return Ok(msg);
        };
        let mut dropped = false;
        // First the bodies over the limit, then, if the event is still too big, the rest.
        for limit in [LARGE_BODY_BYTES, 0] {
            for (section, body) in [("input", "inputBodyJson"), ("output", "outputBodyJson")] {
                if let Some(s) = v.get_mut(section).and_then(Value::as_object_mut) {
                    let big = s
                        .get(body)
                        .is_some_and(|b| serde_json::to_vec(b).map_or(0, |b| b.len()) > limit);
                    if big {
                        s.remove(body);
                        dropped = true;
                    }
                }
            }
            let size = serde_json::to_vec(&v).map_or(0, |b| b.len());
            if size + logbook_cloudwatch::EVENT_OVERHEAD <= MAX_EVENT_BYTES {
                break;
            }
        }
        if dropped {
            if let Some(ext) = v.get_mut("logbook").and_then(Value::as_object_mut) {
                ext.insert(
                    "bodiesOmitted".into(),
                    Value::String(
                        "body larger than a log event and no largeDataDeliveryS3Config".into(),
                    ),
                );
            }
        }
        Ok(serde_json::to_vec(&v).unwrap_or(msg))
    }
}

impl Format for CloudWatchFormat {
    type Item = CloudWatchItem;

    fn add(&mut self, e: Entry) -> Result<usize, DeliveryError> {
        if e.kind != Kind::Record {
            return Ok(0);
        }
        let Ok(head) = RawRecord::parse(&e.payload) else {
            return Ok(0);
        };
        let Some(dest) = head.destination() else {
            return Ok(0);
        };
        if text(dest.log_group).as_deref() != Some(self.group.as_str()) {
            return Ok(0);
        }
        let large_data: Option<S3Location> = dest
            .large_data
            .and_then(|v| serde_json::from_str(v.get()).ok());
        let account = text(head.account_id).unwrap_or_else(|| "000000000000".into());
        let region = text(head.region).unwrap_or_else(|| "us-east-1".into());
        let timestamp_ms = text(head.timestamp)
            .as_deref()
            .and_then(parse_timestamp)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or(e.time_ms as i64);
        let payload = match &self.redactor {
            Some(r) => r.redact_record(&e.payload).into_owned(),
            None => e.payload,
        };
        let msg = self.message(&payload, large_data.as_ref(), &account, &region)?;
        let message = String::from_utf8(msg)
            .map_err(|_| DeliveryError::Config("a record is not UTF-8".into()))?;
        let event = LogEvent {
            timestamp_ms,
            message,
        };
        let size = event.size();
        self.batcher.push(event);
        Ok(size)
    }

    fn take(&mut self) -> Result<Vec<CloudWatchItem>, DeliveryError> {
        let mut out = std::mem::take(&mut self.offloads);
        out.extend(self.batcher.take().into_iter().map(CloudWatchItem::Events));
        Ok(out)
    }

    fn reset(&mut self) {
        self.batcher.clear();
        self.offloads.clear();
    }
}

/// A log group on a CloudWatch Logs endpoint, and the buckets large bodies may go to.
pub struct CloudWatchTarget {
    group: String,
    stream: String,
    client: LogsClient,
    buckets: HashMap<String, Bucket>,
    stream_ready: AtomicBool,
}

impl CloudWatchTarget {
    /// Deliver to `group` (stream `aws/bedrock/modelinvocations`) through `client`.
    pub fn new(group: &str, client: LogsClient, buckets: HashMap<String, Bucket>) -> Self {
        CloudWatchTarget {
            group: group.into(),
            stream: logbook_cloudwatch::BEDROCK_STREAM.into(),
            client,
            buckets,
            stream_ready: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Target for CloudWatchTarget {
    type Item = CloudWatchItem;

    async fn put(&self, item: CloudWatchItem) -> Result<Written, DeliveryError> {
        match item {
            CloudWatchItem::Offload { bucket, key, data } => {
                let b = self.buckets.get(&bucket).ok_or_else(|| {
                    DeliveryError::Config(format!(
                        "largeDataDeliveryS3Config names bucket {bucket:?}, which is not declared in [[buckets]]"
                    ))
                })?;
                b.put(&key, data).await?;
                Ok(Written {
                    large_data: 1,
                    ..Written::default()
                })
            }
            CloudWatchItem::Events(events) => {
                if !self.stream_ready.load(Ordering::Relaxed) {
                    self.client
                        .create_log_stream(&self.group, &self.stream)
                        .await?;
                    self.stream_ready.store(true, Ordering::Relaxed);
                }
                let bytes = events.iter().map(|e| e.message.len() as u64).sum();
                match self
                    .client
                    .put_log_events(&self.group, &self.stream, &events)
                    .await
                {
                    Ok(r) => Ok(Written {
                        bytes,
                        rejected: r.count(events.len()) as u64,
                        large_data: 0,
                    }),
                    Err(e) => {
                        if e.code() == Some("ResourceNotFoundException") {
                            // The stream may have been deleted: create it again next time.
                            self.stream_ready.store(false, Ordering::Relaxed);
                        }
                        Err(e.into())
                    }
                }
            }
        }
    }

    fn is_large_data(item: &CloudWatchItem) -> bool {
        matches!(item, CloudWatchItem::Offload { .. })
    }

    async fn probe(&self, _name: &str) -> Result<(), DeliveryError> {
        // A read: a probe event would land in the user's log group.
        if self.client.log_group_exists(&self.group).await? {
            Ok(())
        } else {
            Err(DeliveryError::CloudWatch(
                logbook_cloudwatch::LogsError::Service {
                    operation: "DescribeLogGroups",
                    code: "ResourceNotFoundException".into(),
                    message: format!("The specified log group does not exist: {}", self.group),
                    status: 400,
                },
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(group: Option<&str>, large: Option<(&str, &str)>, body_bytes: usize) -> Vec<u8> {
        let mut v = serde_json::json!({
            "schemaType": "ModelInvocationLog",
            "schemaVersion": "1.0",
            "timestamp": "2026-12-01T10:00:00Z",
            "accountId": "123456789012",
            "region": "us-east-1",
            "requestId": "r-1",
            "operation": "InvokeModel",
            "modelId": "m",
            "input": {"inputBodyJson": {"prompt": "p".repeat(body_bytes)}},
            "output": {"outputBodyJson": {"completion": "ok"}},
            "logbook": {"destination": {"bucket": "", "keyPrefix": ""}}
        });
        if let Some(g) = group {
            v["logbook"]["destination"]["logGroup"] = g.into();
        }
        if let Some((b, p)) = large {
            v["logbook"]["destination"]["largeData"] =
                serde_json::json!({"bucket": b, "keyPrefix": p});
        }
        serde_json::to_vec(&v).unwrap()
    }

    fn entry(seq: u64, payload: Vec<u8>) -> Entry {
        Entry {
            kind: logbook_journal::Kind::Record,
            version: 1,
            seq,
            time_ms: 1_700_000_000_000,
            payload,
        }
    }

    fn events(items: &[CloudWatchItem]) -> Vec<Value> {
        items
            .iter()
            .filter_map(|i| match i {
                CloudWatchItem::Events(es) => Some(es),
                _ => None,
            })
            .flatten()
            .map(|e| serde_json::from_str(&e.message).unwrap())
            .collect()
    }

    #[test]
    fn takes_only_its_groups_records_with_the_record_time() {
        let mut f = CloudWatchFormat::new("g1", "n");
        assert!(f.add(entry(0, record(Some("g1"), None, 10))).unwrap() > 0);
        assert_eq!(f.add(entry(1, record(Some("g2"), None, 10))).unwrap(), 0);
        assert_eq!(f.add(entry(2, record(None, None, 10))).unwrap(), 0);
        assert_eq!(
            f.add(entry(3, b"{\"eventName\":\"x\"}".to_vec())).unwrap(),
            0
        );
        let items = f.take().unwrap();
        assert_eq!(items.len(), 1);
        let CloudWatchItem::Events(es) = &items[0] else {
            panic!()
        };
        assert_eq!(es[0].timestamp_ms, 1_796_119_200_000);
        // The event is the record, byte for byte.
        assert_eq!(es[0].message.as_bytes(), &record(Some("g1"), None, 10)[..]);
    }

    #[test]
    fn large_bodies_go_to_the_large_data_bucket_before_the_event() {
        let mut f = CloudWatchFormat::new("g1", "n");
        f.add(entry(0, record(Some("g1"), Some(("big", "cw/")), 300_000)))
            .unwrap();
        let items = f.take().unwrap();
        let CloudWatchItem::Offload { bucket, key, .. } = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(bucket, "big");
        assert!(key.starts_with("cw/AWSLogs/123456789012/BedrockModelInvocationLogs/us-east-1/2026/12/01/10/data/r-1_input"), "{key}");
        let ev = &events(&items)[0];
        assert_eq!(ev["input"]["inputBodyS3Path"], format!("s3://big/{key}"));
        assert!(ev["input"].get("inputBodyJson").is_none());
        assert_eq!(ev["output"]["outputBodyJson"]["completion"], "ok");
    }

    #[test]
    fn without_a_large_data_bucket_large_bodies_are_left_out_and_said_so() {
        let mut f = CloudWatchFormat::new("g1", "n");
        f.add(entry(0, record(Some("g1"), None, 300_000))).unwrap();
        let items = f.take().unwrap();
        assert_eq!(items.len(), 1);
        let ev = &events(&items)[0];
        assert!(ev["input"].get("inputBodyJson").is_none());
        assert!(ev["logbook"]["bodiesOmitted"]
            .as_str()
            .unwrap()
            .contains("largeDataDeliveryS3Config"));
        // Between 100 KB and a full event: left out too, as Bedrock does.
        let mut f = CloudWatchFormat::new("g1", "n");
        f.add(entry(0, record(Some("g1"), None, 150_000))).unwrap();
        assert!(events(&f.take().unwrap())[0]["input"]
            .get("inputBodyJson")
            .is_none());
    }

    #[test]
    fn every_event_fits_and_reset_forgets() {
        let mut f = CloudWatchFormat::new("g1", "n");
        for i in 0..40 {
            f.add(entry(i, record(Some("g1"), Some(("big", "")), 99_000)))
                .unwrap();
        }
        let items = f.take().unwrap();
        for i in &items {
            if let CloudWatchItem::Events(es) = i {
                assert!(
                    es.iter().map(LogEvent::size).sum::<usize>()
                        <= logbook_cloudwatch::MAX_BATCH_BYTES
                );
                assert!(es.iter().all(|e| e.size() <= MAX_EVENT_BYTES));
            }
        }
        assert_eq!(events(&items).len(), 40);
        f.add(entry(41, record(Some("g1"), Some(("big", "")), 300_000)))
            .unwrap();
        f.reset();
        assert!(f.take().unwrap().is_empty());
    }
}
